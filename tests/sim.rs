//! The simulator: deterministic, the destination checked against the source page by
//! page, a planted lost write caught, throttling slowing the virtual writers. Small
//! guests: each run takes well under a second.

use precopy::schedule::Policy;
use precopy::sim::{simulate, Content, LinkModel, SimConfig, SimReport};

fn config(memory: u64, workload: &str, link: &str) -> SimConfig {
    SimConfig::new(
        memory,
        workload.parse().unwrap(),
        LinkModel::preset(link).unwrap(),
    )
}

fn run(c: &SimConfig) -> SimReport {
    simulate(c, &mut ()).unwrap()
}

#[test]
fn the_same_configuration_gives_the_same_migration() {
    let c = config(64 << 20, "hotspot:rate=20k,skew=1.1", "1gbe");
    let (a, b) = (run(&c), run(&c));
    assert!(a.verified(), "{a:?}");
    assert_eq!(
        (a.rounds, a.total_ns, a.downtime_ns, a.wire_bytes, a.writes),
        (b.rounds, b.total_ns, b.downtime_ns, b.wire_bytes, b.writes)
    );
    assert_eq!(a.digests, b.digests);
    assert_eq!(a.rows, b.rows);
}

#[test]
fn every_workload_ends_with_the_destination_equal_to_the_source() {
    for (workload, streams) in [
        ("idle:rate=1k,zero=0.5", 1),
        ("once:rate=20k", 2),
        ("continuous:rate=30k,set=all", 3),
        ("fill:rate=10k,set=8M", 2),
        ("hotspot:rate=50k", 2),
        ("oltp:rate=40k,pool=16M,log=4M", 4),
    ] {
        let mut c = config(48 << 20, workload, "1gbe");
        c.streams = streams;
        let r = run(&c);
        assert!(r.verified(), "{workload}: {:?} {:?}", r.error, r.check);
        assert_eq!(r.check.pages, 48 << 8);
        // (A once guest's memory is all zero: its bulk round takes no time, and the
        // migration ends before the first write.)
        assert!(
            r.writes > 0 || workload.starts_with("once"),
            "{workload}: no writes"
        );
        assert!(r.rounds >= 2, "{workload}: {} rounds", r.rounds);
        // Bytes and time follow from the link: no faster than its goodput.
        let fastest = r.wire_bytes as f64 / c.link.goodput() * 1e9;
        assert!(r.total_ns as f64 >= fastest, "{workload}: {r:?}");
    }
}

#[test]
fn a_lost_write_is_caught_by_the_final_comparison() {
    let mut c = config(32 << 20, "continuous:rate=5k,set=4M", "10gbe");
    c.lost_write = true;
    let r = run(&c);
    // The engines and appliers agree (the digests fold what was sent) ...
    assert!(r.error.is_none(), "{:?}", r.error);
    // ... but the destination holds a stale copy of the last page.
    assert!(!r.verified());
    assert_eq!(r.check.differing, 1);
    assert_eq!(r.check.first, [(32 << 8) - 1]);
}

#[test]
fn throttling_slows_the_virtual_writers() {
    // Dirtying faster than 1 GbE carries: the scheduler throttles the guest.
    let mut c = config(64 << 20, "continuous:rate=60k,set=all", "1gbe");
    // Pages that compress less than the demo's (which 1 GbE carries at this rate).
    c.content = Content::Mix;
    c.policy = Policy {
        max_rounds: 60,
        downtime_limit_ns: 50_000_000,
        ..Policy::default()
    };
    let r = run(&c);
    assert!(r.verified(), "{:?}", r.error);
    let t = r.throttle_round.expect("the guest was throttled");
    assert!(t >= 2, "{t}");
    let throttled: Vec<u8> = r
        .rows
        .iter()
        .map(|s| s.outcome.stats.throttle_percent)
        .collect();
    assert!(throttled.iter().any(|&p| p > 0), "{throttled:?}");
    // Fewer writes than the unthrottled rate over the live time.
    let live_s = (r.total_ns - r.downtime_ns.unwrap()) as f64 / 1e9;
    assert!(
        (r.writes as f64) < 60_000.0 * live_s * 0.95,
        "{} writes in {live_s} s",
        r.writes
    );
    // Without throttle advice the same guest writes at its full rate throughout.
    c.policy.throttle = None;
    let r = run(&c);
    assert!(r.verified(), "{:?}", r.error);
    assert_eq!(r.throttle_round, None);
    let live_s = (r.total_ns - r.downtime_ns.unwrap()) as f64 / 1e9;
    let rate = r.writes as f64 / live_s;
    assert!(
        (rate - 60_000.0).abs() < 600.0,
        "{rate} writes/s unthrottled"
    );
}

/// As the runtime does, the simulator counts at each round's barrier the pages the
/// guest dirtied since the streams harvested (their bytes were still queued on the
/// link): the prediction of a pause counts them.
#[test]
fn pages_dirtied_after_the_harvests_are_counted_at_the_barrier() {
    let c = config(64 << 20, "continuous:rate=50k,set=all", "1gbe");
    let r = run(&c);
    assert!(r.verified(), "{:?}", r.error);
    let pending: Vec<u64> = r
        .rows
        .iter()
        .map(|s| s.outcome.stats.pending_pages)
        .collect();
    assert!(pending.iter().any(|&p| p > 0), "{pending:?}");
}
