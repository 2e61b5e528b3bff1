//! Timing and output helpers shared by the benchmark suites.

use std::time::{Duration, Instant};

/// Runs `setup` then `f`, `reps` times after one warm-up, timing only `f`, and returns
/// the fastest run: the least disturbed by the rest of a noisy machine.
pub fn best_of_with_setup<S, T>(
    reps: usize,
    mut setup: impl FnMut() -> S,
    mut f: impl FnMut(S) -> T,
) -> Duration {
    let s = setup();
    std::hint::black_box(f(s));
    // Invariant: reps.max(1) runs, so min() has a value.
    (0..reps.max(1))
        .map(|_| {
            let s = setup();
            let t = Instant::now();
            std::hint::black_box(f(s));
            t.elapsed()
        })
        .min()
        .expect("at least one repetition")
}

/// One benchmark case: ours against a peer measured in the same run.
#[derive(Debug)]
pub struct CaseResult {
    /// Case name.
    pub case: &'static str,
    /// Our time for the whole case.
    pub ours: Duration,
    /// The peer's name.
    pub peer: &'static str,
    /// The peer's time for the whole case.
    pub peer_time: Duration,
}

impl CaseResult {
    /// Prints one line: JSON (`{"case":..,"ours_ns":..,"peer":..,"peer_ns":..}`) or text.
    pub fn print(&self, json: bool) {
        let (ours, peer) = (self.ours.as_nanos(), self.peer_time.as_nanos());
        if json {
            println!(
                "{{\"case\": \"{}\", \"ours_ns\": {ours}, \"peer\": \"{}\", \"peer_ns\": {peer}}}",
                self.case, self.peer
            );
        } else {
            let speedup = peer as f64 / ours.max(1) as f64;
            println!(
                "{:<16} ours {:>12}  {} {:>12}  speedup {:>6.2}x",
                self.case,
                fmt_ns(ours),
                self.peer,
                fmt_ns(peer),
                speedup
            );
        }
    }
}

/// Nanoseconds in the unit that keeps 3-4 significant digits.
pub fn fmt_ns(ns: u128) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} us", ns as f64 / 1e3),
        10_000_000..=9_999_999_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}
