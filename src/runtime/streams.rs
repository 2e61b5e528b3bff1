//! The source of a multi-stream migration (like QEMU's multifd): one engine per
//! stream, each sending its own pages ([`Shard`]), encoding on its own thread into
//! buffers that a sender thread writes to the stream's transport, with one scheduler
//! deciding for all of them.
//!
//! ```text
//!                 ┌ encoder 0 (SourceEngine, shard 0) ─[bounded channel]→ sender 0 → link 0
//! coordinator ────┤ ...                                                      │
//! (Scheduler,     └ encoder N-1 ──────────────────────[bounded channel]→ sender N-1 → link N-1
//!  the guest)  ←───────── round ends, pause requests, completions, verdicts ─┘
//! ```
//!
//! - **Back-pressure**: each encoder has a few buffers; when its sender is behind, the
//!   bounded channel blocks it. The pages an encoder gets out per second, blocked time
//!   included, is what its compression choice measures ([`CompressionChoice`]).
//! - **Rounds** end together: an encoder reports its round's end through its sender,
//!   after the round's last bytes were handed to the transport, and waits; the
//!   coordinator thread forwards every report to the core's [`Coordinator`], which
//!   holds the round barrier and the one scheduler: when every stream has reported,
//!   the scheduler sees the sum (pages, bytes, dirty pages) at that moment and decides
//!   for all. A page's versions all travel on one stream, so
//!   no version overtakes another.
//! - **Switchover**: when every encoder asks for the pause, the guest is paused once,
//!   each engine harvests its last pages, and each stream ends with its own digest.
//! - **Verification**: with [`Verify::AfterResume`] (the default) each stream's
//!   completion digest folds the hashes of the pages it sent, so the guest is paused
//!   only for the final round's pages and that fold. Once every destination stream
//!   verified (the destination may resume the guest: downtime ends), the source
//!   re-reads its still paused memory in parallel and compares every page with the
//!   hash of what was sent ([`SourceCheck`]): a page that differs was written without
//!   being marked dirty (a lost write), and the migration fails while the source can
//!   still take the guest back. With [`Verify::InDowntime`] the digest re-reads memory
//!   with the guest paused instead, and the check after is not needed.
//! - **Failure** anywhere stops every stream; each engine puts the pages it harvested
//!   but did not send back into the bitmap, and the guest keeps running.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use std::vec;
use std::vec::Vec;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};

use super::pacer::TokenBucket;
use super::RuntimeError;
use crate::bitmap::AtomicDirtyBitmap;
use crate::codec::CodecStats;
pub use crate::engine::StreamsRound;
use crate::engine::{
    put_back_undelivered, Compression, CompressionChoice, Coordinator, CoordinatorConfig,
    CoordinatorError, CoordinatorEvent, EngineError, FinalRound, Guest, OwnedDeviceState,
    SourceConfig, SourceEngine, SourceEvent, StreamRound, Transport, Verify,
};
use crate::layout::Shard;
use crate::memory::PageMemory;
use crate::schedule::{Decision, Policy};

/// How a multi-stream migration runs: every stream's engine configuration, and how
/// the runtime moves its bytes.
///
/// The bandwidth cap is the policy's
/// ([`policy.bandwidth_cap`](crate::schedule::Policy::bandwidth_cap)): the
/// scheduler plans with it, and the runtime paces all streams together to it (a token
/// bucket shared by the senders, with a burst of one buffer per stream). To pace one
/// transport of your own, wrap it in [`RateLimited`](super::pacer::RateLimited).
#[derive(Clone, Debug)]
pub struct MigrationOptions {
    /// Every stream's engine configuration (codecs, delta cache budget for the whole
    /// migration, session id, verification). [`stream`](SourceConfig::stream) is set
    /// per stream by the runtime; each stream gets its share of the delta cache
    /// budget.
    pub source: SourceConfig,
    /// LZ4: follow the bottleneck per stream ([`Compression::Auto`]), or forced.
    pub compression: Compression,
    /// Bytes per buffer an encoder fills (at least the engine's minimum).
    pub buffer_bytes: usize,
    /// Filled buffers that may wait for a sender (the back-pressure bound, at least 1).
    pub queue_depth: usize,
    /// When to switch over, throttle or give up: the policy of the migration's one
    /// scheduler (the core's [`Coordinator`]).
    pub policy: Policy,
}

impl MigrationOptions {
    /// `source` decided by `policy`, with adaptive compression and 256 KiB buffers, 4
    /// of them queued per stream.
    pub fn new(source: SourceConfig, policy: Policy) -> Self {
        MigrationOptions {
            source,
            compression: Compression::Auto,
            buffer_bytes: 256 << 10,
            queue_depth: 4,
            policy,
        }
    }
}

/// The final round over all streams.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StreamsFinal {
    /// Round number (1 is the bulk round).
    pub round: u32,
    /// Pages sent with the guest paused.
    pub pages_sent: u64,
    /// Bytes put on the wire, completion frames included.
    pub wire_bytes: u64,
    /// Pages per codec.
    pub codecs: CodecStats,
}

