//! The std runtime's multi-stream migration as a VMM uses it: `migrate_streams` over
//! real TCP connections with real writer threads dirtying the guest, against
//! `receive_streams` on another thread; and links that fail mid-round, after which
//! every page whose latest content did not reach the destination is still marked; and a
//! destination that fails one stream, which the source reports as that refusal.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use precopy::bitmap::AtomicDirtyBitmap;
use precopy::codec::EncoderConfig;
use precopy::engine::{Applier, Compression, Guest, OwnedDeviceState, SourceConfig, Transport};
use precopy::layout::{GuestLayout, Shard};
use precopy::memory::{AtomicMemory, PageMemory, VecMemory};
use precopy::runtime::{
    migrate_streams, receive_streams, Limits, MigrationOptions, MigrationReport, Observer,
    ReceivedStreams, RuntimeError, SourceLink, StreamsRound,
};
use precopy::schedule::{OnLimit, Policy};
use precopy::wire::{DeviceState, Features};
use precopy::workload::SyntheticGuest;

const PAGE: usize = 4096;

/// The synthetic guest, counting the pauses the runtime asks for; with `device`, it has
/// device state (two items, the first naming the pauses seen when it was saved); with
/// `log_page`, it keeps a dirty log outside the bitmap (as KVM does) that reports that
/// page dirty at every sync.
struct Counted<'a> {
    guest: &'a SyntheticGuest,
    pauses: AtomicU32,
    device: bool,
    log_page: Option<u64>,
    /// Syncs of the dirty log with the guest paused.
    paused_syncs: AtomicU32,
}

impl<'a> Counted<'a> {
    /// No pause seen yet, no device state, no dirty log of its own.
    fn new(guest: &'a SyntheticGuest) -> Self {
        Counted {
            guest,
            pauses: AtomicU32::new(0),
            device: false,
            log_page: None,
            paused_syncs: AtomicU32::new(0),
        }
    }
}

/// The device state a `Counted` guest saves after `pauses` pauses.
fn device_items(pauses: u32) -> Vec<OwnedDeviceState> {
    let mut regs = pauses.to_le_bytes().to_vec();
    regs.extend((0..600u32).map(|i| (i * 7) as u8));
    vec![
        OwnedDeviceState {
            id: 0x100,
            version: 3,
            data: regs,
        },
        OwnedDeviceState {
            id: 0x200,
            version: 1,
            data: Vec::new(),
        },
    ]
}

