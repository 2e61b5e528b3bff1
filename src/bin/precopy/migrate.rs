//! What `demo` and `send` share: the migration options, the source's loop (engine,
//! guest, transport) and the per-round table, JSON lines and summary.

use std::path::Path;
use std::time::{Duration, Instant};

use precopy::codec::{CodecStats, EncoderConfig, Encoding};
use precopy::engine::{Compression, SourceConfig, Transport, Verify};
use precopy::layout::GuestLayout;
use precopy::memory::{migration_digest, PageMemory, VecMemory};
use precopy::runtime::{
    migrate_streams, MigrationOptions, MigrationReport, Observer, RuntimeError, SourceCheck,
    StreamsFinal, StreamsRound,
};
use precopy::schedule::{OnLimit, Policy};
use precopy::workload::{SyntheticGuest, Workload, WorkloadError};

use crate::{json, options};

/// The options of a migration's source (`precopy demo`, `precopy send`).
#[derive(clap::Args, Debug)]
pub struct MigrationArgs {
    /// Guest memory size (bytes; K, M, G, T suffixes), less than this host's memory.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub memory: u64,
    /// Guest workload: NAME[:key=value,...] with NAME one of idle, once, continuous,
    /// fill (every page written before the migration, then like continuous), hotspot
    /// (keys: rate=pages/s, set=bytes, skew).
    #[arg(long, default_value = "continuous:rate=50k,set=256M")]
    pub workload: String,
    /// Writer threads (the guest's vCPUs), 1 to 1024.
    #[arg(long, default_value = "1", value_parser = options::parse_writers)]
    pub writers: usize,
    /// Downtime limit, milliseconds (1 to 600000).
    #[arg(long, default_value = "300", value_parser = options::parse_downtime_ms)]
    pub downtime_ms: u64,
    /// Fail the migration (non-zero exit) when the downtime was over --downtime-ms,
    /// even though the destination verified the memory.
    #[arg(long)]
    pub strict_downtime: bool,
    /// Most live rounds before giving up (or switching over, with --force-switchover),
    /// 1 to 10000.
    #[arg(long, default_value = "30", value_parser = options::parse_rounds)]
    pub max_rounds: u32,
    /// At the round limit, switch over anyway instead of failing.
    #[arg(long)]
    pub force_switchover: bool,
    /// Delta cache size (bytes; K, M, G, T suffixes); 0 turns delta encoding off.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub cache: u64,
    /// Page size: a power of two from 512 to 64K (bytes; K suffix).
    #[arg(long, default_value = "4096", value_parser = options::parse_page_size)]
    pub page_size: u64,
    /// Emulate a link of this speed (1gbe, 10gbe, 25gbe, 40gbe, 100gbe): sends are
    /// paced to it and the scheduler is told the cap. Default: as fast as the
    /// transport goes.
    #[arg(long, value_parser = parse_link)]
    pub link: Option<u64>,
    /// Parallel streams (TCP connections), each encoding its own share of the pages on
    /// its own thread, like QEMU's multifd channels: 1 to 255, default 2 (a stream
    /// file holds one).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
    pub streams: Option<u8>,
    /// Cap the bandwidth of all streams together (bytes per second, at least 64K; K,
    /// M, G suffixes): a token bucket paces the sends, and the scheduler is told the
    /// cap. A cap that would take over an hour to send the guest once is refused.
    #[arg(long, value_parser = options::parse_bandwidth)]
    pub max_bandwidth: Option<u64>,
    /// LZ4 compression: `auto` measures each stream's page rate raw and with LZ4 (a
    /// probe now and then) and compresses only where LZ4 is clearly faster (a slow
    /// link); `on` and `off` force it.
    #[arg(long, default_value = "auto", value_parser = parse_compression)]
    pub compression: Compression,
    /// How the end-to-end check runs. `after`: each stream's completion digest folds
    /// the hashes of the pages as they were sent (8 bytes per page with the guest
    /// paused, whatever the memory size); once the destination verified, the source
    /// re-reads its still paused memory and compares every page with what it sent,
    /// which catches a write the dirty log missed while the guest can still stay on
    /// the source. `full`: the digest re-reads and hashes all memory with the guest
    /// paused (downtime grows with memory size; the destination refuses on a lost
    /// write).
    #[arg(long, value_enum, default_value_t = VerifyMode::After)]
    pub verify: VerifyMode,
    /// Test hook: after the bulk round, the guest changes its last page without
    /// marking it dirty (a lost write), which the check must catch.
    #[arg(long, hide = true)]
    pub inject_lost_write: bool,
    /// Test hook: after a verified migration, write the source guest's memory (paused,
    /// as it was migrated) to FILE; `demo` also writes the destination's to FILE.dest.
    /// Tests compare these bytes themselves, not the digests both sides print.
    #[arg(long, hide = true, value_name = "FILE")]
    pub dump_memory: Option<std::path::PathBuf>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--verify`: where the end-to-end check runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// Fold kept page hashes in the downtime; re-read the source after the
    /// destination verified.
    After,
    /// Re-read and hash all memory with the guest paused.
    Full,
}

impl VerifyMode {
    /// The engine's mode.
    pub fn engine(self) -> Verify {
        match self {
            VerifyMode::After => Verify::AfterResume,
            VerifyMode::Full => Verify::InDowntime,
        }
    }

    /// The name `--verify` takes, for JSON.
    pub fn name(self) -> &'static str {
        match self {
            VerifyMode::After => "after",
            VerifyMode::Full => "full",
        }
    }
}

/// Parses a link name into bytes per second.
pub fn parse_link(s: &str) -> Result<u64, String> {
    precopy::schedule::links::link_speed(s).ok_or_else(|| {
        let names: Vec<&str> = precopy::schedule::links::LINKS
            .iter()
            .map(|l| l.0)
            .collect();
        format!("unknown link '{s}' (one of {})", names.join(", "))
    })
}

/// Parses a compression mode: `auto`, `on` or `off`.
pub fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
        .map_err(|e: precopy::engine::UnknownCompression| format!("'{s}': {e}"))
}

pub use crate::options::parse_size;

/// A source ready to migrate: the guest (writers not started) and the engine's
/// configuration.
pub struct Source {
    /// The synthetic guest.
    pub guest: SyntheticGuest,
    /// The engine's configuration.
    pub config: SourceConfig,
    /// The scheduler's policy.
    pub policy: Policy,
    /// The guest's layout.
    pub layout: GuestLayout,
    /// The workload the writers run.
    pub workload: Workload,
    /// LZ4 choice.
    pub compression: Compression,
    /// Print no per-round rows (benchmarks).
    pub quiet: bool,
    /// Streams (connections) to migrate over.
    pub streams: u8,
    /// Test hook: the guest writes a page without marking it after the bulk round.
    pub inject_lost_write: bool,
    /// `--verify`.
    pub verify: VerifyMode,
}

impl MigrationArgs {
    /// Checks the options that clap's parsers cannot check alone, before anything is
    /// allocated: the guest (`copies` times: a demo holds source and destination) and
    /// the delta cache fit this host, and a bandwidth cap sends the guest once within
    /// an hour.
    pub fn validate(&self, copies: u64) -> Result<(), String> {
        options::check_fits_host("--memory", self.memory, copies)?;
        options::check_fits_host("--cache", self.cache, 1)?;
        let cap = match (self.link, self.max_bandwidth) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(cap) = cap {
            let secs = self.memory / cap.max(1);
            if secs > 3600 {
                return Err(format!(
                    "--max-bandwidth {cap}: sending the {} guest once would take {:.1} hours; \
                     give at least {} bytes per second (one hour), or a smaller --memory",
                    options::size(self.memory),
                    secs as f64 / 3600.0,
                    self.memory.div_ceil(3600)
                ));
            }
        }
        Ok(())
    }

    /// Validates the options and builds the guest and the engine configuration.
    pub fn source(&self, session_id: [u8; 16]) -> Result<Source, String> {
        self.validate(1)?;
        let workload: Workload = self
            .workload
            .parse()
            .map_err(|e: WorkloadError| format!("--workload: {e}"))?;
        let layout = GuestLayout::flat(self.page_size, self.memory).map_err(|e| {
            format!(
                "--memory {} with --page-size {}: {e}",
                self.memory, self.page_size
            )
        })?;
        let page_size = self.page_size as usize;
        let encoder = EncoderConfig {
            cache_bytes: self.cache as usize,
            ..EncoderConfig::new(page_size)
        };
        let policy = Policy {
            downtime_limit_ns: self.downtime_ms.saturating_mul(1_000_000),
            bandwidth_cap: match (self.link, self.max_bandwidth) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            max_rounds: self.max_rounds,
            on_limit: if self.force_switchover {
                OnLimit::SwitchOver
            } else {
                OnLimit::Fail
            },
            ..Policy::default()
        };
        let reserved_ms = Policy::default().non_memory_downtime_ns / 1_000_000;
        if self.downtime_ms <= reserved_ms {
            return Err(format!(
                "--downtime-ms {} leaves no time to send memory: {reserved_ms} ms of the \
                 downtime are kept for the device state and the final harvest; give more \
                 than {reserved_ms}",
                self.downtime_ms
            ));
        }
        policy
            .validate()
            .map_err(|e| format!("--downtime-ms, --max-rounds or --max-bandwidth: {e}"))?;
        let guest = SyntheticGuest::new(layout, workload);
        // The final round ends with the part of the end-to-end check that runs with
        // the guest paused: predict that too.
        let verify = self.verify.engine();
        let digest_ns =
            precopy::runtime::calibrate::digest_downtime_ns(&**guest.memory(), 16384, verify);
        let policy = Policy {
            non_memory_downtime_ns: policy.non_memory_downtime_ns + digest_ns,
            ..policy
        };
        if policy.non_memory_downtime_ns >= policy.downtime_limit_ns {
            let what = match self.verify {
                VerifyMode::Full => {
                    "--verify full: re-reading and hashing all memory with the \
                                     guest paused"
                }
                VerifyMode::After => "folding the hashes of all pages sent with the guest paused",
            };
            let hint = match self.verify {
                VerifyMode::Full => {
                    ", use --verify after (the re-read then runs once the \
                                     destination has the guest)"
                }
                VerifyMode::After => "",
            };
            return Err(format!(
                "--downtime-ms {} is too short for this guest: verifying {} MiB end to end \
                 ({what}) takes about {} ms here, besides the device state; raise \
                 --downtime-ms above {}{hint} or migrate a smaller guest",
                self.downtime_ms,
                self.memory >> 20,
                digest_ns / 1_000_000,
                policy.non_memory_downtime_ns / 1_000_000 + 50
            ));
        }
        let config = SourceConfig {
            encoder,
            session_id,
            verify,
            ..SourceConfig::new(page_size)
        };
        Ok(Source {
            streams: self.streams.unwrap_or(2),
            inject_lost_write: self.inject_lost_write,
            verify: self.verify,
            quiet: false,
            compression: self.compression,
            guest,
            config,
            policy,
            layout,
            workload,
        })
    }
}

/// Prints the per-round table's header (nothing in JSON mode).
pub fn print_table_header(json: bool) {
    if json {
        return;
    }
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

/// How a source's migration went.
#[derive(Debug)]
pub struct SourceReport {
    /// Rounds sent, the bulk round being round 1 and the final round (guest paused)
    /// counted once it was produced: the final round's number, as in the table.
    pub rounds: u32,
    /// From the engine's start until the verdict (or the failure), ns.
    pub total_ns: u64,
    /// From the pause until every destination stream verified (the destination may
    /// resume the guest), or until the failure, ns (`None` if the guest was never
    /// paused).
    pub downtime_ns: Option<u64>,
    /// `--downtime-ms`, ns.
    pub downtime_limit_ns: u64,
    /// `--verify`.
    pub verify: VerifyMode,
    /// Of the downtime, the source's part of the end-to-end check, ns: the longest
    /// stream's digest (a fold of kept hashes, or with `--verify full` a re-read).
    pub verify_in_downtime_ns: Option<u64>,
    /// The source's re-read of its paused memory after the destination verified, ns.
    pub verify_after_ns: Option<u64>,
    /// The verdict of that re-read.
    pub source_check: SourceCheck,
    /// The scheduler's last downtime prediction, ns (`u64::MAX`: none).
    pub predicted_ns: u64,
    /// Stream bytes handed to the transport.
    pub wire_bytes: u64,
    /// Guest memory size, bytes.
    pub memory_bytes: u64,
    /// Page writes by the guest during the migration.
    pub writes: u64,
    /// The source's memory digest (once the final round was produced).
    pub digest: Option<u128>,
    /// Why the migration failed (`None`: the destination verified the memory).
    pub error: Option<String>,
    /// After a failure: page writes in the moment after the writers were let go
    /// again, the evidence that the guest runs on.
    pub writes_after_failure: Option<u64>,
}

impl SourceReport {
    /// Whether the destination verified the memory and the source's check passed.
    pub fn verified(&self) -> bool {
        self.error.is_none() && self.source_check.passed()
    }

    /// Whether the measured downtime was over `--downtime-ms`.
    pub fn downtime_over_limit(&self) -> bool {
        self.downtime_ns.is_some_and(|d| d > self.downtime_limit_ns)
    }

    /// With `--strict-downtime`, a downtime over the limit is a failure.
    pub fn check_downtime(&self, strict: bool) -> Result<(), String> {
        match self.downtime_ns {
            Some(d) if strict && self.downtime_over_limit() => Err(format!(
                "the downtime was {:.1} ms, over --downtime-ms {} (--strict-downtime)",
                d as f64 / 1e6,
                self.downtime_limit_ns / 1_000_000
            )),
            _ => Ok(()),
        }
    }

    /// The source check's verdict as a JSON name.
    fn check_name(&self) -> &'static str {
        match self.source_check {
            SourceCheck::NotRun => "not_run",
            SourceCheck::InDowntime => "in_downtime",
            SourceCheck::Matched { .. } => "matched",
            SourceCheck::Mismatch { .. } => "mismatch",
        }
    }

    /// The verification line of the text summary.
    fn verification_line(&self) -> String {
        let ms = |ns: u64| format!("{:.1} ms", ns as f64 / 1e6);
        let inside = match (self.verify, self.verify_in_downtime_ns) {
            (_, None) => "not reached".to_string(),
            (VerifyMode::After, Some(ns)) => {
                format!(
                    "{} of the downtime (folding the hashes of the pages sent)",
                    ms(ns)
                )
            }
            (VerifyMode::Full, Some(ns)) => format!(
                "{} of the downtime (re-reading all memory with the guest paused)",
                ms(ns)
            ),
        };
        let after = match &self.source_check {
            SourceCheck::NotRun => "source re-read not run".to_string(),
            SourceCheck::InDowntime => "no re-read after (done in the downtime)".to_string(),
            SourceCheck::Matched { pages } => format!(
                "source re-read after the destination verified: {pages} pages match what was sent ({})",
                self.verify_after_ns.map_or("-".to_string(), ms)
            ),
            SourceCheck::Mismatch {
                pages,
                differing,
                first,
            } => format!(
                "source re-read after the destination verified: {differing} of {pages} pages DIFFER from what was sent (first: {first:?}; a lost write) ({})",
                self.verify_after_ns.map_or("-".to_string(), ms)
            ),
        };
        format!("verification: {inside}; {after}")
    }

    /// Prints the summary line (text or JSON, which names `session` if given).
    pub fn print(&self, json: bool, session: Option<&str>) {
        let ms = |ns: u64| format!("{:.1}", ns as f64 / 1e6);
        let ratio = self.wire_bytes as f64 / self.memory_bytes.max(1) as f64;
        let predicted = (self.predicted_ns != u64::MAX).then_some(self.predicted_ns);
        if json {
            let (differing_pages, first_differing_pages) = match &self.source_check {
                SourceCheck::Mismatch {
                    differing, first, ..
                } => (Some(*differing), Some(first.clone())),
                _ => (None, None),
            };
            json::line(&json::SourceSummary {
                kind: "summary",
                verified: self.verified(),
                rounds: self.rounds,
                total_ms: json::ms(self.total_ns),
                downtime_ms: self.downtime_ns.map(json::ms),
                downtime_limit_ms: json::ms(self.downtime_limit_ns),
                downtime_over_limit: self.downtime_over_limit(),
                predicted_downtime_ms: predicted.map(json::ms),
                verify: self.verify.name(),
                verify_in_downtime_ms: self.verify_in_downtime_ns.map(json::ms),
                verify_after_ms: self.verify_after_ns.map(json::ms),
                source_check: self.check_name(),
                wire_bytes: self.wire_bytes,
                memory_bytes: self.memory_bytes,
                wire_over_memory: (ratio * 1000.0).round() / 1000.0,
                guest_writes: self.writes,
                differing_pages,
                first_differing_pages,
                digest: self.digest.map(|d| format!("{d:#034x}")),
                error: self.error.clone(),
                writes_after_failure: self.writes_after_failure,
                session: session.map(str::to_string),
            });
        } else {
            println!(
                "total {:.2} s, downtime {} (predicted {}), {:.1} MB on the wire = {ratio:.2} x memory, {} guest writes, verified: {}",
                self.total_ns as f64 / 1e9,
                self.downtime_ns.map_or("-".to_string(), |d| format!("{} ms", ms(d))),
                predicted.map_or("-".to_string(), |d| format!("{} ms", ms(d))),
                self.wire_bytes as f64 / 1e6,
                self.writes,
                if self.verified() { "yes" } else { "no" }
            );
            println!("{}", self.verification_line());
            if let (true, Some(d)) = (self.downtime_over_limit(), self.downtime_ns) {
                println!(
                    "DOWNTIME OVER THE LIMIT: {} ms, against a limit of {} ms (--strict-downtime makes this a failure)",
                    ms(d),
                    ms(self.downtime_limit_ns)
                );
            }
            if let Some(w) = self.writes_after_failure {
                println!("the migration failed; the guest's writers were let go again: {w} page writes in the 200 ms after");
            }
        }
    }
}

/// The terminal (and the lost-write test hook), as the multi-stream runtime's
/// [`Observer`]; it keeps the report of how far the migration got.
struct CliObserver<'a> {
    guest: &'a SyntheticGuest,
    /// Test hook: make a lost write after the bulk round.
    inject_lost_write: bool,
    json: bool,
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
    rounds_seen: u32,
    report: Option<MigrationReport>,
}

impl Observer for CliObserver<'_> {
    fn round_done(&mut self, r: &StreamsRound) {
        self.rounds_seen += 1;
        if self.inject_lost_write && self.rounds_seen == 1 {
            // The bulk round sent every page; the last one (outside the working sets
            // of the workloads that have one) now changes unmarked.
            let last = self.guest.bitmap().total_pages().saturating_sub(1);
            if let Err(e) = self.guest.write_unmarked(last) {
                eprintln!("precopy: --inject-lost-write: {e}");
            }
        }
        let json = self.json;
        match &self.bar {
            Some(bar) => bar.suspend(|| print_round(r, json)),
            None if !self.quiet => print_round(r, json),
            None => {}
        }
    }

    fn final_round(&mut self, round: &StreamsFinal) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if !self.quiet {
            print_final(round, self.json);
        }
    }

    fn progress(&mut self, sent: u64, planned: u64, lz4_streams: u8) {
        if let Some(bar) = &self.bar {
            bar.set_length(planned.max(1));
            bar.set_position(sent);
            bar.set_message(format!(
                "round {}{}",
                self.rounds_seen + 1,
                if lz4_streams > 0 { ", lz4" } else { "" }
            ));
        }
    }

    fn ended(&mut self, report: &MigrationReport) {
        self.report = Some(report.clone());
    }
}

/// Runs a migration's source: starts the writers, migrates over `links` (one stream
/// each), pauses the guest when told, and after each stream's completion frame asks
/// `verdict` whether the destination verified it. Any failure lets the writers run
/// again (the guest lives on at the source, its memory never written by the
/// migration). Stops the writers before returning.
pub fn run_source<T>(
    source: &mut Source,
    writers: usize,
    json: bool,
    links: Vec<T>,
    verdict: impl Fn(&mut T) -> Result<(), RuntimeError> + Sync,
) -> SourceReport
where
    T: Transport + Send,
    T::Error: Into<RuntimeError>,
{
    let start = Instant::now();
    source.guest.start(writers);
    let guest = &source.guest;
    let options = MigrationOptions {
        compression: source.compression,
        ..MigrationOptions::new(source.config, source.policy)
    };
    let mut observer = CliObserver {
        guest,
        inject_lost_write: source.inject_lost_write,
        json,
        quiet: source.quiet,
        bar: progress_bar(json || source.quiet),
        rounds_seen: 0,
        report: None,
    };
    let result = migrate_streams(guest, links, verdict, &options, &mut observer);
    if let Some(bar) = &observer.bar {
        bar.finish_and_clear();
    }
    // The figures, whether the migration succeeded or not.
    let Some(r) = observer.report.take() else {
        unreachable!("migrate_streams reports to its observer before it returns")
    };
    let total_ns = start.elapsed().as_nanos() as u64;
    let mut report = SourceReport {
        // Live rounds, and the final one once every stream produced it.
        rounds: r.rounds + u32::from(r.digests.is_some()),
        total_ns,
        // The downtime ends when the destination has verified every stream: it may
        // resume the guest then, while the source's re-read runs.
        downtime_ns: r.paused_at.map(|p| match r.verified_at {
            Some(v) => v.duration_since(p).as_nanos() as u64,
            None => total_ns.saturating_sub(p.duration_since(start).as_nanos() as u64),
        }),
        downtime_limit_ns: source.policy.downtime_limit_ns,
        verify: source.verify,
        verify_in_downtime_ns: r.verify_in_downtime_ns,
        verify_after_ns: r.verify_after_ns,
        source_check: r.source_check,
        predicted_ns: r.predicted_downtime_ns,
        wire_bytes: r.wire_bytes,
        memory_bytes: source.layout.total_bytes(),
        writes: 0,
        digest: r.digests.as_deref().map(migration_digest),
        error: None,
        writes_after_failure: None,
    };
    if let Err(e) = result {
        // The migration failed: the runtime let the guest go on at the source.
        guest.resume();
        let before = guest.writes();
        std::thread::sleep(Duration::from_millis(200));
        report.writes_after_failure = Some(guest.writes() - before);
        report.error = Some(e.to_string());
    }
    report.writes = guest.writes();
    source.guest.stop();
    report
}

/// The bytes of `guest`'s memory, page by page (for `--dump-memory`; the writers must
/// be stopped or paused).
pub fn guest_bytes(guest: &SyntheticGuest) -> Result<Vec<u8>, String> {
    let memory = guest.memory();
    let page_size = memory.page_size();
    let mut bytes = vec![0u8; page_size * memory.total_pages() as usize];
    for (page, buf) in bytes.chunks_exact_mut(page_size).enumerate() {
        memory
            .read_page(page as u64, buf)
            .map_err(|e| format!("reading the guest's page {page}: {e}"))?;
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` (`--dump-memory`).
pub fn dump(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("--dump-memory {}: {e}", path.display()))
}

