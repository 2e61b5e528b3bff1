//! The coordinator driving real source engines and appliers, single-threaded on a
//! virtual clock: the seed of the simulator.

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use core::sync::atomic::AtomicU64;

use super::*;
use crate::bitmap::AtomicDirtyBitmap;
use crate::codec::Encoding;
use crate::engine::{Applier, MemoryTransport, SourceConfig, SourceEngine, SourceEvent, Transport};
use crate::layout::GuestLayout;
use crate::layout::{Shard, SHARD_CHUNK_PAGES};
use crate::memory::{AtomicMemory, PageMemory};
use crate::schedule::OnLimit;

const PAGE: usize = 512;

type Bitmap = AtomicDirtyBitmap<Box<[AtomicU64]>>;

/// What happened, in order, as the driver saw it.
#[derive(Clone, Debug, PartialEq)]
enum Trace {
    /// An engine put `len` bytes out.
    Bytes { stream: usize, len: usize },
    /// An engine ended a live round.
    Measured {
        stream: usize,
        round: StreamRound,
        lz4: bool,
    },
    /// An engine asked for the pause.
    PauseWanted { stream: usize },
    /// An engine completed.
    Complete { stream: usize, round: FinalRound },
    /// The coordinator said.
    Event(CoordinatorEvent),
}

/// A multi-stream migration stepped on a virtual clock: N engines, one coordinator,
/// one link ([`MemoryTransport`]) and one applier per stream onto one destination
/// memory, and a guest writing between polls until it is paused.
struct Driver<'a> {
    memory: &'a AtomicMemory,
    bitmap: &'a Bitmap,
    /// `None` once aborted.
    engines: Vec<Option<SourceEngine<'a, Box<[AtomicU64]>>>>,
    links: Vec<MemoryTransport>,
    appliers: Vec<crate::engine::OwnedApplier<&'a AtomicMemory>>,
    coordinator: Coordinator,
    /// Virtual time, ns.
    now: u64,
    paused: bool,
    /// Engines that wait for the coordinator (a decision or the pause).
    waiting: Vec<bool>,
    digests: Vec<Option<u128>>,
    verdict_given: Vec<bool>,
    trace: Vec<Trace>,
    outcome: Option<Result<CoordinatorReport, CoordinatorError>>,
    /// Guest writes per poll, to pages of a hot set on every stream.
    writes_per_poll: u64,
    rng: u64,
    buf: Vec<u8>,
}