/// What a migration reports while it runs, for a progress display or a log: the
/// guest itself is driven through [`Guest`]. Every method has a default that ignores
/// it; `()` ignores everything.
pub trait Observer {
    /// A live round ended on every stream (the coordinator's sum).
    fn round_done(&mut self, round: &StreamsRound) {
        let _ = round;
    }
    /// The final round was produced on every stream.
    fn final_round(&mut self, round: &StreamsFinal) {
        let _ = round;
    }
    /// Called about every 100 ms while a round is sent: pages sent and planned in the
    /// round, streams with LZ4 on.
    fn progress(&mut self, sent: u64, planned: u64, lz4_streams: u8) {
        let _ = (sent, planned, lz4_streams);
    }
    /// The migration ended, well or not: how far it got. Called once, before
    /// [`migrate_streams`] returns; after a failure this is where the figures are
    /// (rounds, bytes, when the guest was paused), since the error carries none.
    fn ended(&mut self, report: &MigrationReport) {
        let _ = report;
    }
}

/// Observes nothing.
impl Observer for () {}

/// How a multi-stream migration went: returned on success, and passed to
/// [`Observer::ended`] whatever the outcome (after a failure, as far as it got).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MigrationReport {
    /// Live rounds the scheduler saw.
    pub rounds: u32,
    /// The scheduler's last downtime prediction, ns (`u64::MAX`: none).
    pub predicted_downtime_ns: u64,
    /// When the guest was paused (`None`: never).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub paused_at: Option<Instant>,
    /// Stream bytes handed to the transports.
    pub wire_bytes: u64,
    /// Each stream's digest, in stream order (once every final round was produced).
    pub digests: Option<Vec<u128>>,
    /// How the digests were made ([`SourceConfig::verify`]).
    pub verify: Verify,
    /// When every stream's last byte (its completion frame) was handed to its
    /// transport, the guest paused (`None`: not all were). The downtime as QEMU counts
    /// it (`downtime` in `query-migrate`, with no return path) ends here: the
    /// destination's apply, verification and answer come after.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub sent_at: Option<Instant>,
    /// When every destination stream had verified its pages (`None`: not all did):
    /// the destination may resume the guest from here, so the downtime ends here,
    /// and the source's check ([`source_check`](Self::source_check)) runs after it.
    #[cfg_attr(feature = "serde", serde(skip))]
    pub verified_at: Option<Instant>,
    /// Verification inside the downtime, ns: the longest of the streams' polls that
    /// made the completion digest (the streams make theirs at the same time). That
    /// poll does nothing else (see
    /// [`SourceEvent::Complete`]): with
    /// [`Verify::AfterResume`] it folds 8 bytes per page, with [`Verify::InDowntime`]
    /// it re-reads and hashes all of memory. `None` if no stream got that far.
    pub verify_in_downtime_ns: Option<u64>,
    /// Pages the completion digests read from memory with the guest paused (0 with
    /// [`Verify::AfterResume`]).
    pub digest_pages_read: u64,
    /// The source's re-read of its paused memory against the hashes of what was sent.
    pub source_check: SourceCheck,
    /// How long [`source_check`](Self::source_check) took, ns (`None`: not run).
    pub verify_after_ns: Option<u64>,
    /// Pages put back into the bitmap because the buffers carrying them never
    /// reached a transport whole (the migration failed with them queued, or in the
    /// send that failed); 0 after a success.
    pub pages_put_back: u64,
}

/// The verdict of the source's check after the switchover: its paused memory re-read
/// and every page's XXH3-64 compared with that of the version it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum SourceCheck {
    /// Not run: the migration did not get as far as every destination verifying.
    NotRun,
    /// Not needed: the completion digests re-read memory with the guest paused
    /// ([`Verify::InDowntime`]) and the destination matched them.
    InDowntime,
    /// Every page of memory is what was sent.
    Matched {
        /// Pages compared.
        pages: u64,
    },
    /// Pages whose content differs from the version sent: written without being
    /// marked dirty (a lost write). The destination holds stale copies of them; the
    /// source, still paused, holds the guest.
    Mismatch {
        /// Pages compared.
        pages: u64,
        /// Pages that differ.
        differing: u64,
        /// The first of them, in page order (at most [`SourceCheck::FIRST_PAGES`]).
        first: Vec<u64>,
    },
}

impl SourceCheck {
    /// How many differing pages a [`SourceCheck::Mismatch`] names.
    pub const FIRST_PAGES: usize = 8;

    /// Whether the check ran and every page matched, or it was not needed.
    pub fn passed(&self) -> bool {
        matches!(self, SourceCheck::Matched { .. } | SourceCheck::InDowntime)
    }
}

/// What a stream's encoder leaves for the check after the switchover.
#[derive(Default)]
struct StreamEnd {
    /// The engine's kept page hashes ([`SourceEngine::take_sent_hashes`]).
    hashes: Vec<u64>,
    /// The time of the poll that made the completion digest, ns.
    digest_ns: u64,
    /// Pages that digest read from memory.
    pages_read: u64,
}

/// What an encoder or sender tells the coordinator.
enum Note {
    Round(StreamRound, bool),
    PauseWanted,
    Complete(u128, StreamsFinal),
    Verdict(Result<(), RuntimeError>),
    Failed(RuntimeError),
}

/// What an encoder hands its sender: bytes, or a note to pass on after them.
enum Chunk {
    Bytes(Vec<u8>, usize),
    Note(Note),
}

