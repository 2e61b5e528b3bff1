//! A VMM's pre-copy loop over KVM's dirty log, with a real (tiny) KVM guest.
//!
//! The VMM registers its memory slots with `KVM_MEM_LOG_DIRTY_PAGES` and describes the
//! same map to precopy (a [`GuestLayout`] plus a [`KvmSlotTable`]). Then, each round:
//! let the vCPU run, fetch `KVM_GET_DIRTY_LOG` for every slot (which also clears KVM's
//! log), OR it into the [`AtomicDirtyBitmap`] (where the VMM's own device writes are
//! marked too), and harvest the pages to send.
//!
//! ```text
//! cargo run --features kvm --example kvm_dirty_log
//! ```
//!
//! The VM setup and the guest program (x86, 32-bit) are in `tests/common/kvm_guest.rs`,
//! shared with `tests/kvm_dirty_log.rs`. Without `/dev/kvm` it prints a skip line.
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "x86_64")]
#[path = "../tests/common/kvm_guest.rs"]
mod kvm_guest;

#[cfg(target_arch = "x86_64")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use kvm_guest::{layout, open_kvm_or_skip, slot_table, TestVm, CODE_ADDR, PAGE, TABLE_ADDR};
    use precopy::bitmap::AtomicDirtyBitmap;

    let Some(kvm) = open_kvm_or_skip() else {
        return Ok(());
    };
    let mut vm = TestVm::new(&kvm, |_| Ok(()))?;

    // precopy's view of the guest: the same slots KVM has, numbered densely.
    let layout = layout();
    let slots = slot_table();
    let bitmap = AtomicDirtyBitmap::new(layout);
    for s in slots.slots() {
        println!(
            "slot {}: guest {:#x}..{:#x}, {} pages from dense page {}",
            s.slot,
            s.guest_addr,
            s.guest_addr + s.pages * PAGE,
            s.pages,
            s.first_page
        );
    }

    let program_pages = [CODE_ADDR / PAGE, TABLE_ADDR / PAGE];
    for round in 1..=3u64 {
        // The guest's work this round: a store to every (13 * round)-th page (the page
        // holding its own program and table excepted: that one it only reads).
        let addrs: Vec<u32> = (0..layout.total_pages())
            .step_by(13 * round as usize)
            .map(|page| layout.addr_of(page).expect("page of the layout"))
            .filter(|addr| !program_pages.contains(&(addr / PAGE)))
            .map(|addr| u32::try_from(addr + 8 * round).expect("guest below 4 GiB"))
            .collect();
        vm.run_writes(&addrs, round as u32)?;

        // The VMM's step: every slot's log into the bitmap, then one harvest.
        for s in slots.slots() {
            let log = vm.vm.get_dirty_log(s.slot, (s.pages * PAGE) as usize)?;
            bitmap.import_kvm_dirty_log(&slots, s.slot, &log)?;
        }
        let dirty = bitmap.harvest();

        let stored: Vec<u64> = addrs
            .iter()
            .map(|&a| layout.page_of(a.into()).expect("stored to a guest page"))
            .collect();
        let harvested: Vec<u64> = dirty.pages().collect();
        let runs: Vec<String> = dirty
            .runs()
            .map(|(first, count)| {
                let addr = layout.addr_of(first).expect("harvested page in layout");
                format!("{addr:#x}+{count}p")
            })
            .collect();
        println!(
            "round {round}: guest stored to {} pages; harvested {} dirty pages: {} ...",
            stored.len(),
            harvested.len(),
            runs[..runs.len().min(6)].join(" "),
        );
        if harvested != stored {
            return Err(
                format!("round {round}: harvested {harvested:?}, stored {stored:?}").into(),
            );
        }
    }
    println!("every round harvested exactly the pages the guest stored to");
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("SKIP: this example's guest program is x86 code");
}
