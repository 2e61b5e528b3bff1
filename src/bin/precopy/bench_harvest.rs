//! `precopy bench harvest`: what bringing KVM's dirty pages into the bitmap costs, per
//! dirty mode, on a running guest writing at a fixed rate.

/// Options of `precopy bench harvest`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Guest memory (bytes; K, M, G suffixes): two memory slots of half each.
    #[arg(long, default_value = "4G", value_parser = crate::migrate::parse_size)]
    pub memory: u64,
    /// The working set the guest writes (bytes; K, M, G suffixes).
    #[arg(long, default_value = "1G", value_parser = crate::migrate::parse_size)]
    pub working_set: u64,
    /// Page writes per second.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Milliseconds between two syncs.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Seconds measured per mode.
    #[arg(long, default_value_t = 2)]
    pub seconds: u64,
    /// Dirty-ring entries per vCPU (a power of two; smaller rings fill between syncs
    /// and make the vCPU exit).
    #[arg(long, default_value_t = 65536)]
    pub ring_entries: usize,
}

#[cfg(not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")))]
pub fn run(_args: &Args) -> Result<(), String> {
    Err("bench harvest needs a precopy built with --features kvm (Linux x86-64)".into())
}

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub fn run(args: &Args) -> Result<(), String> {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use precopy::engine::Guest;
    use precopy::kvm::{layout_for, DirtyMode, DirtyOffers, GuestConfig, GuestRam, KvmGuest};

    let kvm = kvm_ioctls::Kvm::new()
        .map_err(|e| format!("bench harvest: /dev/kvm cannot be opened here ({e})"))?;
    let offers = DirtyOffers::probe(&kvm);
    println!("{}", offers.describe());
    println!(
        "{} MiB guest (two slots), {} MiB working set, {} pages/s, a sync every {} ms for {} s; \
         nested KVM (kvm-pvm here): indicative figures",
        args.memory >> 20,
        args.working_set >> 20,
        args.rate,
        args.interval_ms,
        args.seconds
    );
    println!(
        "{:>6} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "mode",
        "syncs",
        "pages/sync",
        "us/sync",
        "max us",
        "fetch us",
        "protect us",
        "import us",
        "ring-full/s"
    );
    for mode in [DirtyMode::Log, DirtyMode::Clear, DirtyMode::Ring] {
        if !offers.offers(mode) {
            println!("{:>6} not offered by this kernel", mode.name());
            continue;
        }
        let layout = layout_for(args.memory).map_err(|e| format!("--memory: {e}"))?;
        let ram = Arc::new(GuestRam::new(layout).map_err(|e| e.to_string())?);
        let config = GuestConfig {
            ring_entries: args.ring_entries,
            ..GuestConfig::new(args.working_set / 4096, args.rate, mode)
        };
        let guest = KvmGuest::boot(&kvm, ram, config).map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300));
        let tracker = guest.tracker();
        tracker.sync(guest.bitmap()).map_err(|e| e.to_string())?;
        let _ = guest.bitmap().harvest();
        let stats = &tracker.stats;
        let base = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let (s0, n0, f0, p0, i0, r0, rep0) = (
            base(&stats.syncs),
            base(&stats.sync_ns),
            base(&stats.fetch_ns),
            base(&stats.protect_ns),
            base(&stats.import_ns),
            base(&stats.ring_full_exits),
            base(&stats.reported),
        );
        let start = Instant::now();
        let mut max_ns = 0u64;
        let mut next = start;
        while start.elapsed() < Duration::from_secs(args.seconds) {
            next += Duration::from_millis(args.interval_ms);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let t = Instant::now();
            tracker.sync(guest.bitmap()).map_err(|e| e.to_string())?;
            max_ns = max_ns.max(t.elapsed().as_nanos() as u64);
            let _ = guest.bitmap().harvest();
        }
        let secs = start.elapsed().as_secs_f64();
        let syncs = (base(&stats.syncs) - s0).max(1);
        let per = |now: u64, was: u64| (now - was) as f64 / 1e3 / syncs as f64;
        println!(
            "{:>6} {:>7} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>12.1}",
            mode.name(),
            syncs,
            (base(&stats.reported) - rep0) as f64 / syncs as f64,
            per(base(&stats.sync_ns), n0),
            max_ns as f64 / 1e3,
            per(base(&stats.fetch_ns), f0),
            per(base(&stats.protect_ns), p0),
            per(base(&stats.import_ns), i0),
            (base(&stats.ring_full_exits) - r0) as f64 / secs
        );
        guest.pause().map_err(|e| e.to_string())?;
    }
    Ok(())
}
