//! Live migration of a real running KVM guest (feature `kvm`): a long-mode guest at
//! CPL3 keeps writing a counter while the runtime migrates its RAM, in each dirty
//! tracking mode; the vCPU state moves to a destination VM over the received memory
//! and the guest continues there.
//!
//! Each test prints `SKIP: ...` and returns when `/dev/kvm` cannot be opened (or the
//! kernel lacks the dirty mode).
#![cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;
use precopy::engine::{Guest, SourceConfig};
use precopy::kvm::{
    layout_for, migrate_local, DirtyMode, DirtyOffers, GuestConfig, GuestRam, KvmGuest,
    VCPU_STATE_ID, VCPU_STATE_LEN, VCPU_STATE_VERSION,
};
use precopy::runtime::{MigrationOptions, Observer, StreamsRound};
use precopy::schedule::Policy;

const SET: u64 = 4096;
const RATE: u64 = 20_000;

fn open_kvm_or_skip() -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) => {
            eprintln!("SKIP: /dev/kvm not available ({e})");
            None
        }
    }
}

fn boot(kvm: &Kvm, mode: DirtyMode) -> KvmGuest {
    boot_with(kvm, GuestConfig::new(SET, RATE, mode))
}

fn boot_with(kvm: &Kvm, config: GuestConfig) -> KvmGuest {
    let ram = Arc::new(GuestRam::new(layout_for(128 << 20).unwrap()).unwrap());
    KvmGuest::boot(kvm, ram, config).unwrap_or_else(|e| panic!("{config:?}: boot: {e}"))
}

fn options() -> MigrationOptions {
    MigrationOptions::new(
        SourceConfig {
            sync_before_harvest: true,
            ..SourceConfig::new(4096)
        },
        Policy {
            downtime_limit_ns: 300_000_000,
            ..Policy::default()
        },
    )
}

/// Waits until the guest's counter passes `target` (bounded).
fn wait_counter(guest: &KvmGuest, target: u64, what: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = guest.counter().unwrap();
        if c > target {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the counter stayed at {c} (wanted past {target}); vCPU error {:?}",
            guest.vcpu().error()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn guest_writes_at_its_rate_and_pauses_at_its_pause_point() {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let guest = boot(&kvm, DirtyMode::Log);
    let start = Instant::now();
    wait_counter(&guest, 2 * SET, "running");
    let state = guest.pause_vcpu().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let c = guest.counter().unwrap();
    // Paused after the pacing exit: the counter register is the last value written,
    // and page (c mod set) holds it.
    assert_eq!(state.regs.rbx, c, "counter register vs memory");
    assert_eq!(guest.working_set_value(c % SET).unwrap(), c);
    // Paced: not faster than the rate (a 50% margin for timer slack).
    assert!(
        (c as f64) < RATE as f64 * elapsed * 1.5 + 1000.0,
        "{c} writes in {elapsed:.3} s at a {RATE}/s target"
    );
    // Paused means paused.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        guest.counter().unwrap(),
        c,
        "the counter moved while paused"
    );
    guest.resume_vcpu();
    wait_counter(&guest, c, "after resume");
}

/// Migrates a guest tracked in `mode` and checks everything the issue asks.
fn migrate_in(mode: DirtyMode) {
    migrate_with(GuestConfig::new(SET, RATE, mode));
}

fn migrate_with(config: GuestConfig) {
    let mode = config.dirty;
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let offers = DirtyOffers::probe(&kvm);
    eprintln!("{}", offers.describe());
    if !offers.offers(mode) {
        eprintln!("SKIP: dirty mode {} not offered here", mode.name());
        return;
    }
    let source = boot_with(&kvm, config);
    // Let the guest cover its working set once, so every live round has dirty pages.
    wait_counter(&source, SET, "before the migration");
    let m = migrate_local(&kvm, &source, 2, &options(), (RATE, SET), &mut ())
        .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    let stats = &source.tracker().stats;
    eprintln!(
        "{mode:?}: live rounds {} dirty {:?}, wire {} B, counter at pause {}, {:?}, syncs {} ring-full exits {}",
        m.report.rounds,
        m.live_dirty,
        m.report.wire_bytes,
        m.counter_at_pause,
        m.continuity,
        stats.syncs.load(Ordering::Relaxed),
        stats.ring_full_exits.load(Ordering::Relaxed)
    );
    let digests = m.report.digests.as_ref().expect("digests");
    assert_eq!(&m.applied.digests, digests, "destination verified digests");
    assert!(
        m.report.source_check.passed(),
        "{:?}",
        m.report.source_check
    );
    assert_eq!(m.first_difference, None, "memories differ");
    let with_dirty = m.live_dirty.iter().filter(|&&d| d > 0).count();
    assert!(
        with_dirty >= 2,
        "{mode:?}: live rounds with dirty pages {:?}: the pre-harvest sync did not run",
        m.live_dirty
    );
    assert!(stats.syncs.load(Ordering::Relaxed) >= 2);
    if mode == DirtyMode::Ring && config.ring_entries <= 1024 {
        assert!(
            stats.ring_full_exits.load(Ordering::Relaxed) > 0,
            "a {}-entry ring never filled",
            config.ring_entries
        );
    }
    // The vCPU state travelled in the stream: one device-state item, restored from it.
    let items: Vec<_> = m
        .applied
        .device_state
        .iter()
        .map(|d| (d.id, d.version, d.data.len()))
        .collect();
    assert_eq!(
        items,
        [(VCPU_STATE_ID, VCPU_STATE_VERSION, VCPU_STATE_LEN)],
        "device state received"
    );
    assert_eq!(m.state.regs.rbx, m.counter_at_pause);
    assert!(m.continuity.continued, "{:?}", m.continuity);
    // The destination keeps running from there.
    wait_counter(&m.destination, m.continuity.counter, "destination");
}

#[test]
fn migration_with_the_classic_dirty_log() {
    migrate_in(DirtyMode::Log);
}

#[test]
fn migration_with_manual_clear() {
    migrate_in(DirtyMode::Clear);
}

#[test]
fn migration_with_the_dirty_ring() {
    migrate_in(DirtyMode::Ring);
}

/// A ring of 512 entries fills between syncs at this rate: the vCPU's ring-full exits
/// bring the entries in, and no write is lost.
#[test]
fn migration_with_a_dirty_ring_that_fills() {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    if !DirtyOffers::probe(&kvm).offers(DirtyMode::Ring) {
        eprintln!("SKIP: no dirty ring here");
        return;
    }
    migrate_with(GuestConfig {
        ring_entries: 512,
        ..GuestConfig::new(SET, RATE, DirtyMode::Ring)
    });
}

/// Cuts the migration after its first live round by failing the guest's syncs.
struct FailSyncAfterBulk<'a> {
    guest: &'a FaultyGuest<'a>,
    armed: bool,
}

