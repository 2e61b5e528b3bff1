//! The KVM import paths against a real KVM guest: a tiny x86 guest stores to known
//! pages, and the pages KVM reports (dirty log words, dirty-ring entries), imported into
//! an [`AtomicDirtyBitmap`] and harvested, must be exactly those pages.
//!
//! Each test prints `SKIP: ...` and returns when `/dev/kvm` cannot be opened (or, for
//! the ring test, when the kernel has no dirty ring).
#![cfg(all(feature = "kvm", target_arch = "x86_64"))]
#![warn(clippy::undocumented_unsafe_blocks)]

#[path = "common/kvm_guest.rs"]
mod kvm_guest;

use kvm_guest::{
    dense_pages, expected_slot_pages, layout, log_pages, open_kvm_or_skip, slot_table, TestVm,
    PAGE, SLOTS,
};
use precopy::bitmap::{words_for_pages, AtomicDirtyBitmap, KvmSlotTable};
use precopy::kvm::{enable_dirty_ring, reset_dirty_rings, DirtyOffers, DirtyRing};
use std::os::fd::AsRawFd;

const SLOT1: u32 = 0x40_0000;
const P: u32 = PAGE as u32;

/// First run: both ends of both slots, the 64-page word boundary of each slot's KVM log
/// (a store straddling pages 63 and 64), the bitmap's word boundary inside slot 1
/// (slot 1 starts at dense page 200, so dense 255/256 are its pages 55/56), and a
/// second store to an already dirty page.
const RUN1: &[u32] = &[
    0x10,                    // slot 0, page 0 (first)
    0x20,                    // page 0 again: one dirty page (maybe two ring entries)
    64 * P - 2,              // slot 0, pages 63 and 64 (straddles)
    199 * P + P - 4,         // slot 0, page 199 (last; last 4 bytes)
    SLOT1,                   // slot 1, page 0 (first)
    SLOT1 + 55 * P + 100,    // slot 1, page 55 (dense 255)
    SLOT1 + 56 * P,          // slot 1, page 56 (dense 256)
    SLOT1 + 64 * P - 2,      // slot 1, pages 63 and 64 (straddles)
    SLOT1 + 555 * P + P - 4, // slot 1, page 555 (last)
];

/// Second run: a different set, sharing only slot 1's last page with the first run.
const RUN2: &[u32] = &[
    3 * P,                   // slot 0, page 3 (right after the program's table)
    5 * P + 8,               // slot 0, page 5
    128 * P - 2,             // slot 0, pages 127 and 128
    SLOT1 + 300 * P,         // slot 1, page 300
    SLOT1 + 512 * P - 2,     // slot 1, pages 511 and 512
    SLOT1 + 555 * P + P - 4, // slot 1, page 555 again
];

/// `KVM_GET_DIRTY_LOG` for every slot (clearing KVM's log), each log imported into
/// `bitmap`. Returns the `(slot, offset)` pairs KVM reported.
fn import_dirty_logs(
    g: &TestVm,
    table: &KvmSlotTable,
    bitmap: &AtomicDirtyBitmap<Box<[std::sync::atomic::AtomicU64]>>,
) -> Vec<(u32, u64)> {
    let mut reported = Vec::new();
    for s in SLOTS {
        let log =
            g.vm.get_dirty_log(s.slot, s.bytes() as usize)
                .unwrap_or_else(|e| panic!("KVM_GET_DIRTY_LOG slot {}: {e}", s.slot));
        assert_eq!(
            log.len(),
            words_for_pages(s.pages),
            "log words, slot {}",
            s.slot
        );
        reported.extend(log_pages(s.slot, &log));
        bitmap
            .import_kvm_dirty_log(table, s.slot, &log)
            .unwrap_or_else(|e| panic!("import of slot {}'s log: {e}", s.slot));
    }
    reported
}

/// Runs the guest over `addrs` with `tag`, checks the stores landed, then checks that
/// KVM's log and the harvested bitmap name exactly the pages written.
fn run_and_check_log(
    g: &mut TestVm,
    table: &KvmSlotTable,
    bitmap: &AtomicDirtyBitmap<Box<[std::sync::atomic::AtomicU64]>>,
    run: &str,
    addrs: &[u32],
    tag: u32,
) -> Vec<u64> {
    g.run_writes(addrs, tag)
        .unwrap_or_else(|e| panic!("{run}: {e}"));
    for &a in addrs {
        assert_eq!(g.read_u32(a.into()).unwrap(), tag, "{run}: store at {a:#x}");
    }
    let expected = expected_slot_pages(addrs);
    let reported = import_dirty_logs(g, table, bitmap);
    assert_eq!(reported, expected, "{run}: KVM's dirty log (slot, page)");
    let harvested: Vec<u64> = bitmap.harvest().pages().collect();
    assert_eq!(harvested, dense_pages(&expected), "{run}: harvested pages");
    assert_eq!(
        bitmap.dirty_pages(),
        0,
        "{run}: harvest left the bitmap clean"
    );
    eprintln!(
        "{run}: {} stores; KVM logged (slot, page) {reported:?}; harvested dense pages {harvested:?}",
        addrs.len()
    );
    harvested
}

