//! The source engine's points of contact with a VMM: the dirty-log sync before each
//! harvest, the bound on pages walked per poll, the bulk round's skipping of runs a
//! memory knows are zero, and the bulk round's bytes (stream header included).

use std::cell::Cell;

use precopy::bitmap::AtomicDirtyBitmap;
use precopy::engine::{
    Applier, EngineError, Migration, MigrationEvent, Progress, SourceConfig, SourceEngine,
    SourceEvent,
};
use precopy::layout::GuestLayout;
use precopy::memory::{FreshMemory, MemoryError, PageMemory, VecMemory};
use precopy::schedule::{Decision, OnLimit, Policy, SwitchReason};

/// More polls than any migration of these small guests takes by orders of magnitude: a
/// loop past it is an engine that never completes, reported instead of hanging.
const MAX_POLLS: u64 = 1_000_000;

const PAGE: usize = 4096;

/// A policy that runs `rounds` live rounds, then switches over.
fn rounds(rounds: u32) -> Policy {
    Policy {
        downtime_limit_ns: 1,
        non_memory_downtime_ns: 0,
        min_rounds: rounds,
        max_rounds: rounds,
        on_limit: OnLimit::SwitchOver,
        ..Policy::default()
    }
}

fn page_of(value: u8) -> Vec<u8> {
    vec![value; PAGE]
}

/// Pages written by the guest whose marks reach the bitmap only at the sync point (a
/// KVM dirty log) are sent in the round that harvest starts: at the end of a live
/// round and after the pause. The destination ends equal.
#[test]
fn pages_logged_outside_the_bitmap_are_sent_after_the_sync() {
    let pages = 256u64;
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    let bitmap = AtomicDirtyBitmap::new(layout);
    let mut memory = VecMemory::new(PAGE, pages);
    let config = SourceConfig {
        sync_before_harvest: true,
        ..SourceConfig::new(PAGE)
    };
    let mut source = Migration::new(&bitmap, config, rounds(2), 0).unwrap();
    let mut dest = Applier::with_memory(VecMemory::new(PAGE, pages));
    let mut buf = vec![0u8; 1 << 20];
    // The simulated KVM dirty log: written pages not yet in our bitmap.
    let mut kvm_log: Vec<u64> = Vec::new();
    let (mut now, mut syncs, mut done) = (0u64, Vec::new(), false);
    let mut dirty_at_round_end = Vec::new();
    while !done {
        assert!(
            now < MAX_POLLS * 1_000_000,
            "the migration did not complete in {MAX_POLLS} polls"
        );
        now += 1_000_000;
        let len = source.poll_transmit(&memory, now, &mut buf).unwrap();
        let progress = dest.feed(&buf[..len]).unwrap();
        while let Some(event) = source.poll_event() {
            match event {
                MigrationEvent::SyncDirtyLog { paused } => {
                    // Guest writes since the last sync, seen only by KVM.
                    let page = 10 + syncs.len() as u64;
                    memory.write_page(page, &page_of(page as u8)).unwrap();
                    kvm_log.push(page);
                    syncs.push(paused);
                    // The rule: take (and clear) the KVM log, then OR into the bitmap.
                    for page in kvm_log.drain(..) {
                        bitmap.mark(page).unwrap();
                    }
                    source.dirty_log_synced(now).unwrap();
                }
                MigrationEvent::RoundDone(r) => {
                    dirty_at_round_end.push(r.outcome.stats.dirty_pages)
                }
                MigrationEvent::PauseGuest { .. } => source.guest_paused(now).unwrap(),
                MigrationEvent::Complete { round, .. } => {
                    // The final round: the page harvested at the last live round's
                    // end and the one logged at the final sync.
                    assert_eq!(round.pages_sent, 2, "{round:?}");
                    assert_eq!(round.round, 3);
                    assert_eq!(progress, Progress::Complete);
                    done = true;
                }
                _ => {}
            }
        }
    }
    // One sync per live round's end, then the final one.
    assert_eq!(syncs, [false, false, true]);
    // Each live round's harvest found the page logged at its sync.
    assert_eq!(dirty_at_round_end, [1, 1]);
    dest.finish().unwrap();
    assert_eq!(dest.memory().as_bytes(), memory.as_bytes());
}

