//! The round scheduler under generated rate sequences: it never switches over on the
//! downtime rule with a prediction above the limit, it always ends within the policy's
//! bounds, and its throttling advice only escalates, within the configured maximum.
//! Under a stationary guest, the shrink rule (keep iterating while rounds shrink the
//! dirty set) never ends a migration the plain downtime rule would have switched over,
//! and never makes its final round larger.

use precopy::schedule::{
    Decision, DowntimeRamp, OnLimit, Policy, RoundMeasurement, ScheduleError, Scheduler, Shrink,
    SwitchReason, Throttle,
};
use proptest::prelude::*;

const PAGE: u64 = 4096;

fn policy() -> impl Strategy<Value = Policy> {
    (
        1u64..2_000, // downtime limit, ms
        0u64..50,    // non-memory downtime, ms
        1u32..40,    // max rounds
        prop::option::of(1.0f64..5.0),
        any::<bool>(),                                        // on limit: switch over?
        any::<bool>(),                                        // throttle on?
        prop::option::of((1u32..10, 1u64..500, 0u64..5_000)), // ramp
        prop::option::of(1u64..20_000_000_000),               // switchover bandwidth override
        0u64..100,                                            // switch below pages
        0u32..5,                                              // min rounds
        prop::option::of(shrink()),
    )
        .prop_map(
            |(
                limit_ms,
                extra_ms,
                max_rounds,
                ratio,
                switch,
                throttle,
                ramp,
                sw_bw,
                below,
                min_rounds,
                shrink,
            )| {
                // The allowance stays under the limit (a policy where it does not is
                // refused, see presets_validate_and_bad_policies_are_named).
                let limit = (limit_ms + extra_ms) * 1_000_000;
                Policy {
                    downtime_limit_ns: limit,
                    non_memory_downtime_ns: extra_ms * 1_000_000,
                    max_rounds,
                    max_bytes_ratio: ratio,
                    on_limit: if switch {
                        OnLimit::SwitchOver
                    } else {
                        OnLimit::Fail
                    },
                    throttle: throttle.then(Throttle::default),
                    ramp: ramp.map(|(after, step_ms, extra_max_ms)| DowntimeRamp {
                        after_rounds: after,
                        step_ns: step_ms * 1_000_000,
                        max_ns: limit + extra_max_ms * 1_000_000,
                    }),
                    switchover_bandwidth: sw_bw,
                    switch_below_pages: below,
                    min_rounds,
                    shrink,
                    ..Policy::default()
                }
            },
        )
}

fn shrink() -> impl Strategy<Value = Shrink> {
    (
        0.001f64..0.99,
        0.01f64..0.99,
        1.0f64..3.0,
        1u32..12,
        0.01f64..3.0,
    )
        .prop_map(
            |(target_fraction, min_shrink, headroom, max_extra_rounds, max_extra_bytes_ratio)| {
                Shrink {
                    target_fraction,
                    min_shrink,
                    headroom,
                    max_extra_rounds,
                    max_extra_bytes_ratio,
                }
            },
        )
}

