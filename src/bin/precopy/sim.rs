//! `precopy sim`: a migration of any size on a virtual clock (the `sim` module),
//! printed like `precopy demo`.

use std::time::Instant;

use precopy::engine::{Compression, StreamsRound};
use precopy::engine::{FinalRound, Verify};
use precopy::runtime::{SourceCheck, StreamsFinal};
use precopy::schedule::{OnLimit, Policy};
use precopy::sim::{simulate, Content, CpuModel, LinkModel, SimConfig, SimObserver, SimReport};
use precopy::workload::{Workload, WorkloadError};

use crate::migrate::{
    parse_compression, parse_size, print_final, print_round, print_table_header, SourceReport,
    VerifyMode,
};

/// `precopy sim` options.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Guest memory size (bytes; K, M, G, T suffixes).
    #[arg(long, default_value = "16G", value_parser = parse_size_t)]
    pub memory: u64,
    /// The link: 1gbe, 10gbe, 25gbe, 40gbe or 100gbe (Ethernet framing, 50 us latency).
    #[arg(long, default_value = "10gbe")]
    pub link: String,
    /// One-way link latency, microseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_us: u64,
    /// Guest workload, as `demo --workload`: idle[:rate,zero], once[:rate],
    /// continuous[:rate,set], fill[:rate,set], hotspot[:rate,skew],
    /// oltp[:rate,pool,log,skew,log_share] (set=all: a loop over all memory).
    #[arg(long, default_value = "continuous:rate=50k,set=256M")]
    pub workload: String,
    /// What the pages holding data contain: `demo` (the demo's text-like pages, a
    /// write changes a word) or `mix` (the codec benchmarks' mix of text,
    /// structured, mostly-zero and random pages; the scenarios' choice).
    #[arg(long, default_value = "demo")]
    pub content: precopy::sim::Content,
    /// The guest's writers (vCPUs).
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Parallel streams, each with its own encoder (1 to 255).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..))]
    pub streams: u8,
    /// Downtime limit, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub downtime_ms: u64,
    /// Most live rounds before giving up (or switching over, with --force-switchover).
    #[arg(long, default_value_t = 30)]
    pub max_rounds: u32,
    /// At the round limit, switch over anyway instead of failing.
    #[arg(long)]
    pub force_switchover: bool,
    /// Delta cache size (bytes; K, M, G suffixes), shared by the streams.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub cache: u64,
    /// LZ4: auto (measured per stream, as the runtime does), on or off.
    #[arg(long, default_value = "auto", value_parser = parse_compression)]
    pub compression: Compression,
    /// CPU costs: `calibrate` times the real codecs on the workload's pages here
    /// (figures vary a little from run to run), `fixed` takes the documented defaults
    /// (deterministic). Default: calibrate for one run, fixed for --scenario and
    /// sweeps (reproducible tables).
    #[arg(long, value_parser = ["calibrate", "fixed"])]
    pub cpu: Option<String>,
    /// Cores for the encoders (more streams than cores share them).
    #[arg(long, default_value_t = 8)]
    pub cores: u32,
    /// Test hook: a lost write after the bulk round (the final comparison must fail).
    #[arg(long, hide = true)]
    pub inject_lost_write: bool,
    /// Run a published migration instead (`all`: every one), our figures beside the
    /// published: hyperv-{4,8,16,32}g-{idle,oltp}-{1,10}gbe,
    /// vmotion-16g-{once,continuous}-{10,40}gbe. Takes --cpu; the rest is the
    /// scenario's.
    #[arg(long, value_name = "NAME")]
    pub scenario: Option<String>,
    /// Draw an SVG plot into FILE: dirty pages and bytes per round for one run;
    /// total time, downtime and bytes against the ratio for a sweep.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `precopy sim [sweep]`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Command {
    #[command(subcommand)]
    sub: Option<Sub>,
    #[command(flatten)]
    args: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Sweep the guest's dirty rate (as a ratio to the link's rate) or an idle
    /// guest's zero fraction (--over zero): rounds, total time, downtime, bytes and
    /// the round where throttling started, per point (the points run in parallel).
    Sweep(crate::sim_sweep::SweepArgs),
}