/// Runs `source` against a destination thread on `listener` (loopback TCP, one
/// connection per stream, the destination's memory sized like the source's): the
/// source's report and the destination's verdict with the memory it received.
pub fn run_loopback(
    source: &mut Source,
    listener: std::net::TcpListener,
    writers: usize,
    json: bool,
    tls: Option<crate::tls_args::TlsPair>,
) -> Result<(SourceReport, Result<VecMemory, String>), String> {
    use precopy::runtime::{listen_streams, receive_into_fresh, Limits, ListenOptions};
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let limits = Limits {
        max_memory: source.layout.total_bytes(),
        expect: Some(source.layout),
    };
    let (server, client) = match tls {
        Some((server, client)) => (
            Some(precopy::runtime::tls::server_wrap(server)),
            Some(client),
        ),
        None => (None, None),
    };
    let options = ListenOptions {
        wrap: server,
        ..ListenOptions::new(Duration::from_secs(30))
    };
    let destination = std::thread::spawn(move || -> Result<VecMemory, String> {
        let incoming = listen_streams(&listener, None, &limits, &options, &mut |_, _| {})
            .map_err(|e| format!("accepting the source: {e}"))?;
        let peer = incoming.peer().to_string();
        receive_into_fresh(incoming)
            .map(|r| r.memory)
            .map_err(|e| format!("receiving from {peer}: {e}"))
    });
    let mut links = Vec::new();
    for _ in 0..source.streams {
        let stream =
            std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        links.push(crate::tls_args::source_link(
            stream,
            client.as_ref(),
            "127.0.0.1",
            addr.to_string(),
        )?);
    }
    let report = run_source(source, writers, json, links, |l| l.finish());
    let dest_result = destination
        .join()
        .map_err(|_| "the destination thread panicked".to_string())?;
    Ok((report, dest_result))
}