impl Observer for FailSyncAfterBulk<'_> {
    fn round_done(&mut self, _round: &StreamsRound) {
        if self.armed {
            self.guest.fail.store(true, Ordering::SeqCst);
        }
    }
}

/// A KVM guest whose dirty sync fails on demand.
struct FaultyGuest<'a> {
    inner: &'a KvmGuest,
    fail: std::sync::atomic::AtomicBool,
    /// Fail the syncs from the pause on (the final sync).
    fail_after_pause: bool,
}

impl Guest for FaultyGuest<'_> {
    type Memory = GuestRam;
    type Words = Box<[std::sync::atomic::AtomicU64]>;
    type Error = precopy::kvm::KvmError;
    fn memory(&self) -> &GuestRam {
        self.inner.memory()
    }
    fn bitmap(&self) -> &precopy::kvm::Bitmap {
        self.inner.bitmap()
    }
    fn pause(&self) -> Result<(), Self::Error> {
        self.inner.pause()?;
        if self.fail_after_pause {
            self.fail.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
    fn resume(&self) {
        self.inner.resume()
    }
    fn throttle(&self, percent: u8) {
        self.inner.throttle(percent)
    }
    fn sync_dirty(&self) -> Result<(), Self::Error> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(precopy::kvm::KvmError::Config(
                "injected sync failure".into(),
            ));
        }
        self.inner.sync_dirty()
    }
}

