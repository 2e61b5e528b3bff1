//! The std runtime's multi-stream migration as a VMM uses it: `migrate_streams` over
//! real TCP connections with real writer threads dirtying the guest, against
//! `receive_streams` on another thread.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use precopy::engine::{SourceConfig, Transport};
use precopy::layout::GuestLayout;
use precopy::memory::PageMemory;
use precopy::runtime::pacer::TokenBucket;
use precopy::runtime::{
    migrate_streams, receive_streams, Limits, ReceivedStreams, RuntimeError, SourceControl,
    SourceLink, StreamOptions, StreamsRound, SyntheticGuest,
};
use precopy::schedule::Policy;

const PAGE: usize = 4096;

/// The synthetic guest as the runtime's `SourceControl`, counting what it was asked.
struct Control<'a> {
    guest: &'a SyntheticGuest,
    rounds: Vec<StreamsRound>,
    pauses: u32,
}

impl SourceControl for Control<'_> {
    fn throttle(&mut self, percent: u8) {
        self.guest.set_throttle(percent);
    }
    fn pause(&mut self) {
        self.pauses += 1;
        self.guest.pause();
    }
    fn round_done(&mut self, round: &StreamsRound) {
        self.rounds.push(*round);
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

fn options(cap: Option<u64>) -> StreamOptions {
    StreamOptions {
        policy: Policy {
            downtime_limit_ns: 50_000_000,
            bandwidth_cap: cap,
            ..Policy::default()
        },
        ..StreamOptions::default()
    }
}

#[test]
fn three_streams_with_writers_running_end_with_equal_memory() {
    let layout = GuestLayout::flat(PAGE as u64, 24 << 20).unwrap();
    let workload = "continuous:rate=20k,set=8M".parse().unwrap();
    let mut guest = SyntheticGuest::new(layout, workload);
    let (addr, dest) = destination(layout);
    guest.start(2);
    let (memory, bitmap) = (guest.memory().clone(), guest.bitmap().clone());
    let mut control = Control {
        guest: &guest,
        rounds: Vec::new(),
        pauses: 0,
    };
    let report = migrate_streams(
        &*bitmap,
        &*memory,
        config(),
        links(&addr, 3),
        |l| l.finish(),
        None,
        &options(None),
        &mut control,
        Instant::now(),
    );
    let (rounds, pauses) = (control.rounds.len(), control.pauses);
    report.result.unwrap();
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
    assert_eq!(pauses, 1, "the guest is paused once for all streams");
    assert!(
        rounds >= 2,
        "the bulk round and at least one more: {rounds}"
    );
    assert!(guest.writes() > 0);
    guest.stop();
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
            return Err(RuntimeError::Peer("the cable was cut".to_string()));
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
    let (memory, bitmap) = (guest.memory().clone(), guest.bitmap().clone());
    let links: Vec<Failing<_>> = links(&addr, 2)
        .into_iter()
        .enumerate()
        .map(|(i, inner)| Failing {
            inner,
            budget: if i == 1 { 1 << 20 } else { usize::MAX },
        })
        .collect();
    let mut control = Control {
        guest: &guest,
        rounds: Vec::new(),
        pauses: 0,
    };
    // Paced to 100 MB/s so the 1 MiB budget runs out in the bulk round.
    let cap = TokenBucket::new(100_000_000, 256 << 10);
    let start = Instant::now();
    let report = migrate_streams(
        &*bitmap,
        &*memory,
        config(),
        links,
        |l| l.inner.finish(),
        Some(&cap),
        &options(Some(100_000_000)),
        &mut control,
        start,
    );
    let e = report.result.unwrap_err().to_string();
    assert!(e.contains("the cable was cut"), "{e}");
    assert!(report.paused_at.is_none(), "never paused");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "stopped promptly"
    );
    // The destination saw its streams end early and verified nothing.
    assert!(dest.join().unwrap().is_err());
    // The guest was never paused and keeps writing.
    let before = guest.writes();
    std::thread::sleep(Duration::from_millis(100));
    assert!(guest.writes() > before);
    guest.stop();
}