/// One round of the environment: link bytes/s, dirty share of the guest in 1/10000,
/// wire bytes per page.
fn rounds() -> impl Strategy<Value = Vec<(u64, u64, u64, u64)>> {
    prop::collection::vec(
        (
            1_000_000u64..12_500_000_000,
            0u64..10_000,
            16u64..4200,
            prop_oneof![Just(0u64), 0u64..5_000],
        ),
        1..50,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(2000)))]

    #[test]
    fn decisions_respect_the_policy(policy in policy(), env in rounds(), total_pages in 1u64..2_000_000) {
        let mut s = Scheduler::new(policy, total_pages, PAGE, 1_000).unwrap();
        let mut now = 1_000u64;
        let mut to_send = total_pages;
        let mut last_throttle = 0u8;
        let mut sent_bytes = 0u64;
        let mut ended = false;
        let mut prev_dirty: Option<u64> = None;
        // Rounds the shrink rule ran since it first kept a switchable migration going.
        let mut shrink_start: Option<u32> = None;
        let mut shrink_over = false;
        for i in 0..policy.max_rounds as usize {
            let (bw, dirty_share, bpp, pending_share) = env[i % env.len()];
            let wire = to_send * bpp;
            sent_bytes += wire;
            now += (wire as u128 * 1_000_000_000 / bw as u128).max(1) as u64;
            // Throttling slows the guest, as the VMM would apply it.
            let dirty = total_pages * dirty_share / 10_000 * u64::from(100 - last_throttle) / 100;
            // Pages dirtied after the harvest, counted at the barrier: a pause sends them.
            let pending = total_pages * pending_share / 10_000;
            let final_pages = dirty + pending;
            let m = RoundMeasurement { now_ns: now, pages_sent: to_send, wire_bytes: wire, dirty_pages: dirty, pending_pages: pending };
            // The same round without its pending pages predicts less (they cost time).
            let without = s.clone().round_done(RoundMeasurement { pending_pages: 0, ..m }).stats;
            let out = s.round_done(m);
            let st = out.stats;
            if st.predicted_downtime_ns < u64::MAX && pending > 0 {
                prop_assert!(without.predicted_downtime_ns < st.predicted_downtime_ns, "pending pages not predicted");
            } else {
                prop_assert!(without.predicted_downtime_ns <= st.predicted_downtime_ns);
            }
            prop_assert_eq!(without.dirty_pages_per_sec, st.dirty_pages_per_sec, "pending pages counted in the rate");
            prop_assert_eq!(st.round as usize, i + 1);
            prop_assert_eq!((st.dirty_pages, st.pending_pages), (dirty, pending));
            prop_assert!(st.downtime_limit_ns >= policy.downtime_limit_ns);
            if let Some(r) = policy.ramp { prop_assert!(st.downtime_limit_ns <= r.max_ns); }
            else { prop_assert_eq!(st.downtime_limit_ns, policy.downtime_limit_ns); }
            prop_assert!(st.predicted_downtime_ns >= policy.non_memory_downtime_ns);
            match out.decision {
                Decision::Continue { throttle_percent } => {
                    prop_assert!(throttle_percent >= last_throttle, "throttle went down");
                    match policy.throttle {
                        Some(t) => prop_assert!(throttle_percent <= t.max_percent),
                        None => prop_assert_eq!(throttle_percent, 0),
                    }
                    // Only too long a prediction, the minimum rounds, or a round that
                    // shrank the dirty set enough (the shrink rule) keep it going.
                    let early = st.round < policy.min_rounds.min(policy.max_rounds) && final_pages > 0;
                    if st.predicted_downtime_ns <= st.downtime_limit_ns && !early {
                        let sh = policy.shrink;
                        prop_assert!(sh.is_some(), "continued within the limit without shrink");
                        let sh = sh.unwrap();
                        let (pred, limit) = (st.predicted_downtime_ns as f64, st.downtime_limit_ns as f64);
                        prop_assert!(!shrink_over, "shrank again after a round above the limit");
                        let fixed = policy.non_memory_downtime_ns as f64;
                        prop_assert!(pred - fixed > sh.target_fraction * limit, "shrinking below the target");
                        let next = fixed + (pred - fixed) * final_pages as f64 / prev_dirty.unwrap_or(0) as f64;
                        prop_assert!(next * sh.headroom <= limit * (1.0 + 1e-9), "shrinking without headroom");
                        let prev = prev_dirty.unwrap_or(0) as f64;
                        prop_assert!(final_pages as f64 <= (1.0 - sh.min_shrink) * prev, "shrinking while the set did not shrink");
                        let start = *shrink_start.get_or_insert(st.round);
                        prop_assert!(st.round - start < sh.max_extra_rounds, "too many extra rounds");
                        prop_assert!(st.round + 1 < policy.max_rounds, "shrinking into the round bound");
                    } else if st.predicted_downtime_ns > st.downtime_limit_ns && shrink_start.is_some() {
                        shrink_over = true;
                    }
                    last_throttle = throttle_percent;
                    to_send = dirty;
                    prev_dirty = Some(final_pages);
                }
                Decision::SwitchOver { predicted_downtime_ns, reason } => {
                    prop_assert_eq!(predicted_downtime_ns, st.predicted_downtime_ns);
                    match reason {
                        SwitchReason::DowntimeMet => prop_assert!(predicted_downtime_ns <= st.downtime_limit_ns),
                        SwitchReason::FewDirtyPages => prop_assert!(final_pages <= policy.switch_below_pages),
                        SwitchReason::BoundReached => {
                            prop_assert_eq!(policy.on_limit, OnLimit::SwitchOver);
                            prop_assert!(predicted_downtime_ns > st.downtime_limit_ns);
                        }
                    }
                    ended = true;
                    break;
                }
                Decision::Fail(e) => {
                    prop_assert_eq!(policy.on_limit, OnLimit::Fail);
                    // "Not converging" with a prediction within the limit would be a lie.
                    prop_assert!(st.predicted_downtime_ns > st.downtime_limit_ns);
                    let bound_hit = st.round >= policy.max_rounds
                        || policy.max_bytes_ratio.is_some_and(|r| sent_bytes as f64 >= r * (total_pages * PAGE) as f64);
                    prop_assert!(bound_hit, "failed before any bound");
                    let is_not_converging = matches!(e, ScheduleError::NotConverging { .. });
                    prop_assert!(is_not_converging);
                    ended = true;
                    break;
                }
            }
        }
        prop_assert!(ended, "no decision within max_rounds = {}", policy.max_rounds);
    }
}

