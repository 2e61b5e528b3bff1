//! `precopy recv`: the destination of a two-process migration. Takes one migration
//! from a `precopy send` over TCP, or restores a stream file, allocating guest memory
//! only for a layout it validated against `--max-memory`, and succeeds only when the
//! memory's digest equals the source's.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use clap::ArgGroup;
use precopy::engine::{ApplyError, ApplyStats};
use precopy::layout::GuestLayout;
use precopy::memory::migration_digest;
use precopy::runtime::{receive, receive_streams, Limits, RuntimeError, Size};
use precopy::wire::{StreamHeader, WireError, WireErrorKind};

use crate::migrate::{json_string, parse_size};
use crate::send::hex;

/// Options of `precopy recv`.
#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("from").required(true).args(["listen", "input"])))]
pub struct Args {
    /// Listen on this address (HOST:PORT) and take one migration; port 0 picks a free
    /// port, printed on stdout.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Restore a stream file written by `precopy send --output`.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// The largest guest to allocate memory for (bytes; K, M, G suffixes).
    #[arg(long, default_value = "64G", value_parser = parse_size)]
    max_memory: u64,
    /// This destination's guest size, if fixed: a stream for another size is refused.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Page size of --memory, bytes.
    #[arg(long, default_value_t = 4096)]
    page_size: u64,
    /// Seconds to wait for the source's next bytes once it connected.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print JSON lines.
    #[arg(long)]
    json: bool,
    /// Test hook: once verified, write the memory received to FILE, so tests compare
    /// it with the source's bytes rather than trusting the digest both sides print.
    #[arg(long, hide = true, value_name = "FILE")]
    dump_memory: Option<PathBuf>,
}

/// Runs `precopy recv`; `Ok` only when the memory was verified.
pub fn run(args: &Args) -> Result<(), String> {
    let expect =
        match args.memory {
            Some(memory) => Some(GuestLayout::flat(args.page_size, memory).map_err(|e| {
                format!("--memory {memory} with --page-size {}: {e}", args.page_size)
            })?),
            None => None,
        };
    let limits = Limits {
        max_memory: args.max_memory,
        expect,
    };
    let (from, result) =
        if let Some(addr) = &args.listen {
            let listener = TcpListener::bind(addr).map_err(|e| format!("listen {addr}: {e}"))?;
            let local = listener
                .local_addr()
                .map_err(|e| format!("listen {addr}: {e}"))?;
            if args.json {
                println!("{{\"kind\":\"listening\",\"addr\":\"{local}\"}}");
            } else {
                println!("precopy recv: listening on {local}");
            }
            let _ = std::io::stdout().flush();
            let (stream, peer) = listener
                .accept()
                .map_err(|e| format!("accepting on {local}: {e}"))?;
            let timeout = Duration::from_secs(args.timeout.max(1));
            let from = format!("the source {peer}");
            let result = receive_streams(&listener, stream, &peer.to_string(), &limits, timeout)
                .map(|r| Summary {
                    header: r.header,
                    stats: r.stats,
                    stream_bytes: r.stream_bytes,
                    digest: migration_digest(&r.digests),
                    memory: r.memory,
                });
            (from, result)
        } else if let Some(path) = &args.input {
            let mut file = std::fs::File::open(path)
                .map_err(|e| format!("opening {}: {e}", path.display()))?;
            let result = receive(&mut file, None, &limits)
                .map_err(|e| cut_short(e, path))
                .map(|r| Summary {
                    header: r.header,
                    stats: r.stats,
                    stream_bytes: r.stream_bytes,
                    digest: r.digest,
                    memory: r.memory,
                });
            (path.display().to_string(), result)
        } else {
            return Err("give --listen ADDR or --input FILE".to_string());
        };
    match result {
        Ok(received) => {
            if let Some(path) = &args.dump_memory {
                crate::migrate::dump(path, received.memory.as_bytes())?;
            }
            print_summary(&received, &from, args.json);
            Ok(())
        }
        Err(e) => {
            let e = format!("{from}: {e}");
            if args.json {
                println!(
                    "{{\"kind\":\"summary\",\"verified\":false,\"error\":{}}}",
                    json_string(&e)
                );
            }
            Err(e)
        }
    }
}

/// A stream file that ends early is named as a file cut short (the wire layer speaks
/// of connections).
fn cut_short(e: RuntimeError, path: &std::path::Path) -> RuntimeError {
    match e {
        RuntimeError::Apply(ApplyError::Wire(WireError {
            location,
            kind: WireErrorKind::Truncated { have, need },
        })) => RuntimeError::Peer(format!(
            "the file is truncated: {location} ends after {have} of its {need} bytes \
             (was {} copied whole?)",
            path.display()
        )),
        e => e,
    }
}

/// What the destination prints of a verified migration.
struct Summary {
    header: StreamHeader,
    stats: ApplyStats,
    stream_bytes: u64,
    /// The migration's digest ([`migration_digest`] of its streams').
    digest: u128,
    /// The memory received.
    memory: precopy::memory::VecMemory,
}

fn print_summary(r: &Summary, from: &str, json: bool) {
    let s = r.stats;
    let layout = r.header.layout;
    if json {
        println!(
            "{{\"kind\":\"summary\",\"verified\":true,\"session\":\"{}\",\"streams\":{},\"memory_bytes\":{},\"page_size\":{},\"rounds\":{},\"zero\":{},\"raw\":{},\"lz4\":{},\"delta\":{},\"stream_bytes\":{},\"digest\":\"{:#034x}\"}}",
            hex(&r.header.session_id),
            r.header.stream.count(),
            layout.total_bytes(),
            layout.page_size(),
            s.rounds,
            s.zero_pages,
            s.raw_pages,
            s.lz4_pages,
            s.delta_pages,
            r.stream_bytes,
            r.digest
        );
    } else {
        println!(
            "received session {} from {from} over {} stream(s): {} guest in {} rounds ({} zero, {} raw, {} lz4, {} delta pages), {:.1} MB of stream, digest {:#034x}, verified: yes",
            hex(&r.header.session_id),
            r.header.stream.count(),
            Size(layout.total_bytes()),
            s.rounds,
            s.zero_pages,
            s.raw_pages,
            s.lz4_pages,
            s.delta_pages,
            r.stream_bytes as f64 / 1e6,
            r.digest
        );
    }
}
