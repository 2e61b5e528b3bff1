//! The guarantee of the whole project, as property tests: for generated guests, write
//! schedules interleaved with every engine step, stream chunkings and delivery delays,
//! the destination ends byte-for-byte equal to the source with agreeing digests; and
//! truncation, corruption or a transport failure anywhere never ends in a destination
//! that reports success, while the source's memory stays untouched.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use precopy::bitmap::AtomicDirtyBitmap;
use precopy::codec::EncoderConfig;
use precopy::engine::{Applier, EngineError, Migration, MigrationEvent, Progress, SourceConfig};
use precopy::layout::GuestLayout;
use precopy::memory::{AtomicMemory, PageMemory, VecMemory};
use precopy::schedule::{Decision, DowntimeRamp, OnLimit, Policy, SwitchReason, Throttle};
use proptest::prelude::*;

mod common;
use common::scripted_guest::{fill, ScriptedGuest, Write};

/// More polls than any migration of these small guests takes by orders of magnitude: a
/// loop past it is an engine that never completes, reported instead of hanging.
const MAX_POLLS: u64 = 1_000_000;

const PAGE: usize = 512;

/// What a run produced on the destination.
struct Outcome {
    source_pages: Vec<u8>,
    dest: Result<VecMemory, String>,
    rounds: u32,
    /// When the source failed: what the destination holds and which pages the bitmap
    /// still marks.
    failure: Option<Failure>,
    /// How many batches of the script the guest ran.
    batches_run: usize,
    /// The highest throttle the scheduler advised.
    max_throttle: u8,
    /// Whether a ramp raised the downtime limit in force above the policy's.
    limit_raised: bool,
    /// Why the scheduler switched over, if it did.
    switch_reason: Option<SwitchReason>,
}

/// The state a failed migration leaves behind.
struct Failure {
    /// The destination's memory after it was fed everything the source produced.
    dest_pages: Vec<u8>,
    /// The pages marked in the source's bitmap after the failure.
    marked: std::collections::BTreeSet<u64>,
}

