//! What `demo` and `send` share: the migration options, the source's loop (engine,
//! guest, transport) and the per-round table, JSON lines and summary.

use std::time::{Duration, Instant};

use precopy::bitmap::GuestLayout;
use precopy::codec::{CodecStats, EncoderConfig, Encoding};
use precopy::engine::{SourceConfig, SourceEngine, SourceEvent, SourceRound, Transport};
use precopy::runtime::{RuntimeError, SyntheticGuest, Workload};
use precopy::schedule::{Decision, OnLimit, Policy};

/// The options of a migration's source (`precopy demo`, `precopy send`).
#[derive(clap::Args, Debug)]
pub struct MigrationArgs {
    /// Guest memory size (bytes; K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub memory: u64,
    /// Guest workload: NAME[:key=value,...] with NAME one of idle, once, continuous,
    /// hotspot (keys: rate=pages/s, set=bytes, skew).
    #[arg(long, default_value = "continuous:rate=50k,set=256M")]
    pub workload: String,
    /// Writer threads (the guest's vCPUs).
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Downtime limit, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub downtime_ms: u64,
    /// Most live rounds before giving up (or switching over, with --force-switchover).
    #[arg(long, default_value_t = 30)]
    pub max_rounds: u32,
    /// At the round limit, switch over anyway instead of failing.
    #[arg(long)]
    pub force_switchover: bool,
    /// Delta cache size (bytes; K, M, G suffixes); 0 turns delta encoding off.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub cache: u64,
    /// Page size in bytes.
    #[arg(long, default_value_t = 4096)]
    pub page_size: u64,
    /// Emulate a link of this speed (1gbe, 10gbe, 25gbe, 40gbe, 100gbe): sends are
    /// paced to it and the scheduler is told the cap. Default: as fast as the
    /// transport goes.
    #[arg(long, value_parser = parse_link)]
    pub link: Option<u64>,
    /// LZ4 compression: `auto` compresses while the link, not the encoder, is the
    /// bottleneck (time blocked sending against time encoding); `on` and `off` force it.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub compression: String,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Whether to compress with LZ4, decided from where the time goes: after each window
/// of 16 sends, compress once sending takes twice as long as encoding (the link is the
/// bottleneck), stop once encoding takes a quarter longer than sending.
#[derive(Debug)]
pub struct CompressionChoice {
    mode: Option<bool>,
    lz4: bool,
    encode_ns: u64,
    send_ns: u64,
    samples: u32,
}

impl CompressionChoice {
    /// `auto`, `on` or `off`. Auto starts uncompressed: a link too slow for raw pages
    /// shows itself within the first window.
    pub fn new(mode: &str) -> Self {
        let mode = match mode {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        };
        CompressionChoice {
            mode,
            lz4: mode.unwrap_or(false),
            encode_ns: 0,
            send_ns: 0,
            samples: 0,
        }
    }

    /// The current choice.
    pub fn lz4(&self) -> bool {
        self.lz4
    }

