//! `precopy recv`: the destination of a two-process migration. Takes one migration
//! from a `precopy send` over TCP, or restores a stream file, allocating guest memory
//! only for a layout it validated against `--max-memory`, and succeeds only when the
//! memory's digest equals the source's.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::ArgGroup;
use precopy::engine::{ApplyError, ApplyStats};
use precopy::layout::GuestLayout;
use precopy::memory::migration_digest;
use precopy::runtime::{
    listen_streams, receive, receive_into_fresh, Limits, ListenOptions, RuntimeError, Size,
};
use precopy::wire::{StreamHeader, WireError, WireErrorKind};

use crate::json;
use crate::migrate::parse_size;
use crate::options;
use crate::tls_args::TlsArgs;

/// Raises the listen backlog from std's 128, so that all 255 streams of a migration
/// can be queued at once however slowly this process gets to accept them.
fn raise_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen on a socket this process owns and already listens on only
    // changes its backlog; a failure leaves the old one, which still works.
    unsafe {
        libc::listen(listener.as_raw_fd(), 1024);
    }
}
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
    /// The largest guest to allocate memory for (bytes; K, M, G, T suffixes). Default:
    /// less than this host's memory (a larger guest is refused before anything is
    /// allocated).
    #[arg(long, value_parser = parse_size)]
    max_memory: Option<u64>,
    /// This destination's guest size, if fixed: a stream for another size is refused.
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Page size of --memory: a power of two from 512 to 64K (bytes; K suffix).
    #[arg(long, default_value = "4096", value_parser = options::parse_page_size)]
    page_size: u64,
    /// Idle timeout, seconds (1 to 86400): the longest the destination waits for a
    /// connected source's next bytes, and for a migration's further streams.
    #[arg(long, default_value = "30", value_parser = options::parse_secs)]
    timeout: u64,
    /// Seconds (1 to 86400) a connection has to send its whole stream header (and
    /// finish its TLS handshake); a slower one is refused.
    #[arg(long, default_value = "10", value_parser = options::parse_secs)]
    header_timeout: u64,
    /// Seconds (1 to 86400) for the whole run, listening included: stray or refused
    /// connections are answered and the destination listens on for the real source
    /// until then.
    #[arg(long, default_value = "3600", value_parser = options::parse_secs)]
    deadline: u64,
    #[command(flatten)]
    tls: TlsArgs,
    /// Listen beyond loopback without TLS: anyone who can reach the port can send a
    /// guest, and the guest's memory crosses the network in the clear.
    #[arg(long)]
    insecure: bool,
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
    let started = Instant::now();
    let max_memory = match args.max_memory {
        Some(m) => {
            options::check_fits_host("--max-memory", m, 1)?;
            m
        }
        // What this host can hold: less than its memory, so some is left for itself.
        None => options::host_memory().map_or(64 << 30, |h| h / 8 * 7),
    };
    if let Some(m) = args.memory {
        options::check_fits_host("--memory", m, 1)?;
    }
    let expect =
        match args.memory {
            Some(memory) => Some(GuestLayout::flat(args.page_size, memory).map_err(|e| {
                format!("--memory {memory} with --page-size {}: {e}", args.page_size)
            })?),
            None => None,
        };
    let limits = Limits { max_memory, expect };
    let (from, result) = if let Some(addr) = &args.listen {
        // Certificates are read before anything listens.
        let wrap = args.tls.server()?;
        let listener = TcpListener::bind(addr).map_err(|e| format!("listen {addr}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("listen {addr}: {e}"))?;
        if wrap.is_none() && !args.insecure && !local.ip().is_loopback() {
            return Err(format!(
                "--listen {addr}: listening beyond loopback without TLS would take a guest \
                 from anyone who can reach the port, its memory in the clear; give \
                 --tls-cert, --tls-key and --tls-ca (`precopy certs` makes a set to try), \
                 or --insecure to accept that"
            ));
        }
        raise_backlog(&listener);
        if args.json {
            json::line(&json::Listening {
                kind: "listening",
                addr: &local.to_string(),
            });
        } else {
            println!("precopy recv: listening on {local}");
        }
        let _ = std::io::stdout().flush();
        let options = ListenOptions {
            header_timeout: Duration::from_secs(args.header_timeout),
            idle_timeout: Duration::from_secs(args.timeout),
            deadline: Some(started + Duration::from_secs(args.deadline)),
            keep_listening: true,
            wrap,
        };
        let mut refusals = 0u64;
        let mut last_refusal = String::new();
        let json = args.json;
        let mut log = |peer: &str, e: &RuntimeError| {
            refusals += 1;
            last_refusal = format!("{peer}: {e}");
            // Reported as it happens (stderr keeps the one line of a failure); the
            // destination listens on.
            if json {
                json::line(&json::Refused {
                    kind: "refused",
                    peer,
                    error: &e.to_string(),
                });
            } else {
                println!("precopy recv: refused {peer}: {e}");
            }
        };
        let incoming = listen_streams(&listener, None, &limits, &options, &mut log);
        let incoming = incoming.map_err(|e| {
            let last = if refusals > 0 {
                format!(" ({refusals} connection(s) refused; the last, {last_refusal})")
            } else {
                String::new()
            };
            format!("no migration taken on {local}: {e}{last}")
        })?;
        let from = format!("the source {}", incoming.peer());
        let result = receive_into_fresh(incoming).map(|r| Summary {
            header: r.header,
            stats: r.stats,
            stream_bytes: r.stream_bytes,
            digest: migration_digest(&r.digests),
            memory: r.memory,
        });
        (from, result)
    } else if let Some(path) = &args.input {
        let mut file =
            std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
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
                json::line(&json::Failed {
                    kind: "summary",
                    verified: false,
                    error: &e,
                });
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
        json::line(&json::RecvSummary {
            kind: "summary",
            verified: true,
            session: hex(&r.header.session_id),
            streams: r.header.stream.count(),
            memory_bytes: layout.total_bytes(),
            page_size: layout.page_size(),
            rounds: s.rounds,
            zero: s.zero_pages,
            raw: s.raw_pages,
            lz4: s.lz4_pages,
            delta: s.delta_pages,
            stream_bytes: r.stream_bytes,
            digest: format!("{:#034x}", r.digest),
        });
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