#[allow(clippy::too_many_arguments)]
fn migrate(
    kinds: &[u8],
    script: Vec<Vec<Write>>,
    chunks: &[usize],
    delays: &[u8],
    cache_pages: usize,
    policy: Policy,
    defer: bool,
    mangle: impl Fn(&mut Vec<u8>),
) -> Outcome {
    let pages = kinds.len() as u64;
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    let memory = AtomicMemory::new(PAGE, pages);
    fill(&memory, PAGE, kinds);
    let bitmap = AtomicDirtyBitmap::new(layout);
    let batches = script.len();
    let guest = ScriptedGuest {
        memory: &memory,
        bitmap: &bitmap,
        script: RefCell::new(script.into()),
        paused: Cell::new(false),
    };
    let mut config = SourceConfig::new(PAGE);
    config.encoder = EncoderConfig {
        cache_bytes: cache_pages * (PAGE + precopy::codec::SLOT_OVERHEAD),
        ..EncoderConfig::new(PAGE)
    };
    config.defer_redirtied = defer;
    let mut source = Migration::new(&bitmap, config, policy, 0).unwrap();
    let mut applier = Applier::with_memory(VecMemory::new(PAGE, pages));

    // The whole stream, produced with a virtual clock; the transport below chunks it.
    let mut stream = Vec::new();
    let mut buf = vec![0u8; source.min_buffer_len() + 3 * PAGE];
    let mut now = 0u64;
    let mut failed = None;
    let (mut max_throttle, mut limit_raised, mut switch_reason) = (0, false, None);
    for step in 0..100_000 {
        // LZ4 on for two polls in three, off for one (the runtime's adaptive choice):
        // pages sent raw keep the delta base in step as well.
        source.set_lz4(step % 3 != 2);
        let len = match source.poll_transmit(&guest, now, &mut buf) {
            Ok(len) => len,
            Err(e) => {
                failed = Some(e);
                break;
            }
        };
        stream.extend_from_slice(&buf[..len]);
        now += len as u64 * 8 + 1_000; // 1 Gbit/s and a little per call
        guest.run_writes(); // writes between engine steps too
        let mut complete = false;
        while let Some(event) = source.poll_event() {
            match event {
                MigrationEvent::PauseGuest { .. } => {
                    guest.paused.set(true);
                    source.guest_paused(now).unwrap();
                }
                MigrationEvent::Complete { .. } => complete = true,
                MigrationEvent::Throttle(p) => max_throttle = max_throttle.max(p),
                MigrationEvent::RoundDone(r) => {
                    limit_raised |= r.outcome.stats.downtime_limit_ns > policy.downtime_limit_ns;
                    if let Decision::SwitchOver { reason, .. } = r.outcome.decision {
                        switch_reason = Some(reason);
                    }
                }
                _ => {}
            }
        }
        if complete {
            break;
        }
    }
    let rounds = source.coordinator().scheduler().rounds();
    let batches_run = batches - guest.script.borrow().len();
    let mut source_pages = vec![0u8; PAGE * pages as usize];
    for p in 0..pages {
        memory
            .read_page(p, &mut source_pages[p as usize * PAGE..][..PAGE])
            .unwrap();
    }
    if let Some(e) = failed {
        assert!(matches!(e, EngineError::Schedule(_)), "{e}");
        // The destination got a stream without completion: never complete.
        let _ = applier.feed(&stream);
        assert!(!applier.is_complete());
        let failure = Failure {
            dest_pages: applier.memory().as_bytes().to_vec(),
            marked: bitmap.harvest().pages().collect(),
        };
        return Outcome {
            source_pages,
            dest: Err(e.to_string()),
            rounds,
            failure: Some(failure),
            batches_run,
            max_throttle,
            limit_raised,
            switch_reason,
        };
    }
    mangle(&mut stream);

    // Deliver in generated chunks; a chunk with a delay waits that many steps while
    // the next ones queue behind it (a slow link), order kept.
    let mut queue: VecDeque<(u8, &[u8])> = VecDeque::new();
    let mut rest: &[u8] = &stream;
    let mut i = 0;
    let mut result = Ok(Progress::InProgress);
    while (!rest.is_empty() || !queue.is_empty()) && result.is_ok() {
        if !rest.is_empty() {
            let n = chunks[i % chunks.len()].clamp(1, rest.len());
            queue.push_back((delays[i % delays.len()] % 3, &rest[..n]));
            rest = &rest[n..];
            i += 1;
        }
        if let Some((wait, _)) = queue.front_mut() {
            if *wait > 0 && !rest.is_empty() {
                *wait -= 1;
                continue;
            }
        }
        if let Some((_, piece)) = queue.pop_front() {
            result = applier.feed(piece);
        }
    }
    let dest = match result.and_then(|_| applier.finish()) {
        Ok(()) => {
            assert!(applier.is_complete());
            Ok(applier.into_memory())
        }
        Err(e) => {
            assert!(!applier.is_complete(), "failed but complete: {e}");
            Err(e.to_string())
        }
    };
    Outcome {
        source_pages,
        dest,
        rounds,
        failure: None,
        batches_run,
        max_throttle,
        limit_raised,
        switch_reason,
    }
}

fn kinds() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..300)
}

/// Writes per read: mostly none, some to hot pages (dirtied every round), some
/// anywhere.
fn script(pages: u64) -> impl Strategy<Value = Vec<Vec<Write>>> {
    // Hot pages get few distinct words and often zeros, so a page goes from zero to
    // data and back (the delta cache must follow: a zero page drops its base).
    let write = (0..pages, 0usize..PAGE / 8, any::<u64>(), any::<bool>()).prop_map(
        move |(p, w, v, hot)| {
            if hot {
                (p % 4, w % 2, if v % 2 == 0 { 0 } else { v % 4 })
            } else {
                (p, w, v)
            }
        },
    );
    prop::collection::vec(prop::collection::vec(write, 0..3), 0..600)
}

fn policy() -> impl Strategy<Value = Policy> {
    (1u64..300_000, 1u32..12).prop_map(|(limit, rounds)| Policy {
        downtime_limit_ns: limit,
        non_memory_downtime_ns: 0,
        max_rounds: rounds,
        max_bytes_ratio: None,
        on_limit: OnLimit::SwitchOver,
        ..Policy::default()
    })
}