/// What the coordinator tells an encoder.
enum Command {
    Decide(Decision),
    Paused,
}

/// Per-stream progress the coordinator reads for [`Observer::progress`].
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    planned: AtomicU64,
    lz4: AtomicBool,
}

/// Migrates `guest` over `links`, one stream per link (1 to
/// [`MAX_STREAMS`](crate::layout::MAX_STREAMS)), each stream's engine configured by
/// `options` for its share of the pages. `verdict` waits for a destination stream's
/// answer after its completion frame (e.g. [`SourceLink::finish`](super::SourceLink::finish)).
/// Progress goes to `observer`; the guest is throttled, paused and asked to
/// [`sync_dirty`](Guest::sync_dirty) through its [`Guest`] methods, from the thread
/// that called this.
///
/// `Ok` only when every destination stream verified its pages and the source's check
/// found no page that differs; the guest then stays paused (it lives on at the
/// destination). On any failure every stream stops, every page harvested but not
/// handed whole to a transport is marked dirty again, a guest this call paused is
/// resumed and its throttling lifted, and the error says why; the figures of the
/// failed migration went to [`Observer::ended`].
pub fn migrate_streams<G, T, V>(
    guest: &G,
    links: Vec<T>,
    verdict: V,
    options: &MigrationOptions,
    observer: &mut dyn Observer,
) -> Result<MigrationReport, RuntimeError>
where
    G: Guest + Sync + ?Sized,
    G::Memory: Sync,
    G::Words: Sync,
    T: Transport + Send,
    T::Error: Into<RuntimeError>,
    V: Fn(&mut T) -> Result<(), RuntimeError> + Sync,
{
    let start = Instant::now();
    let now = || start.elapsed().as_nanos() as u64;
    let mut report = MigrationReport {
        rounds: 0,
        predicted_downtime_ns: u64::MAX,
        paused_at: None,
        wire_bytes: 0,
        digests: None,
        verify: options.source.verify,
        sent_at: None,
        verified_at: None,
        verify_in_downtime_ns: None,
        digest_pages_read: 0,
        source_check: SourceCheck::NotRun,
        verify_after_ns: None,
        pages_put_back: 0,
    };
    let result = run_streams(guest, links, &verdict, options, observer, &mut report, &now);
    match &result {
        Ok(()) => log::info!(
            "migration verified: {} rounds, {} bytes on the wire, source check {:?}",
            report.rounds,
            report.wire_bytes,
            report.source_check
        ),
        Err(e) => log::error!("migration failed, the guest runs on at the source: {e}"),
    }
    if result.is_err() {
        // The guest goes on at the source.
        guest.throttle(0);
        if report.paused_at.is_some() {
            guest.resume();
        }
    }
    observer.ended(&report);
    result.map(|()| report)
}

