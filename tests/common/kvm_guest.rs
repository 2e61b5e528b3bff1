//! A minimal real KVM guest for dirty-log tests and the `kvm_dirty_log` example.
//!
//! Two memory slots with a hole between them, mapped from anonymous host memory with
//! `KVM_MEM_LOG_DIRTY_PAGES`, and one x86 vCPU in 32-bit flat protected mode (no
//! paging, so KVM never writes accessed/dirty bits into guest page tables). The guest
//! program walks a table of guest-physical addresses the VMM put in memory, stores a
//! 32-bit tag at each, and halts. It uses no stack and its code and table are only
//! read, so the only guest pages KVM logs as dirty are the ones the table names.
//!
//! Shared by `tests/kvm_dirty_log.rs` and `examples/kvm_dirty_log.rs` (each uses a
//! part of it). The dirty-ring code lives in the library (`precopy::kvm`).
#![allow(dead_code)]

use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc;
use std::time::Duration;

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use precopy::bitmap::KvmSlotTable;
use precopy::layout::GuestLayout;

/// Guest page size (x86 base pages; KVM logs at this granularity).
pub const PAGE: u64 = 4096;

/// One KVM memory slot of the test guest.
#[derive(Clone, Copy, Debug)]
pub struct SlotSpec {
    /// KVM slot id.
    pub slot: u32,
    /// Guest-physical address.
    pub guest_addr: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
}

impl SlotSpec {
    /// Size in bytes.
    pub const fn bytes(&self) -> u64 {
        self.pages * PAGE
    }
    /// Whether guest address `gpa` is inside the slot.
    pub const fn contains(&self, gpa: u64) -> bool {
        gpa >= self.guest_addr && gpa < self.guest_addr + self.bytes()
    }
}

/// The guest's memory map: 200 pages at 0 (not a multiple of 64, so slot 1 starts at
/// dense page 200, mid-word in the bitmap), a hole, then 556 pages at 4 MiB (a partial
/// last word in KVM's log for the slot).
pub const SLOTS: [SlotSpec; 2] = [
    SlotSpec {
        slot: 0,
        guest_addr: 0,
        pages: 200,
    },
    SlotSpec {
        slot: 1,
        guest_addr: 0x40_0000,
        pages: 556,
    },
];

/// Where the guest program lives (page 1 of slot 0; fetched, never written).
pub const CODE_ADDR: u64 = 0x1000;
/// Where the table of addresses to write lives (page 2 of slot 0; read, never written).
pub const TABLE_ADDR: u64 = 0x2000;
/// Bytes each table entry makes the guest store (a 32-bit `mov`).
pub const WRITE_LEN: u64 = 4;
/// The most addresses a table holds (one page of `u32`, less the terminator).
pub const MAX_WRITES: usize = (PAGE as usize / 4) - 1;

/// The guest program (32-bit code). In: `esi` = table of `u32` guest addresses ending
/// with `0xffff_ffff`, `edi` = tag.
///
/// ```text
/// 0:  8b 06        top:  mov  eax, [esi]
/// 2:  83 f8 ff           cmp  eax, -1
/// 5:  74 07              je   done
/// 7:  89 38              mov  [eax], edi
/// 9:  83 c6 04           add  esi, 4
/// c:  eb f2              jmp  top
/// e:  f4           done: hlt
/// ```
pub const GUEST_CODE: [u8; 15] = [
    0x8b, 0x06, 0x83, 0xf8, 0xff, 0x74, 0x07, 0x89, 0x38, 0x83, 0xc6, 0x04, 0xeb, 0xf2, 0xf4,
];

/// Table terminator.
const TABLE_END: u32 = 0xffff_ffff;

/// How long one guest run may take before the test gives up on it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// How many `KVM_RUN` calls one guest run may take (retries after `EINTR`/`EAGAIN`).
const MAX_RUN_CALLS: usize = 16;

/// Opens `/dev/kvm`, or prints the project's skip line and returns `None`.
pub fn open_kvm_or_skip() -> Option<Kvm> {
    match Kvm::new() {
        Ok(kvm) => Some(kvm),
        Err(e) => {
            eprintln!("SKIP: /dev/kvm not available ({e})");
            None
        }
    }
}

/// The [`GuestLayout`] of [`SLOTS`].
pub fn layout() -> GuestLayout {
    let ranges: Vec<(u64, u64)> = SLOTS.iter().map(|s| (s.guest_addr, s.bytes())).collect();
    GuestLayout::new(PAGE, &ranges).expect("the test slots form a valid layout")
}

/// A [`KvmSlotTable`] registering every slot of [`SLOTS`].
pub fn slot_table() -> KvmSlotTable {
    let mut table = KvmSlotTable::new(layout());
    for s in SLOTS {
        table
            .insert(s.slot, s.guest_addr, s.pages)
            .expect("the test slots fit the layout");
    }
    table
}