fn measure(s: &mut Scheduler, now: u64, pages: u64, wire: u64, dirty: u64) -> Decision {
    s.round_done(RoundMeasurement {
        now_ns: now,
        pages_sent: pages,
        wire_bytes: wire,
        dirty_pages: dirty,
        pending_pages: 0,
    })
    .decision
}

#[test]
fn a_guest_that_outruns_the_link_is_throttled_then_fails_with_its_rates() {
    let policy = Policy {
        max_rounds: 6,
        ..Policy::default()
    };
    // 4 GiB guest; 1 Gbit/s link (125 MB/s); the guest re-dirties 100k pages per round.
    let pages = 1 << 20;
    let mut s = Scheduler::new(policy, pages, PAGE, 0).unwrap();
    let mut now = 0;
    let mut advice = Vec::new();
    let mut to_send = pages;
    let decision = loop {
        let wire = to_send * PAGE;
        now += wire * 8; // 1 Gbit/s: 8 ns per byte
        match measure(&mut s, now, to_send, wire, 100_000) {
            Decision::Continue { throttle_percent } => advice.push(throttle_percent),
            other => break other,
        }
        to_send = 100_000;
    };
    // Rounds 1..5 continue; the dirty rate exceeds half the bandwidth from round 2 on,
    // so throttling starts at round 3 (two rounds in a row) and escalates by 10.
    assert_eq!(advice, [0, 0, 20, 30, 40]);
    let Decision::Fail(e) = decision else {
        panic!("expected a failure, got {decision:?}")
    };
    let msg = e.to_string();
    assert!(
        msg.contains("not converging") && msg.contains("round limit"),
        "{msg}"
    );
    assert!(msg.contains("pages/s") && msg.contains("MB/s"), "{msg}");
}