pub fn print_final(round: &StreamsFinal, json: bool) {
    let c = |e| round.codecs.get(e).pages;
    if json {
        json::line(&json::FinalRound {
            kind: "round",
            round: round.round,
            r#final: true,
            pages: round.pages_sent,
            zero: c(Encoding::Zero),
            delta: c(Encoding::Delta),
            lz4: c(Encoding::Lz4),
            raw: c(Encoding::Raw),
            wire_bytes: round.wire_bytes,
        });
    } else {
        let dash = || "-".to_string();
        let row = (format!("{}*", round.round), round.pages_sent);
        print_row(
            row,
            &round.codecs,
            round.wire_bytes,
            [dash(), dash(), dash(), "paused".into()],
        );
    }
}

/// One row of the per-round table: round and pages, pages per codec, wire bytes, then
/// the measured columns (bandwidth, dirty rate, predicted downtime, throttle).
fn print_row(
    (round, pages): (String, u64),
    codecs: &CodecStats,
    wire_bytes: u64,
    measured: [String; 4],
) {
    let c = |e| codecs.get(e).pages;
    let [bandwidth, dirty_rate, predicted, throttle] = measured;
    println!(
        "{round:>5} {pages:>9} {:>8} {:>8} {:>8} {:>8} {:>10.1} {bandwidth:>9} {dirty_rate:>11} {predicted:>10} {throttle:>8}",
        c(Encoding::Zero),
        c(Encoding::Delta),
        c(Encoding::Lz4),
        c(Encoding::Raw),
        wire_bytes as f64 / 1e6,
    );
}