/// One generated migration: the guest, its writes, the link and the policy.
#[derive(Clone, Debug)]
struct Case {
    kinds: Vec<u8>,
    script: Vec<Vec<Write>>,
    chunks: Vec<usize>,
    delays: Vec<u8>,
    cache_pages: usize,
    policy: Policy,
    defer: bool,
}

impl Case {
    fn run(&self) -> Outcome {
        migrate(
            &self.kinds,
            self.script.clone(),
            &self.chunks,
            &self.delays,
            self.cache_pages,
            self.policy,
            self.defer,
            |_| (),
        )
    }
}

/// Short scripts and loose limits: most of these switch over after the second live
/// round, on the downtime rule.
fn short_case() -> impl Strategy<Value = Case> {
    (
        kinds().prop_flat_map(|k| {
            let n = k.len() as u64;
            (Just(k), script(n))
        }),
        prop::collection::vec(1usize..5000, 1..8),
        prop::collection::vec(any::<u8>(), 1..8),
        0usize..40,
        policy(),
        any::<bool>(),
    )
        .prop_map(
            |((kinds, script), chunks, delays, cache_pages, policy, defer)| Case {
                kinds,
                script,
                chunks,
                delays,
                cache_pages,
                policy,
                defer,
            },
        )
}

/// A guest that keeps writing a working set of `working_set` pages (and `spread`
/// percent of its writes anywhere, a fifth to a hot page that returns to zero), `per_batch` writes per page read, for `batches`
/// reads: generated from `seed` rather than element by element, so a script is long
/// enough to outlast many rounds and still shrinks on a handful of numbers.
fn long_script(
    pages: u64,
    seed: u64,
    working_set: u64,
    per_batch: usize,
    spread: u64,
    batches: usize,
) -> Vec<Vec<Write>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = next() % pages;
    (0..batches)
        .map(|_| {
            (0..per_batch)
                .map(|_| {
                    if next() % 5 == 0 {
                        // A hot page: few words, often zero, so it returns to zero.
                        let v = next() % 4;
                        return (base % 4, (next() % 2) as usize, if v == 3 { 0 } else { v });
                    }
                    let page = if next() % 100 < spread {
                        next() % pages
                    } else {
                        (base + next() % working_set) % pages
                    };
                    let word = (next() % (PAGE as u64 / 8)) as usize;
                    // Small values and zeros keep deltas and zero pages in play.
                    let value = match next() % 4 {
                        0 => 0,
                        1 => next() % 4,
                        _ => next(),
                    };
                    (page, word, value)
                })
                .collect()
        })
        .collect()
}

/// Tight limits, several to many rounds allowed, and the rest of the policy drawn:
/// byte bounds, throttling advice, downtime ramps.
fn long_policy() -> impl Strategy<Value = Policy> {
    (
        1u64..20_000,
        4u32..20,
        1u32..4,
        prop::option::of(1.0f64..2.0),
        prop::option::of((0.05f64..1.0, 1u32..4, 1u8..60, 0u8..25)),
        prop::option::of((1u32..6, 1_000u64..60_000, 0u64..400_000)),
    )
        .prop_map(
            |(limit, max_rounds, min_rounds, ratio, throttle, ramp)| Policy {
                downtime_limit_ns: limit,
                non_memory_downtime_ns: 0,
                min_rounds,
                max_rounds,
                max_bytes_ratio: ratio,
                on_limit: OnLimit::SwitchOver,
                throttle: throttle.map(|(threshold, trigger_rounds, initial, step)| Throttle {
                    threshold,
                    trigger_rounds,
                    initial_percent: initial,
                    step_percent: step,
                    max_percent: 99,
                }),
                ramp: ramp.map(|(after_rounds, step_ns, extra)| DowntimeRamp {
                    after_rounds,
                    step_ns,
                    max_ns: limit + extra,
                }),
                ..Policy::default()
            },
        )
}

