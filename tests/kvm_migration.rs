//! Live migration of a real running KVM guest (feature `kvm`): each test prints
//! `SKIP: ...` and returns when `/dev/kvm` cannot be opened.
#![cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]

use std::sync::Arc;
use std::time::Duration;

use kvm_ioctls::Kvm;
use precopy::kvm::{layout_for, DirtyMode, GuestConfig, GuestRam, KvmGuest, PaceExit};

fn open_kvm_or_skip() -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) => {
            eprintln!("SKIP: /dev/kvm not available ({e})");
            None
        }
    }
}

#[test]
fn guest_boots_and_writes_at_its_rate() {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    for exit in [PaceExit::InvalidOpcode] {
        let ram = Arc::new(GuestRam::new(layout_for(64 << 20).unwrap()).unwrap());
        let config = GuestConfig {
            working_set_pages: 1000,
            rate: 10_000,
            dirty: DirtyMode::Log,
            exit,
        };
        let guest = match KvmGuest::boot(&kvm, ram, config) {
            Ok(g) => g,
            Err(e) => panic!("{exit:?}: boot: {e}"),
        };
        std::thread::sleep(Duration::from_millis(500));
        let state = guest.pause_vcpu();
        let c = guest.counter().unwrap();
        eprintln!(
            "{exit:?}: state {:?} counter {c} exits {} error {:?}",
            state.as_ref().map(|s| s.regs.rip),
            guest.vcpu().exits(),
            guest.vcpu().error()
        );
        let state = state.unwrap();
        assert_eq!(state.regs.rbx, c);
        assert_eq!(guest.working_set_value(c % 1000).unwrap(), c);
        assert!(c > 3000 && c < 7000, "counter {c}");
    }
}

use precopy::engine::SourceConfig;
use precopy::runtime::MigrationOptions;
use precopy::schedule::Policy;

fn migrate_in(mode: DirtyMode) {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let set = 4096;
    let rate = 20_000;
    let ram = Arc::new(GuestRam::new(layout_for(128 << 20).unwrap()).unwrap());
    let config = GuestConfig {
        working_set_pages: set,
        rate,
        dirty: mode,
        exit: PaceExit::InvalidOpcode,
    };
    let source = KvmGuest::boot(&kvm, ram, config).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut options = MigrationOptions::new(
        SourceConfig {
            sync_before_harvest: true,
            ..SourceConfig::new(4096)
        },
        Policy {
            downtime_limit_ns: 300_000_000,
            ..Policy::default()
        },
    );
    options.buffer_bytes = 256 << 10;
    let m = precopy::kvm::migrate_local(&kvm, &source, 2, &options, (rate, set), &mut ()).unwrap();
    eprintln!("{mode:?}: rounds {} live dirty {:?} wire {} first diff {:?} counter {} continuity {:?} syncs {}",
        m.report.rounds, m.live_dirty, m.report.wire_bytes, m.first_difference, m.counter_at_pause, m.continuity,
        source.tracker().stats.syncs.load(std::sync::atomic::Ordering::Relaxed));
}

#[test]
fn migrate_log() {
    migrate_in(DirtyMode::Log)
}
#[test]
fn migrate_clear() {
    migrate_in(DirtyMode::Clear)
}
#[test]
fn migrate_ring() {
    migrate_in(DirtyMode::Ring)
}