/// Fails a migration by a sync error (after the bulk round, or after the pause) and
/// checks the guest runs on at the source with its pages still tracked.
fn failed_sync(after_pause: bool) {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let source = boot(&kvm, DirtyMode::Log);
    wait_counter(&source, SET, "before the migration");
    let faulty = FaultyGuest {
        inner: &source,
        fail: false.into(),
        fail_after_pause: after_pause,
    };
    let links = {
        // A real destination (it refuses or errors out once the source stops).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let layout = *source.ram().layout();
        std::thread::spawn(move || {
            let (s, peer) = listener.accept().unwrap();
            let limits = precopy::runtime::Limits {
                max_memory: layout.total_bytes(),
                expect: Some(layout),
            };
            let peer = peer.to_string();
            let r = precopy::runtime::receive_streams(
                &listener,
                s,
                &peer,
                &limits,
                Duration::from_secs(10),
            );
            assert!(r.is_err(), "the destination verified a failed migration");
        });
        let s = std::net::TcpStream::connect(addr).unwrap();
        vec![precopy::runtime::SourceLink::new(s, addr.to_string())]
    };
    let mut observer = FailSyncAfterBulk {
        guest: &faulty,
        armed: !after_pause,
    };
    let result = precopy::runtime::migrate_streams(
        &faulty,
        links,
        |l| l.finish(),
        &options(),
        &mut observer,
    );
    let err = result.expect_err("the migration should fail on the injected sync error");
    eprintln!("failed as injected: {err}");
    assert!(err.to_string().contains("injected"), "{err}");
    if after_pause {
        // It failed with the guest paused: the runtime resumed it.
        assert!(err.to_string().contains("paused"), "{err}");
        assert!(
            source.paused_state().is_some(),
            "the guest was never paused"
        );
    }
    // The guest runs on at the source...
    let c = source.counter().unwrap();
    wait_counter(&source, c + 100, "after the failed migration");
    // ...and a later sync still reports its pages.
    let before = source.bitmap().dirty_pages();
    source.sync_dirty().unwrap();
    assert!(
        source.bitmap().dirty_pages() > before || before > 0,
        "no dirty pages after the guest wrote on"
    );
}

/// `precopy kvm-demo` on a small guest writing 10k pages/s, dirty log.
const SMALL_DEMO: [&str; 9] = [
    "kvm-demo",
    "--memory",
    "64M",
    "--working-set",
    "8M",
    "--rate",
    "10k",
    "--dirty",
    "log",
];

/// The `kvm_summary` line of a `kvm-demo --json` run whose summary says verified.
fn verified_kvm_summary(stdout: &str) -> &str {
    let summary = stdout
        .lines()
        .find(|l| l.contains("\"kind\":\"summary\""))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    assert!(summary.contains("\"verified\":true"), "{summary}");
    stdout
        .lines()
        .find(|l| l.contains("\"kind\":\"kvm_summary\""))
        .unwrap_or_else(|| panic!("no kvm_summary in {stdout}"))
}

/// `precopy kvm-demo` end to end (small guest): exit 0 and a summary saying verified,
/// memory equal and counter continued; exit 3 with one line where there is no KVM.
#[test]
fn kvm_demo_cli_migrates_and_says_so() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_precopy"))
        .args(SMALL_DEMO)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if Kvm::new().is_err() {
        eprintln!("SKIP (checking the no-KVM exit only): {stderr}");
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        return;
    }
    assert!(out.status.success(), "stdout {stdout}\nstderr {stderr}");
    let kvm = verified_kvm_summary(&stdout);
    for want in [
        "\"memory_equal\":true",
        "\"counter_continued\":true",
        "\"dirty_mode\":\"log\"",
    ] {
        assert!(kvm.contains(want), "{want} not in {kvm}");
    }
}

/// In every mode a sync re-protects what it reported: with the vCPU paused a second
/// sync reports nothing, and once the guest ran again the next sync reports its pages
/// (the bitmap gets them, and only after the re-protect).
#[test]
fn each_dirty_mode_reprotects_what_it_reported() {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let offers = DirtyOffers::probe(&kvm);
    for mode in [DirtyMode::Log, DirtyMode::Clear, DirtyMode::Ring] {
        if !offers.offers(mode) {
            eprintln!("SKIP: dirty mode {} not offered here", mode.name());
            continue;
        }
        let guest = boot(&kvm, mode);
        wait_counter(&guest, 200, "first writes");
        guest.pause_vcpu().unwrap();
        let tracker = guest.tracker();
        let first = tracker.sync(guest.bitmap()).unwrap();
        assert!(first > 0, "{mode:?}: the guest's writes were not reported");
        let page = precopy::kvm::program::working_set_page(guest.counter().unwrap() % SET);
        assert!(guest.bitmap().is_dirty(page), "{mode:?}: last written page");
        let again = tracker.sync(guest.bitmap()).unwrap();
        assert_eq!(again, 0, "{mode:?}: reported again with the guest paused");
        let harvested = guest.bitmap().harvest().count();
        assert!(harvested > 0);
        let c = guest.counter().unwrap();
        guest.resume_vcpu();
        wait_counter(&guest, c + 50, "after resume");
        guest.pause_vcpu().unwrap();
        let after = tracker.sync(guest.bitmap()).unwrap();
        assert!(
            after > 0,
            "{mode:?}: writes after the re-protect were not reported"
        );
        let page = precopy::kvm::program::working_set_page(guest.counter().unwrap() % SET);
        assert!(
            guest.bitmap().is_dirty(page),
            "{mode:?}: page written after resume"
        );
        eprintln!("{mode:?}: reported {first}, then {again} while paused, then {after}");
    }
}