/// Runs `precopy sim` or `precopy sim sweep`: Ok(true) when every migration
/// verified.
pub fn main(cmd: &Command) -> Result<bool, String> {
    match &cmd.sub {
        Some(Sub::Sweep(args)) => crate::sim_sweep::run(args),
        None => match &cmd.args.scenario {
            Some(name) => {
                let cpu = cmd.args.cpu_model(None, Content::Mix, "fixed");
                crate::sim_scenarios::run(name, cpu, cmd.args.json)
            }
            None => run(&cmd.args),
        },
    }
}

/// Parses a size with K, M, G or T suffix.
pub fn parse_size_t(s: &str) -> Result<u64, String> {
    match s.strip_suffix(['T', 't']) {
        Some(tib) => parse_size(tib)?
            .checked_mul(1 << 40)
            .ok_or_else(|| format!("'{s}' is too large")),
        None => parse_size(s),
    }
}

impl Args {
    /// The simulation these options describe.
    pub fn config(&self) -> Result<SimConfig, String> {
        let workload: Workload = self
            .workload
            .parse()
            .map_err(|e: WorkloadError| e.to_string())?;
        let mut link = LinkModel::preset(&self.link).map_err(|e| e.to_string())?;
        link.latency_ns = self.latency_us.saturating_mul(1000);
        let mut config = SimConfig::new(self.memory, workload, link);
        config.writers = self.writers;
        config.content = self.content;
        config.streams = self.streams;
        config.cache_bytes = self.cache;
        config.compression = self.compression;
        config.lost_write = self.inject_lost_write;
        config.policy = Policy {
            downtime_limit_ns: self.downtime_ms.saturating_mul(1_000_000),
            max_rounds: self.max_rounds,
            on_limit: if self.force_switchover {
                OnLimit::SwitchOver
            } else {
                OnLimit::Fail
            },
            ..Policy::default()
        };
        config.cpu = self.cpu_model(Some(workload), self.content, "calibrate");
        Ok(config)
    }

    /// The CPU costs `--cpu` and `--cores` ask for (calibrated on `workload`'s pages,
    /// or the codec benchmarks' mix).
    pub fn cpu_model(
        &self,
        workload: Option<Workload>,
        content: Content,
        default: &str,
    ) -> CpuModel {
        let cores = self.cores.max(1);
        if self.cpu.as_deref().unwrap_or(default) == "calibrate" {
            let w = workload.unwrap_or(Workload::Fill { rate: 0, set: 0 });
            let gen = precopy::sim::PageGen::new(w, content, 4096, 4096);
            CpuModel::calibrate(&gen, cores)
        } else {
            CpuModel {
                cores,
                ..CpuModel::default()
            }
        }
    }
}

/// The per-round table as the simulation goes, with a progress bar on a terminal.
pub struct Printer {
    /// JSON lines instead of the table.
    pub json: bool,
    /// Print nothing per round.
    pub quiet: bool,
    bar: Option<indicatif::ProgressBar>,
}

impl Printer {
    /// A printer; a progress bar on stderr when it is a terminal and `bar`.
    pub fn new(json: bool, quiet: bool, bar: bool) -> Self {
        use std::io::IsTerminal;
        let bar = (bar && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(1);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg:>28} [{bar:40}] {pos}/{len} ({elapsed})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Printer { json, quiet, bar }
    }

    fn out(&self, f: impl FnOnce()) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Clears the progress bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl SimObserver for Printer {
    fn round_done(&mut self, round: &StreamsRound) {
        let json = self.json;
        self.out(|| print_round(round, json));
    }

    fn final_round(&mut self, f: &FinalRound) {
        let json = self.json;
        let fin = StreamsFinal {
            round: f.round,
            pages_sent: f.pages_sent,
            wire_bytes: f.wire_bytes,
            codecs: f.codecs,
        };
        self.out(|| print_final(&fin, json));
    }

    fn progress(&mut self, now_ns: u64, sent: u64, planned: u64) {
        self.set_status(
            sent,
            planned,
            &format!("virtual {:.1} s", now_ns as f64 / 1e9),
        );
    }
}

impl Printer {
    /// Shows `pos` of `len` with `msg` on the progress bar, if there is one.
    pub fn set_status(&self, pos: u64, len: u64, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_length(len.max(1));
            bar.set_position(pos);
            bar.set_message(msg.to_string());
        }
    }
}