/// Runs the streams and, with [`Verify::AfterResume`], the source's check; fills
/// `report` as it goes.
fn run_streams<G, T, V>(
    guest: &G,
    links: Vec<T>,
    verdict: &V,
    options: &MigrationOptions,
    observer: &mut dyn Observer,
    report: &mut MigrationReport,
    now: &(dyn Fn() -> u64 + Sync),
) -> Result<(), RuntimeError>
where
    G: Guest + Sync + ?Sized,
    G::Memory: Sync,
    G::Words: Sync,
    T: Transport + Send,
    T::Error: Into<RuntimeError>,
    V: Fn(&mut T) -> Result<(), RuntimeError> + Sync,
{
    let (bitmap, memory) = (guest.bitmap(), guest.memory());
    let config = options.source;
    let n = links.len();
    if n == 0 || n > usize::from(crate::layout::MAX_STREAMS) {
        return Err(RuntimeError::StreamCount { streams: n });
    }
    let layout = *bitmap.layout();
    let mut coordinator = Coordinator::new(
        CoordinatorConfig {
            policy: options.policy,
            total_pages: layout.total_pages(),
            page_size: layout.page_size(),
            streams: n,
        },
        now(),
    )
    .map_err(|e| match e {
        CoordinatorError::Schedule(e) => RuntimeError::Engine(e.into()),
        e => RuntimeError::Coordinator(e),
    })?;
    // The policy's cap paces every stream's sends together.
    let cap = options
        .policy
        .bandwidth_cap
        .map(|rate| TokenBucket::new(rate, options.buffer_bytes.max(1) as u64 * n as u64));
    // With `sync_before_harvest`, each engine's harvest waits for the guest's dirty
    // sources (a KVM dirty log or ring) to be brought in, on its encoder thread.
    let sync = || {
        guest
            .sync_dirty()
            .map_err(|e| RuntimeError::guest("pulling the guest's dirty pages", e))
    };
    let sync: &(dyn Fn() -> Result<(), RuntimeError> + Sync) = &sync;
    let stop = AtomicBool::new(false);
    let sent_bytes = AtomicU64::new(0);
    let put_back = AtomicU64::new(0);
    let progress: Vec<Progress> = (0..n).map(|_| Progress::default()).collect();
    let ends: Vec<Mutex<Option<StreamEnd>>> = (0..n).map(|_| Mutex::new(None)).collect();
    // The paused guest's device state, from the coordinator (at the pause) to stream
    // 0's encoder (after its final round); the pause command orders the two.
    let device: Mutex<Vec<OwnedDeviceState>> = Mutex::new(Vec::new());
    let has_device_state = guest.has_device_state();
    let (note_tx, note_rx) = unbounded::<(usize, Note)>();
    let mut command_txs = Vec::with_capacity(n);
    let mut result = Ok(());
    std::thread::scope(|scope| {
        for (i, link) in links.into_iter().enumerate() {
            let (command_tx, command_rx) = unbounded::<Command>();
            command_txs.push(command_tx);
            let (data_tx, data_rx) = bounded::<Chunk>(options.queue_depth.max(1));
            let (free_tx, free_rx) = unbounded::<Vec<u8>>();
            let config = SourceConfig {
                stream: Shard::new(i as u8, n as u8).unwrap_or(Shard::WHOLE),
                // The delta cache budget is for the whole migration: each stream
                // caches its own pages.
                encoder: crate::codec::EncoderConfig {
                    cache_bytes: config.encoder.cache_bytes / n,
                    ..config.encoder
                },
                // Every stream's header announces it (a migration's streams share
                // their features); stream 0 carries it, the others send none.
                device_state: has_device_state,
                ..config
            };
            let (stop, progress, end) = (&stop, &progress[i], &ends[i]);
            let device = (i == 0).then_some(&device);
            let note = note_tx.clone();
            let name = std::format!("precopy-enc{i}");
            spawn_named(scope, name, i, &note_tx, move || {
                let encoder = Encoder {
                    sync,
                    device,
                    data_tx,
                    free_rx,
                    command_rx,
                    stop,
                    progress,
                    end,
                };
                if let Err(e) = encoder.run(bitmap, memory, config, options, now) {
                    // Only the first failure is reported; the others are its echo.
                    // An encoder stopped because another stream failed has nothing
                    // to add.
                    if !stop.swap(true, Ordering::Relaxed) {
                        let _ = note.send((i, Note::Failed(e)));
                    }
                }
            });
            let note = note_tx.clone();
            let name = std::format!("precopy-send{i}");
            let shared = SenderShared {
                index: i,
                notes: note,
                cap: cap.as_ref(),
                stop,
                sent_bytes: &sent_bytes,
                put_back: &put_back,
            };
            spawn_named(scope, name, i, &note_tx, move || {
                shared.send_loop(link, bitmap, data_rx, free_tx, verdict)
            });
        }
        drop(note_tx);
        result = coordinate(
            &stop,
            &note_rx,
            &command_txs,
            &mut coordinator,
            (guest, &device),
            observer,
            &progress,
            report,
            now,
        );
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        } else {
            report.verified_at = Some(Instant::now());
        }
        // Encoders waiting for a command see the channel close and stop.
        command_txs.clear();
    });
    report.rounds = coordinator.scheduler().rounds();
    report.predicted_downtime_ns = coordinator.scheduler().predicted_downtime_ns();
    report.wire_bytes = sent_bytes.load(Ordering::Relaxed);
    report.pages_put_back = put_back.load(Ordering::Relaxed);
    let ends: Vec<Option<StreamEnd>> = ends
        .into_iter()
        .map(|e| e.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect();
    report.verify_in_downtime_ns = ends.iter().flatten().map(|e| e.digest_ns).max();
    report.digest_pages_read = ends.iter().flatten().map(|e| e.pages_read).sum();
    result?;
    if let Verify::InDowntime = config.verify {
        report.source_check = SourceCheck::InDowntime;
    } else {
        let check_start = Instant::now();
        let hashes: Vec<&[u64]> = ends
            .iter()
            .map(|e| e.as_ref().map_or(&[][..], |e| &e.hashes[..]))
            .collect();
        let check = check_source(memory, &hashes)?;
        report.verify_after_ns = Some(check_start.elapsed().as_nanos() as u64);
        let mismatch = match &check {
            SourceCheck::Mismatch {
                differing, first, ..
            } => Some(RuntimeError::LostWrites {
                differing: *differing,
                first: first.clone(),
            }),
            _ => None,
        };
        report.source_check = check;
        if let Some(e) = mismatch {
            return Err(e);
        }
    }
    Ok(())
}

