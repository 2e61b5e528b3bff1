//! `precopy bench pipeline`: whole migrations over loopback TCP (source engine, TCP,
//! destination applying and verifying) of an idle, a write-once, a continuously
//! written and a fully written guest, and the fully written one's source side alone
//! (its stream discarded), against a plain memcpy and a copy into fresh memory
//! measured in the same run.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::migrate::{self, parse_size, MigrationArgs};
use precopy::runtime::RuntimeError;

/// Options of `precopy bench pipeline`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Guest memory per case (bytes; K, M, G suffixes).
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    memory: u64,
    /// Stream counts to measure each case with (comma-separated).
    #[arg(long, default_value = "1,2", value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..))]
    streams: Vec<u8>,
    /// Also measure each case that has a destination over TLS 1.3 with mutual
    /// authentication (certificates made for the run), right after it in plain TCP.
    #[arg(long)]
    tls: bool,
    /// Measure only these cases (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Print one JSON object per case.
    #[arg(long)]
    json: bool,
}

/// The workloads measured, as `--workload` specs, and whether the stream goes to a
/// destination over loopback TCP (false: it is discarded, measuring the source alone).
const CASES: [(&str, &str, bool); 5] = [
    ("idle", "idle:rate=1k", true),
    ("once", "once:rate=250k", true),
    ("continuous", "continuous:rate=50k,set=256M", true),
    // Every page written before the migration starts (non-zero, compressible).
    ("written", "hotspot:rate=10k", true),
    // The same, the source's side alone: what its CPU can feed a link.
    ("written-src", "hotspot:rate=10k", false),
];

/// A destination that drops the stream and verifies nothing: the source alone.
struct Discard;

impl precopy::engine::Transport for Discard {
    type Error = RuntimeError;

    fn send(&mut self, _: &[u8]) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn recv(&mut self, _: &mut [u8]) -> Result<usize, RuntimeError> {
        Ok(0)
    }
}

/// Process CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given, which points to
    // a properly sized and aligned `MaybeUninit<rusage>`; zeroed is a valid `rusage`.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// GB/s of copying `len` bytes of written memory, best of three runs: into a buffer
/// already written (`fresh` false: memcpy), or into one allocated for each run and
/// never touched before (`fresh`: what a destination pays to fault in and zero its
/// fresh guest memory, which on a virtual machine can cost more than the copy).
fn copy_gbps(len: usize, fresh: bool) -> f64 {
    let src: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let mut written = vec![1u8; if fresh { 0 } else { len }];
    // Invariant: three runs (0..3), so min() has a value.
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            let mut new = Vec::new();
            let dst = if fresh {
                new = vec![0u8; len];
                &mut new
            } else {
                &mut written
            };
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            let took = t.elapsed();
            drop(new);
            took
        })
        .min()
        .expect("three runs");
    len as f64 / best.as_secs_f64() / 1e9
}

pub fn run(args: &Args) -> Result<(), String> {
    // 256 MiB buffers (or the guest's size, if smaller).
    let chunk = (256u64 << 20).min(args.memory) as usize;
    let baseline = copy_gbps(chunk, false);
    let fresh = copy_gbps(chunk, true);
    if !args.json {
        println!(
            "precopy bench pipeline: {} MiB guests over loopback TCP, source and destination in one process; \
             memcpy {baseline:.1} GB/s, copy into fresh memory {fresh:.1} GB/s",
            args.memory >> 20
        );
    }
    let pair = if args.tls {
        Some(crate::tls_args::loopback_pair()?)
    } else {
        None
    };
    let modes: &[bool] = if args.tls { &[false, true] } else { &[false] };
    for (case, workload, to_destination) in CASES {
        if !args.cases.is_empty() && !args.cases.iter().any(|c| c == case) {
            continue;
        }
        for &streams in &args.streams {
            for &tls in modes {
                if tls && !to_destination {
                    continue;
                }
                let transport = if tls { "tls" } else { "tcp" };
                let migration = MigrationArgs {
                    memory: args.memory,
                    workload: workload.to_string(),
                    writers: 1,
                    // The end-to-end digest of a large guest takes long: this measures
                    // throughput, not the downtime target.
                    downtime_ms: 60_000,
                    strict_downtime: false,
                    max_rounds: 30,
                    force_switchover: true,
                    cache: 64 << 20,
                    page_size: 4096,
                    link: None,
                    streams: Some(streams),
                    max_bandwidth: None,
                    compression: precopy::engine::Compression::Auto,
                    verify: migrate::VerifyMode::After,
                    inject_lost_write: false,
                    dump_memory: None,
                    json: false,
                };
                let mut source = migration.source(*b"precopy-bench-pl")?;
                source.quiet = true;
                let listener =
                    TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1: {e}"))?;
                let cpu = cpu_time();
                let start = Instant::now();
                let (report, dest) = if to_destination {
                    let pair = if tls { pair.clone() } else { None };
                    let (report, dest) =
                        migrate::run_loopback(&mut source, listener, 1, false, pair)?;
                    (report, dest.map(drop))
                } else {
                    let sinks = (0..streams).map(|_| Discard).collect();
                    let report = migrate::run_source(&mut source, 1, false, sinks, |_| Ok(()));
                    (report, Ok(()))
                };
                let elapsed = start.elapsed();
                let cpu = cpu_time() - cpu;
                if let Some(e) = report.error {
                    return Err(format!("{case}: {e}"));
                }
                dest.map_err(|e| format!("{case}: {e}"))?;
                let gbps = args.memory as f64 / elapsed.as_secs_f64() / 1e9;
                if args.json {
                    println!(
                "{{\"case\": \"{case}\", \"transport\": \"{transport}\", \"streams\": {streams}, \"gbps\": {gbps:.3}, \"wire_bytes\": {}, \"rounds\": {}, \"cpu_s\": {:.3}, \"wall_s\": {:.3}, \"baseline\": \"memcpy\", \"baseline_gbps\": {baseline:.3}, \"fresh_copy_gbps\": {fresh:.3}}}",
                report.wire_bytes,
                report.rounds,
                cpu.as_secs_f64(),
                elapsed.as_secs_f64()
            );
                } else {
                    println!(
                "{case:<11} {transport} {streams} stream(s) {gbps:>6.2} GB/s of guest memory ({:>5.2}x memcpy, {:>5.2}x fresh copy), {:>8.1} MB on the wire, {} rounds, {:.2} s wall, {:.2} s CPU",
                gbps / baseline,
                gbps / fresh,
                report.wire_bytes as f64 / 1e6,
                report.rounds,
                elapsed.as_secs_f64(),
                cpu.as_secs_f64()
            );
                }
            }
        }
    }
    Ok(())
}
