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
    let results = run_longest_first(configs, zero, |c| {
        let report = simulate(c, &mut ()).map_err(|e| e.to_string());
        let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        bar.set_status(k, n, "points");
        report
    });
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

/// Runs every point on rayon's threads, the longest first, and returns them in the
/// sweep's order with each one's wall time. A sweep's points differ in cost by several
/// times (a higher dirty rate sends more rounds; a smaller zero fraction more pages):
/// handing them out longest first from one queue (greedy LPT) keeps every core busy
/// to the end instead of leaving the longest point running alone.
fn run_longest_first<F>(configs: Vec<(f64, SimConfig)>, zero: bool, run: F) -> Vec<(Point, f64)>
where
    F: Fn(&SimConfig) -> Result<SimReport, String> + Sync,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let mut order: Vec<usize> = (0..configs.len()).collect();
    // Rate: cost grows with the ratio; zero: with the share of pages holding data.
    order.sort_by(|&a, &b| {
        let (x, y) = (configs[a].0, configs[b].0);
        if zero {
            x.total_cmp(&y)
        } else {
            y.total_cmp(&x)
        }
    });
    let slots: Mutex<Vec<Option<(Point, f64)>>> =
        Mutex::new((0..configs.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().clamp(1, configs.len().max(1));
    (0..workers).into_par_iter().for_each(|_| {
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let (ratio, c) = &configs[i];
            let t = Instant::now();
            let point = Point {
                ratio: *ratio,
                rate: c.workload.rate(),
                report: run(c),
            };
            let wall = t.elapsed().as_secs_f64();
            if let Ok(mut slots) = slots.lock() {
                slots[i] = Some((point, wall));
            }
        }
    });
    slots
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use precopy::sim::LinkModel;
    use std::sync::Mutex;

    #[test]
    fn points_start_longest_first_and_come_back_in_sweep_order() {
        let base = SimConfig::new(
            16 << 20,
            "continuous:set=all".parse().unwrap(),
            LinkModel::preset("1gbe").unwrap(),
        );
        let configs = points(&base, false, 0.1, 1.5, 6).unwrap();
        // One worker: the order points start in is the order they are handed out.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let started = Mutex::new(Vec::new());
        let results = pool.install(|| {
            run_longest_first(configs, false, |c| {
                started.lock().unwrap().push(c.workload.rate());
                Err("not simulated".into())
            })
        });
        let rates: Vec<u64> = results.iter().map(|(p, _)| p.rate).collect();
        assert_eq!(rates.len(), 6);
        assert!(rates.windows(2).all(|w| w[0] < w[1]), "{rates:?}");
        let started = started.into_inner().unwrap();
        let mut longest_first = rates.clone();
        longest_first.reverse();
        assert_eq!(started, longest_first);
    }
}
