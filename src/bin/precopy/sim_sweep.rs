//! `precopy sim sweep`: one guest over a range of dirty-rate / link-rate ratios, the
//! points simulated in parallel.

use std::time::Instant;

use precopy::sim::{simulate, SimConfig, SimReport};
use precopy::workload::Workload;
use rayon::prelude::*;

/// `precopy sim sweep` options: those of `precopy sim` (the workload's rate is the
/// one swept) and the range.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    base: crate::sim::Args,
    /// What to sweep: `rate`, the ratio of the dirty rate to the link's rate (from
    /// --from to --to); or `zero`, an idle guest's zero fraction (from --from to --to,
    /// within 0 to 1; the workload must be idle).
    #[arg(long, default_value = "rate", value_parser = ["rate", "zero"])]
    over: String,
    /// Points of the sweep (at least 2).
    #[arg(long, default_value_t = 16)]
    points: usize,
    /// Lowest ratio of the dirty rate (bytes/s: pages written per second x page size)
    /// to the link's goodput.
    #[arg(long, default_value_t = 0.1)]
    from: f64,
    /// Highest ratio.
    #[arg(long, default_value_t = 1.5)]
    to: f64,
}

/// One point of a sweep.
pub struct Point {
    /// Dirty rate over link goodput.
    pub ratio: f64,
    /// Pages written per second.
    pub rate: u64,
    /// The simulation (or why it could not run).
    pub report: Result<SimReport, String>,
}

/// The configuration of each point: `base` with the workload's rate set so that
/// dirty bytes per second over the link's goodput is the point's ratio, or (`zero`)
/// an idle workload's zero fraction set to the point's value.
pub fn points(
    base: &SimConfig,
    zero: bool,
    from: f64,
    to: f64,
    n: usize,
) -> Result<Vec<(f64, SimConfig)>, String> {
    let n = n.max(2);
    (0..n)
        .map(|i| {
            let x = from + (to - from) * i as f64 / (n - 1) as f64;
            let mut c = *base;
            if zero {
                let Workload::Idle { rate, .. } = base.workload else {
                    return Err(format!(
                        "--over zero sweeps an idle guest's zero fraction, not {}",
                        base.workload
                    ));
                };
                c.workload = Workload::Idle { rate, zero: x };
            } else {
                let rate = (x * base.link.goodput() / base.page_size as f64).round() as u64;
                c.workload = base.workload.with_rate(rate);
            }
            Ok((x, c))
        })
        .collect()
}