/// The report in the demo's shape, for its summary printing.
pub fn source_report(r: &SimReport, config: &SimConfig) -> SourceReport {
    let verify = config.verify;
    let source_check = if r.check.pages == 0 {
        SourceCheck::NotRun
    } else if r.check.passed() {
        SourceCheck::Matched {
            pages: r.check.pages,
        }
    } else {
        SourceCheck::Mismatch {
            pages: r.check.pages,
            differing: r.check.differing.max(r.check.corrupt_writes),
            first: r.check.first.clone(),
        }
    };
    SourceReport {
        rounds: r.rounds,
        total_ns: r.total_ns,
        downtime_ns: r.downtime_ns,
        downtime_limit_ns: config.policy.downtime_limit_ns,
        verify: match verify {
            Verify::InDowntime => VerifyMode::Full,
            _ => VerifyMode::After,
        },
        verify_in_downtime_ns: None,
        verify_after_ns: None,
        source_check,
        predicted_ns: r.predicted_downtime_ns,
        wire_bytes: r.wire_bytes,
        memory_bytes: r.memory_bytes,
        writes: r.writes,
        digest: r.digests.as_deref().map(precopy::memory::migration_digest),
        error: r.error.clone(),
        writes_after_failure: None,
    }
}

/// The line saying what the simulator checked at the destination.
pub fn check_line(r: &SimReport) -> String {
    let c = &r.check;
    if c.pages == 0 {
        return "destination check: not run (the migration did not complete)".into();
    }
    if c.passed() {
        format!(
            "destination check: all {} pages equal the source's (each received page decoded to its regenerated content)",
            c.pages
        )
    } else {
        format!(
            "destination check: {} of {} pages DIFFER from the source's (first: {:?}); {} received pages were no version of their page",
            c.differing, c.pages, c.first, c.corrupt_writes
        )
    }
}

/// Prints the summary (text or JSON) of a simulation that took `wall_s` here.
pub fn print_summary(r: &SimReport, config: &SimConfig, json: bool, wall_s: f64) {
    let report = source_report(r, config);
    if json {
        let extra = serde_json::json!({
            "simulated": true,
            "sim_wall_s": (wall_s * 1000.0).round() / 1000.0,
            "line_bytes": r.line_bytes,
            "throttle_round": r.throttle_round,
            "destination_differing_pages": r.check.differing,
            "workload": config.workload.to_string(),
            "link_bytes_per_sec": config.link.bytes_per_sec,
            "streams": config.streams,
            "cpu_ns": {
                "cores": config.cpu.cores,
                "zero": config.cpu.zero_ns,
                "delta": config.cpu.delta_ns,
                "lz4": config.cpu.lz4_ns,
                "raw": config.cpu.raw_ns,
                "page": config.cpu.page_ns,
                "walk": config.cpu.walk_ns,
                "fold": config.cpu.fold_ns,
                "poll": config.cpu.poll_ns,
            },
        });
        crate::json::line(&crate::json::merged(&report.json_summary(None), extra));
    } else {
        println!("{}", report.summary_line());
        if let Some(e) = &r.error {
            println!("failed: {e}");
        }
        println!("{}", check_line(r));
        println!(
            "simulated {:.2} s of migration in {wall_s:.2} s here{}",
            r.total_ns as f64 / 1e9,
            r.throttle_round
                .map_or(String::new(), |t| format!("; throttling from round {t}"))
        );
    }
}

/// `precopy sim`: one migration; Ok(true) when the destination verified and holds
/// the source's memory.
pub fn run(args: &Args) -> Result<bool, String> {
    let config = args.config()?;
    if !args.json {
        println!(
            "precopy sim: {} MiB guest, workload {}, {} Mbit/s link ({:.0} us latency), {} stream(s), CPU {} ({:.0} ns/LZ4 page, {:.0} ns/delta, {:.0} ns/page copied+hashed)",
            config.memory_bytes >> 20,
            config.workload,
            config.link.bytes_per_sec * 8 / 1_000_000,
            config.link.latency_ns as f64 / 1e3,
            config.streams,
            args.cpu.as_deref().unwrap_or("calibrate"),
            config.cpu.lz4_ns,
            config.cpu.delta_ns,
            config.cpu.page_ns
        );
    }
    print_table_header(args.json);
    let mut printer = Printer::new(args.json, false, !args.json);
    let start = Instant::now();
    let result = simulate(&config, &mut printer);
    printer.finish();
    let report = result.map_err(|e| e.to_string())?;
    print_summary(&report, &config, args.json, start.elapsed().as_secs_f64());
    if let Some(path) = &args.plot {
        crate::sim_plot::rounds(path, &report, &config)?;
        if !args.json {
            println!("plot: {}", path.display());
        }
    }
    Ok(report.verified())
}
