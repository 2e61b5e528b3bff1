//! The round scheduler under generated rate sequences: it never switches over on the
//! downtime rule with a prediction above the limit, it always ends within the policy's
//! bounds, and its throttling advice only escalates, within the configured maximum.

use precopy::schedule::{
    Decision, DowntimeRamp, OnLimit, Policy, RoundMeasurement, ScheduleError, Scheduler,
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
    )
        .prop_map(
            |(limit_ms, extra_ms, max_rounds, ratio, switch, throttle, ramp, sw_bw, below)| {
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
                    ..Policy::default()
                }
            },
        )
}

/// One round of the environment: link bytes/s, dirty share of the guest in 1/10000,
/// wire bytes per page.
fn rounds() -> impl Strategy<Value = Vec<(u64, u64, u64)>> {
    prop::collection::vec(
        (1_000_000u64..12_500_000_000, 0u64..10_000, 16u64..4200),
        1..50,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decisions_respect_the_policy(policy in policy(), env in rounds(), total_pages in 1u64..2_000_000) {
        let mut s = Scheduler::new(policy, total_pages, PAGE, 1_000).unwrap();
        let mut now = 1_000u64;
        let mut to_send = total_pages;
        let mut last_throttle = 0u8;
        let mut sent_bytes = 0u64;
        let mut ended = false;
        for i in 0..policy.max_rounds as usize {
            let (bw, dirty_share, bpp) = env[i % env.len()];
            let wire = to_send * bpp;
            sent_bytes += wire;
            now += (wire as u128 * 1_000_000_000 / bw as u128).max(1) as u64;
            // Throttling slows the guest, as the VMM would apply it.
            let dirty = total_pages * dirty_share / 10_000 * u64::from(100 - last_throttle) / 100;
            let out = s.round_done(RoundMeasurement { now_ns: now, pages_sent: to_send, wire_bytes: wire, dirty_pages: dirty });
            let st = out.stats;
            prop_assert_eq!(st.round as usize, i + 1);
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
                    // Only too long a prediction, or the minimum rounds, keep it going.
                    let early = st.round < policy.min_rounds.min(policy.max_rounds) && dirty > 0;
                    prop_assert!(st.predicted_downtime_ns > st.downtime_limit_ns || early);
                    last_throttle = throttle_percent;
                    to_send = dirty;
                }
                Decision::SwitchOver { predicted_downtime_ns, reason } => {
                    prop_assert_eq!(predicted_downtime_ns, st.predicted_downtime_ns);
                    match reason {
                        SwitchReason::DowntimeMet => prop_assert!(predicted_downtime_ns <= st.downtime_limit_ns),
                        SwitchReason::FewDirtyPages => prop_assert!(dirty <= policy.switch_below_pages),
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