#[test]
fn ramp_override_and_cap_change_the_verdict() {
    let pages = 1 << 18; // 1 GiB
                         // 500 MB of dirty pages per round over a 1.25 GB/s link: 400 ms > 300 ms.
    let dirty = 500_000_000 / PAGE;
    let run = |policy: Policy| {
        let mut s = Scheduler::new(policy, pages, PAGE, 0).unwrap();
        let mut now = 0;
        let mut to_send = pages;
        for _ in 0..10 {
            now += to_send * PAGE * 4 / 5; // 1.25 GB/s
            let d = measure(&mut s, now, to_send, to_send * PAGE, dirty);
            if !matches!(d, Decision::Continue { .. }) {
                return (s.rounds(), d);
            }
            to_send = dirty;
        }
        (
            s.rounds(),
            Decision::Continue {
                throttle_percent: 0,
            },
        )
    };
    let base = Policy {
        throttle: None,
        max_rounds: 10,
        max_bytes_ratio: None,
        ..Policy::default()
    };
    assert!(matches!(run(base).1, Decision::Fail(_)));

    let ramped = Policy {
        ramp: Some(DowntimeRamp {
            after_rounds: 3,
            step_ns: 50_000_000,
            max_ns: 1_000_000_000,
        }),
        ..base
    };
    // 300 ms + 2 * 50 ms = 400 ms, + 10 ms allowance: switches over at round 5 (limit
    // 400 ms is not enough for 410 ms predicted; 450 ms at round 6 is).
    let (rounds, d) = run(ramped);
    assert_eq!(rounds, 6);
    assert!(matches!(
        d,
        Decision::SwitchOver {
            reason: SwitchReason::DowntimeMet,
            ..
        }
    ));

    // Told the switchover link is 4x faster (a dedicated link for the final round):
    // done after the one iterative round the default policy asks for.
    let faster = Policy {
        switchover_bandwidth: Some(5_000_000_000),
        ..base
    };
    assert_eq!(run(faster).0, 2);
    assert_eq!(
        run(Policy {
            min_rounds: 1,
            ..faster
        })
        .0,
        1
    );

    // A cap below the measurement makes the prediction worse, never better.
    let capped = Policy {
        switchover_bandwidth: None,
        bandwidth_cap: Some(100_000_000),
        ..faster
    };
    assert!(matches!(run(capped).1, Decision::Fail(_)));
}

#[test]
fn presets_validate_and_bad_policies_are_named() {
    for p in [
        Policy::default(),
        Policy::qemu(),
        Policy::xen(),
        Policy::xen_legacy(),
        Policy::cloud_hypervisor(60_000_000_000, true),
    ] {
        p.validate().unwrap();
    }
    let bad = Policy {
        downtime_limit_ns: 0,
        ..Policy::default()
    };
    let err = Scheduler::new(bad, 1, PAGE, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "migration policy: downtime_limit_ns must be above zero"
    );
    assert!(Scheduler::new(Policy::default(), 0, PAGE, 0).is_err());
    let bad_throttle = Policy {
        throttle: Some(Throttle {
            initial_percent: 100,
            ..Throttle::default()
        }),
        ..Policy::default()
    };
    assert!(bad_throttle.validate().is_err());
    // A fixed allowance that alone reaches the limit could never switch over.
    let hopeless = Policy {
        non_memory_downtime_ns: 300_000_000,
        ..Policy::default()
    };
    let msg = hopeless.validate().unwrap_err().to_string();
    assert!(
        msg.contains("non_memory_downtime_ns") && msg.contains("raise the limit"),
        "{msg}"
    );
    let ramped = Policy {
        ramp: Some(DowntimeRamp {
            after_rounds: 5,
            step_ns: 100_000_000,
            max_ns: 1_000_000_000,
        }),
        ..hopeless
    };
    ramped.validate().unwrap();
}

#[test]
fn xen_switches_over_below_fifty_pages_and_reports_the_prediction() {
    let mut s = Scheduler::new(Policy::xen(), 1000, PAGE, 0).unwrap();
    assert!(matches!(
        measure(&mut s, 1_000_000, 1000, 1000 * PAGE, 40),
        Decision::SwitchOver {
            reason: SwitchReason::FewDirtyPages,
            ..
        }
    ));
    let report = s.finish(25_000_000);
    assert_eq!(report.predicted_ns, s.predicted_downtime_ns());
    assert!(report.ratio() > 0.0);
}

/// Regression (issue 15): the byte bound reached before `min_rounds` with a prediction
/// within the limit. The downtime promise is kept, so the reason is `DowntimeMet`, and
/// a policy that fails at bounds does not call such a migration "not converging".
#[test]
fn a_bound_before_min_rounds_within_the_limit_switches_over_on_the_downtime_rule() {
    for on_limit in [OnLimit::SwitchOver, OnLimit::Fail] {
        let policy = Policy {
            downtime_limit_ns: 221_000_000,
            max_rounds: 2,
            max_bytes_ratio: Some(1.0),
            on_limit,
            ..Policy::default()
        };
        let pages = 10_000;
        let mut s = Scheduler::new(policy, pages, PAGE, 1_000).unwrap();
        // The bulk round puts a full copy of memory on the wire: the byte bound.
        let wire = pages * PAGE;
        let out = s.round_done(RoundMeasurement {
            now_ns: 1_000 + wire,
            pages_sent: pages,
            wire_bytes: wire,
            dirty_pages: 1,
            pending_pages: 0,
        });
        assert!(out.stats.predicted_downtime_ns <= out.stats.downtime_limit_ns);
        assert_eq!(
            out.decision,
            Decision::SwitchOver {
                predicted_downtime_ns: out.stats.predicted_downtime_ns,
                reason: SwitchReason::DowntimeMet,
            },
            "{on_limit:?}"
        );
    }
}