/// One anonymous host mapping backing a slot.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn anonymous(len: usize) -> Result<Self, String> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected and
        // the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap {len} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly one mapping made in `anonymous`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A VM with the [`SLOTS`] memory and one vCPU ready to run the guest program.
pub struct TestVm {
    /// The VM.
    pub vm: VmFd,
    /// The vCPU; `None` only after a run that never came back (the test has failed).
    vcpu: Option<VcpuFd>,
    vcpu_fd: RawFd,
    mappings: Vec<Mapping>,
}

impl TestVm {
    /// Creates the VM, lets `configure` enable VM capabilities (before any vCPU exists,
    /// as `KVM_CAP_DIRTY_LOG_RING` requires), registers the slots with
    /// `KVM_MEM_LOG_DIRTY_PAGES`, loads the guest program and creates the vCPU.
    pub fn new(
        kvm: &Kvm,
        configure: impl FnOnce(&VmFd) -> Result<(), String>,
    ) -> Result<Self, String> {
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        // Intel without unrestricted guest needs a TSS area; harmless elsewhere.
        vm.set_tss_address(0xfffb_d000)
            .map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
        configure(&vm)?;
        let mut mappings = Vec::new();
        for s in SLOTS {
            let map = Mapping::anonymous(s.bytes() as usize)?;
            let region = kvm_userspace_memory_region {
                slot: s.slot,
                flags: kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES,
                guest_phys_addr: s.guest_addr,
                memory_size: s.bytes(),
                userspace_addr: map.ptr as u64,
            };
            // SAFETY: `userspace_addr` is a live, page-aligned anonymous mapping of
            // exactly `memory_size` bytes, used for nothing else and kept by this
            // `TestVm` as long as the VM and vCPU fds (fields drop in declaration order:
            // `vm` and `vcpu` close before `mappings` are unmapped).
            unsafe { vm.set_user_memory_region(region) }
                .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION slot {}: {e}", s.slot))?;
            mappings.push(map);
        }
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        // Flat 4 GiB code and data segments, protection on, paging off.
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 0x08,
            type_: 0xb, // execute/read, accessed
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment {
            selector: 0x10,
            type_: 0x3, // read/write, accessed
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.cr0 |= 1; // PE
        sregs.cr0 &= !(1 << 31); // PG off
        vcpu.set_sregs(&sregs)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        let vcpu_fd = vcpu.as_raw_fd();
        let mut vm = TestVm {
            vm,
            vcpu: Some(vcpu),
            vcpu_fd,
            mappings,
        };
        vm.write(CODE_ADDR, &GUEST_CODE)?;
        Ok(vm)
    }

    /// The vCPU's file descriptor (for mapping its dirty ring).
    pub fn vcpu_fd(&self) -> RawFd {
        self.vcpu_fd
    }

    /// Host pointer to the guest range `[gpa, gpa + len)`, which must lie in one slot,
    /// while no guest run is in flight.
    fn host_range(&self, gpa: u64, len: usize) -> Result<*mut u8, String> {
        if self.vcpu.is_none() {
            // A run that timed out may still be storing to guest memory.
            return Err("guest memory is off limits: the vCPU never came back".into());
        }
        let (i, s) = SLOTS
            .iter()
            .enumerate()
            .find(|(_, s)| s.contains(gpa))
            .ok_or_else(|| format!("guest address {gpa:#x} is in no slot"))?;
        let off = (gpa - s.guest_addr) as usize;
        if off + len > self.mappings[i].len {
            return Err(format!(
                "guest range {gpa:#x}+{len} crosses the end of slot {}",
                s.slot
            ));
        }
        // SAFETY: `off + len` is within the mapping (checked above).
        Ok(unsafe { self.mappings[i].ptr.add(off) })
    }

    /// Writes `bytes` into guest memory from the host side (as a VMM loads code;
    /// KVM's dirty log does not see it).
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), String> {
        let dst = self.host_range(gpa, bytes.len())?;
        // SAFETY: `dst..dst + len` is inside a live mapping that no guest run is using
        // (both checked by `host_range`) and does not overlap `bytes`, a Rust slice in
        // our own memory.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        Ok(())
    }

    /// Reads a little-endian `u32` of guest memory from the host side.
    pub fn read_u32(&self, gpa: u64) -> Result<u32, String> {
        let src = self.host_range(gpa, 4)?;
        let mut buf = [0u8; 4];
        // SAFETY: `src..src + 4` is inside a live mapping (checked by `host_range`), and
        // no guest run is in flight (`host_range` checks the vCPU came back), so the
        // guest does not write it meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), 4) };
        Ok(u32::from_le_bytes(buf))
    }

