//! `precopy kvm-demo`: a real KVM guest (a long-mode program writing a counter at a
//! paced rate) migrated live: its RAM over loopback TCP into a destination VM's RAM,
//! the vCPU paused once, its state sent in the stream (a device-state frame), the
//! guest continued on the destination from the received state; in this process, or
//! with `--two-process` in another one (`kvm_two`).

/// Exit status when this machine cannot run a KVM guest (no `/dev/kvm`, or a build
/// without the `kvm` feature).
pub const NO_KVM_EXIT: u8 = 3;

/// Options of `precopy kvm-demo`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 when the memory verified, the memories are equal and \
the counter continued on the destination; 1 on any failure; 3 when /dev/kvm cannot be \
opened here (or precopy was built without the `kvm` feature), with one line saying so."
)]
pub struct Args {
    /// Guest memory size (bytes; K, M, G suffixes; a multiple of 2 MiB): half at
    /// guest address 0, the rest at 4 GiB, a hole between.
    #[arg(long, default_value = "1G", value_parser = crate::migrate::parse_size)]
    pub memory: u64,
    /// The working set the guest writes (bytes; K, M, G suffixes).
    #[arg(long, default_value = "256M", value_parser = crate::migrate::parse_size)]
    pub working_set: u64,
    /// Page writes per second the guest makes (k and m suffixes: 50k).
    #[arg(long, default_value = "50k", value_parser = parse_rate)]
    pub rate: u64,
    /// KVM dirty tracking: log (KVM_GET_DIRTY_LOG), clear (manual protect with
    /// KVM_CLEAR_DIRTY_LOG), ring (dirty rings), auto (the best the kernel offers).
    #[arg(long, default_value = "auto")]
    pub dirty: String,
    /// Parallel streams (loopback TCP connections).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..))]
    pub streams: u8,
    /// Emulate a link of this speed (1gbe, 10gbe, 25gbe, 40gbe, 100gbe).
    #[arg(long, value_parser = crate::migrate::parse_link)]
    pub link: Option<u64>,
    /// Downtime limit, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub downtime_ms: u64,
    /// Most live rounds before switching over anyway.
    #[arg(long, default_value_t = 30)]
    pub max_rounds: u32,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run the destination in another process (this precopy started as a hidden
    /// `kvm-recv` child over loopback TCP): its own VM over the memory it received,
    /// its vCPU restored from the stream's device-state frame; it reports the
    /// counter's continuity and the digest of the memory it received.
    #[arg(long)]
    pub two_process: bool,
}

/// Parses a rate with an optional k/m suffix.
fn parse_rate(s: &str) -> Result<u64, String> {
    let (digits, mul) = match s.chars().last() {
        Some('k') | Some('K') => (&s[..s.len() - 1], 1_000),
        Some('m') | Some('M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("'{s}' is not a rate (e.g. 0, 10k, 50000)"))
}

/// How the demo ended.
#[cfg_attr(
    not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
pub enum Outcome {
    /// Verified, equal, continued.
    Ok,
    /// No KVM here: the one line to print.
    NoKvm(String),
}

#[cfg(not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")))]
pub fn run(_args: &Args) -> Result<Outcome, String> {
    Ok(Outcome::NoKvm(
        "kvm-demo: this precopy was built without the `kvm` feature (Linux x86-64): \
         rebuild with --features kvm"
            .into(),
    ))
}

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub use imp::run;

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    use precopy::engine::{SourceConfig, Verify};
    use precopy::kvm::{
        layout_for, migrate_local, DirtyMode, DirtyOffers, GuestConfig, GuestRam, KvmGuest,
        LocalMigration, LocalMigrationError,
    };
    use precopy::memory::migration_digest;
    use precopy::runtime::{
        MigrationOptions, MigrationReport, Observer, StreamsFinal, StreamsRound,
    };
    use precopy::schedule::{OnLimit, Policy};

    use super::{Args, Outcome};
    use crate::migrate::{self, SourceReport, VerifyMode};

    struct Table {
        json: bool,
        report: Option<MigrationReport>,
    }

    impl Observer for Table {
        fn round_done(&mut self, round: &StreamsRound) {
            migrate::print_round(round, self.json);
        }
        fn final_round(&mut self, round: &StreamsFinal) {
            migrate::print_final(round, self.json);
        }
        fn ended(&mut self, report: &MigrationReport) {
            self.report = Some(report.clone());
        }
    }

    fn mode(args: &Args, offers: &DirtyOffers) -> Result<DirtyMode, String> {
        let mode = match args.dirty.as_str() {
            "auto" => return Ok(offers.best()),
            "log" => DirtyMode::Log,
            "clear" => DirtyMode::Clear,
            "ring" => DirtyMode::Ring,
            other => return Err(format!("--dirty '{other}': one of log, clear, ring, auto")),
        };
        if !offers.offers(mode) {
            return Err(format!(
                "--dirty {}: not offered by this kernel ({})",
                mode.name(),
                offers.describe()
            ));
        }
        Ok(mode)
    }

    /// Runs the demo.
    pub fn run(args: &Args) -> Result<Outcome, String> {
        let kvm = match kvm_ioctls::Kvm::new() {
            Ok(kvm) => kvm,
            Err(e) => {
                return Ok(Outcome::NoKvm(format!(
                    "kvm-demo: /dev/kvm cannot be opened here ({e}): no KVM guest to migrate"
                )))
            }
        };
        let offers = DirtyOffers::probe(&kvm);
        let mode = mode(args, &offers)?;
        let layout = layout_for(args.memory).map_err(|e| format!("--memory: {e}"))?;
        let set_pages = args.working_set / 4096;
        let ram = Arc::new(GuestRam::new(layout).map_err(|e| e.to_string())?);
        let verify = Verify::AfterResume;
        let digest_ns = precopy::runtime::calibrate::digest_downtime_ns(&*ram, 16384, verify);
        let policy = Policy {
            downtime_limit_ns: args.downtime_ms.saturating_mul(1_000_000),
            bandwidth_cap: args.link,
            max_rounds: args.max_rounds,
            on_limit: OnLimit::SwitchOver,
            ..Policy::default()
        };
        let policy = Policy {
            non_memory_downtime_ns: policy.non_memory_downtime_ns + digest_ns,
            ..policy
        };
        policy.validate().map_err(|e| e.to_string())?;
        let config = GuestConfig::new(set_pages, args.rate, mode);
        let source = KvmGuest::boot(&kvm, ram, config).map_err(|e| format!("source VM: {e}"))?;
        if !args.json {
            println!("{}", offers.describe());
            println!(
                "precopy kvm-demo: {} MiB guest (regions {}), working set {} MiB, {} pages/s, dirty mode {}, {} stream(s), loopback TCP",
                args.memory >> 20,
                layout
                    .regions()
                    .iter()
                    .map(|r| format!("{:#x}+{} MiB", r.guest_addr, (r.pages * 4096) >> 20))
                    .collect::<Vec<_>>()
                    .join(", "),
                args.working_set >> 20,
                args.rate,
                mode.name(),
                args.streams
            );
        } else {
            println!(
                "{{\"kind\":\"kvm\",\"dirty_mode\":\"{}\",\"manual_protect\":{},\"ring\":{}}}",
                mode.name(),
                offers.manual_protect,
                offers.ring.is_some()
            );
        }
        // Let the guest cover its working set once before the migration starts (as
        // long as that takes at its rate, and a second more at most).
        let warm = Instant::now();
        let limit =
            std::time::Duration::from_secs_f64(1.0 + set_pages as f64 / args.rate.max(1) as f64);
        while args.rate > 0 && warm.elapsed() < limit && source.counter().unwrap_or(0) < set_pages {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let writes_before = source.counter().unwrap_or(0);
        let options = MigrationOptions::new(
            SourceConfig {
                sync_before_harvest: true,
                session_id: *b"precopy-kvm-demo",
                verify,
                ..SourceConfig::new(4096)
            },
            policy,
        );
        migrate::print_table_header(args.json);
        let mut table = Table {
            json: args.json,
            report: None,
        };
        let start = Instant::now();
        let result = if args.two_process {
            crate::kvm_two::migrate(
                &source,
                (args.memory, args.working_set, args.rate, args.streams),
                &options,
                &mut table,
            )
            .map(|(landed, equal)| Landed::Remote(landed, equal))
            .map_err(|f| (f.migration, f.error))
        } else {
            migrate_local(
                &kvm,
                &source,
                args.streams,
                &options,
                (args.rate, set_pages),
                &mut table,
            )
            .map(|m| Landed::Local(Box::new(m)))
            .map_err(|e| {
                (
                    matches!(e, LocalMigrationError::Migration(_)),
                    e.to_string(),
                )
            })
        };
        let r = table
            .report
            .take()
            .ok_or("the migration reported nothing")?;
        // Until the destination verified (it may resume the guest there), like QEMU's
        // total-time: not the memory comparison, restore and continuity run after it.
        let total_ns = r
            .verified_at
            .map_or_else(|| start.elapsed(), |v| v.duration_since(start))
            .as_nanos() as u64;
        let writes = source.counter().unwrap_or(0) - writes_before;
        // The downtime as QEMU reports it: until the source handed its last byte over.
        let sent_ms = r
            .paused_at
            .zip(r.sent_at)
            .map(|(p, s)| s.duration_since(p).as_secs_f64() * 1e3);
        let mut report = SourceReport {
            rounds: r.rounds + u32::from(r.digests.is_some()),
            total_ns,
            downtime_ns: r.paused_at.map(|p| match r.verified_at {
                Some(v) => v.duration_since(p).as_nanos() as u64,
                None => total_ns.saturating_sub(p.duration_since(start).as_nanos() as u64),
            }),
            verify: VerifyMode::After,
            verify_in_downtime_ns: r.verify_in_downtime_ns,
            verify_after_ns: r.verify_after_ns,
            source_check: r.source_check.clone(),
            downtime_limit_ns: args.downtime_ms.saturating_mul(1_000_000),
            predicted_ns: r.predicted_downtime_ns,
            wire_bytes: r.wire_bytes,
            memory_bytes: layout.total_bytes(),
            writes,
            digest: r.digests.as_deref().map(migration_digest),
            error: None,
            writes_after_failure: None,
        };
        let stats = &source.tracker().stats;
        let syncs = stats.syncs.load(Ordering::Relaxed);
        let sync_us = stats.sync_ns.load(Ordering::Relaxed) as f64 / 1e3 / syncs.max(1) as f64;
        let ring_full = stats.ring_full_exits.load(Ordering::Relaxed);
        let m = match result {
            Ok(m) => m.summary(),
            Err((migration_failed, e)) => {
                report.error = Some(e.clone());
                report.print(args.json, None);
                if migration_failed {
                    let c = source.counter().unwrap_or(0);
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    println!(
                        "the guest runs on at the source: {} page writes in the 200 ms after",
                        source.counter().unwrap_or(0).saturating_sub(c)
                    );
                }
                return Err(e);
            }
        };
        let equal = m.equal;
        let c = m.counter_at_pause;
        if args.json {
            let extra = format!(
                "{{\"kind\":\"kvm_summary\",\"dirty_mode\":\"{}\",\"syncs\":{syncs},\"sync_us\":{sync_us:.1},\"ring_full_exits\":{ring_full},\"counter_at_pause\":{c},\"pause_rip\":{},\"restore_ms\":{:.1},\"counter_after\":{},\"counter_continued\":{},\"memory_equal\":{equal}",
                mode.name(),
                m.rip,
                m.restore_ms,
                m.counter,
                m.continued
            );
            let extra = match &m.process {
                Some((pid, digest)) => format!(
                    "{extra},\"destination_pid\":{pid},\"device_state_bytes\":{},\"memory_digest\":\"{digest}\"",
                    m.device_bytes
                ),
                None => format!("{extra},\"device_state_bytes\":{}", m.device_bytes),
            };
            let extra = match sent_ms {
                Some(ms) => format!("{extra},\"downtime_to_sent_ms\":{ms:.2}"),
                None => format!("{extra},\"downtime_to_sent_ms\":null"),
            };
            report.print(true, None);
            println!("{extra}}}");
        } else {
            report.print(false, None);
            if let Some(ms) = sent_ms {
                println!(
                    "downtime until the source sent its last byte: {ms:.1} ms (how QEMU counts \
                     its downtime; the downtime above also waits for the destination's verdict)"
                );
            }
            println!(
                "dirty sync ({}): {syncs} syncs, {sync_us:.0} us each, {ring_full} ring-full exits",
                mode.name()
            );
            println!(
                "vCPU paused at its pacing exit: rip {:#x}, counter {c} (page {} of the set holds it)",
                m.rip,
                c % set_pages.max(1)
            );
            if let Some((pid, _)) = &m.process {
                println!("destination: another process (pid {pid}, `precopy kvm-recv`), its own VM over the memory it received");
            }
            println!(
                "destination VM created over the received memory and its vCPU running in {:.1} ms (vCPU state restored from the stream's device-state frame, {} bytes: regs and sregs; a VMM does this once the destination verified, adding it to the downtime)",
                m.restore_ms, m.device_bytes
            );
            println!(
                "counter continuity: {} (counter {} after {} ms on the destination; page {} holds {})",
                if m.continued { "yes" } else { "NO" },
                m.counter,
                200,
                (c + 1) % set_pages.max(1),
                m.next_page_value
            );
            match &m.process {
                Some((_, digest)) => println!(
                    "memory equal: {} (digest of all memory, source paused vs destination as received: {digest})",
                    if equal { "yes" } else { "NO" }
                ),
                None => println!("memory equal: {}", if equal { "yes" } else { "NO" }),
            }
        }
        if !report.verified() || !equal || !m.continued {
            return Err(format!(
                "kvm-demo: verified {}, memory equal {}, counter continued {}",
                report.verified(),
                equal,
                m.continued
            ));
        }
        Ok(Outcome::Ok)
    }

    /// Where the guest landed: a destination VM in this process, or in another.
    enum Landed {
        Local(Box<LocalMigration>),
        Remote(crate::kvm_two::Landed, bool),
    }

    /// What the demo prints of either.
    struct Summary {
        rip: u64,
        counter_at_pause: u64,
        restore_ms: f64,
        counter: u64,
        next_page_value: u64,
        continued: bool,
        equal: bool,
        device_bytes: usize,
        /// The destination process and the memory digest both sides computed.
        process: Option<(u32, String)>,
    }

    impl Landed {
        fn summary(self) -> Summary {
            match self {
                Landed::Local(m) => Summary {
                    rip: m.state.regs.rip,
                    counter_at_pause: m.counter_at_pause,
                    restore_ms: m.restore_ns as f64 / 1e6,
                    counter: m.continuity.counter,
                    next_page_value: m.continuity.next_page_value,
                    continued: m.continuity.continued,
                    equal: m.first_difference.is_none(),
                    device_bytes: m.applied.device_state.iter().map(|d| d.data.len()).sum(),
                    process: None,
                },
                Landed::Remote(l, equal) => Summary {
                    rip: l.rip,
                    counter_at_pause: l.counter_at_pause,
                    restore_ms: l.restore_ms,
                    counter: l.counter_after,
                    next_page_value: l.next_page_value,
                    continued: l.counter_continued,
                    equal,
                    device_bytes: l.device_state.iter().map(|d| d.2).sum(),
                    process: Some((l.pid, l.memory_digest)),
                },
            }
        }
    }
}

/// Options of `precopy kvm-image` (hidden; `scripts/qemu-compare.sh` uses it).
#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Guest memory (QEMU's -m), bytes; K, M, G suffixes.
    #[arg(long, default_value = "1G", value_parser = crate::migrate::parse_size)]
    pub memory: u64,
    /// The working set the guest writes (bytes; K, M, G suffixes).
    #[arg(long, default_value = "256M", value_parser = crate::migrate::parse_size)]
    pub working_set: u64,
    /// Page writes per second (a batch of rate/1000 per 1 kHz timer tick).
    #[arg(long, default_value = "50k", value_parser = parse_rate)]
    pub rate: u64,
    /// Where to write the multiboot image.
    #[arg(long)]
    pub out: std::path::PathBuf,
}

/// Writes the guest program as a multiboot image (for QEMU's -kernel).
#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub fn write_image(args: &ImageArgs) -> Result<(), String> {
    let batch = if args.rate == 0 {
        0
    } else {
        (args.rate / 1000).max(1)
    };
    let bytes = precopy::kvm::multiboot_image(args.memory, args.working_set / 4096, batch)
        .map_err(|e| e.to_string())?;
    std::fs::write(&args.out, bytes).map_err(|e| format!("{}: {e}", args.out.display()))
}

/// Writes the guest program as a multiboot image (needs feature `kvm`).
#[cfg(not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")))]
pub fn write_image(_args: &ImageArgs) -> Result<(), String> {
    Err("kvm-image needs a precopy built with --features kvm (Linux x86-64)".into())
}