/// The sync point refuses calls out of order with a typed error and changes nothing.
#[test]
fn the_sync_point_refuses_calls_out_of_order() {
    let pages = 64u64;
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    let bitmap = AtomicDirtyBitmap::new(layout);
    let memory = VecMemory::new(PAGE, pages);
    let config = SourceConfig {
        sync_before_harvest: true,
        ..SourceConfig::new(PAGE)
    };
    let mut engine = SourceEngine::new(&bitmap, config, 0).unwrap();
    let out_of_order =
        |r: Result<(), EngineError>| matches!(r, Err(EngineError::OutOfOrder { .. }));
    // No harvest is due yet.
    assert!(out_of_order(engine.dirty_log_synced(0)));
    let mut buf = vec![0u8; 1 << 20];
    engine.poll_transmit(&memory, 1, &mut buf).unwrap();
    assert_eq!(
        engine.poll_event(),
        Some(SourceEvent::SyncDirtyLog { paused: false })
    );
    // Waiting for the sync: nothing is produced, and neither the decision nor the
    // pause may come first.
    assert_eq!(engine.poll_transmit(&memory, 2, &mut buf).unwrap(), 0);
    assert_eq!(engine.poll_event(), None);
    let decision = Decision::SwitchOver {
        predicted_downtime_ns: 0,
        reason: SwitchReason::DowntimeMet,
    };
    assert!(out_of_order(engine.decide(decision)));
    assert!(out_of_order(engine.guest_paused(3)));
    // In order, it goes on; a second sync is out of order again.
    engine.dirty_log_synced(4).unwrap();
    assert!(matches!(
        engine.poll_event(),
        Some(SourceEvent::RoundMeasured(r)) if r.round == 1
    ));
    assert!(out_of_order(engine.dirty_log_synced(5)));
    engine.decide(decision).unwrap();
    assert!(matches!(
        engine.poll_event(),
        Some(SourceEvent::PauseGuest { .. })
    ));
    engine.guest_paused(6).unwrap();
    assert_eq!(
        engine.poll_event(),
        Some(SourceEvent::SyncDirtyLog { paused: true })
    );
    // The final harvest waits for the sync too.
    assert_eq!(engine.poll_transmit(&memory, 7, &mut buf).unwrap(), 0);
    engine.dirty_log_synced(8).unwrap();
    assert!(engine.poll_transmit(&memory, 9, &mut buf).unwrap() > 0);
}

/// Memory that counts the pages read through it.
struct Counting<M> {
    inner: M,
    reads: Cell<u64>,
}

impl<M: PageMemory> PageMemory for Counting<M> {
    fn page_size(&self) -> usize {
        self.inner.page_size()
    }
    fn total_pages(&self) -> u64 {
        self.inner.total_pages()
    }
    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read_page(page, buf)
    }
    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.inner.write_page(page, data)
    }
    fn known_zero_pages(&self, first: u64, max: u64) -> u64 {
        self.inner.known_zero_pages(first, max)
    }
}

/// A poll walks at most `max_pages_per_poll` pages, even over zero pages that
/// produce no bytes; 0 is refused.
#[test]
fn a_poll_walks_at_most_max_pages_per_poll() {
    let pages = 10_000u64;
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    let bitmap = AtomicDirtyBitmap::new(layout);
    let refused = SourceConfig {
        max_pages_per_poll: 0,
        ..SourceConfig::new(PAGE)
    };
    assert!(matches!(
        SourceEngine::new(&bitmap, refused, 0),
        Err(EngineError::InvalidConfig { .. })
    ));
    // Plain zero memory: no knowledge of its zero pages, every page is read.
    let memory = Counting {
        inner: VecMemory::new(PAGE, pages),
        reads: Cell::new(0),
    };
    let config = SourceConfig {
        max_pages_per_poll: 100,
        ..SourceConfig::new(PAGE)
    };
    let mut engine = SourceEngine::new(&bitmap, config, 0).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut polls = 0;
    loop {
        let before = memory.reads.get();
        engine.poll_transmit(&memory, polls, &mut buf).unwrap();
        polls += 1;
        assert!(
            polls <= pages / 100 + 1,
            "the bulk round did not end in {polls} polls"
        );
        assert!(memory.reads.get() - before <= 100, "a poll walked too far");
        if let Some(event) = engine.poll_event() {
            assert!(matches!(event, SourceEvent::RoundMeasured(r) if r.pages_sent == pages));
            break;
        }
    }
    assert_eq!(polls, pages / 100 + 1, "the bulk round took {polls} polls");
}