/// What a stationary guest model ends in.
#[derive(Debug)]
struct Run {
    decision: Decision,
    rounds: u32,
    /// Pages dirty at the last decision (the final round's size).
    final_dirty: u64,
    live_bytes: u64,
}

/// A guest writing `rate` pages/s uniformly over `set` pages, a link of `bw` bytes/s,
/// `bpp` wire bytes per page and `overhead_ns` per round (harvest, barrier).
fn stationary(
    policy: Policy,
    total_pages: u64,
    (set, rate, bw, bpp, overhead_ns): (u64, u64, u64, u64, u64),
) -> Run {
    let mut s = Scheduler::new(policy, total_pages, PAGE, 0).unwrap();
    let (mut now, mut to_send, mut throttle, mut live_bytes) = (0u64, total_pages, 0u8, 0u64);
    loop {
        let wire = to_send * bpp;
        let round_ns = (wire as u128 * 1_000_000_000 / bw as u128) as u64 + overhead_ns;
        now += round_ns.max(1);
        live_bytes += wire;
        let writes = rate as f64 * f64::from(100 - throttle) / 100.0 * round_ns as f64 / 1e9;
        let dirty = (set as f64 * (1.0 - (-writes / set as f64).exp())).round() as u64;
        let out = s.round_done(RoundMeasurement {
            now_ns: now,
            pages_sent: to_send,
            wire_bytes: wire,
            dirty_pages: dirty,
            pending_pages: 0,
        });
        match out.decision {
            Decision::Continue { throttle_percent } => throttle = throttle_percent,
            decision => {
                return Run {
                    decision,
                    rounds: s.rounds(),
                    final_dirty: dirty,
                    live_bytes,
                }
            }
        }
        to_send = dirty;
    }
}

fn guest() -> impl Strategy<Value = (u64, (u64, u64, u64, u64, u64))> {
    (
        1_000u64..1_000_000,          // guest pages
        1u64..=100,                   // working set, percent of the guest
        0u64..2_000_000,              // writes, pages/s
        10_000_000u64..5_000_000_000, // link, bytes/s
        64u64..4200,                  // wire bytes per page
        0u64..5_000_000,              // per-round overhead, ns
    )
        .prop_map(|(pages, set_pct, rate, bw, bpp, overhead)| {
            (
                pages,
                ((pages * set_pct / 100).max(1), rate, bw, bpp, overhead),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(2000)))]

    /// The default shrink rule against the plain downtime rule, under a stationary
    /// guest: it switches over whenever the plain rule does, within the limit, with a
    /// final round no larger, within its extra-round and extra-byte budgets.
    #[test]
    fn shrinking_never_hurts_a_stationary_guest(
        (total_pages, g) in guest(),
        limit_ms in 20u64..1_000,
        throttle in any::<bool>(),
    ) {
        let sh = Shrink::default();
        let with = Policy {
            downtime_limit_ns: limit_ms * 1_000_000,
            throttle: throttle.then(Throttle::default),
            ..Policy::default()
        };
        let plain = Policy { shrink: None, ..with };
        let a = stationary(plain, total_pages, g);
        let b = stationary(with, total_pages, g);
        if let Decision::SwitchOver { reason, .. } = a.decision {
            prop_assert_eq!(reason, SwitchReason::DowntimeMet);
            let Decision::SwitchOver { predicted_downtime_ns, reason } = b.decision else {
                return Err(TestCaseError::fail(format!("plain {a:?}, shrink {b:?}")));
            };
            prop_assert_eq!(reason, SwitchReason::DowntimeMet);
            prop_assert!(predicted_downtime_ns <= with.downtime_limit_ns);
            prop_assert!(b.final_dirty <= a.final_dirty, "plain {:?}, shrink {:?}", a, b);
            prop_assert!(b.rounds <= a.rounds + sh.max_extra_rounds);
            let memory = (total_pages * PAGE) as f64;
            prop_assert!(b.live_bytes as f64 <= a.live_bytes as f64 + sh.max_extra_bytes_ratio * memory + 1.0);
        }
    }
}

