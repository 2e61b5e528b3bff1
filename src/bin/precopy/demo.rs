//! `precopy demo`: a real migration in one process. A synthetic guest's writer threads
//! dirty real memory while the source engine sends it over loopback TCP to a
//! destination thread, which applies it and verifies the final digest.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use precopy::bitmap::GuestLayout;
use precopy::codec::{EncoderConfig, Encoding};
use precopy::engine::{
    Applier, Progress, SourceConfig, SourceEngine, SourceEvent, SourceRound, Transport,
};
use precopy::memory::VecMemory;
use precopy::runtime::{RuntimeError, SyntheticGuest, TcpTransport, Workload};
use precopy::schedule::{Decision, OnLimit, Policy};

/// Options of `precopy demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Guest memory size (bytes; K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    memory: u64,
    /// Guest workload: NAME[:key=value,...] with NAME one of idle, once, continuous,
    /// hotspot (keys: rate=pages/s, set=bytes, skew).
    #[arg(long, default_value = "continuous:rate=50k,set=256M")]
    workload: String,
    /// Writer threads (the guest's vCPUs).
    #[arg(long, default_value_t = 1)]
    writers: usize,
    /// Downtime limit, milliseconds.
    #[arg(long, default_value_t = 300)]
    downtime_ms: u64,
    /// Most live rounds before giving up (or switching over, with --force-switchover).
    #[arg(long, default_value_t = 30)]
    max_rounds: u32,
    /// At the round limit, switch over anyway instead of failing.
    #[arg(long)]
    force_switchover: bool,
    /// Delta cache size (bytes; K, M, G suffixes); 0 turns delta encoding off.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    cache: u64,
    /// Page size in bytes.
    #[arg(long, default_value_t = 4096)]
    page_size: u64,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// Parses a byte size with an optional K/M/G suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.chars().last() {
        Some('K') | Some('k') => (&s[..s.len() - 1], 10),
        Some('M') | Some('m') => (&s[..s.len() - 1], 20),
        Some('G') | Some('g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 4096, 64M, 1G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

pub fn run(args: &Args) -> Result<bool, String> {
    let workload: Workload = args
        .workload
        .parse()
        .map_err(|e: RuntimeError| e.to_string())?;
    let layout = GuestLayout::flat(args.page_size, args.memory).map_err(|e| {
        format!(
            "--memory {} with --page-size {}: {e}",
            args.memory, args.page_size
        )
    })?;
    let page_size = args.page_size as usize;
    let encoder = EncoderConfig {
        cache_bytes: args.cache as usize,
        ..EncoderConfig::new(page_size)
    };
    let policy = Policy {
        downtime_limit_ns: args.downtime_ms * 1_000_000,
        max_rounds: args.max_rounds,
        on_limit: if args.force_switchover {
            OnLimit::SwitchOver
        } else {
            OnLimit::Fail
        },
        ..Policy::default()
    };
    policy.validate().map_err(|e| e.to_string())?;

    let mut guest = SyntheticGuest::new(layout, workload);
    guest.start(args.writers);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if !args.json {
        println!(
            "precopy demo: {} MiB guest, {} B pages, workload {workload}, {} writer(s), loopback TCP {addr}",
            args.memory >> 20,
            page_size,
            args.writers
        );
        println!(
            "{:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>11} {:>10} {:>8}",
            "round",
            "dirty",
            "zero",
            "delta",
            "lz4",
            "raw",
            "wire MB",
            "MB/s",
            "dirty pg/s",
            "pred. ms",
            "throttle"
        );
    }
    let total_pages = layout.total_pages();
    let destination = std::thread::spawn(move || destination(listener, page_size, total_pages));

    let start = Instant::now();
    let now = || start.elapsed().as_nanos() as u64;
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let mut link = TcpTransport::new(stream).map_err(|e| e.to_string())?;
    let config = SourceConfig {
        encoder,
        policy,
        session_id: *b"precopy-demo-001",
        defer_redirtied: true,
    };
    let memory = std::sync::Arc::clone(guest.memory());
    let bitmap = std::sync::Arc::clone(guest.bitmap());
    let mut source = SourceEngine::new(&bitmap, config, now()).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; source.min_buffer_len().max(1 << 20)];
    let mut paused_at = None;
    let mut wire_total = 0u64;
    let result: Result<(), String> = loop {
        let t = match source.poll_transmit(&*memory, now(), &mut out) {
            Ok(t) => t,
            Err(e) => break Err(e.to_string()),
        };
        if let Err(e) = link.send(&out[..t.len]) {
            break Err(format!("sending to {addr}: {e}"));
        }
        wire_total += t.len as u64;
        match t.event {
            SourceEvent::RoundDone(r) => {
                print_round(&r, args.json);
                if let Decision::Continue { throttle_percent } = r.outcome.decision {
                    guest.set_throttle(throttle_percent);
                }
            }
            SourceEvent::PauseGuest { .. } => {
                guest.pause();
                paused_at = Some(now());
                if let Err(e) = source.guest_paused(now()) {
                    break Err(e.to_string());
                }
            }
            SourceEvent::Complete { round, .. } => {
                let c = |e| round.codecs.get(e).pages;
                if args.json {
                    println!(
                        "{{\"kind\":\"round\",\"round\":{},\"final\":true,\"pages\":{},\"zero\":{},\"delta\":{},\"lz4\":{},\"raw\":{},\"wire_bytes\":{}}}",
                        round.round, round.pages_sent, c(Encoding::Zero), c(Encoding::Delta), c(Encoding::Lz4), c(Encoding::Raw), round.wire_bytes
                    );
                } else {
                    println!(
                        "{:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10.1} {:>9} {:>11} {:>10} {:>8}",
                        format!("{}*", round.round),
                        round.pages_sent,
                        c(Encoding::Zero),
                        c(Encoding::Delta),
                        c(Encoding::Lz4),
                        c(Encoding::Raw),
                        round.wire_bytes as f64 / 1e6,
                        "-",
                        "-",
                        "-",
                        "paused"
                    );
                }
                break Ok(());
            }
            SourceEvent::None => {}
        }
    };
    // The destination's verdict: one byte, 1 = digest verified.
    let verdict = result.and_then(|()| {
        let mut ack = [0u8; 1];
        link.stream()
            .read_exact(&mut ack)
            .map_err(|e| format!("waiting for the destination's verdict: {e}"))?;
        Ok(ack[0] == 1)
    });
    let resumed_at = now();
    drop(link);
    let dest_result = destination
        .join()
        .map_err(|_| "the destination thread panicked".to_string())?;
    let verified = match (&verdict, &dest_result) {
        (Ok(true), Ok(())) => true,
        _ => {
            // The migration failed: the guest keeps running on the source.
            guest.resume();
            false
        }
    };
    guest.stop();
    let total_ns = resumed_at;
    let real_downtime = paused_at.map(|p| resumed_at - p);
    let predicted = source.scheduler().predicted_downtime_ns();
    let ratio = wire_total as f64 / args.memory as f64;
    if args.json {
        println!(
            "{{\"kind\":\"summary\",\"verified\":{verified},\"rounds\":{},\"total_ms\":{:.1},\"downtime_ms\":{},\"predicted_downtime_ms\":{},\"wire_bytes\":{wire_total},\"memory_bytes\":{},\"wire_over_memory\":{ratio:.3},\"guest_writes\":{}}}",
            source.scheduler().rounds(),
            total_ns as f64 / 1e6,
            real_downtime.map_or("null".to_string(), |d| format!("{:.1}", d as f64 / 1e6)),
            if predicted == u64::MAX { "null".to_string() } else { format!("{:.1}", predicted as f64 / 1e6) },
            args.memory,
            guest.writes()
        );
    } else {
        println!(
            "total {:.2} s, downtime {} (predicted {}), {:.1} MB on the wire = {ratio:.2} x memory, {} guest writes, verified: {}",
            total_ns as f64 / 1e9,
            real_downtime.map_or("-".to_string(), |d| format!("{:.1} ms", d as f64 / 1e6)),
            if predicted == u64::MAX { "-".to_string() } else { format!("{:.1} ms", predicted as f64 / 1e6) },
            wire_total as f64 / 1e6,
            guest.writes(),
            if verified { "yes" } else { "no" }
        );
    }
    verdict?;
    dest_result?;
    Ok(verified)
}