/// A guest that keeps a working set dirty under a tight limit: many rounds, ending on
/// a bound (rounds or bytes), on the downtime rule once a ramp raised the limit, or
/// when the script runs out.
fn long_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(any::<u8>(), 16..300),
        any::<u64>(),
        1u64..64,
        1usize..6,
        0u64..30,
        300usize..4000,
        prop::collection::vec(1usize..5000, 1..8),
        prop::collection::vec(any::<u8>(), 1..8),
        0usize..40,
        long_policy(),
        any::<bool>(),
    )
        .prop_map(
            |(
                kinds,
                seed,
                ws,
                per_batch,
                spread,
                batches,
                chunks,
                delays,
                cache,
                policy,
                defer,
            )| {
                let script = long_script(kinds.len() as u64, seed, ws, per_batch, spread, batches);
                Case {
                    kinds,
                    script,
                    chunks,
                    delays,
                    cache_pages: cache,
                    policy,
                    defer,
                }
            },
        )
}

/// The main property's cases: two in three are long migrations.
fn case() -> impl Strategy<Value = Case> {
    prop_oneof![1 => short_case(), 2 => long_case()]
}

/// What a set of cases reached.
#[derive(Debug, Default)]
struct Reach {
    cases: u32,
    four_rounds: u32,
    eight_rounds: u32,
    throttled: u32,
    ramped: u32,
    /// Switched over on a bound before `max_rounds`: the byte bound.
    bytes_bound: u32,
    rounds_bound: u32,
}