pub fn print_round(r: &StreamsRound, json: bool) {
    let s = r.outcome.stats;
    let predicted = (s.predicted_downtime_ns != u64::MAX)
        .then(|| format!("{:.1}", s.predicted_downtime_ns as f64 / 1e6));
    if json {
        let c = |e| r.codecs.get(e).pages;
        json::line(&json::Round {
            kind: "round",
            round: s.round,
            dirty_pages: s.dirty_pages,
            pages: s.pages_sent,
            zero: c(Encoding::Zero),
            delta: c(Encoding::Delta),
            lz4: c(Encoding::Lz4),
            raw: c(Encoding::Raw),
            deferred: r.deferred_pages,
            wire_bytes: s.wire_bytes,
            duration_ms: (s.duration_ns as f64 / 1e4).round() / 100.0,
            bandwidth_bytes_per_sec: s.bandwidth_bytes_per_sec.round(),
            dirty_pages_per_sec: s.dirty_pages_per_sec.round(),
            predicted_downtime_ms: (s.predicted_downtime_ns != u64::MAX)
                .then(|| json::ms(s.predicted_downtime_ns)),
            throttle_percent: s.throttle_percent,
            lz4_streams: r.lz4_streams,
        });
    } else {
        print_row(
            (s.round.to_string(), s.dirty_pages),
            &r.codecs,
            s.wire_bytes,
            [
                format!("{:.0}", s.bandwidth_bytes_per_sec / 1e6),
                format!("{:.0}", s.dirty_pages_per_sec),
                predicted.unwrap_or_else(|| "-".to_string()),
                format!("{}%", s.throttle_percent),
            ],
        );
    }
}

/// A progress bar for the round being sent, on stderr when it is a terminal (and the
/// output is not JSON).
fn progress_bar(json: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(1);
    let style = indicatif::ProgressStyle::with_template(
        "{msg:>14} [{bar:40}] {pos}/{len} pages, {elapsed} so far, about {eta} left",
    )
    .ok()?
    .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}