fn print_round(r: &SourceRound, json: bool) {
    let s = r.outcome.stats;
    let c = |e| r.codecs.get(e).pages;
    if json {
        println!(
            "{{\"kind\":\"round\",\"round\":{},\"dirty_pages\":{},\"pages\":{},\"zero\":{},\"delta\":{},\"lz4\":{},\"raw\":{},\"deferred\":{},\"wire_bytes\":{},\"duration_ms\":{:.2},\"bandwidth_bytes_per_sec\":{:.0},\"dirty_pages_per_sec\":{:.0},\"predicted_downtime_ms\":{},\"throttle_percent\":{}}}",
            s.round, s.dirty_pages, s.pages_sent, c(Encoding::Zero), c(Encoding::Delta), c(Encoding::Lz4), c(Encoding::Raw),
            r.deferred_pages, s.wire_bytes, s.duration_ns as f64 / 1e6, s.bandwidth_bytes_per_sec, s.dirty_pages_per_sec,
            if s.predicted_downtime_ns == u64::MAX { "null".to_string() } else { format!("{:.1}", s.predicted_downtime_ns as f64 / 1e6) },
            s.throttle_percent
        );
    } else {
        println!(
            "{:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10.1} {:>9.0} {:>11.0} {:>10} {:>7}%",
            s.round,
            s.dirty_pages,
            c(Encoding::Zero),
            c(Encoding::Delta),
            c(Encoding::Lz4),
            c(Encoding::Raw),
            s.wire_bytes as f64 / 1e6,
            s.bandwidth_bytes_per_sec / 1e6,
            s.dirty_pages_per_sec,
            if s.predicted_downtime_ns == u64::MAX {
                "-".to_string()
            } else {
                format!("{:.1}", s.predicted_downtime_ns as f64 / 1e6)
            },
            s.throttle_percent
        );
    }
}

/// The destination: accepts one connection, applies the stream, answers one byte
/// (1 = digest verified, 0 = refused).
fn destination(listener: TcpListener, page_size: usize, pages: u64) -> Result<(), String> {
    let (stream, peer) = listener
        .accept()
        .map_err(|e| format!("accepting the source: {e}"))?;
    let mut link = TcpTransport::new(stream).map_err(|e| e.to_string())?;
    let mut applier = Applier::with_memory(VecMemory::new(page_size, pages));
    let mut buf = vec![0u8; 1 << 20];
    let result = loop {
        let n = match link.recv(&mut buf) {
            Ok(0) => break applier.finish().map_err(|e| e.to_string()),
            Ok(n) => n,
            Err(e) => break Err(format!("receiving from {peer}: {e}")),
        };
        match applier.feed(&buf[..n]) {
            Ok(Progress::Complete) => break Ok(()),
            Ok(Progress::InProgress) => {}
            Err(e) => break Err(e.to_string()),
        }
    };
    let _ = link.stream().write_all(&[u8::from(result.is_ok())]);
    result
}
