//! `precopy sim --scenario NAME|all`: the published migrations, simulated, our
//! figures beside the published ones.

use std::time::Instant;

use precopy::codec::Encoding;
use precopy::sim::scenarios::{select, Scenario};
use precopy::sim::{simulate, CpuModel, SimReport};
use rayon::prelude::*;

/// One scenario's outcome.
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// The simulation's report (or why it could not run).
    pub report: Result<SimReport, String>,
    /// Wall time of the simulation here, seconds.
    pub wall_s: f64,
}

impl Row {
    /// Share of memory the bulk round sent as zero pages.
    fn zero_share(&self, r: &SimReport) -> f64 {
        let pages = self.scenario.memory_bytes as f64 / 4096.0;
        r.rows
            .first()
            .map_or(0.0, |b| b.codecs.get(Encoding::Zero).pages as f64 / pages)
    }

    /// What to say beside the row: a win that is only zero pages, a target missed.
    fn note(&self, r: &SimReport) -> String {
        let p = &self.scenario.published;
        let mut notes = Vec::new();
        if !r.verified() {
            notes.push(format!(
                "NOT VERIFIED: {}",
                r.error.as_deref().unwrap_or("destination differs")
            ));
        }
        let zero = self.zero_share(r);
        if self.scenario.peer_sent_zero_pages && zero > 0.5 {
            notes.push(format!(
                "won on zero pages: {:.0}% of memory is zero, which Hyper-V of 2011 sent in full",
                zero * 100.0
            ));
        }
        if r.total_ns as f64 / 1e9 >= p.total_s {
            notes.push("slower than published".into());
        }
        if p.wire_bytes.is_some_and(|w| r.wire_bytes >= w) {
            notes.push("more bytes than published".into());
        }
        if r.downtime_ns.is_none_or(|d| d > 300_000_000) {
            notes.push("downtime over 300 ms".into());
        }
        notes.join("; ")
    }

    /// Prints the row: a table line or a JSON line.
    pub fn print(&self, json: bool) {
        println!("{}", self.line(json));
    }

    /// The row: a table line or a JSON line.
    fn line(&self, json: bool) -> String {
        let s = &self.scenario;
        let p = &s.published;
        let r = match &self.report {
            Ok(r) => r,
            Err(e) => {
                return if json {
                    serde_json::json!({"kind": "scenario", "scenario": s.name, "error": e})
                        .to_string()
                } else {
                    format!("{:<30} failed to simulate: {e}", s.name)
                };
            }
        };
        let total_s = r.total_ns as f64 / 1e9;
        let wire_ratio = p.wire_bytes.map(|w| r.wire_bytes as f64 / w as f64);
        let our_bps = r.wire_bytes as f64 * 8.0 / total_s.max(1e-9);
        let downtime_ms = r.downtime_ns.map(|d| d as f64 / 1e6);
        if json {
            let round = |v: f64, digits: i32| {
                let scale = 10f64.powi(digits);
                (v * scale).round() / scale
            };
            serde_json::json!({
                "kind": "scenario",
                "scenario": s.name,
                "source": p.source,
                "published_total_s": p.total_s,
                "total_s": round(total_s, 3),
                "total_ratio": round(total_s / p.total_s, 3),
                "published_wire_bytes": p.wire_bytes,
                "wire_bytes": r.wire_bytes,
                "wire_ratio": wire_ratio.map(|v| round(v, 3)),
                "memory_bytes": s.memory_bytes,
                "wire_over_memory": round(r.wire_bytes as f64 / s.memory_bytes as f64, 3),
                "downtime_ms": downtime_ms.map(|v| round(v, 1)),
                "rounds": r.rounds,
                "throttle_round": r.throttle_round,
                "published_link_bits_per_sec": p.link_bits_per_sec.map(f64::round),
                "link_bits_per_sec": our_bps.round(),
                "zero_page_share": round(self.zero_share(r), 3),
                "verified": r.verified(),
                "workload": s.workload.to_string(),
                "link_line_rate_bytes_per_sec": s.link.bytes_per_sec,
                "note": self.note(r),
                "sim_wall_s": round(self.wall_s, 2),
            })
            .to_string()
        } else {
            let gb = |b: u64| format!("{:.1}", b as f64 / 1e9);
            format!(
                "{:<30} {:>8.2} {:>8.2} {:>6.2} {:>8} {:>8} {:>6} {:>6.2} {:>9} {:>6} {:>6.1}  {}",
                s.name,
                p.total_s,
                total_s,
                total_s / p.total_s,
                p.wire_bytes.map_or("-".to_string(), gb),
                gb(r.wire_bytes),
                wire_ratio.map_or("-".to_string(), |x| format!("{x:.2}")),
                r.wire_bytes as f64 / s.memory_bytes as f64,
                downtime_ms.map_or("-".to_string(), |d| format!("{d:.1}")),
                r.rounds,
                self.wall_s,
                self.note(r)
            )
        }
    }
}