/// The source's check after the switchover: re-reads `memory` (paused) in parallel,
/// 512-page chunks spread over rayon's threads, and compares every page's XXH3-64
/// ([`PageMemory::hash_pages`]) with the one kept for it: `kept[i]` holds stream
/// `i`'s hashes by [`Shard::local_index`] (of `kept.len()` streams).
pub fn check_source<M: PageMemory + Sync + ?Sized>(
    memory: &M,
    kept: &[&[u64]],
) -> Result<SourceCheck, RuntimeError> {
    use rayon::prelude::*;
    let total = memory.total_pages();
    let page_size = memory.page_size();
    let count =
        u8::try_from(kept.len())
            .ok()
            .filter(|&c| c >= 1)
            .ok_or(RuntimeError::StreamCount {
                streams: kept.len(),
            })?;
    let mut chunks = Vec::new();
    for (i, hashes) in kept.iter().enumerate() {
        let shard = Shard::new(i as u8, count).unwrap_or(Shard::WHOLE);
        if hashes.len() as u64 != shard.pages(total) {
            return Err(RuntimeError::IncompleteHashes {
                stream: i,
                kept: hashes.len() as u64,
                pages: shard.pages(total),
            });
        }
        chunks.extend(shard.ranges(total).map(|r| (shard, *hashes, r)));
    }
    // Per chunk: pages that differ (the first few) and how many.
    let found = chunks
        .par_iter()
        .map_init(
            || {
                (
                    vec![0u8; page_size],
                    vec![0u64; crate::layout::SHARD_CHUNK_PAGES as usize],
                )
            },
            |(scratch, now), (shard, kept, range)| {
                let len = (range.end - range.start) as usize;
                let now = &mut now[..len];
                memory.hash_pages(range.start, now, scratch)?;
                let from = shard.local_index(range.start) as usize;
                let mut differing = 0u64;
                let mut first = Vec::new();
                for ((page, a), b) in range.clone().zip(now.iter()).zip(&kept[from..from + len]) {
                    if a != b {
                        differing += 1;
                        if first.len() < SourceCheck::FIRST_PAGES {
                            first.push(page);
                        }
                    }
                }
                Ok((differing, first))
            },
        )
        .collect::<Result<Vec<(u64, Vec<u64>)>, crate::memory::MemoryError>>()
        .map_err(|e| RuntimeError::Engine(EngineError::Memory(e)))?;
    let differing: u64 = found.iter().map(|f| f.0).sum();
    if differing == 0 {
        return Ok(SourceCheck::Matched { pages: total });
    }
    let mut first: Vec<u64> = found.into_iter().flat_map(|f| f.1).collect();
    first.sort_unstable();
    first.truncate(SourceCheck::FIRST_PAGES);
    Ok(SourceCheck::Mismatch {
        pages: total,
        differing,
        first,
    })
}