/// The bulk round over fresh memory skips its never-written pages in runs: few pages
/// are read or walked per poll, the kept hashes stay right (the destination verifies
/// the digest) and the destination ends equal.
#[test]
fn the_bulk_round_skips_runs_known_zero() {
    let pages = 1u64 << 16;
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    let bitmap = AtomicDirtyBitmap::new(layout);
    let mut fresh = FreshMemory::new(PAGE, pages).unwrap();
    // A few written pages, one of them written with zeros (not known zero: read).
    let written = [0u64, 1, 700, 4095, 4096, 30_000, pages - 1];
    for &p in &written {
        fresh.write_page(p, &page_of(p as u8 | 1)).unwrap();
    }
    fresh.write_page(9_000, &page_of(0)).unwrap();
    let memory = Counting {
        inner: fresh,
        reads: Cell::new(0),
    };
    let config = SourceConfig {
        max_pages_per_poll: 16,
        ..SourceConfig::new(PAGE)
    };
    let mut source = Migration::new(&bitmap, config, rounds(1), 0).unwrap();
    let mut dest_memory = FreshMemory::new(PAGE, pages).unwrap();
    let mut dest = Applier::with_memory(dest_memory.whole());
    let mut buf = vec![0u8; 1 << 20];
    let (mut now, mut polls, mut bulk_polls, mut done) = (0, 0u32, None, false);
    while !done {
        now += 1_000;
        polls += 1;
        assert!(
            u64::from(polls) <= MAX_POLLS,
            "the migration did not complete in {MAX_POLLS} polls"
        );
        let len = source.poll_transmit(&memory, now, &mut buf).unwrap();
        dest.feed(&buf[..len]).unwrap();
        while let Some(event) = source.poll_event() {
            match event {
                MigrationEvent::RoundDone(r) => {
                    assert_eq!(r.outcome.stats.pages_sent, pages);
                    assert_eq!(
                        r.codecs.get(precopy::codec::Encoding::Zero).pages,
                        pages - 7
                    );
                    bulk_polls = Some(polls);
                    // Only the written pages were read.
                    assert_eq!(memory.reads.get(), written.len() as u64 + 1);
                }
                MigrationEvent::PauseGuest { .. } => source.guest_paused(now).unwrap(),
                MigrationEvent::Complete { .. } => done = true,
                _ => {}
            }
        }
        assert!(polls < 10_000, "the migration does not end");
    }
    // 16 walks per poll, a run skipped in one: a handful of polls, not 65536 / 16.
    let bulk_polls = bulk_polls.unwrap();
    assert!(bulk_polls <= 3, "the bulk round took {bulk_polls} polls");
    assert_eq!(dest.finish(), Ok(()), "the destination verified the digest");
    drop(dest);
    assert!(dest_memory.as_bytes() == memory.inner.as_bytes());
}

/// The bulk round's wire bytes include the stream header: every byte put out
/// belongs to a round.
#[test]
fn the_bulk_round_counts_the_stream_header() {
    let pages = 64u64;
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    let bitmap = AtomicDirtyBitmap::new(layout);
    let mut memory = VecMemory::new(PAGE, pages);
    memory.write_page(3, &page_of(3)).unwrap();
    let mut source = Migration::new(&bitmap, SourceConfig::new(PAGE), rounds(2), 0).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let len = source.poll_transmit(&memory, 1_000, &mut buf).unwrap();
    let Some(MigrationEvent::RoundDone(r)) = source.poll_event() else {
        panic!("the bulk round fits one poll")
    };
    assert_eq!(r.outcome.stats.round, 1);
    assert_eq!(r.outcome.stats.wire_bytes, len as u64);
}