/// Runs `n` cases of `strategy` from a fixed seed; every one must complete equal.
fn reach(strategy: impl Strategy<Value = Case>, n: u32) -> Reach {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[0x5e; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut r = Reach::default();
    for _ in 0..n {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let out = case.run();
        let dest = out.dest.expect("a forced switchover always completes");
        assert!(dest.as_bytes() == out.source_pages.as_slice());
        r.cases += 1;
        r.four_rounds += u32::from(out.rounds >= 4);
        r.eight_rounds += u32::from(out.rounds >= 8);
        r.throttled += u32::from(out.max_throttle > 0);
        r.ramped += u32::from(out.limit_raised);
        if out.switch_reason == Some(SwitchReason::BoundReached) {
            if out.rounds < case.policy.max_rounds {
                r.bytes_bound += 1;
            } else {
                r.rounds_bound += 1;
            }
        }
    }
    r
}

/// The main property below is only as good as the migrations it generates: a large
/// share must run many rounds and reach throttling advice, ramps and bounds.
#[test]
fn the_generated_migrations_reach_long_runs_throttling_ramps_and_bounds() {
    let r = reach(case(), 120);
    eprintln!("{r:?}");
    assert!(r.four_rounds * 100 >= r.cases * 40, "{r:?}");
    assert!(r.eight_rounds * 100 >= r.cases * 15, "{r:?}");
    assert!(r.throttled * 100 >= r.cases * 15, "{r:?}");
    assert!(r.ramped * 100 >= r.cases * 10, "{r:?}");
    assert!(r.bytes_bound * 100 >= r.cases * 5, "{r:?}");
    assert!(r.rounds_bound * 100 >= r.cases * 10, "{r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(384)))]

    #[test]
    fn destination_equals_source_at_completion(case in case()) {
        let out = case.run();
        let dest = out.dest.expect("a forced switchover always completes");
        prop_assert!(dest.as_bytes() == out.source_pages.as_slice(), "destination differs after {} rounds", out.rounds);
    }

    #[test]
    fn damaged_streams_never_complete(
        kinds in kinds(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
        truncate in any::<bool>(),
    ) {
        let script = vec![vec![(0, 0, 7)]; 50];
        let policy = Policy { on_limit: precopy::schedule::OnLimit::SwitchOver, max_rounds: 3, ..Policy::default() };
        let out = migrate(&kinds, script, &[4096], &[0], 8, policy, true, |s| {
            if truncate {
                let at = cut.index(s.len());
                s.truncate(at);
            } else {
                let at = flip.index(s.len());
                s[at] ^= 1 << bit;
            }
        });
        prop_assert!(out.dest.is_err(), "a damaged stream completed");
    }
}

#[test]
fn a_failed_migration_leaves_the_source_untouched_and_its_pages_marked() {
    // Every read dirties 8 pages and the policy allows 2 rounds with a 1 ns limit:
    // the scheduler gives up.
    let pages = 64u64;
    let kinds: Vec<u8> = (0..pages as u8).collect();
    let script: Vec<Vec<Write>> = (0..10_000)
        .map(|i| (0..8).map(|j| ((i * 8 + j) % pages, 1, i)).collect())
        .collect();
    let policy = Policy {
        downtime_limit_ns: 1,
        non_memory_downtime_ns: 0,
        max_rounds: 2,
        on_limit: precopy::schedule::OnLimit::Fail,
        ..Policy::default()
    };
    let out = migrate(
        &kinds,
        script.clone(),
        &[100],
        &[0],
        4,
        policy,
        true,
        |_| (),
    );
    let err = out.dest.unwrap_err();
    assert!(err.contains("not converging"), "{err}");
    let failure = out.failure.expect("the source failed");

    // The source's memory is exactly what the guest wrote: the initial content and
    // the batches it ran, replayed here without the engine.
    let expected = AtomicMemory::new(PAGE, pages);
    fill(&expected, PAGE, &kinds);
    for batch in &script[..out.batches_run] {
        for &(page, word, value) in batch {
            expected.store_word(page, word, value).unwrap();
        }
    }
    let mut expected_pages = vec![0u8; PAGE * pages as usize];
    for p in 0..pages {
        expected
            .read_page(p, &mut expected_pages[p as usize * PAGE..][..PAGE])
            .unwrap();
    }
    assert!(out.batches_run > 0);
    assert!(
        out.source_pages == expected_pages,
        "the failed migration changed the source's memory"
    );

    // Every page whose latest version did not reach the destination is still marked,
    // so a later attempt sends it. The failure must leave such pages, or this checks
    // nothing.
    let stale: Vec<u64> = (0..pages)
        .filter(|&p| {
            let at = p as usize * PAGE..(p as usize + 1) * PAGE;
            failure.dest_pages[at.clone()] != out.source_pages[at]
        })
        .collect();
    assert!(
        !stale.is_empty(),
        "the destination caught up; nothing to check"
    );
    let lost: Vec<u64> = stale
        .iter()
        .copied()
        .filter(|p| !failure.marked.contains(p))
        .collect();
    assert!(
        lost.is_empty(),
        "pages {lost:?} differ at the destination but are no longer marked (marked: {:?})",
        failure.marked
    );
}

#[test]
fn a_page_that_returns_to_zero_and_back_is_never_sent_against_a_stale_base() {
    // Page 0 holds data, is zeroed, then gets data close to its first version. Its
    // third send must not be a delta against the first version: the destination holds
    // zeros by then. Page 1 is written before every poll so rounds keep going.
    let layout = GuestLayout::flat(PAGE as u64, 4 * PAGE as u64).unwrap();
    let memory = AtomicMemory::new(PAGE, 4);
    let bitmap = AtomicDirtyBitmap::new(layout);
    let policy = Policy {
        downtime_limit_ns: 1,
        non_memory_downtime_ns: 0,
        max_rounds: 6,
        on_limit: precopy::schedule::OnLimit::SwitchOver,
        ..Policy::default()
    };
    // No deferral: every version of page 0 is sent in the round after it is written.
    let config = SourceConfig {
        defer_redirtied: false,
        ..SourceConfig::new(PAGE)
    };
    let mut source = Migration::new(&bitmap, config, policy, 0).unwrap();
    let mut buf = vec![0u8; source.min_buffer_len()];
    let mut stream = Vec::new();
    let page0 = |value: u64, first: u64| {
        for w in 0..PAGE / 8 {
            memory
                .store_word(0, w, if w == 0 { first } else { value })
                .unwrap();
        }
        bitmap.mark(0).unwrap();
    };
    let versions = [(5, 5), (0, 0), (5, 6)];
    let mut round = 0;
    let mut now = 0;
    let mut paused = false;
    let mut written = None;
    loop {
        assert!(
            now < MAX_POLLS * 1_000_000,
            "the migration did not complete in {MAX_POLLS} polls"
        );
        if !paused {
            memory.store_word(1, 0, now).unwrap();
            bitmap.mark(1).unwrap();
            // Each version once, at the start of its round.
            if written != Some(round) {
                if let Some(&(value, first)) = versions.get(round) {
                    page0(value, first);
                }
                written = Some(round);
            }
        }
        now += 1_000_000;
        let len = source.poll_transmit(&memory, now, &mut buf).unwrap();
        stream.extend_from_slice(&buf[..len]);
        let mut complete = false;
        while let Some(event) = source.poll_event() {
            match event {
                MigrationEvent::RoundDone(r) => {
                    round += 1;
                    // Round 2 sends version 2 (zero), round 3 version 3, which must not
                    // be a delta (page 1, written before every poll, is).
                    let deltas = r.codecs.get(precopy::codec::Encoding::Delta).pages;
                    match round {
                        2 => assert_eq!(r.codecs.get(precopy::codec::Encoding::Zero).pages, 1),
                        3 => assert_eq!(
                            deltas, 1,
                            "page 0 went out as a delta against a dropped base"
                        ),
                        _ => {}
                    }
                }
                MigrationEvent::PauseGuest { .. } => {
                    paused = true;
                    source.guest_paused(now).unwrap();
                }
                MigrationEvent::Complete { .. } => complete = true,
                _ => {}
            }
        }
        if complete {
            break;
        }
    }
    assert!(round > versions.len(), "only {round} rounds");
    let mut applier = Applier::with_memory(VecMemory::new(PAGE, 4));
    assert_eq!(applier.feed(&stream), Ok(Progress::Complete));
    let mut expected = vec![0u8; PAGE];
    memory.read_page(0, &mut expected).unwrap();
    assert_eq!(&applier.memory().as_bytes()[..PAGE], expected.as_slice());
}

#[test]
fn an_aborted_round_puts_its_unsent_pages_back() {
    let pages = 64u64;
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    let memory = AtomicMemory::new(PAGE, pages);
    fill(&memory, PAGE, &(0..pages as u8).collect::<Vec<_>>());
    let bitmap = AtomicDirtyBitmap::new(layout);
    let policy = Policy {
        downtime_limit_ns: 1,
        non_memory_downtime_ns: 0,
        ..Policy::default()
    };
    let mut source = Migration::new(&bitmap, SourceConfig::new(PAGE), policy, 0).unwrap();
    // Pages 0..32 are dirtied during the bulk round: round 1 must send them.
    for p in 0..32 {
        memory.store_word(p, 3, 0xabcd).unwrap();
        bitmap.mark(p).unwrap();
    }
    let mut before = vec![0u8; PAGE * pages as usize];
    for p in 0..pages {
        memory
            .read_page(p, &mut before[p as usize * PAGE..][..PAGE])
            .unwrap();
    }
    let mut big = vec![0u8; 1 << 20];
    let len = source.poll_transmit(&memory, 1_000, &mut big).unwrap();
    assert!(matches!(
        source.poll_event(),
        Some(MigrationEvent::RoundDone(_))
    ));
    let mut stream = big[..len].to_vec();

    // Part of round 1 goes out, then the link fails: abort.
    let mut small = vec![0u8; source.min_buffer_len()];
    let len = source.poll_transmit(&memory, 2_000, &mut small).unwrap();
    stream.extend_from_slice(&small[..len]);
    source.abort();

    // Which pages of round 1 reached the wire?
    let mut decoder = precopy::wire::Decoder::with_max_page_size(PAGE);
    let mut input = stream.as_slice();
    let mut round = 0;
    let mut sent = std::collections::BTreeSet::new();
    while let Some(event) = decoder.next(&mut input).unwrap() {
        match event {
            precopy::wire::Event::Frame(precopy::wire::Frame::RoundBegin { round: r, .. }) => {
                round = r
            }
            precopy::wire::Event::Frame(
                precopy::wire::Frame::Raw { page, .. }
                | precopy::wire::Frame::Lz4 { page, .. }
                | precopy::wire::Frame::Delta { page, .. },
            ) if round == 1 => {
                sent.insert(page);
            }
            _ => {}
        }
    }
    assert!(!sent.is_empty() && sent.len() < 32, "sent {sent:?}");
    let back: std::collections::BTreeSet<u64> = bitmap.harvest().pages().collect();
    for p in 0..32 {
        assert!(
            sent.contains(&p) || back.contains(&p),
            "page {p} neither sent nor put back"
        );
    }
    // The source's memory is exactly as the guest left it.
    let mut after = vec![0u8; PAGE * pages as usize];
    for p in 0..pages {
        memory
            .read_page(p, &mut after[p as usize * PAGE..][..PAGE])
            .unwrap();
    }
    assert!(after == before);
}