/// The coordinator loop: forwards the streams' notes into the core's [`Coordinator`]
/// (the one scheduler, the round barrier, the pause once, the final sums) and carries
/// out what it says: decisions and the pause to the encoders, throttling, the pause
/// and dirty syncs to `guest`, the tables to `observer`. No round or pause logic
/// lives here.
#[allow(clippy::too_many_arguments)]
fn coordinate<G: Guest + ?Sized>(
    stop: &AtomicBool,
    notes: &Receiver<(usize, Note)>,
    commands: &[Sender<Command>],
    coordinator: &mut Coordinator,
    (guest, device): (&G, &Mutex<Vec<OwnedDeviceState>>),
    observer: &mut dyn Observer,
    progress: &[Progress],
    report: &mut MigrationReport,
    now: impl Fn() -> u64,
) -> Result<(), RuntimeError> {
    let broadcast = |c: &dyn Fn() -> Command| {
        for tx in commands {
            let _ = tx.send(c());
        }
    };
    let fail = |e: RuntimeError| {
        stop.store(true, Ordering::Relaxed);
        Err(e)
    };
    // Streams that completed and have not had their verdict yet: after a failure, their
    // verdicts are still coming (a refusal among them is the telling error).
    let mut awaiting_verdict = vec![false; commands.len()];
    loop {
        let (i, note) = match notes.recv_timeout(Duration::from_millis(100)) {
            Ok(x) => x,
            Err(RecvTimeoutError::Timeout) => {
                let sum = |f: &dyn Fn(&Progress) -> u64| progress.iter().map(f).sum::<u64>();
                let lz4 = progress
                    .iter()
                    .filter(|p| p.lz4.load(Ordering::Relaxed))
                    .count();
                observer.progress(
                    sum(&|p| p.sent.load(Ordering::Relaxed)),
                    sum(&|p| p.planned.load(Ordering::Relaxed)),
                    lz4 as u8,
                );
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return fail(RuntimeError::StreamsVanished),
        };
        // The runtime's own reason, when a stream failed: richer than the core's.
        let mut cause = None;
        if let Some(awaiting) = awaiting_verdict.get_mut(i) {
            match note {
                Note::Complete(..) => *awaiting = true,
                Note::Verdict(_) => *awaiting = false,
                _ => {}
            }
        }
        let handled = match note {
            Note::Round(r, lz4) => {
                if coordinator.round_ends_with_next_measurement() {
                    // The barrier: the scheduler decides on this round now. Pages the
                    // guest dirtied since the streams harvested (while their bytes
                    // were still buffered on the way) would be sent by a pause now:
                    // brought in (dirty logs kept outside the bitmap, which the next
                    // harvests need anyway) and counted.
                    if let Err(e) = guest.sync_dirty() {
                        return fail(RuntimeError::guest("pulling the guest's dirty pages", e));
                    }
                    coordinator.note_pending_pages(guest.bitmap().dirty_pages());
                }
                coordinator.handle_round_measured(i, r, lz4, now())
            }
            Note::PauseWanted => coordinator.handle_pause_wanted(i),
            Note::Complete(digest, f) => coordinator.handle_complete(
                i,
                digest,
                FinalRound {
                    round: f.round,
                    pages_sent: f.pages_sent,
                    wire_bytes: f.wire_bytes,
                    codecs: f.codecs,
                    // The coordinator's prediction is the one that counts; the digest's
                    // page counts travel in the stream's end slot.
                    predicted_downtime_ns: 0,
                    digest_pages_read: 0,
                    digest_pages_folded: 0,
                },
            ),
            Note::Verdict(Ok(())) => coordinator.handle_verdict(i, true),
            Note::Verdict(Err(e)) => {
                cause = Some(e);
                coordinator.handle_verdict(i, false)
            }
            Note::Failed(e) => {
                cause = Some(e);
                coordinator.handle_failure(i)
            }
        };
        if let Err(e) = handled {
            return fail(cause.unwrap_or(RuntimeError::Coordinator(e)));
        }
        while let Some(event) = coordinator.poll_event() {
            match event {
                CoordinatorEvent::RoundDone(sum) => {
                    let s = sum.outcome.stats;
                    log::info!(
                        "round {} done: {} pages, {} bytes, predicted downtime {} ns, {:?}",
                        s.round,
                        s.pages_sent,
                        s.wire_bytes,
                        s.predicted_downtime_ns,
                        sum.outcome.decision
                    );
                    observer.round_done(&sum)
                }
                CoordinatorEvent::Throttle(percent) => guest.throttle(percent),
                CoordinatorEvent::Decide(decision) => {
                    log::debug!("round decided: {decision:?}");
                    // Dirty pages tracked outside the bitmap (a KVM dirty log) came in
                    // at the barrier, before this decision: the next round's harvest
                    // has them.
                    broadcast(&|| Command::Decide(decision))
                }
                CoordinatorEvent::PauseGuest { .. } => {
                    log::info!("switchover: pausing the guest for the final round");
                    if let Err(e) = guest.pause() {
                        return fail(RuntimeError::guest("pausing the guest", e));
                    }
                    report.paused_at = Some(Instant::now());
                    // The last writes tracked outside the bitmap, before the engines'
                    // final harvest.
                    if let Err(e) = guest.sync_dirty() {
                        return fail(RuntimeError::guest(
                            "pulling the paused guest's dirty pages",
                            e,
                        ));
                    }
                    if guest.has_device_state() {
                        let mut items = Vec::new();
                        let saved = guest.save_device_state(&mut |d| {
                            items.push(OwnedDeviceState::from_item(&d));
                        });
                        if let Err(e) = saved {
                            return fail(RuntimeError::guest(
                                "saving the paused guest's device state",
                                e,
                            ));
                        }
                        *device.lock().unwrap_or_else(|p| p.into_inner()) = items;
                    }
                    if let Err(e) = coordinator.handle_guest_paused(now()) {
                        return fail(RuntimeError::Coordinator(e));
                    }
                }
                CoordinatorEvent::GuestPaused => broadcast(&|| Command::Paused),
                CoordinatorEvent::FinalRound(f) => {
                    // Every stream's sender passed on its completion after handing the
                    // bytes before it to the transport.
                    report.sent_at = Some(Instant::now());
                    observer.final_round(&StreamsFinal {
                        round: f.round,
                        pages_sent: f.pages_sent,
                        wire_bytes: f.wire_bytes,
                        codecs: f.codecs,
                    });
                    report.digests = coordinator.digests();
                }
                CoordinatorEvent::Done(_) => return Ok(()),
                CoordinatorEvent::Failed(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return fail(match (cause, e) {
                        (Some(cause), _) => {
                            let awaiting = awaiting_verdict.iter().filter(|&&a| a).count();
                            most_telling(cause, notes, awaiting)
                        }
                        (None, CoordinatorError::Schedule(e)) => RuntimeError::Engine(e.into()),
                        (None, e) => RuntimeError::Coordinator(e),
                    });
                }
            }
        }
    }
}

/// The error to report of a failed migration: the first one, unless another stream
/// reports the destination's reason (a refusal): a destination that refuses one stream
/// closes the others, and their resets may arrive first. `awaiting` streams completed
/// and wait for their verdicts: those come (each sender reads its reply and reports it),
/// so they are waited for, up to 10 s on a loaded machine; otherwise a refusal gets
/// 300 ms to show up among the failures.
fn most_telling(
    first: RuntimeError,
    notes: &Receiver<(usize, Note)>,
    mut awaiting: usize,
) -> RuntimeError {
    let refusal = |e: &RuntimeError| matches!(e, RuntimeError::Refused { .. });
    let wait = if awaiting > 0 {
        Duration::from_secs(10)
    } else {
        Duration::from_millis(300)
    };
    let deadline = Instant::now() + wait;
    let waiting_for_verdicts = awaiting > 0;
    let mut best = first;
    while !refusal(&best) {
        match notes.recv_deadline(deadline) {
            Ok((_, note)) => {
                if let Note::Verdict(_) = note {
                    awaiting = awaiting.saturating_sub(1);
                }
                if let Note::Failed(e) | Note::Verdict(Err(e)) = note {
                    if refusal(&e) {
                        best = e;
                    }
                }
                if waiting_for_verdicts && awaiting == 0 {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    best
}

/// One stream's encoder: drives its engine into buffers for its sender.
struct Encoder<'a> {
    data_tx: Sender<Chunk>,
    free_rx: Receiver<Vec<u8>>,
    command_rx: Receiver<Command>,
    /// Brings the guest's outside dirty sources into the bitmap (`SyncDirtyLog`).
    sync: &'a (dyn Fn() -> Result<(), RuntimeError> + Sync),
    /// The paused guest's device state, for stream 0 (which sends it after its
    /// final round); `None` for the others (they send none).
    device: Option<&'a Mutex<Vec<OwnedDeviceState>>>,
    stop: &'a AtomicBool,
    progress: &'a Progress,
    end: &'a Mutex<Option<StreamEnd>>,
}

impl Encoder<'_> {
    fn run<M, W>(
        &self,
        bitmap: &AtomicDirtyBitmap<W>,
        memory: &M,
        config: SourceConfig,
        options: &MigrationOptions,
        now: impl Fn() -> u64,
    ) -> Result<(), RuntimeError>
    where
        M: PageMemory + ?Sized,
        W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>,
    {
        let mut engine = SourceEngine::new(bitmap, config, now())?;
        let result = self.drive(&mut engine, memory, options, &now);
        if result.is_err() {
            // Pages harvested but not sent go back into the bitmap.
            engine.abort();
        } else {
            // Freeing the engine (its delta cache: tens of MiB) costs milliseconds of
            // CPU, which right after the final round would be taken from the
            // downtime: hold it until the coordinator hangs up, after the verdicts.
            let _ = self.command_rx.recv();
        }
        result
    }

    fn drive<M, W>(
        &self,
        engine: &mut SourceEngine<'_, W>,
        memory: &M,
        options: &MigrationOptions,
        now: &impl Fn() -> u64,
    ) -> Result<(), RuntimeError>
    where
        M: PageMemory + ?Sized,
        W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>,
    {
        let stopped = || RuntimeError::Stopped;
        let buffer_len = engine.min_buffer_len().max(options.buffer_bytes);
        let mut fresh_buffers = options.queue_depth.max(1) + 1;
        let mut choice = CompressionChoice::new(options.compression);
        engine.set_lz4(choice.lz4());
        let mut last_encoded = 0u64;
        // The wall time of each poll, from the end of the last one: waiting for a free
        // buffer (the sender is behind), encoding, handing the buffer over.
        let mut poll_start = now();
        let mut paused = false;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            let mut buf = match self.free_rx.try_recv() {
                Ok(buf) => buf,
                Err(_) if fresh_buffers > 0 => {
                    fresh_buffers -= 1;
                    vec![0u8; buffer_len]
                }
                Err(_) => self.free_rx.recv().map_err(|_| stopped())?,
            };
            let poll_begin = now();
            let len = engine.poll_transmit(memory, poll_begin, &mut buf)?;
            let poll_ns = now().saturating_sub(poll_begin);
            self.data_tx
                .send(Chunk::Bytes(buf, len))
                .map_err(|_| stopped())?;
            let stats = engine.codec_stats();
            let encoded = stats.pages() - stats.get(crate::codec::Encoding::Zero).pages;
            let poll_end = now();
            engine.set_lz4(choice.observe(
                encoded - last_encoded,
                len as u64,
                poll_end - poll_start,
            ));
            (last_encoded, poll_start) = (encoded, poll_end);
            let (sent, planned) = engine.round_progress();
            self.progress.sent.store(sent, Ordering::Relaxed);
            self.progress.planned.store(planned, Ordering::Relaxed);
            self.progress
                .lz4
                .store(engine.lz4_enabled(), Ordering::Relaxed);
            let note = |n: Note| self.data_tx.send(Chunk::Note(n)).map_err(|_| stopped());
            while let Some(event) = engine.poll_event() {
                match event {
                    SourceEvent::RoundMeasured(r) => {
                        note(Note::Round(r, engine.lz4_enabled()))?;
                        match self.command_rx.recv() {
                            Ok(Command::Decide(d)) => engine.decide(d)?,
                            _ => return Err(stopped()),
                        }
                        // The wait for the other streams is no poll's time.
                        poll_start = now();
                    }
                    // Re-protect in KVM and OR into the bitmap (the guest's
                    // `sync_dirty`), then harvest. Not once the guest is paused: the
                    // coordinator synced after the pause, before telling the encoders,
                    // and a paused guest dirties nothing more (a sync per stream would
                    // only add to the downtime).
                    SourceEvent::SyncDirtyLog { .. } => {
                        if !paused {
                            (self.sync)()?;
                        }
                        engine.dirty_log_synced(now())?
                    }
                    // The paused guest's device state, saved by the coordinator at
                    // the pause: framed after the final round, before the digest.
                    SourceEvent::DeviceState => {
                        let items = self.device.map_or_else(Vec::new, |d| {
                            std::mem::take(&mut *d.lock().unwrap_or_else(|p| p.into_inner()))
                        });
                        let items: Vec<_> = items.iter().map(OwnedDeviceState::item).collect();
                        let needed = items.iter().map(|d| d.frame_len()).sum::<usize>();
                        // A buffer of the pool (none is allocated in the downtime
                        // unless all are queued); it goes back to the pool, so it
                        // must fit any poll.
                        let mut buf = self.free_rx.try_recv().unwrap_or_default();
                        if buf.len() < needed.max(buffer_len) {
                            buf.resize(needed.max(buffer_len), 0);
                        }
                        let len = engine.send_device_state(&items, &mut buf)?;
                        self.data_tx
                            .send(Chunk::Bytes(buf, len))
                            .map_err(|_| stopped())?;
                    }
                    SourceEvent::PauseGuest { .. } => {
                        note(Note::PauseWanted)?;
                        match self.command_rx.recv() {
                            Ok(Command::Paused) => {
                                paused = true;
                                engine.guest_paused(now())?
                            }
                            _ => return Err(stopped()),
                        }
                        poll_start = now();
                    }
                    SourceEvent::Complete { digest, round } => {
                        // That poll made the digest and nothing else: its time is the
                        // verification inside the downtime.
                        let end = StreamEnd {
                            hashes: engine.take_sent_hashes().unwrap_or_default(),
                            digest_ns: poll_ns,
                            pages_read: round.digest_pages_read,
                        };
                        *self.end.lock().unwrap_or_else(|p| p.into_inner()) = Some(end);
                        let fin = StreamsFinal {
                            round: round.round,
                            pages_sent: round.pages_sent,
                            wire_bytes: round.wire_bytes,
                            codecs: round.codecs,
                        };
                        return note(Note::Complete(digest, fin));
                    }
                }
            }
        }
    }
}

/// What a stream's sender shares with the rest.
struct SenderShared<'a> {
    index: usize,
    notes: Sender<(usize, Note)>,
    cap: Option<&'a TokenBucket>,
    stop: &'a AtomicBool,
    sent_bytes: &'a AtomicU64,
    /// Pages put back into the bitmap, all streams.
    put_back: &'a AtomicU64,
}

impl SenderShared<'_> {
    /// One stream's sender: writes the encoder's buffers to the link (within the cap),
    /// passes notes on after the bytes before them, and after the completion waits for
    /// the destination's verdict.
    ///
    /// A page counts as delivered once the buffer carrying it was handed whole to the
    /// transport. Once the migration stops (this link failed, or another stream did),
    /// every buffer not handed over whole (the one whose send failed, and each still
    /// queued or yet to come from the encoder, until it hangs up) has its pages marked
    /// dirty again ([`put_back_undelivered`]): the guest's latest write to them
    /// reached neither the destination nor a later harvest.
    fn send_loop<T, V, W>(
        &self,
        mut link: T,
        bitmap: &AtomicDirtyBitmap<W>,
        data: Receiver<Chunk>,
        free: Sender<Vec<u8>>,
        verdict: &V,
    ) where
        T: Transport,
        T::Error: Into<RuntimeError>,
        V: Fn(&mut T) -> Result<(), RuntimeError>,
        W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>,
    {
        let i = self.index;
        let mut stopped = false;
        // Until the encoder hangs up: after a stop, it may still hand over what it
        // encoded.
        for chunk in data.iter() {
            stopped = stopped || self.stop.load(Ordering::Relaxed);
            match chunk {
                Chunk::Bytes(buf, len) => {
                    if stopped {
                        self.put_back(bitmap, &buf[..len]);
                    } else if len > 0 {
                        if let Some(cap) = self.cap {
                            cap.take(len);
                        }
                        if let Err(e) = link.send(&buf[..len]) {
                            // Whatever part of it the link took, the rest did not
                            // arrive: the whole buffer goes back.
                            self.put_back(bitmap, &buf[..len]);
                            // Every sender's failure is reported: the coordinator
                            // prefers a destination's stated reason to the resets of
                            // the other connections that follow it.
                            self.stop.store(true, Ordering::Relaxed);
                            let _ = self.notes.send((i, Note::Failed(e.into())));
                            stopped = true;
                        } else {
                            self.sent_bytes.fetch_add(len as u64, Ordering::Relaxed);
                        }
                    }
                    // An encoder waiting for a buffer must get one to see the stop.
                    let _ = free.send(buf);
                }
                Chunk::Note(_) if stopped => {}
                Chunk::Note(note) => {
                    let complete = matches!(note, Note::Complete(..));
                    let _ = self.notes.send((i, note));
                    if complete {
                        let _ = self.notes.send((i, Note::Verdict(verdict(&mut link))));
                        return;
                    }
                }
            }
        }
    }

    /// Marks again the pages of `bytes`, a buffer that never reached the transport
    /// whole. A buffer that does not parse would be an engine bug: its stream already
    /// failed, and the engine's own put-back ([`SourceEngine::abort`]) still runs.
    fn put_back<W>(&self, bitmap: &AtomicDirtyBitmap<W>, bytes: &[u8])
    where
        W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>,
    {
        if let Ok(pages) = put_back_undelivered(bitmap, bytes) {
            self.put_back.fetch_add(pages, Ordering::Relaxed);
        }
    }
}

/// Spawns `f` on a thread named `name` (names show in `top -H`, `perf` and
/// debuggers). A thread the OS refuses to start fails stream `index`'s migration.
fn spawn_named<'scope, 'env, F>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    name: std::string::String,
    index: usize,
    notes: &Sender<(usize, Note)>,
    f: F,
) where
    F: FnOnce() + Send + 'scope,
{
    if let Err(e) = std::thread::Builder::new()
        .name(name)
        .spawn_scoped(scope, f)
    {
        let _ = notes.send((
            index,
            Note::Failed(RuntimeError::io("starting a thread", e)),
        ));
    }
}