    /// Adds one poll's encode and send times; returns the choice for the next.
    pub fn observe(&mut self, encode_ns: u64, send_ns: u64) -> bool {
        if self.mode.is_some() {
            return self.lz4;
        }
        self.encode_ns += encode_ns;
        self.send_ns += send_ns;
        self.samples += 1;
        if self.samples == 16 {
            // On only when sending clearly dominates (LZ4 costs ~4x raw to encode, so
            // a link that merely keeps pace with raw pages is not worth compressing
            // for); off as soon as encoding is the larger part again.
            if self.send_ns > 2 * self.encode_ns {
                self.lz4 = true;
            } else if self.encode_ns > self.send_ns + self.send_ns / 4 {
                self.lz4 = false;
            }
            (self.encode_ns, self.send_ns, self.samples) = (0, 0, 0);
        }
        self.lz4
    }
}

/// Parses a link name into bytes per second.
pub fn parse_link(s: &str) -> Result<u64, String> {
    precopy::runtime::pacer::link_speed(s).ok_or_else(|| {
        let names: Vec<&str> = precopy::runtime::pacer::LINKS.iter().map(|l| l.0).collect();
        format!("unknown link '{s}' (one of {})", names.join(", "))
    })
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

/// A source ready to migrate: the guest (writers not started) and the engine's
/// configuration.
pub struct Source {
    /// The synthetic guest.
    pub guest: SyntheticGuest,
    /// The engine's configuration.
    pub config: SourceConfig,
    /// The guest's layout.
    pub layout: GuestLayout,
    /// The workload the writers run.
    pub workload: Workload,
    /// LZ4 choice: `auto`, `on` or `off`.
    pub compression: String,
    /// Print no per-round rows (benchmarks).
    pub quiet: bool,
}

impl MigrationArgs {
    /// Validates the options and builds the guest and the engine configuration.
    pub fn source(&self, session_id: [u8; 16]) -> Result<Source, String> {
        let workload: Workload = self
            .workload
            .parse()
            .map_err(|e: RuntimeError| e.to_string())?;
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
            bandwidth_cap: self.link,
            max_rounds: self.max_rounds,
            on_limit: if self.force_switchover {
                OnLimit::SwitchOver
            } else {
                OnLimit::Fail
            },
            ..Policy::default()
        };
        policy.validate().map_err(|e| e.to_string())?;
        let guest = SyntheticGuest::new(layout, workload);
        // The final round digests all memory on both sides: predict that too.
        let digest_ns = precopy::runtime::calibrate::digest_downtime_ns(&**guest.memory(), 16384);
        let policy = Policy {
            non_memory_downtime_ns: policy.non_memory_downtime_ns + digest_ns,
            ..policy
        };
        if policy.non_memory_downtime_ns >= policy.downtime_limit_ns {
            return Err(format!(
                "--downtime-ms {} is too short for this guest: verifying {} MiB end to end \
                 (a digest of all memory on both sides, with the guest paused) takes about {} ms \
                 here; raise --downtime-ms above {} or migrate a smaller guest",
                self.downtime_ms,
                self.memory >> 20,
                digest_ns / 1_000_000,
                policy.non_memory_downtime_ns / 1_000_000 + 50
            ));
        }
        let config = SourceConfig {
            encoder,
            policy,
            session_id,
            ..SourceConfig::new(page_size)
        };
        Ok(Source {
            quiet: false,
            compression: self.compression.clone(),
            guest,
            config,
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
    /// Live rounds the scheduler saw.
    pub rounds: u32,
    /// From the engine's start until the verdict (or the failure), ns.
    pub total_ns: u64,
    /// From the pause until the verdict, ns (`None` if the guest was never paused).
    pub downtime_ns: Option<u64>,
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
    /// Whether the destination verified the memory.
    pub fn verified(&self) -> bool {
        self.error.is_none()
    }

    /// Prints the summary line (text or JSON); `extra` is added to the JSON object
    /// (`,"key":value...`).
    pub fn print(&self, json: bool, extra: &str) {
        let ms = |ns: u64| format!("{:.1}", ns as f64 / 1e6);
        let ratio = self.wire_bytes as f64 / self.memory_bytes.max(1) as f64;
        let predicted = (self.predicted_ns != u64::MAX).then_some(self.predicted_ns);
        if json {
            let mut line = format!(
                "{{\"kind\":\"summary\",\"verified\":{},\"rounds\":{},\"total_ms\":{},\"downtime_ms\":{},\"predicted_downtime_ms\":{},\"wire_bytes\":{},\"memory_bytes\":{},\"wire_over_memory\":{ratio:.3},\"guest_writes\":{}",
                self.verified(),
                self.rounds,
                ms(self.total_ns),
                self.downtime_ns.map_or("null".to_string(), ms),
                predicted.map_or("null".to_string(), ms),
                self.wire_bytes,
                self.memory_bytes,
                self.writes
            );
            if let Some(d) = self.digest {
                line += &format!(",\"digest\":\"{d:#034x}\"");
            }
            if let Some(e) = &self.error {
                line += &format!(",\"error\":{}", json_string(e));
            }
            if let Some(w) = self.writes_after_failure {
                line += &format!(",\"writes_after_failure\":{w}");
            }
            println!("{line}{extra}}}");
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
            if let Some(w) = self.writes_after_failure {
                println!("the migration failed; the guest's writers were let go again: {w} page writes in the 200 ms after");
            }
        }
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs a migration's source: starts the writers, drives the engine over `link`,
/// pauses the guest when told, and after the completion frame asks `verdict` whether
/// the destination verified the memory. Any failure lets the writers run again (the
/// guest lives on at the source, its memory never written by the migration). Stops
/// the writers before returning.
pub fn run_source<T: Transport>(
    source: &mut Source,
    writers: usize,
    json: bool,
    link: &mut T,
    verdict: impl FnOnce(&mut T) -> Result<(), String>,
) -> SourceReport {
    let start = Instant::now();
    let now = || start.elapsed().as_nanos() as u64;
    let guest = &mut source.guest;
    guest.start(writers);
    let memory = std::sync::Arc::clone(guest.memory());
    let bitmap = std::sync::Arc::clone(guest.bitmap());
    let mut report = SourceReport {
        rounds: 0,
        total_ns: 0,
        downtime_ns: None,
        predicted_ns: u64::MAX,
        wire_bytes: 0,
        memory_bytes: source.layout.total_bytes(),
        writes: 0,
        digest: None,
        error: None,
        writes_after_failure: None,
    };
    let mut paused_at = None;
    let mut pacer = source
        .config
        .policy
        .bandwidth_cap
        .map(precopy::runtime::pacer::Pacer::new);
    let result = match SourceEngine::new(&bitmap, source.config, now()) {
        Err(e) => Err(e.to_string()),
        Ok(mut engine) => {
            // Smaller pieces than 1 MiB let the compression choice follow the link.
            let mut out = vec![0u8; engine.min_buffer_len().max(256 << 10)];
            let mut adapt = CompressionChoice::new(&source.compression);
            let bar = progress_bar(json || source.quiet);
            engine.set_lz4(adapt.lz4());
            let result: Result<(), String> = loop {
                let encode_start = now();
                let t = match engine.poll_transmit(&*memory, encode_start, &mut out) {
                    Ok(t) => t,
                    Err(e) => break Err(e.to_string()),
                };
                let send_start = now();
                if let Some(p) = &mut pacer {
                    p.pace(t.len);
                }
                if let Err(e) = link.send(&out[..t.len]) {
                    break Err(e.to_string());
                }
                engine.set_lz4(adapt.observe(send_start - encode_start, now() - send_start));
                if let Some(bar) = &bar {
                    let (sent, planned) = engine.round_progress();
                    bar.set_length(planned.max(1));
                    bar.set_position(sent);
                    bar.set_message(format!(
                        "round {}{}",
                        engine.scheduler().rounds() + 1,
                        if engine.lz4_enabled() { ", lz4" } else { "" }
                    ));
                }
                report.wire_bytes += t.len as u64;
                match t.event {
                    SourceEvent::RoundDone(r) => {
                        match &bar {
                            Some(bar) => bar.suspend(|| print_round(&r, json)),
                            None if !source.quiet => print_round(&r, json),
                            None => {}
                        }
                        if let Decision::Continue { throttle_percent } = r.outcome.decision {
                            guest.set_throttle(throttle_percent);
                        }
                    }
                    SourceEvent::PauseGuest { .. } => {
                        guest.pause();
                        paused_at = Some(now());
                        if let Err(e) = engine.guest_paused(now()) {
                            break Err(e.to_string());
                        }
                    }
                    SourceEvent::Complete { digest, round } => {
                        if let Some(bar) = &bar {
                            bar.finish_and_clear();
                        }
                        if !source.quiet {
                            print_final(round, json);
                        }
                        report.digest = Some(digest);
                        break verdict(link);
                    }
                    SourceEvent::None | SourceEvent::RoundMeasured(_) => {}
                }
            };
            report.rounds = engine.scheduler().rounds();
            report.predicted_ns = engine.scheduler().predicted_downtime_ns();
            if result.is_err() {
                // Pages harvested but not sent go back into the bitmap.
                engine.abort();
            }
            result
        }
    };
    report.total_ns = now();
    report.downtime_ns = paused_at.map(|p| report.total_ns - p);
    if let Err(e) = result {
        // The migration failed: the guest keeps running on the source.
        guest.resume();
        let before = guest.writes();
        std::thread::sleep(Duration::from_millis(200));
        report.writes_after_failure = Some(guest.writes() - before);
        report.error = Some(e);
    }
    report.writes = guest.writes();
    guest.stop();
    report
}

/// Runs `source` against a destination thread on `listener` (loopback TCP, the
/// destination's memory sized like the source's): the source's report and the
/// destination's verdict.
pub fn run_loopback(
    source: &mut Source,
    listener: std::net::TcpListener,
    writers: usize,
    json: bool,
) -> Result<(SourceReport, Result<(), String>), String> {
    use precopy::runtime::{receive, Limits, SourceLink};
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let limits = Limits {
        max_memory: source.layout.total_bytes(),
        expect: Some(source.layout),
    };
    let destination = std::thread::spawn(move || -> Result<(), String> {
        let (stream, peer) = listener
            .accept()
            .map_err(|e| format!("accepting the source: {e}"))?;
        let mut replies = &stream;
        receive(&mut &stream, Some(&mut replies), &limits)
            .map(drop)
            .map_err(|e| format!("receiving from {peer}: {e}"))
    });
    let stream = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut link = SourceLink::new(stream, addr.to_string());
    let report = run_source(source, writers, json, &mut link, |l| {
        l.finish().map_err(|e| e.to_string())
    });
    drop(link);
    let dest_result = destination
        .join()
        .map_err(|_| "the destination thread panicked".to_string())?;
    Ok((report, dest_result))
}

fn print_final(round: precopy::engine::FinalRound, json: bool) {
    let c = |e| round.codecs.get(e).pages;
    if json {
        println!(
            "{{\"kind\":\"round\",\"round\":{},\"final\":true,\"pages\":{},\"zero\":{},\"delta\":{},\"lz4\":{},\"raw\":{},\"wire_bytes\":{}}}",
            round.round, round.pages_sent, c(Encoding::Zero), c(Encoding::Delta), c(Encoding::Lz4), c(Encoding::Raw), round.wire_bytes
        );
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

fn print_round(r: &SourceRound, json: bool) {
    let s = r.outcome.stats;
    let predicted = (s.predicted_downtime_ns != u64::MAX)
        .then(|| format!("{:.1}", s.predicted_downtime_ns as f64 / 1e6));
    if json {
        let c = |e| r.codecs.get(e).pages;
        println!(
            "{{\"kind\":\"round\",\"round\":{},\"dirty_pages\":{},\"pages\":{},\"zero\":{},\"delta\":{},\"lz4\":{},\"raw\":{},\"deferred\":{},\"wire_bytes\":{},\"duration_ms\":{:.2},\"bandwidth_bytes_per_sec\":{:.0},\"dirty_pages_per_sec\":{:.0},\"predicted_downtime_ms\":{},\"throttle_percent\":{}}}",
            s.round, s.dirty_pages, s.pages_sent, c(Encoding::Zero), c(Encoding::Delta), c(Encoding::Lz4), c(Encoding::Raw),
            r.deferred_pages, s.wire_bytes, s.duration_ns as f64 / 1e6, s.bandwidth_bytes_per_sec, s.dirty_pages_per_sec,
            predicted.unwrap_or_else(|| "null".to_string()),
            s.throttle_percent
        );
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
    let style = indicatif::ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} pages")
        .ok()?
        .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_follows_the_bottleneck() {
        let mut auto = CompressionChoice::new("auto");
        assert!(!auto.lz4(), "auto starts uncompressed");
        // Sending takes 3x the encoding: the link is the bottleneck, compress.
        let choices: Vec<bool> = (0..16).map(|_| auto.observe(100, 300)).collect();
        assert!(!choices[14] && choices[15]);
        // Between the thresholds: no change.
        (0..16).for_each(|_| {
            auto.observe(100, 150);
        });
        assert!(auto.lz4());
        // Encoding dominates: stop compressing.
        (0..16).for_each(|_| {
            auto.observe(500, 100);
        });
        assert!(!auto.lz4());
        let mut on = CompressionChoice::new("on");
        assert!(on.observe(1_000, 1));
        assert!(!CompressionChoice::new("off").observe(1, 1_000));
    }
}