/// Prints the table's header (nothing in JSON mode).
pub fn print_header(json: bool) {
    if !json {
        println!(
            "{:<30} {:>8} {:>8} {:>6} {:>8} {:>8} {:>6} {:>6} {:>9} {:>6} {:>6}  note",
            "scenario",
            "pub. s",
            "ours s",
            "ratio",
            "pub. GB",
            "ours GB",
            "ratio",
            "x mem",
            "down. ms",
            "rounds",
            "wall s"
        );
    }
}

/// Runs the scenarios `name` selects (in parallel, rows printed in order as they
/// finish in order) with `cpu`'s costs; Ok(true) when every row verified.
pub fn run(name: &str, cpu: CpuModel, json: bool) -> Result<bool, String> {
    let scenarios = select(name)?;
    let bar = crate::sim::Printer::new(json, true, !json);
    let n = scenarios.len();
    if !json {
        println!(
            "precopy sim --scenario {name}: {n} published migration(s), simulated with our defaults (2 streams, 300 ms downtime limit, LZ4 auto, fixed CPU costs unless --cpu calibrate); GB = 1e9 bytes"
        );
    }
    print_header(json);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let rows: Vec<Row> = scenarios
        .into_par_iter()
        .map(|scenario| {
            let start = Instant::now();
            let report = simulate(&scenario.config(cpu), &mut ()).map_err(|e| e.to_string());
            let finished = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            bar.set_status(finished as u64, n as u64, &scenario.name);
            Row {
                scenario,
                report,
                wall_s: start.elapsed().as_secs_f64(),
            }
        })
        .collect();
    bar.finish();
    let mut all_ok = true;
    for row in &rows {
        row.print(json);
        all_ok &= row.report.as_ref().is_ok_and(|r| r.verified());
    }
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use precopy::sim::scenarios::select;
    use precopy::sim::DestCheck;

    fn row(name: &str, total_ns: u64, wire_bytes: u64, zero_pages: u64) -> Row {
        let scenario = select(name).unwrap().remove(0);
        let mut codecs = precopy::codec::CodecStats::default();
        let mut stats =
            precopy::codec::PageEncoder::new(precopy::codec::EncoderConfig::new(4096)).unwrap();
        stats.zero_run(0, zero_pages);
        codecs.add(stats.stats());
        let round = precopy::engine::StreamsRound {
            outcome: precopy::schedule::RoundOutcome {
                stats: precopy::schedule::RoundStats {
                    round: 1,
                    pages_sent: 0,
                    wire_bytes: 0,
                    dirty_pages: 0,
                    pending_pages: 0,
                    duration_ns: 1,
                    bandwidth_bytes_per_sec: 0.0,
                    dirty_pages_per_sec: 0.0,
                    predicted_downtime_ns: 0,
                    downtime_limit_ns: 0,
                    throttle_percent: 0,
                },
                decision: precopy::schedule::Decision::Continue {
                    throttle_percent: 0,
                },
            },
            codecs,
            deferred_pages: 0,
            lz4_streams: 0,
        };
        let report = SimReport {
            rounds: 3,
            total_ns,
            downtime_ns: Some(2_500_000),
            wire_bytes,
            memory_bytes: scenario.memory_bytes,
            rows: vec![round],
            check: DestCheck {
                pages: 1,
                ..DestCheck::default()
            },
            ..SimReport::default()
        };
        Row {
            scenario,
            report: Ok(report),
            wall_s: 1.0,
        }
    }

    #[test]
    fn a_row_names_the_published_figures_and_the_zero_page_win() {
        let r = row("hyperv-4g-idle-1gbe", 4_000_000_000, 500_000_000, 786_432);
        let json = r.line(true);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let expected = serde_json::json!({
            "scenario": "hyperv-4g-idle-1gbe",
            "published_total_s": 40.0,
            "total_s": 4.0,
            "total_ratio": 0.1,
            "published_wire_bytes": null,
            "wire_bytes": 500000000u64,
            "memory_bytes": 4294967296u64,
            "downtime_ms": 2.5,
            "rounds": 3,
            "zero_page_share": 0.75,
        });
        for (key, want) in expected.as_object().unwrap() {
            assert_eq!(&v[key], want, "{key} in {json}");
        }
        assert!(
            v["note"]
                .as_str()
                .unwrap()
                .contains("won on zero pages: 75%"),
            "{json}"
        );
        let v = row(
            "vmotion-16g-continuous-10gbe",
            50_000_000_000,
            50_000_000_000,
            0,
        );
        let json = v.line(true);
        assert!(
            json.contains("\"published_wire_bytes\":41072500000"),
            "{json}"
        );
        assert!(json.contains("\"wire_ratio\":1.217"), "{json}");
        let text = v.line(false);
        assert!(
            text.contains("slower than published") && text.contains("more bytes"),
            "{text}"
        );
        assert!(!text.contains("zero pages"), "{text}");
    }
}