#[test]
fn a_converging_guest_iterates_until_the_rounds_stop_shrinking() {
    // 1 GiB guest writing 200k pages/s over 256 MiB; 1 GB/s link, raw pages, 2 ms a
    // round: the plain rule switches over after round 2 with about 36k dirty pages.
    let g = (65_536, 200_000, 1_000_000_000, 4_116, 2_000_000);
    let plain = stationary(
        Policy {
            shrink: None,
            ..Policy::default()
        },
        1 << 18,
        g,
    );
    let shrunk = stationary(Policy::default(), 1 << 18, g);
    assert_eq!(plain.rounds, 2, "{plain:?}");
    assert!(shrunk.rounds > plain.rounds + 2, "{shrunk:?}");
    assert!(
        shrunk.final_dirty * 2 < plain.final_dirty,
        "plain {plain:?}, shrink {shrunk:?}"
    );
    let Decision::SwitchOver { reason, .. } = shrunk.decision else {
        panic!("{shrunk:?}")
    };
    assert_eq!(reason, SwitchReason::DowntimeMet);

    // Each bound of the rule ends it: one extra round at most, or a byte budget of a
    // fifth of memory (about 52k pages: the next round's 36k fit, the one after not).
    let one = Shrink {
        max_extra_rounds: 1,
        ..Shrink::default()
    };
    let r = stationary(
        Policy {
            shrink: Some(one),
            ..Policy::default()
        },
        1 << 18,
        g,
    );
    assert_eq!(r.rounds, plain.rounds + 1, "{r:?}");
    let bytes = Shrink {
        max_extra_bytes_ratio: 0.2,
        ..Shrink::default()
    };
    let r = stationary(
        Policy {
            shrink: Some(bytes),
            ..Policy::default()
        },
        1 << 18,
        g,
    );
    assert!(r.live_bytes <= plain.live_bytes + (1u64 << 30) / 5, "{r:?}");
    assert!(r.rounds > plain.rounds, "{r:?}");
    assert!(r.rounds < shrunk.rounds, "{r:?}");
}

#[test]
fn a_guest_that_stops_shrinking_or_is_under_the_target_switches_over_at_once() {
    // The working set is re-dirtied completely every round: no round shrinks it.
    let saturated = (65_536, 50_000_000, 1_000_000_000, 4_116, 2_000_000);
    let pol = Policy {
        downtime_limit_ns: 1_000_000_000,
        ..Policy::default()
    };
    let a = stationary(
        Policy {
            shrink: None,
            ..pol
        },
        1 << 18,
        saturated,
    );
    let b = stationary(pol, 1 << 18, saturated);
    assert_eq!((a.rounds, b.rounds), (2, 2), "{a:?} {b:?}");
    // A slow writer: the memory part of the first prediction after round 2 (about
    // 120 pages, 0.5 ms) is under the 0.6 ms target already.
    let slow = (65_536, 5_000, 1_000_000_000, 4_116, 2_000_000);
    let a = stationary(Policy::default(), 1 << 18, slow);
    assert_eq!(a.rounds, 2, "{a:?}");
}

#[test]
fn presets_keep_the_plain_rule() {
    for p in [
        Policy::qemu(),
        Policy::xen(),
        Policy::xen_legacy(),
        Policy::cloud_hypervisor(60_000_000_000, true),
    ] {
        assert_eq!(p.shrink, None);
    }
    assert_eq!(Policy::default().shrink, Some(Shrink::default()));
    let bad = Policy {
        shrink: Some(Shrink {
            min_shrink: 1.0,
            ..Shrink::default()
        }),
        ..Policy::default()
    };
    let msg = bad.validate().unwrap_err().to_string();
    assert!(msg.contains("shrink.min_shrink"), "{msg}");
}