#[test]
fn dirty_log_of_a_real_guest_imports_exactly_the_written_pages() {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let mut g = TestVm::new(&kvm, |_| Ok(())).unwrap_or_else(|e| panic!("VM setup: {e}"));
    let table = slot_table();
    let bitmap = AtomicDirtyBitmap::new(layout());

    // Loading the program and its table from the host is not a guest write: nothing is
    // logged before the guest runs.
    let before = import_dirty_logs(&g, &table, &bitmap);
    assert_eq!(before, [], "dirty log before the guest ran");
    assert_eq!(bitmap.dirty_pages(), 0);

    let first = run_and_check_log(&mut g, &table, &bitmap, "run 1", RUN1, 0x1111_1111);
    // Dense pages 63/64 and 255/256 share no bitmap word: the word boundaries were hit.
    for page in [0, 63, 64, 199, 200, 255, 256, 263, 264, 755] {
        assert!(
            first.contains(&page),
            "run 1 should dirty dense page {page}"
        );
    }

    // KVM's log is clear-on-read: a second read with the guest idle is empty.
    let again = import_dirty_logs(&g, &table, &bitmap);
    assert_eq!(again, [], "dirty log re-read without guest activity");

    let second = run_and_check_log(&mut g, &table, &bitmap, "run 2", RUN2, 0x2222_2222);
    let only_first: Vec<u64> = first
        .iter()
        .copied()
        .filter(|p| !second.contains(p))
        .collect();
    assert!(
        !only_first.is_empty() && second.contains(&755),
        "run 2 should drop run 1's pages and re-log page 755 (run 1 {first:?}, run 2 {second:?})"
    );
}

#[test]
fn dirty_ring_of_a_real_guest_imports_exactly_the_written_pages() {
    let Some(kvm) = open_kvm_or_skip() else {
        return;
    };
    let Some((cap, max_bytes)) = DirtyOffers::probe(&kvm).ring else {
        eprintln!(
            "SKIP: dirty ring not available (KVM_CAP_DIRTY_LOG_RING and \
             KVM_CAP_DIRTY_LOG_RING_ACQ_REL both report 0)"
        );
        return;
    };
    // 4096 entries of 16 bytes (the kernel's own limit, if lower).
    let bytes = max_bytes.min(4096 * 16);
    let mut g = TestVm::new(&kvm, |vm| {
        enable_dirty_ring(vm, cap, bytes).map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| panic!("VM setup with a {bytes}-byte dirty ring: {e}"));
    let mut ring = DirtyRing::map(g.vcpu_fd(), bytes).unwrap_or_else(|e| panic!("dirty ring: {e}"));
    eprintln!("dirty ring: capability {cap}, {bytes} bytes per vCPU (kernel max {max_bytes})");

    // With the ring on (and no KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP), KVM refuses the
    // bitmap interface: a VMM uses one or the other.
    assert!(
        g.vm.get_dirty_log(0, SLOTS[0].bytes() as usize).is_err(),
        "KVM_GET_DIRTY_LOG should fail on a VM with a dirty ring"
    );
    let mut before = Vec::new();
    assert_eq!(
        ring.collect(&mut before),
        0,
        "ring entries before the guest ran"
    );

    let table = slot_table();
    let bitmap = AtomicDirtyBitmap::new(layout());
    let mut runs = Vec::new();
    for (run, addrs, tag) in [("run 1", RUN1, 0x3333_3333), ("run 2", RUN2, 0x4444_4444)] {
        g.run_writes(addrs, tag)
            .unwrap_or_else(|e| panic!("{run}: {e}"));
        let mut entries = Vec::new();
        ring.collect(&mut entries);
        let mut reported: Vec<(u32, u64)> = entries.iter().map(|e| (e.slot, e.offset)).collect();
        reported.sort_unstable();
        reported.dedup();
        let expected = expected_slot_pages(addrs);
        assert_eq!(reported, expected, "{run}: dirty-ring (slot, page)");
        bitmap
            .import_kvm_dirty_ring(&table, &entries)
            .unwrap_or_else(|e| panic!("{run}: import of ring entries: {e}"));
        let harvested: Vec<u64> = bitmap.harvest().pages().collect();
        assert_eq!(harvested, dense_pages(&expected), "{run}: harvested pages");
        let reset = reset_dirty_rings(g.vm.as_raw_fd()).unwrap_or_else(|e| panic!("{run}: {e}"));
        assert_eq!(
            reset as usize,
            entries.len(),
            "{run}: entries KVM took back"
        );
        // KVM may push more than one entry for a page within one reset cycle (seen
        // here: one per store to an already dirty page); the import is idempotent.
        eprintln!(
            "{run}: {} stores; {} ring entries for {} pages; harvested dense pages {harvested:?}",
            addrs.len(),
            entries.len(),
            expected.len()
        );
        runs.push(harvested);
    }
    assert_ne!(runs[0], runs[1], "the two runs dirtied different pages");
    assert!(
        runs[1].contains(&755),
        "page 755, written in both runs, is reported again after the ring reset"
    );
}