impl<'a> Driver<'a> {
    fn new(
        memory: &'a AtomicMemory,
        dest: &'a AtomicMemory,
        bitmap: &'a Bitmap,
        n: usize,
        policy: Policy,
        seed: u64,
    ) -> Self {
        let engines: Vec<_> = (0..n)
            .map(|i| {
                let config = SourceConfig {
                    stream: Shard::new(i as u8, n as u8).unwrap(),
                    ..SourceConfig::new(PAGE)
                };
                Some(SourceEngine::new(bitmap, config, 0).unwrap())
            })
            .collect();
        let buf = vec![0u8; engines[0].as_ref().unwrap().min_buffer_len() + 3 * PAGE];
        let config = CoordinatorConfig {
            policy,
            total_pages: memory.total_pages(),
            page_size: PAGE as u64,
            streams: n,
        };
        Driver {
            memory,
            bitmap,
            engines,
            links: (0..n)
                .map(|i| MemoryTransport::new(300 + 157 * i))
                .collect(),
            appliers: (0..n).map(|_| Applier::with_memory(dest)).collect(),
            coordinator: Coordinator::new(config, 0).unwrap(),
            now: 0,
            paused: false,
            waiting: vec![false; n],
            digests: vec![None; n],
            verdict_given: vec![false; n],
            trace: Vec::new(),
            outcome: None,
            writes_per_poll: 2,
            rng: seed | 1,
            buf,
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Runs until the coordinator says done or failed.
    fn run(&mut self) -> Result<CoordinatorReport, CoordinatorError> {
        let n = self.engines.len();
        for _ in 0..1_000_000 {
            if let Some(outcome) = &self.outcome {
                return outcome.clone();
            }
            let i = (self.next_rand() % n as u64) as usize;
            self.step(i);
        }
        panic!("the migration does not end");
    }

    /// One step of stream `i`: poll its engine (unless it waits), let the guest
    /// write, deliver some of its link to its applier, carry out the coordinator's
    /// events.
    fn step(&mut self, i: usize) {
        if !self.waiting[i] && self.digests[i].is_none() {
            if let Some(engine) = self.engines[i].as_mut() {
                let len = engine
                    .poll_transmit(self.memory, self.now, &mut self.buf)
                    .unwrap();
                let lz4 = engine.lz4_enabled();
                let event = engine.poll_event();
                self.links[i].send(&self.buf[..len]).unwrap();
                if len > 0 {
                    self.trace.push(Trace::Bytes { stream: i, len });
                }
                // 1 Gbit/s and a little per poll.
                self.now += len as u64 * 8 + 1_000;
                if let Some(event) = event {
                    self.handle(i, event, lz4);
                }
            }
        }
        self.guest_writes();
        self.deliver(i, 3);
        self.carry_out();
    }

    fn handle(&mut self, i: usize, event: SourceEvent, lz4: bool) {
        let c = &mut self.coordinator;
        match event {
            SourceEvent::SyncDirtyLog { .. } => panic!("stream {i}: a sync nobody asked for"),
            SourceEvent::DeviceState => panic!("stream {i}: device state nobody announced"),
            SourceEvent::RoundMeasured(round) => {
                self.waiting[i] = true;
                self.trace.push(Trace::Measured {
                    stream: i,
                    round,
                    lz4,
                });
                // The barrier, as the runtime's: the pages written since the streams
                // harvested count in the prediction.
                if c.round_ends_with_next_measurement() {
                    c.note_pending_pages(self.bitmap.dirty_pages());
                }
                c.handle_round_measured(i, round, lz4, self.now).unwrap();
            }
            SourceEvent::PauseGuest { .. } => {
                self.waiting[i] = true;
                self.trace.push(Trace::PauseWanted { stream: i });
                c.handle_pause_wanted(i).unwrap();
            }
            SourceEvent::Complete { digest, round } => {
                self.digests[i] = Some(digest);
                self.trace.push(Trace::Complete { stream: i, round });
                c.handle_complete(i, digest, round).unwrap();
            }
        }
    }

    /// The guest dirties a few pages of a hot set spread over every stream.
    fn guest_writes(&mut self) {
        if self.paused || self.outcome.is_some() {
            return;
        }
        let pages = self.memory.total_pages();
        for _ in 0..self.writes_per_poll {
            let r = self.next_rand();
            let page = ((r % 6) * SHARD_CHUNK_PAGES + (r >> 8) % 16) % pages;
            self.memory
                .store_word(page, (r >> 16) as usize % (PAGE / 8), r)
                .unwrap();
            self.bitmap.mark(page).unwrap();
        }
    }

    /// Moves up to `pieces` pieces of stream `i` to its applier; once the applier
    /// verified a completed stream, tells the coordinator.
    fn deliver(&mut self, i: usize, pieces: usize) {
        let mut piece = [0u8; 1024];
        for _ in 0..pieces {
            let got = self.links[i].recv(&mut piece).unwrap();
            if got == 0 {
                break;
            }
            self.appliers[i].feed(&piece[..got]).unwrap();
        }
        if let Some(digest) = self.digests[i] {
            if self.links[i].pending() == 0
                && !self.verdict_given[i]
                && !self.coordinator.is_ended()
            {
                self.verdict_given[i] = true;
                let ok =
                    self.appliers[i].is_complete() && self.appliers[i].digest() == Some(digest);
                self.coordinator.handle_verdict(i, ok).unwrap();
            }
        }
    }

    /// Delivers everything still in the links.
    fn deliver_all(&mut self) {
        for i in 0..self.links.len() {
            while self.links[i].pending() > 0 {
                self.deliver(i, usize::MAX);
            }
        }
    }

    fn carry_out(&mut self) {
        while let Some(event) = self.coordinator.poll_event() {
            self.trace.push(Trace::Event(event.clone()));
            match event {
                CoordinatorEvent::RoundDone(_)
                | CoordinatorEvent::Throttle(_)
                | CoordinatorEvent::FinalRound(_) => {}
                CoordinatorEvent::Decide(decision) => {
                    for (engine, waiting) in self.engines.iter_mut().zip(&mut self.waiting) {
                        let engine = engine.as_mut().unwrap();
                        match (engine.decide(decision), decision) {
                            (Ok(()), _) => *waiting = false,
                            (Err(EngineError::Schedule(_)), Decision::Fail(_)) => {}
                            (Err(e), _) => panic!("decide: {e}"),
                        }
                    }
                }
                CoordinatorEvent::PauseGuest { .. } => {
                    self.paused = true;
                    self.coordinator.handle_guest_paused(self.now).unwrap();
                }
                CoordinatorEvent::GuestPaused => {
                    for (engine, waiting) in self.engines.iter_mut().zip(&mut self.waiting) {
                        engine.as_mut().unwrap().guest_paused(self.now).unwrap();
                        *waiting = false;
                    }
                }
                CoordinatorEvent::Done(report) => self.outcome = Some(Ok(report)),
                CoordinatorEvent::Failed(e) => {
                    for engine in &mut self.engines {
                        if let Some(engine) = engine.take() {
                            engine.abort();
                        }
                    }
                    self.outcome = Some(Err(e));
                }
            }
        }
    }

    fn events(&self) -> impl Iterator<Item = &CoordinatorEvent> {
        self.trace.iter().filter_map(|t| match t {
            Trace::Event(e) => Some(e),
            _ => None,
        })
    }
}

use super::super::EngineError;

/// A guest of `pages` pages: zero, random-ish and text-like pages.
fn guest(pages: u64) -> (AtomicMemory, AtomicMemory, Bitmap) {
    let memory = AtomicMemory::new(PAGE, pages);
    let mut buf = vec![0u8; PAGE];
    for page in 0..pages {
        let seed = page.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for (i, b) in buf.iter_mut().enumerate() {
            let x = seed ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            *b = match page % 3 {
                0 => 0,
                1 => (x >> 29) as u8,
                _ => b"the quick brown fox "[i % 20],
            };
        }
        memory.store_page(page, &buf).unwrap();
    }
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    (
        memory,
        AtomicMemory::new(PAGE, pages),
        AtomicDirtyBitmap::new(layout),
    )
}

fn page_of(memory: &AtomicMemory, page: u64) -> Vec<u8> {
    let mut buf = vec![0u8; PAGE];
    memory.read_page(page, &mut buf).unwrap();
    buf
}

/// Several live rounds, then a switchover.
fn converging() -> Policy {
    Policy {
        min_rounds: 4,
        ..Policy::default()
    }
}

/// Checks what every coordinated migration must show in its trace: the barrier, the
/// sums, one pause after every stream asked, the final sum, the report.
fn check_trace(d: &Driver<'_>, n: usize, report: &CoordinatorReport) {
    let mut measured: Vec<Vec<(StreamRound, bool)>> = vec![Vec::new(); n];
    let mut pause_wanted = vec![false; n];
    let mut completes: Vec<Option<FinalRound>> = vec![None; n];
    let mut decided = 0u32;
    let mut rounds_done = 0u32;
    let mut pauses = 0;
    let mut finals = 0;
    for t in &d.trace {
        match t {
            Trace::Bytes { stream, .. } => {
                // The barrier, seen from the bytes: a stream that ended a round puts
                // nothing out until the decision for every stream.
                assert!(
                    measured[*stream].len() as u32 <= decided || pause_wanted[*stream],
                    "stream {stream} sent bytes before the round's decision"
                );
            }
            Trace::Measured { stream, round, lz4 } => {
                assert_eq!(
                    round.round,
                    decided + 1,
                    "stream {stream} measured out of turn"
                );
                measured[*stream].push((*round, *lz4));
            }
            Trace::PauseWanted { stream } => pause_wanted[*stream] = true,
            Trace::Complete { stream, round } => {
                assert_eq!(pauses, 1, "stream {stream} completed before the pause");
                completes[*stream] = Some(*round);
            }
            Trace::Event(CoordinatorEvent::RoundDone(r)) => {
                rounds_done += 1;
                let k = rounds_done as usize - 1;
                assert_eq!(
                    r.outcome.stats.round, rounds_done,
                    "the bulk round is round 1"
                );
                // The barrier: every stream measured this round, once.
                assert!(
                    measured.iter().all(|m| m.len() == k + 1),
                    "round {rounds_done} decided early"
                );
                let this: Vec<_> = measured.iter().map(|m| m[k]).collect();
                let sum =
                    |f: &dyn Fn(&StreamRound) -> u64| this.iter().map(|(r, _)| f(r)).sum::<u64>();
                assert_eq!(r.outcome.stats.pages_sent, sum(&|r| r.pages_sent));
                assert_eq!(r.outcome.stats.wire_bytes, sum(&|r| r.wire_bytes));
                assert_eq!(r.outcome.stats.dirty_pages, sum(&|r| r.dirty_pages));
                assert_eq!(r.deferred_pages, sum(&|r| r.deferred_pages));
                for e in [
                    Encoding::Zero,
                    Encoding::Raw,
                    Encoding::Lz4,
                    Encoding::Delta,
                ] {
                    assert_eq!(
                        r.codecs.get(e).pages,
                        sum(&|r| r.codecs.get(e).pages),
                        "{e:?}"
                    );
                }
                let lz4 = this.iter().filter(|(_, l)| *l).count() as u8;
                assert_eq!(r.lz4_streams, lz4);
            }
            Trace::Event(CoordinatorEvent::Decide(_)) => {
                decided += 1;
                assert_eq!(decided, rounds_done, "a decision without its round");
            }
            Trace::Event(CoordinatorEvent::PauseGuest { .. }) => {
                pauses += 1;
                assert!(
                    pause_wanted.iter().all(|&p| p),
                    "paused before every stream asked"
                );
            }
            Trace::Event(CoordinatorEvent::FinalRound(f)) => {
                finals += 1;
                assert!(
                    completes.iter().all(Option::is_some),
                    "final round before every stream"
                );
                let c: Vec<FinalRound> = completes.iter().map(|c| c.unwrap()).collect();
                assert_eq!(f.pages_sent, c.iter().map(|c| c.pages_sent).sum::<u64>());
                assert_eq!(f.wire_bytes, c.iter().map(|c| c.wire_bytes).sum::<u64>());
                assert_eq!(f.round, rounds_done + 1);
                assert!(c.iter().all(|c| c.round == f.round));
            }
            Trace::Event(_) => {}
        }
    }
    assert_eq!(pauses, 1, "the guest is paused exactly once");
    assert_eq!(finals, 1);
    assert!(rounds_done >= converging().min_rounds);
    assert_eq!(report.live_rounds, rounds_done);
    assert_eq!(report.rounds, rounds_done + 1);
    let bytes: usize = d
        .trace
        .iter()
        .map(|t| match t {
            Trace::Bytes { len, .. } => *len,
            _ => 0,
        })
        .sum();
    // Every byte counted once: the stream headers in the bulk round's.
    assert_eq!(report.wire_bytes, bytes as u64);
    let digests: Vec<u128> = d.digests.iter().map(|d| d.unwrap()).collect();
    assert_eq!(report.digests, digests);
}

fn migrates(n: usize, seed: u64) {
    let pages = 2_500;
    let (memory, dest, bitmap) = guest(pages);
    let mut d = Driver::new(&memory, &dest, &bitmap, n, converging(), seed);
    let report = d.run().unwrap();
    check_trace(&d, n, &report);
    for page in 0..pages {
        assert_eq!(
            page_of(&memory, page),
            page_of(&dest, page),
            "page {page} differs"
        );
    }
    // The guest wrote during the migration: the later rounds had something to send.
    assert!(d.events().any(|e| matches!(e, CoordinatorEvent::RoundDone(r) if r.outcome.stats.round > 1 && r.outcome.stats.pages_sent > 0)));
    // With several streams the guest writes between the first harvest and the
    // barrier: those pages were pending (one stream harvests at its barrier).
    let pending = d
        .events()
        .any(|e| matches!(e, CoordinatorEvent::RoundDone(r) if r.outcome.stats.pending_pages > 0));
    assert_eq!(pending, n > 1);
}

#[test]
fn one_stream_migrates_through_the_coordinator() {
    for seed in 1..4 {
        migrates(1, seed);
    }
}

#[test]
fn three_streams_migrate_through_the_coordinator() {
    for seed in 1..6 {
        migrates(3, seed * 7919);
    }
}

#[test]
fn a_fail_decision_puts_harvested_pages_back() {
    for n in [1, 3] {
        let pages = 2_500;
        let (memory, dest, bitmap) = guest(pages);
        // Never within the limit while the guest dirties pages.
        let policy = Policy {
            downtime_limit_ns: 1_000,
            non_memory_downtime_ns: 0,
            max_rounds: 3,
            max_bytes_ratio: None,
            on_limit: OnLimit::Fail,
            ..Policy::default()
        };
        let mut d = Driver::new(&memory, &dest, &bitmap, n, policy, 99);
        d.writes_per_poll = 4;
        let e = d.run().unwrap_err();
        assert!(
            matches!(
                e,
                CoordinatorError::Schedule(ScheduleError::NotConverging { rounds: 3, .. })
            ),
            "{e:?}"
        );
        assert!(d
            .events()
            .any(|e| matches!(e, CoordinatorEvent::Decide(Decision::Fail(_)))));
        assert!(!d
            .events()
            .any(|e| matches!(e, CoordinatorEvent::PauseGuest { .. })));
        // Whatever the destination got, every page where it differs is still marked.
        d.deliver_all();
        let mut differing = 0;
        for page in 0..pages {
            if page_of(&memory, page) != page_of(&dest, page) {
                differing += 1;
                assert!(
                    bitmap.is_dirty(page),
                    "{n} streams: page {page} differs and is not marked"
                );
            }
        }
        assert!(differing > 0, "the guest wrote after the last harvest");
    }
}

fn round(round: u32) -> StreamRound {
    StreamRound {
        round,
        pages_sent: 10,
        wire_bytes: 1_000,
        dirty_pages: 1,
        codecs: CodecStats::default(),
        deferred_pages: 0,
    }
}

fn fin(round: u32) -> FinalRound {
    FinalRound {
        round,
        pages_sent: 1,
        wire_bytes: 100,
        codecs: CodecStats::default(),
        predicted_downtime_ns: 0,
        digest_pages_read: 0,
        digest_pages_folded: 0,
    }
}

#[test]
fn misuse_is_refused_and_changes_nothing() {
    let config = CoordinatorConfig {
        policy: Policy {
            min_rounds: 1,
            ..Policy::default()
        },
        total_pages: 1_000,
        page_size: 4096,
        streams: 2,
    };
    assert_eq!(
        Coordinator::new(
            CoordinatorConfig {
                streams: 0,
                ..config
            },
            0
        )
        .unwrap_err(),
        CoordinatorError::StreamCount { streams: 0 }
    );
    assert_eq!(
        Coordinator::new(
            CoordinatorConfig {
                streams: 256,
                ..config
            },
            0
        )
        .unwrap_err(),
        CoordinatorError::StreamCount { streams: 256 }
    );
    let mut c = Coordinator::new(config, 0).unwrap();
    assert_eq!(
        c.handle_round_measured(2, round(1), false, 1),
        Err(CoordinatorError::StreamOutOfRange {
            stream: 2,
            streams: 2
        })
    );
    assert_eq!(
        c.handle_round_measured(0, round(2), false, 1),
        Err(CoordinatorError::WrongRound {
            stream: 0,
            expected: 1,
            got: 2
        })
    );
    assert!(matches!(
        c.handle_pause_wanted(0),
        Err(CoordinatorError::OutOfOrder { stream: 0, .. })
    ));
    assert!(matches!(
        c.handle_guest_paused(1),
        Err(CoordinatorError::OutOfOrder { .. })
    ));
    assert!(matches!(
        c.handle_complete(1, 7, fin(2)),
        Err(CoordinatorError::OutOfOrder { stream: 1, .. })
    ));
    assert!(matches!(
        c.handle_verdict(1, true),
        Err(CoordinatorError::OutOfOrder { stream: 1, .. })
    ));
    c.handle_round_measured(0, round(1), true, 1).unwrap();
    assert!(matches!(
        c.handle_round_measured(0, round(1), true, 1),
        Err(CoordinatorError::Twice { stream: 0, .. })
    ));
    assert_eq!(
        c.poll_event(),
        None,
        "one stream of two measured: no decision"
    );
    c.handle_round_measured(1, round(1), false, 1_000_000)
        .unwrap();
    let Some(CoordinatorEvent::RoundDone(r)) = c.poll_event() else {
        panic!()
    };
    assert_eq!(
        (
            r.outcome.stats.round,
            r.outcome.stats.pages_sent,
            r.lz4_streams
        ),
        (1, 20, 1)
    );
    assert!(matches!(
        c.poll_event(),
        Some(CoordinatorEvent::Decide(Decision::SwitchOver { .. }))
    ));
    assert_eq!(c.poll_event(), None);
    assert!(matches!(
        c.handle_round_measured(0, round(2), false, 2),
        Err(CoordinatorError::OutOfOrder { .. })
    ));
    c.handle_pause_wanted(1).unwrap();
    assert!(matches!(
        c.handle_pause_wanted(1),
        Err(CoordinatorError::Twice { stream: 1, .. })
    ));
    assert!(matches!(
        c.handle_guest_paused(1),
        Err(CoordinatorError::OutOfOrder { .. })
    ));
    assert_eq!(c.poll_event(), None, "one stream of two asked: no pause");
    c.handle_pause_wanted(0).unwrap();
    assert!(matches!(
        c.poll_event(),
        Some(CoordinatorEvent::PauseGuest { .. })
    ));
    assert_eq!(c.poll_event(), None);
    c.handle_guest_paused(5).unwrap();
    assert_eq!(c.poll_event(), Some(CoordinatorEvent::GuestPaused));
    assert!(matches!(
        c.handle_guest_paused(6),
        Err(CoordinatorError::OutOfOrder { .. })
    ));
    assert_eq!(
        c.handle_complete(0, 7, fin(3)),
        Err(CoordinatorError::WrongRound {
            stream: 0,
            expected: 2,
            got: 3
        })
    );
    c.handle_complete(0, 7, fin(2)).unwrap();
    assert!(matches!(
        c.handle_complete(0, 7, fin(2)),
        Err(CoordinatorError::Twice { .. })
    ));
    c.handle_verdict(0, true).unwrap();
    assert!(matches!(
        c.handle_verdict(0, true),
        Err(CoordinatorError::Twice { .. })
    ));
    assert_eq!(c.poll_event(), None, "stream 1 has not completed");
    c.handle_complete(1, 8, fin(2)).unwrap();
    let Some(CoordinatorEvent::FinalRound(f)) = c.poll_event() else {
        panic!()
    };
    assert_eq!((f.round, f.pages_sent, f.wire_bytes), (2, 2, 200));
    c.handle_verdict(1, true).unwrap();
    let Some(CoordinatorEvent::Done(report)) = c.poll_event() else {
        panic!()
    };
    assert_eq!(
        report,
        CoordinatorReport {
            live_rounds: 1,
            rounds: 2,
            predicted_downtime_ns: r.outcome.stats.predicted_downtime_ns,
            paused_at_ns: 5,
            wire_bytes: 2_200,
            pages_sent: 22,
            digests: vec![7, 8],
        }
    );
    assert_eq!(c.handle_verdict(1, true), Err(CoordinatorError::Ended));
    assert_eq!(c.handle_failure(1), Err(CoordinatorError::Ended));
    assert_eq!(
        c.handle_failure(9),
        Err(CoordinatorError::StreamOutOfRange {
            stream: 9,
            streams: 2
        })
    );
}

#[test]
fn a_failure_or_a_refusal_ends_the_migration_once() {
    let config = CoordinatorConfig {
        policy: Policy::default(),
        total_pages: 1_000,
        page_size: 4096,
        streams: 3,
    };
    let mut c = Coordinator::new(config, 0).unwrap();
    c.handle_failure(1).unwrap();
    c.handle_failure(2).unwrap(); // an echo
    assert_eq!(
        c.poll_event(),
        Some(CoordinatorEvent::Failed(CoordinatorError::StreamFailed {
            stream: 1
        }))
    );
    assert_eq!(c.poll_event(), None);
    assert_eq!(
        c.handle_round_measured(0, round(1), false, 1),
        Err(CoordinatorError::Ended)
    );

    let mut c = Coordinator::new(
        CoordinatorConfig {
            streams: 1,
            policy: Policy {
                min_rounds: 1,
                ..Policy::default()
            },
            ..config
        },
        0,
    )
    .unwrap();
    c.handle_round_measured(0, round(1), false, 1_000_000)
        .unwrap();
    c.handle_pause_wanted(0).unwrap();
    c.handle_guest_paused(2_000_000).unwrap();
    c.handle_complete(0, 1, fin(2)).unwrap();
    c.handle_verdict(0, false).unwrap();
    let events: Vec<_> = core::iter::from_fn(|| c.poll_event()).collect();
    assert!(
        matches!(
            events.last(),
            Some(CoordinatorEvent::Failed(CoordinatorError::Refused {
                stream: 0
            }))
        ),
        "{events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, CoordinatorEvent::Done(_))));
}

/// Pages dirtied after the harvests, noted before the barrier, reach the scheduler
/// with that round only: the prediction counts them (a pause now sends them), the
/// round's dirty count does not, and the next round starts from none.
#[test]
fn pending_pages_count_in_the_prediction_of_their_round_only() {
    let config = CoordinatorConfig {
        policy: Policy {
            switchover_bandwidth: Some(1_000_000_000),
            min_rounds: 3,
            ..Policy::default()
        },
        total_pages: 100_000,
        page_size: 4096,
        streams: 2,
    };
    let mut c = Coordinator::new(config, 0).unwrap();
    let mut stats = Vec::new();
    for (r, pending) in [(1, 0), (2, 5_000), (3, 0)] {
        assert!(
            !c.round_ends_with_next_measurement(),
            "round {r}: 2 streams to go"
        );
        c.handle_round_measured(0, round(r), false, u64::from(r) * 1_000_000)
            .unwrap();
        assert!(
            c.round_ends_with_next_measurement(),
            "round {r}: the last stream"
        );
        c.note_pending_pages(pending);
        c.handle_round_measured(1, round(r), false, u64::from(r) * 1_000_000)
            .unwrap();
        while let Some(e) = c.poll_event() {
            if let CoordinatorEvent::RoundDone(s) = e {
                stats.push(s.outcome.stats);
            }
        }
    }
    let [with, without] = [stats[1], stats[2]];
    assert_eq!((with.dirty_pages, with.pending_pages), (2, 5_000));
    assert_eq!((without.dirty_pages, without.pending_pages), (2, 0));
    // 100 wire bytes a page (the iterative rounds') at 1 GB/s: 5 000 more pages are
    // 0.5 ms more.
    let more = with.predicted_downtime_ns - without.predicted_downtime_ns;
    assert!((499_000..=501_000).contains(&more), "{with:?} {without:?}");
}