    /// Runs the guest program once: it stores `tag` at each address in `addrs`, in
    /// order, then halts. Fails on any exit other than `HLT`, after
    /// [`RUN_TIMEOUT`], or if the guest halts anywhere but the end of the program with
    /// the whole table consumed.
    pub fn run_writes(&mut self, addrs: &[u32], tag: u32) -> Result<(), String> {
        if addrs.len() > MAX_WRITES {
            return Err(format!("{} addresses, at most {MAX_WRITES}", addrs.len()));
        }
        for &a in addrs {
            let a = u64::from(a);
            let touched = a / PAGE..=(a + WRITE_LEN - 1) / PAGE;
            if touched.contains(&(CODE_ADDR / PAGE)) || touched.contains(&(TABLE_ADDR / PAGE)) {
                return Err(format!(
                    "write at {a:#x} would hit the program or its table"
                ));
            }
        }
        let mut table: Vec<u8> = addrs.iter().flat_map(|a| a.to_le_bytes()).collect();
        table.extend_from_slice(&TABLE_END.to_le_bytes());
        self.write(TABLE_ADDR, &table)?;

        let mut vcpu = self
            .vcpu
            .take()
            .ok_or("the vCPU was lost by an earlier run")?;
        let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        regs.rip = CODE_ADDR;
        regs.rsi = TABLE_ADDR;
        regs.rdi = u64::from(tag);
        regs.rflags = 0x2; // reserved bit 1; interrupts off
        vcpu.set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;

        // KVM_RUN blocks for as long as the guest runs; run it on a thread so a guest
        // that never halts fails the test after RUN_TIMEOUT instead of hanging it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let outcome = run_until_hlt(&mut vcpu);
            let _ = tx.send((vcpu, outcome));
        });
        let (vcpu, outcome) = rx.recv_timeout(RUN_TIMEOUT).map_err(|_| {
            format!("the guest did not halt within {RUN_TIMEOUT:?} (stuck in a loop?)")
        })?;
        self.vcpu = Some(vcpu);
        outcome?;

        let vcpu = self.vcpu.as_ref().expect("just put back");
        let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        let end_rip = CODE_ADDR + GUEST_CODE.len() as u64;
        let end_rsi = TABLE_ADDR + 4 * addrs.len() as u64;
        if regs.rip != end_rip || regs.rsi != end_rsi {
            return Err(format!(
                "guest halted at rip {:#x} with rsi {:#x}; expected rip {end_rip:#x}, rsi {end_rsi:#x}",
                regs.rip, regs.rsi
            ));
        }
        Ok(())
    }
}

/// `KVM_RUN` until the guest halts, at most [`MAX_RUN_CALLS`] calls.
fn run_until_hlt(vcpu: &mut VcpuFd) -> Result<(), String> {
    for _ in 0..MAX_RUN_CALLS {
        let exit = match vcpu.run() {
            Ok(VcpuExit::Hlt) => return Ok(()),
            Ok(exit) => format!("{exit:?}"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => format!("KVM_RUN error: {e}"),
        };
        let rip = vcpu
            .get_regs()
            .map(|r| format!("{:#x}", r.rip))
            .unwrap_or_else(|e| format!("unknown ({e})"));
        return Err(format!("unexpected vCPU exit {exit} at rip {rip}"));
    }
    Err(format!("no HLT after {MAX_RUN_CALLS} KVM_RUN calls"))
}

/// The guest pages (as `(slot id, page offset in slot)`) a store of [`WRITE_LEN`] bytes
/// at each of `addrs` touches, sorted and without duplicates. Computed from [`SLOTS`]
/// alone, independently of the bitmap code under test.
pub fn expected_slot_pages(addrs: &[u32]) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for &a in addrs {
        let a = u64::from(a);
        for page_addr in (a / PAGE * PAGE..a + WRITE_LEN).step_by(PAGE as usize) {
            let s = SLOTS
                .iter()
                .find(|s| s.contains(page_addr))
                .unwrap_or_else(|| panic!("test write at {a:#x} is outside every slot"));
            out.push((s.slot, (page_addr - s.guest_addr) / PAGE));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Dense page numbers (slots in address order, holes skipped) of `slot_pages`.
pub fn dense_pages(slot_pages: &[(u32, u64)]) -> Vec<u64> {
    let mut out: Vec<u64> = slot_pages
        .iter()
        .map(|&(slot, off)| {
            let before: u64 = SLOTS
                .iter()
                .filter(|s| s.guest_addr < SLOTS[slot as usize].guest_addr)
                .map(|s| s.pages)
                .sum();
            before + off
        })
        .collect();
    out.sort_unstable();
    out
}

/// The `(slot, page offset)` pairs whose bits are set in KVM dirty log `log` of `slot`.
pub fn log_pages(slot: u32, log: &[u64]) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    for (i, &w) in log.iter().enumerate() {
        for bit in 0..64 {
            if w & (1 << bit) != 0 {
                out.push((slot, i as u64 * 64 + bit));
            }
        }
    }
    out
}