/// Runs the sweep; Ok(true) when every point verified (a point that fails to
/// converge is a result, printed, and makes it false).
pub fn run(args: &SweepArgs) -> Result<bool, String> {
    if args.base.scenario.is_some() {
        return Err("--scenario does not apply to a sweep: give the guest and link".into());
    }
    let zero = args.over == "zero";
    if zero && !(args.from >= 0.0 && args.to <= 1.0 && args.to > args.from) {
        return Err(format!(
            "--over zero --from {} --to {}: need 0 <= from < to <= 1",
            args.from, args.to
        ));
    }
    let rate_range_ok = args.from > 0.0 && args.to > args.from && args.to.is_finite();
    if !zero && !rate_range_ok {
        return Err(format!(
            "--from {} --to {}: need 0 < from < to",
            args.from, args.to
        ));
    }
    let mut base = args.base.config()?;
    // Fixed CPU costs unless asked: every point sees the same machine.
    base.cpu = args
        .base
        .cpu_model(Some(base.workload), base.content, "fixed");
    // A point that does not converge switches over at the bound, so its downtime
    // shows instead of an error.
    base.policy.on_limit = precopy::schedule::OnLimit::SwitchOver;
    let json = args.base.json;
    let configs = points(&base, zero, args.from, args.to, args.points)?;
    if !json {
        let what = if zero {
            format!("zero fraction {} to {}", args.from, args.to)
        } else {
            format!(
                "dirty rate {} to {} x the link's goodput ({:.0} MB/s)",
                args.from,
                args.to,
                base.link.goodput() / 1e6
            )
        };
        println!(
            "precopy sim sweep: {} MiB guest, workload {} ({} swept), link {} Mbit/s, {} stream(s), {} points: {what}, in parallel",
            base.memory_bytes >> 20,
            base.workload,
            args.over,
            base.link.bytes_per_sec * 8 / 1_000_000,
            base.streams,
            configs.len(),
        );
        println!(
            "{:>6} {:>11} {:>6} {:>9} {:>11} {:>9} {:>6} {:>9} {:>9} {:>8}",
            if zero { "zero" } else { "ratio" },
            "pages/s",
            "rounds",
            "total s",
            "downtime ms",
            "wire GB",
            "x mem",
            "throttle",
            "verified",
            "wall s"
        );
    }
    let bar = crate::sim::Printer::new(json, true, !json);
    let n = configs.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    let start = Instant::now();
    let results: Vec<(Point, f64)> = configs
        .into_par_iter()
        .map(|(ratio, c)| {
            let t = Instant::now();
            let report = simulate(&c, &mut ()).map_err(|e| e.to_string());
            let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            bar.set_status(k, n, "points");
            let point = Point {
                ratio,
                rate: c.workload.rate(),
                report,
            };
            (point, t.elapsed().as_secs_f64())
        })
        .collect();
    bar.finish();
    let mut all_ok = true;
    for (p, wall) in &results {
        print_point(
            p,
            *wall,
            base.memory_bytes,
            json,
            if zero { "zero" } else { "ratio" },
        );
        all_ok &= p.report.as_ref().is_ok_and(|r| r.verified());
    }
    if !json {
        println!(
            "{} points in {:.1} s here",
            results.len(),
            start.elapsed().as_secs_f64()
        );
    }
    if let Some(path) = &args.base.plot {
        let points: Vec<Point> = results.into_iter().map(|(p, _)| p).collect();
        crate::sim_plot::sweep(path, &points, &base, zero)?;
        if !json {
            println!("plot: {}", path.display());
        }
    }
    Ok(all_ok)
}

fn print_point(p: &Point, wall: f64, memory: u64, json: bool, key: &str) {
    let r = match &p.report {
        Ok(r) => r,
        Err(e) => {
            if json {
                let mut v = serde_json::json!({"kind": "sweep_point", "rate": p.rate, "error": e});
                v[key] = serde_json::json!((p.ratio * 1000.0).round() / 1000.0);
                println!("{v}");
            } else {
                println!("{:>6.3} {:>11} failed: {e}", p.ratio, p.rate);
            }
            return;
        }
    };
    let downtime = r.downtime_ns.map(|d| d as f64 / 1e6);
    let throttle = r.throttle_round.map_or("-".to_string(), |t| t.to_string());
    if json {
        let mut v = serde_json::json!({
            "kind": "sweep_point",
            "rate": p.rate,
            "rounds": r.rounds,
            "total_s": (r.total_ns as f64 / 1e6).round() / 1e3,
            "downtime_ms": downtime.map(|d| (d * 10.0).round() / 10.0),
            "wire_bytes": r.wire_bytes,
            "memory_bytes": memory,
            "throttle_round": r.throttle_round,
            "verified": r.verified(),
            "error": r.error,
            "sim_wall_s": (wall * 100.0).round() / 100.0,
        });
        v[key] = serde_json::json!((p.ratio * 1000.0).round() / 1000.0);
        println!("{v}");
    } else {
        println!(
            "{:>6.3} {:>11} {:>6} {:>9.2} {:>11} {:>9.2} {:>6.2} {:>9} {:>9} {:>8.1}",
            p.ratio,
            p.rate,
            r.rounds,
            r.total_ns as f64 / 1e9,
            downtime.map_or("-".to_string(), |d| format!("{d:.1}")),
            r.wire_bytes as f64 / 1e9,
            r.wire_bytes as f64 / memory as f64,
            throttle,
            if r.verified() { "yes" } else { "no" },
            wall
        );
    }
}
