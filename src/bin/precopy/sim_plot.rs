//! `--plot FILE.svg`: SVG charts of a simulated run (per round) or a sweep (per
//! ratio), with plotters' SVG backend.

use std::path::Path;

use plotters::prelude::*;
use precopy::sim::{SimConfig, SimReport};

use crate::sim_sweep::Point;

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One panel: `series` (x, y) as a line with points, titled `title`, y from 0.
fn panel(
    area: &Panel<'_>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(f64, f64)],
    color: RGBColor,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<std::io::Error>| format!("--plot: {e}");
    let (x0, x1) = series
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &(x, _)| (a.min(x), b.max(x)));
    let (x0, x1) = if x0 < x1 {
        (x0, x1)
    } else {
        (x0 - 1.0, x0 + 1.0)
    };
    let y1 = series.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(e)?;
    chart
        .draw_series(LineSeries::new(series.iter().copied(), &color))
        .map_err(e)?;
    chart
        .draw_series(series.iter().map(|&p| Circle::new(p, 3, color.filled())))
        .map_err(e)?;
    Ok(())
}

/// Dirty pages and bytes on the wire per round of one run.
pub fn rounds(path: &Path, r: &SimReport, config: &SimConfig) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| format!("--plot: {e}"))?;
    let areas = root.split_evenly((2, 1));
    let mut dirty: Vec<(f64, f64)> = r
        .rows
        .iter()
        .map(|s| {
            (
                f64::from(s.outcome.stats.round),
                s.outcome.stats.dirty_pages as f64,
            )
        })
        .collect();
    let mut bytes: Vec<(f64, f64)> = r
        .rows
        .iter()
        .map(|s| {
            (
                f64::from(s.outcome.stats.round),
                s.outcome.stats.wire_bytes as f64 / 1e6,
            )
        })
        .collect();
    if let Some(f) = r.final_round {
        dirty.push((f64::from(f.round), f.pages_sent as f64));
        bytes.push((f64::from(f.round), f.wire_bytes as f64 / 1e6));
    }
    let what = format!(
        "{} MiB, {}, {} Mbit/s",
        config.memory_bytes >> 20,
        config.workload,
        config.link.bytes_per_sec * 8 / 1_000_000
    );
    panel(
        &areas[0],
        &format!("dirty pages per round ({what})"),
        "round (the last: guest paused)",
        "pages",
        &dirty,
        BLUE,
    )?;
    panel(
        &areas[1],
        "bytes on the wire per round",
        "round",
        "MB",
        &bytes,
        RED,
    )?;
    root.present()
        .map_err(|e| format!("--plot {}: {e}", path.display()))
}

/// Total time, downtime and bytes against the ratio of a sweep.
pub fn sweep(path: &Path, points: &[Point], config: &SimConfig, zero: bool) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| format!("--plot: {e}"))?;
    let areas = root.split_evenly((3, 1));
    let ok: Vec<(f64, &SimReport)> = points
        .iter()
        .filter_map(|p| p.report.as_ref().ok().map(|r| (p.ratio, r)))
        .collect();
    let series = |f: &dyn Fn(&SimReport) -> f64| -> Vec<(f64, f64)> {
        ok.iter().map(|&(x, r)| (x, f(r))).collect()
    };
    let x = if zero {
        "zero fraction of memory"
    } else {
        "dirty rate / link goodput"
    };
    let what = format!(
        "{} MiB, {} Mbit/s",
        config.memory_bytes >> 20,
        config.link.bytes_per_sec * 8 / 1_000_000
    );
    panel(
        &areas[0],
        &format!("total time ({what})"),
        x,
        "s",
        &series(&|r| r.total_ns as f64 / 1e9),
        BLUE,
    )?;
    panel(
        &areas[1],
        "downtime",
        x,
        "ms",
        &series(&|r| r.downtime_ns.unwrap_or(0) as f64 / 1e6),
        RED,
    )?;
    panel(
        &areas[2],
        "bytes on the wire / memory",
        x,
        "x memory",
        &series(&|r| r.wire_bytes as f64 / r.memory_bytes.max(1) as f64),
        GREEN,
    )?;
    root.present()
        .map_err(|e| format!("--plot {}: {e}", path.display()))
}