impl Guest for Counted<'_> {
    type Memory = AtomicMemory;
    type Words = Box<[std::sync::atomic::AtomicU64]>;
    type Error = std::convert::Infallible;
    fn memory(&self) -> &AtomicMemory {
        Guest::memory(self.guest)
    }
    fn bitmap(&self) -> &AtomicDirtyBitmap<Self::Words> {
        Guest::bitmap(self.guest)
    }
    fn pause(&self) -> Result<(), Self::Error> {
        self.pauses.fetch_add(1, Ordering::Relaxed);
        Guest::pause(self.guest)
    }
    fn resume(&self) {
        Guest::resume(self.guest)
    }
    fn throttle(&self, percent: u8) {
        Guest::throttle(self.guest, percent)
    }
    fn sync_dirty(&self) -> Result<(), Self::Error> {
        if self.pauses.load(Ordering::Relaxed) > 0 {
            self.paused_syncs.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(page) = self.log_page {
            Guest::bitmap(self.guest).mark(page).unwrap();
        }
        Ok(())
    }
    fn has_device_state(&self) -> bool {
        self.device
    }
    fn save_device_state(&self, save: &mut dyn FnMut(DeviceState<'_>)) -> Result<(), Self::Error> {
        for item in device_items(self.pauses.load(Ordering::Relaxed)) {
            save(item.item());
        }
        Ok(())
    }
}

/// Keeps the rounds and the final report.
#[derive(Default)]
struct Seen {
    rounds: Vec<StreamsRound>,
    report: Option<MigrationReport>,
}

impl Observer for Seen {
    fn round_done(&mut self, round: &StreamsRound) {
        self.rounds.push(*round);
    }
    fn ended(&mut self, report: &MigrationReport) {
        self.report = Some(report.clone());
    }
}

/// A destination on a thread: takes one migration on a loopback listener.
fn destination(
    layout: GuestLayout,
) -> (
    String,
    std::thread::JoinHandle<Result<ReceivedStreams, RuntimeError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let thread = std::thread::spawn(move || {
        let (first, peer) = listener.accept().unwrap();
        let limits = Limits {
            max_memory: layout.total_bytes(),
            expect: Some(layout),
        };
        receive_streams(
            &listener,
            first,
            &peer.to_string(),
            &limits,
            Duration::from_secs(20),
        )
    });
    (addr, thread)
}

fn links(addr: &str, n: usize) -> Vec<SourceLink<TcpStream>> {
    (0..n)
        .map(|_| {
            let c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            SourceLink::new(c, format!("the destination {addr}"))
        })
        .collect()
}

fn config() -> SourceConfig {
    SourceConfig::new(PAGE)
}

fn options(cap: Option<u64>) -> MigrationOptions {
    MigrationOptions::new(
        config(),
        Policy {
            downtime_limit_ns: 50_000_000,
            bandwidth_cap: cap,
            ..Policy::default()
        },
    )
}

#[test]
fn three_streams_with_writers_running_end_with_equal_memory() {
    let layout = GuestLayout::flat(PAGE as u64, 24 << 20).unwrap();
    let workload = "continuous:rate=20k,set=8M".parse().unwrap();
    let mut guest = SyntheticGuest::new(layout, workload);
    let (addr, dest) = destination(layout);
    guest.start(2);
    let memory = guest.memory().clone();
    let counted = Counted::new(&guest);
    let mut seen = Seen::default();
    let report = migrate_streams(
        &counted,
        links(&addr, 3),
        |l| l.finish(),
        &options(None),
        &mut seen,
    )
    .unwrap();
    let (rounds, pauses) = (seen.rounds.len(), counted.pauses.load(Ordering::Relaxed));
    assert_eq!(seen.report.unwrap().digests, report.digests);
    // The downtime's marks in order: paused, every last byte handed over, verified.
    let (paused, sent, verified) = (
        report.paused_at.expect("paused"),
        report.sent_at.expect("every stream sent its completion"),
        report.verified_at.expect("every stream verified"),
    );
    assert!(paused <= sent && sent <= verified);
    let received = dest.join().unwrap().unwrap();
    // The guest stays paused after a successful migration: compare every page.
    let (mut a, mut b) = (vec![0u8; PAGE], vec![0u8; PAGE]);
    for page in 0..layout.total_pages() {
        memory.read_page(page, &mut a).unwrap();
        received.memory.read_page(page, &mut b).unwrap();
        assert!(a == b, "page {page} differs");
    }
    assert_eq!(received.digests, report.digests.unwrap());
    assert_eq!(received.header.stream.count(), 3);
    assert!(received.device_state.is_empty());
    assert!(!received.header.features.contains(Features::DEVICE_STATE));
    assert_eq!(pauses, 1, "the guest is paused once for all streams");
    assert!(
        rounds >= 2,
        "the bulk round and at least one more: {rounds}"
    );
    assert!(guest.writes() > 0);
    guest.stop();
}

/// A guest with device state: every stream announces it, stream 0 carries what the
/// guest saved after its pause, and the destination hands it over once verified.
#[test]
fn the_guests_device_state_travels_after_the_final_round() {
    let layout = GuestLayout::flat(PAGE as u64, 8 << 20).unwrap();
    let workload = "continuous:rate=20k,set=2M".parse().unwrap();
    let mut guest = SyntheticGuest::new(layout, workload);
    let (addr, dest) = destination(layout);
    guest.start(1);
    let counted = Counted {
        device: true,
        ..Counted::new(&guest)
    };
    let report = migrate_streams(
        &counted,
        links(&addr, 2),
        |l| l.finish(),
        &options(None),
        &mut Seen::default(),
    )
    .unwrap();
    let received = dest.join().unwrap().unwrap();
    assert_eq!(received.digests, report.digests.unwrap());
    assert!(received.header.features.contains(Features::DEVICE_STATE));
    // Saved once, with the guest paused (one pause seen), and received as saved.
    assert_eq!(received.device_state, device_items(1));
    guest.stop();
}

/// At every round's barrier the runtime brings in the dirty logs kept outside the
/// bitmap and counts the pages dirtied since the streams harvested: the scheduler
/// predicts the pause with them. Here the guest's log reports a page at every sync,
/// after the harvests: every round has it pending. Once paused, the log is synced once.
#[test]
fn pages_dirtied_after_the_harvests_are_counted_at_each_barrier() {
    let layout = GuestLayout::flat(PAGE as u64, 8 << 20).unwrap();
    let guest = SyntheticGuest::new(layout, "idle".parse().unwrap());
    let (addr, dest) = destination(layout);
    let counted = Counted {
        log_page: Some(700),
        ..Counted::new(&guest)
    };
    let mut seen = Seen::default();
    // As a KVM guest's: every harvest waits for the log to be brought in.
    let mut options = options(None);
    options.source.sync_before_harvest = true;
    let report = migrate_streams(
        &counted,
        links(&addr, 2),
        |l| l.finish(),
        &options,
        &mut seen,
    )
    .unwrap();
    let received = dest.join().unwrap().unwrap();
    assert_eq!(received.digests, report.digests.unwrap());
    assert!(seen.rounds.len() >= 2, "{}", seen.rounds.len());
    for r in &seen.rounds {
        let s = r.outcome.stats;
        assert!(s.pending_pages >= 1, "round {}: {s:?}", s.round);
    }
    // Paused, the log is brought in once, before the final harvests: not again by
    // each stream's encoder inside the downtime.
    assert_eq!(counted.paused_syncs.load(Ordering::Relaxed), 1);
}

fn cut() -> RuntimeError {
    RuntimeError::io(
        "sending",
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the cable was cut"),
    )
}

/// A link that fails after `budget` bytes.
struct Failing<T> {
    inner: T,
    budget: usize,
}

impl<T: Transport<Error = RuntimeError>> Transport for Failing<T> {
    type Error = RuntimeError;
    fn send(&mut self, bytes: &[u8]) -> Result<(), RuntimeError> {
        if bytes.len() > self.budget {
            return Err(cut());
        }
        self.budget -= bytes.len();
        self.inner.send(bytes)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RuntimeError> {
        self.inner.recv(buf)
    }
}

#[test]
fn a_stream_failing_mid_migration_stops_all_and_the_guest_runs_on() {
    let layout = GuestLayout::flat(PAGE as u64, 16 << 20).unwrap();
    let workload = "continuous:rate=20k,set=4M".parse().unwrap();
    let mut guest = SyntheticGuest::new(layout, workload);
    let (addr, dest) = destination(layout);
    guest.start(1);
    let links: Vec<Failing<_>> = links(&addr, 2)
        .into_iter()
        .enumerate()
        .map(|(i, inner)| Failing {
            inner,
            budget: if i == 1 { 1 << 20 } else { usize::MAX },
        })
        .collect();
    let mut seen = Seen::default();
    // Paced to 100 MB/s (the policy's cap) so the 1 MiB budget runs out in the bulk
    // round.
    let e = migrate_streams(
        &guest,
        links,
        |l| l.inner.finish(),
        &options(Some(100_000_000)),
        &mut seen,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("the cable was cut"), "{e}");
    let report = seen.report.expect("the observer hears how far it got");
    assert!(report.paused_at.is_none(), "never paused");
    assert!(report.wire_bytes > 0);
    // The destination saw its streams end early and verified nothing.
    assert!(dest.join().unwrap().is_err());
    // The guest was never paused and keeps writing: waits for one more write, for as
    // long as a loaded machine may hold its writers off the CPU.
    assert_runs_on(&guest);
    guest.stop();
}

/// Waits for one more write of `guest`, for as long as a loaded machine may hold its
/// writers off the CPU: a guest left paused fails.
fn assert_runs_on(guest: &SyntheticGuest) {
    let before = guest.writes();
    let deadline = Instant::now() + Duration::from_secs(30);
    while guest.writes() == before {
        assert!(
            Instant::now() < deadline,
            "the guest made no write in 30 s after the failed migration (left paused?)"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An in-memory link that keeps the bytes it took and fails once `budget` bytes went
/// through: the send that crosses it delivers its first part only (a socket that took
/// half a buffer), then reports the cut.
struct Cut {
    delivered: Arc<Mutex<Vec<u8>>>,
    budget: usize,
}

impl Transport for Cut {
    type Error = RuntimeError;
    fn send(&mut self, bytes: &[u8]) -> Result<(), RuntimeError> {
        let mut delivered = self.delivered.lock().unwrap();
        if bytes.len() > self.budget {
            delivered.extend_from_slice(&bytes[..self.budget]);
            self.budget = 0;
            return Err(cut());
        }
        self.budget -= bytes.len();
        delivered.extend_from_slice(bytes);
        Ok(())
    }
    fn recv(&mut self, _: &mut [u8]) -> Result<usize, RuntimeError> {
        Ok(0)
    }
}

/// Two streams of a fully written 32 MiB guest whose writer sweeps all of memory
/// (each page rewritten only every ~400 ms), raw pages (no LZ4, no delta) paced to
/// 100 MB/s so the senders fall behind their encoders and buffers queue up; stream
/// `cut_stream` is cut after `budget` bytes. Afterwards (writer stopped), every page
/// whose latest content did not reach the destination (the delivered bytes applied
/// to fresh memory, compared with the source's) must still be marked dirty. Returns
/// the live rounds that ended before the cut and the pages the senders put back.
fn cut_link_keeps_undelivered_pages_marked(cut_stream: usize, budget: usize) -> (usize, u64) {
    const STREAMS: usize = 2;
    let layout = GuestLayout::flat(PAGE as u64, 32 << 20).unwrap();
    let mut guest = SyntheticGuest::new(layout, "fill:rate=20k,set=32M".parse().unwrap());
    guest.start(1);
    let delivered: Vec<Arc<Mutex<Vec<u8>>>> = (0..STREAMS).map(|_| Arc::default()).collect();
    let links: Vec<Cut> = (0..STREAMS)
        .map(|i| Cut {
            delivered: Arc::clone(&delivered[i]),
            budget: if i == cut_stream { budget } else { usize::MAX },
        })
        .collect();
    let source = SourceConfig {
        encoder: EncoderConfig {
            cache_bytes: 0,
            ..EncoderConfig::new(PAGE)
        },
        ..SourceConfig::new(PAGE)
    };
    let policy = Policy {
        // 50 ms at 100 MB/s is about 1200 pages: far fewer than the writer dirties in
        // a round, so the migration is still live at the cut.
        downtime_limit_ns: 50_000_000,
        bandwidth_cap: Some(100_000_000),
        on_limit: OnLimit::Fail,
        ..Policy::default()
    };
    let options = MigrationOptions {
        compression: Compression::Off,
        ..MigrationOptions::new(source, policy)
    };
    let mut seen = Seen::default();
    let e = migrate_streams(&guest, links, |_| Ok(()), &options, &mut seen)
        .unwrap_err()
        .to_string();
    guest.stop();
    assert!(e.contains("the cable was cut"), "{e}");
    let report = seen.report.expect("the observer hears how far it got");
    assert!(report.paused_at.is_none(), "cut before the switchover");

    let (memory, bitmap) = (guest.memory(), guest.bitmap());
    let (mut src, mut dst) = (vec![0u8; PAGE], vec![0u8; PAGE]);
    let mut stale = 0u64;
    for (i, bytes) in delivered.iter().enumerate() {
        let mut applier = Applier::with_memory(VecMemory::new(PAGE, layout.total_pages()));
        // The cut may tear the last frame: the applier keeps it pending.
        applier.feed(&bytes.lock().unwrap()).unwrap();
        let shard = Shard::new(i as u8, STREAMS as u8).unwrap();
        for page in (0..layout.total_pages()).filter(|&p| shard.owns_range(p, 1)) {
            memory.read_page(page, &mut src).unwrap();
            applier.memory().read_page(page, &mut dst).unwrap();
            if src != dst {
                stale += 1;
                assert!(
                    bitmap.is_dirty(page),
                    "stream {i}, page {page}: its latest content never reached the \
                     destination and it is not marked dirty (a lost write)"
                );
            }
        }
    }
    assert!(stale > 0, "the cut left pages behind");
    (seen.rounds.len(), report.pages_put_back)
}

#[test]
fn a_link_cut_in_the_bulk_round_leaves_every_undelivered_page_marked() {
    // Stream 1 of 2 carries 4096 raw pages (about 16.8 MB) in the bulk round.
    let (rounds, put_back) = cut_link_keeps_undelivered_pages_marked(1, 4 << 20);
    assert_eq!(rounds, 0, "cut in the bulk round");
    assert!(put_back > 0, "queued buffers were put back");
}

#[test]
fn a_link_cut_in_a_later_round_leaves_every_undelivered_page_marked() {
    // Past stream 0's bulk round (about 16.8 MB), into the second round, which
    // carries the pages the writer rewrote during the bulk round.
    let (rounds, put_back) = cut_link_keeps_undelivered_pages_marked(0, 18 << 20);
    assert!(rounds >= 1, "cut after the bulk round");
    assert!(put_back > 0, "queued buffers were put back");
}

/// Stream `stream`'s view of the destination's memory, failing the write of page
/// `fail_at` as memory that stopped mapping it would.
struct FailingView<'a> {
    memory: &'a AtomicMemory,
    fail_at: u64,
}

impl PageMemory for FailingView<'_> {
    fn page_size(&self) -> usize {
        self.memory.page_size()
    }
    fn total_pages(&self) -> u64 {
        self.memory.total_pages()
    }
    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), precopy::memory::MemoryError> {
        self.memory.read_page(page, buf)
    }
    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), precopy::memory::MemoryError> {
        if page == self.fail_at {
            return Err(precopy::memory::MemoryError::Inaccessible {
                page,
                addr: page * PAGE as u64,
            });
        }
        let mut memory = self.memory;
        memory.write_page(page, data)
    }
}

/// A destination that fails one stream mid-bulk (its memory refuses a page) answers
/// every stream with that reason, and the source reports the destination's refusal
/// with it: never the reset of a stream the destination closed after the failure,
/// in any of several runs (the resets race the refusal). The guest runs on.
#[test]
fn a_destination_failing_one_stream_is_reported_as_its_refusal_every_time() {
    const STREAMS: usize = 3;
    let layout = GuestLayout::flat(PAGE as u64, 8 << 20).unwrap();
    for run in 0..5 {
        let workload = "continuous:rate=20k,set=2M".parse().unwrap();
        let mut guest = SyntheticGuest::new(layout, workload);
        guest.start(1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Page 600 is in chunk 1 (pages 512..1024), carried by stream 1.
        let fail_at = 600 + run;
        let dest = std::thread::spawn(move || {
            let (first, peer) = listener.accept().unwrap();
            let limits = Limits {
                max_memory: layout.total_bytes(),
                expect: Some(layout),
            };
            let incoming = precopy::runtime::accept_streams(
                &listener,
                first,
                &peer.to_string(),
                &limits,
                Duration::from_secs(20),
            )?;
            let memory = AtomicMemory::new(PAGE, layout.total_pages());
            let views = (0..STREAMS)
                .map(|i| FailingView {
                    memory: &memory,
                    fail_at: if i == 1 { fail_at } else { u64::MAX },
                })
                .collect();
            incoming.apply_into(views).map(|_| ())
        });
        let mut seen = Seen::default();
        let e = migrate_streams(
            &guest,
            links(&addr, STREAMS),
            |l| l.finish(),
            &options(None),
            &mut seen,
        )
        .unwrap_err();
        let reason = format!("page {fail_at}");
        match &e {
            RuntimeError::Refused { reason: r, .. } => {
                assert!(r.contains(&reason), "run {run}: the reason lost: {r}")
            }
            other => panic!("run {run}: expected the destination's refusal, got: {other}"),
        }
        assert!(e.to_string().contains("refused the migration"), "{e}");
        let dest_err = dest.join().unwrap().unwrap_err().to_string();
        assert!(dest_err.contains(&reason), "run {run}: {dest_err}");
        assert!(seen.report.is_some(), "the observer hears how far it got");
        // Paused or not when the refusal came, the guest runs on at the source.
        assert_runs_on(&guest);
        guest.stop();
    }
}