/// Throttling lengthens the wait at each pacing exit: 75% throttle writes well under
/// what the unthrottled guest writes in the same time.
#[test]
fn throttling_slows_the_guest() {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let guest = boot(&kvm, DirtyMode::Log);
    let writes_in = |ms: u64| {
        let c = guest.counter().unwrap();
        std::thread::sleep(Duration::from_millis(ms));
        guest.counter().unwrap() - c
    };
    let free = writes_in(300);
    guest.throttle(75);
    let _ = writes_in(20);
    let throttled = writes_in(300);
    guest.throttle(0);
    eprintln!("writes in 300 ms: {free} free, {throttled} at 75% throttle");
    assert!(free > 0, "the guest does not write");
    assert!(
        (throttled as f64) < free as f64 * 0.5,
        "75% throttle: {throttled} writes vs {free} unthrottled"
    );
}

#[test]
fn a_failed_sync_fails_the_migration_and_the_guest_runs_on_with_its_pages_tracked() {
    failed_sync(false);
}

#[test]
fn a_failed_final_sync_resumes_the_paused_guest_at_the_source() {
    failed_sync(true);
}

/// `precopy kvm-demo --two-process`: the destination is another process (`precopy
/// kvm-recv`, started by the demo) with its own VM over the memory it received, its
/// vCPU restored from the stream's device-state frame; it verifies, the counter
/// continues there, and both memories have the same digest.
#[test]
fn kvm_demo_two_process_resumes_the_guest_in_another_process() {
    if Kvm::new().is_err() {
        eprintln!("SKIP: /dev/kvm cannot be opened here");
        return;
    }
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_precopy"))
        .args(SMALL_DEMO)
        .args(["--two-process", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let demo_pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout {stdout}\nstderr {stderr}");
    let line = verified_kvm_summary(&stdout);
    let kvm: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(kvm["memory_equal"], true, "{line}");
    assert_eq!(kvm["counter_continued"], true, "{line}");
    assert_eq!(kvm["device_state_bytes"], VCPU_STATE_LEN, "{line}");
    let pid = kvm["destination_pid"].as_u64().expect("a destination pid");
    assert_ne!(
        pid,
        u64::from(demo_pid),
        "the destination ran in the demo's process"
    );
    assert_ne!(pid, u64::from(std::process::id()));
    let (before, after) = (
        kvm["counter_at_pause"].as_u64().unwrap(),
        kvm["counter_after"].as_u64().unwrap(),
    );
    assert!(after > before, "the counter did not go on: {line}");
}

/// A destination refuses to resume without a vCPU state, or with one of another
/// version or length, with an error that says so.
#[test]
fn resuming_needs_the_vcpu_state_in_its_version() {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let layout = layout_for(16 << 20).unwrap();
    let ram = Arc::new(GuestRam::new(layout).unwrap());
    let applied = |device_state| precopy::runtime::AppliedStreams {
        header: precopy::wire::StreamHeader {
            features: precopy::wire::Features::ALL,
            session_id: [0; 16],
            layout,
            stream: precopy::layout::Shard::WHOLE,
        },
        stats: Default::default(),
        stream_bytes: 0,
        digests: Vec::new(),
        device_state,
    };
    let item = |version, len| precopy::engine::OwnedDeviceState {
        id: VCPU_STATE_ID,
        version,
        data: vec![0; len],
    };
    for (items, want) in [
        (vec![], "no vCPU state"),
        (vec![item(9, VCPU_STATE_LEN)], "version 9 is unknown"),
        (
            vec![item(VCPU_STATE_VERSION, 100)],
            "vCPU state of 100 bytes",
        ),
    ] {
        let err = precopy::kvm::resume_received(&kvm, ram.clone(), &applied(items), (0, 1))
            .expect_err("resumed without a valid vCPU state");
        assert!(err.to_string().contains(want), "{err}");
    }
}
