//! `precopy sim` through the real binary: the demo's table and JSON, a planted lost
//! write failing the run, scenarios named, a sweep with its plot. Small guests.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_precopy");

fn sim(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("sim")
        .args(args)
        .output()
        .expect("run precopy sim");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SMALL: [&str; 8] = [
    "--memory",
    "32M",
    "--link",
    "1gbe",
    "--cpu",
    "fixed",
    "--workload",
    "continuous:rate=20k,set=8M",
];

#[test]
fn sim_prints_the_demos_table_and_summary() {
    let (ok, out, err) = sim(&SMALL);
    assert!(ok, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[1].starts_with("round     dirty     zero    delta"),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.trim_start().starts_with("1 ")),
        "{out}"
    );
    assert!(out.contains("verified: yes"), "{out}");
    assert!(
        out.contains("destination check: all 8192 pages equal"),
        "{out}"
    );
    let (ok, json, _) = sim(&[&SMALL[..], &["--json"]].concat());
    assert!(ok);
    let rounds = json
        .lines()
        .filter(|l| l.contains("\"kind\":\"round\""))
        .count();
    let summary = json.lines().last().unwrap();
    assert!(rounds >= 2, "{json}");
    assert!(
        summary.contains("\"kind\":\"summary\",\"verified\":true"),
        "{summary}"
    );
    assert!(summary.contains("\"simulated\":true"), "{summary}");
    assert!(summary.contains("\"memory_bytes\":33554432"), "{summary}");
}

#[test]
fn a_lost_write_fails_the_simulated_migration() {
    let (ok, out, err) = sim(&[&SMALL[..], &["--inject-lost-write", "--json"]].concat());
    assert!(!ok, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("did not verify"), "{err}");
    let summary = out.lines().last().unwrap();
    assert!(
        summary.contains("\"destination_differing_pages\":1"),
        "{summary}"
    );
    assert!(
        summary.contains("\"source_check\":\"mismatch\""),
        "{summary}"
    );
}

#[test]
fn unknown_scenarios_and_bad_workloads_are_named() {
    let (ok, _, err) = sim(&["--scenario", "hyperv-3g-idle-1gbe"]);
    assert!(!ok);
    assert!(
        err.contains("unknown scenario") && err.contains("vmotion-16g-once-10gbe"),
        "{err}"
    );
    let (ok, _, err) = sim(&["--workload", "busy"]);
    assert!(!ok);
    assert!(err.contains("unknown workload 'busy'"), "{err}");
}

#[test]
fn a_sweep_prints_each_point_and_plots() {
    let svg = std::env::temp_dir().join(format!("precopy-sweep-{}.svg", std::process::id()));
    let svg_s = svg.to_str().unwrap();
    let (ok, out, err) = sim(&[
        "sweep",
        "--memory",
        "16M",
        "--link",
        "1gbe",
        "--cpu",
        "fixed",
        "--workload",
        "hotspot",
        "--points",
        "3",
        "--json",
        "--plot",
        svg_s,
    ]);
    assert!(ok, "{out}\n{err}");
    let points: Vec<&str> = out.lines().filter(|l| l.contains("sweep_point")).collect();
    assert_eq!(points.len(), 3, "{out}");
    let ratio = |line: &str| -> f64 {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["ratio"].as_f64().unwrap()
    };
    assert_eq!((ratio(points[0]), ratio(points[2])), (0.1, 1.5), "{out}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.contains("downtime"),
        "{plot:.200}"
    );
    let _ = std::fs::remove_file(&svg);
    // The idle guest's zero fraction as the unknown.
    let (ok, out, err) = sim(&[
        "sweep",
        "--over",
        "zero",
        "--from",
        "0.5",
        "--to",
        "1",
        "--points",
        "2",
        "--memory",
        "16M",
        "--workload",
        "idle",
        "--json",
    ]);
    assert!(ok, "{out}\n{err}");
    let points: Vec<&str> = out.lines().filter(|l| l.contains("sweep_point")).collect();
    let field = |line: &str, key: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v[key].clone()
    };
    assert_eq!(field(points[0], "zero").as_f64(), Some(0.5), "{out}");
    assert_eq!(field(points[1], "zero").as_f64(), Some(1.0), "{out}");
    let bytes = |l: &str| field(l, "wire_bytes").as_u64().unwrap();
    assert!(bytes(points[0]) > 100 * bytes(points[1]), "{out}");
    let (ok, _, err) = sim(&[
        "sweep",
        "--over",
        "zero",
        "--from",
        "0",
        "--to",
        "1",
        "--workload",
        "hotspot",
    ]);
    assert!(!ok && err.contains("idle guest's zero fraction"), "{err}");
}
