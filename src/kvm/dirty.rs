//! KVM's dirty tracking, brought into precopy's bitmap at the pre-harvest point: the
//! classic log (`KVM_GET_DIRTY_LOG`), the log with manual clear
//! (`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` + `KVM_CLEAR_DIRTY_LOG`) and the per-vCPU
//! dirty rings (`KVM_RESET_DIRTY_RINGS`).
//!
//! The rule of every [`DirtyTracker::sync`]: re-protect in KVM first (GET in classic
//! mode clears and re-protects, CLEAR in manual mode, the ring reset), then OR what was
//! taken into the bitmap. A sync that fails after it took pages from KVM still ORs them
//! in (or marks the slot dirty when it cannot tell which), so no write is lost.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use kvm_bindings::{kvm_enable_cap, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, Kvm, VmFd};

use super::ram::GuestRam;
use super::KvmError;
use crate::bitmap::{words_for_pages, AtomicDirtyBitmap, KvmDirtyGfn, KvmSlotTable};

/// `KVM_GET_DIRTY_LOG` = `_IOW(KVMIO, 0x42, struct kvm_dirty_log)`.
const KVM_GET_DIRTY_LOG: libc::c_ulong = 0x4010_ae42;
/// `KVM_CLEAR_DIRTY_LOG` = `_IOWR(KVMIO, 0xc0, struct kvm_clear_dirty_log)` (no
/// kvm-ioctls wrapper).
const KVM_CLEAR_DIRTY_LOG: libc::c_ulong = 0xc018_aec0;
/// `KVM_RESET_DIRTY_RINGS` = `_IO(KVMIO, 0xc7)` (no kvm-ioctls wrapper).
const KVM_RESET_DIRTY_RINGS: libc::c_ulong = 0xaec7;
/// `KVM_DIRTY_GFN_F_DIRTY`: the entry was filled by KVM.
const GFN_DIRTY: u32 = 1;
/// `KVM_DIRTY_GFN_F_RESET`: the entry was collected by the VMM.
const GFN_RESET: u32 = 2;
/// Dirty-ring entries per vCPU the guests here ask for (the kernel's limit if lower).
pub const RING_ENTRIES: usize = 65536;

/// How KVM tracks the guest's writes for a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyMode {
    /// No dirty tracking (a destination VM).
    Off,
    /// `KVM_GET_DIRTY_LOG`: fetch-and-clear a bitmap per slot.
    Log,
    /// `KVM_GET_DIRTY_LOG` then `KVM_CLEAR_DIRTY_LOG` for the pages it reported
    /// (`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`): re-protects only what was dirty.
    Clear,
    /// Per-vCPU dirty rings, collected and reset (`KVM_CAP_DIRTY_LOG_RING`).
    Ring,
}

impl DirtyMode {
    /// The mode's name, as `--dirty` takes it.
    pub fn name(self) -> &'static str {
        match self {
            DirtyMode::Off => "off",
            DirtyMode::Log => "log",
            DirtyMode::Clear => "clear",
            DirtyMode::Ring => "ring",
        }
    }
}

/// What this kernel's KVM offers for dirty tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyOffers {
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`'s value (bit 0: manual protect, bit 1:
    /// initially set); 0 when absent.
    pub manual_protect: u32,
    /// The dirty ring: its capability (`KVM_CAP_DIRTY_LOG_RING`, or the `_ACQ_REL`
    /// one) and the most bytes per vCPU ring; `None` when absent.
    pub ring: Option<(u32, usize)>,
}

impl DirtyOffers {
    /// Asks `kvm`.
    pub fn probe(kvm: &Kvm) -> Self {
        let manual =
            kvm.check_extension_raw(kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2.into());
        let plain = kvm.check_extension_int(Cap::DirtyLogRing);
        let ring = if plain > 0 {
            Some((kvm_bindings::KVM_CAP_DIRTY_LOG_RING, plain as usize))
        } else {
            let acq = kvm.check_extension_raw(kvm_bindings::KVM_CAP_DIRTY_LOG_RING_ACQ_REL.into());
            (acq > 0).then_some((kvm_bindings::KVM_CAP_DIRTY_LOG_RING_ACQ_REL, acq as usize))
        };
        DirtyOffers {
            manual_protect: manual.max(0) as u32,
            ring,
        }
    }

    /// Whether `mode` can run here.
    pub fn offers(&self, mode: DirtyMode) -> bool {
        match mode {
            DirtyMode::Off | DirtyMode::Log => true,
            DirtyMode::Clear => {
                self.manual_protect & kvm_bindings::KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE != 0
            }
            DirtyMode::Ring => self.ring.is_some(),
        }
    }

    /// The best mode offered: the ring, else manual clear, else the classic log.
    pub fn best(&self) -> DirtyMode {
        [DirtyMode::Ring, DirtyMode::Clear]
            .into_iter()
            .find(|&m| self.offers(m))
            .unwrap_or(DirtyMode::Log)
    }

    /// One line for an operator.
    pub fn describe(&self) -> String {
        let ring = match self.ring {
            Some((cap, bytes)) => format!(
                "yes (capability {cap}, up to {} entries per vCPU)",
                bytes / std::mem::size_of::<kvm_bindings::kvm_dirty_gfn>()
            ),
            None => "no".to_string(),
        };
        format!(
            "KVM dirty tracking: log yes, clear {} (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = {}), ring {ring}",
            if self.offers(DirtyMode::Clear) { "yes" } else { "no" },
            self.manual_protect
        )
    }
}

/// Counters of a tracker's syncs.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Syncs run.
    pub syncs: AtomicU64,
    /// Pages (log bits or ring entries) KVM reported over all syncs.
    pub reported: AtomicU64,
    /// Nanoseconds spent in syncs.
    pub sync_ns: AtomicU64,
    /// Ring-full exits of the vCPUs.
    pub ring_full_exits: AtomicU64,
    /// Of `sync_ns`: fetching (`KVM_GET_DIRTY_LOG`, which in classic mode also
    /// re-protects; or collecting the rings).
    pub fetch_ns: AtomicU64,
    /// Of `sync_ns`: re-protecting (`KVM_CLEAR_DIRTY_LOG`, `KVM_RESET_DIRTY_RINGS`).
    pub protect_ns: AtomicU64,
    /// Of `sync_ns`: ORing into the bitmap.
    pub import_ns: AtomicU64,
}

/// Adds the time since `*t` to `counter` and restarts `*t`.
fn lap(t: &mut std::time::Instant, counter: &AtomicU64) {
    let now = std::time::Instant::now();
    counter.fetch_add((now - *t).as_nanos() as u64, Ordering::Relaxed);
    *t = now;
}

/// A vCPU's dirty ring, mapped from its fd at `KVM_DIRTY_LOG_PAGE_OFFSET`.
pub struct DirtyRing {
    ptr: *mut kvm_bindings::kvm_dirty_gfn,
    entries: usize,
    bytes: usize,
    /// Index of the next entry to collect (free-running, like KVM's own).
    next: usize,
}

// SAFETY: the ring is shared memory with the kernel, accessed through raw pointers
// (flags atomically); the struct is used from one thread at a time (a tracker keeps
// it behind a `Mutex`).
unsafe impl Send for DirtyRing {}

impl DirtyRing {
    /// Maps the ring of `bytes` bytes of the vCPU with fd `vcpu_fd`.
    pub fn map(vcpu_fd: RawFd, bytes: usize) -> Result<Self, KvmError> {
        let offset = kvm_bindings::KVM_DIRTY_LOG_PAGE_OFFSET as libc::off_t * 4096;
        // SAFETY: a new shared mapping of the vCPU fd's dirty-ring pages; no existing
        // memory is affected and the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu_fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(KvmError::Mmap {
                bytes: bytes as u64,
                error: std::io::Error::last_os_error(),
            });
        }
        Ok(DirtyRing {
            ptr: ptr.cast(),
            entries: bytes / std::mem::size_of::<kvm_bindings::kvm_dirty_gfn>(),
            bytes,
            next: 0,
        })
    }

    /// Appends every entry KVM has published since the last call (flag `DIRTY`) to
    /// `out`, marking each `RESET` for the kernel; the VMM then calls
    /// `KVM_RESET_DIRTY_RINGS` so KVM recycles them and write-protects the pages again.
    pub fn collect(&mut self, out: &mut Vec<KvmDirtyGfn>) -> usize {
        let mut n = 0;
        while n < self.entries {
            // SAFETY: `next % entries` indexes an entry inside the mapping.
            let entry = unsafe { self.ptr.add(self.next % self.entries) };
            // SAFETY: `flags` is the entry's first field, a 4-byte-aligned u32 in shared
            // memory the kernel also accesses atomically; viewing it as an AtomicU32 is
            // how the KVM API asks userspace to read (acquire) and write (release) it.
            let flags = unsafe { &*std::ptr::addr_of!((*entry).flags).cast::<AtomicU32>() };
            if flags.load(Ordering::Acquire) & GFN_DIRTY == 0 {
                break;
            }
            // SAFETY: in-bounds, aligned entry; published by KVM (acquire above) and not
            // rewritten until we hand it back with RESET.
            let e = unsafe { std::ptr::read_volatile(entry) };
            out.push(KvmDirtyGfn {
                flags: e.flags,
                slot: e.slot,
                offset: e.offset,
            });
            flags.store(GFN_RESET, Ordering::Release);
            self.next += 1;
            n += 1;
        }
        n
    }
}

impl Drop for DirtyRing {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

/// Enables the dirty ring capability `cap` with rings of `bytes` bytes per vCPU (before
/// any vCPU exists).
pub fn enable_dirty_ring(vm: &VmFd, cap: u32, bytes: usize) -> Result<(), KvmError> {
    let mut enable = kvm_enable_cap {
        cap,
        ..Default::default()
    };
    enable.args[0] = bytes as u64;
    vm.enable_cap(&enable)
        .map_err(|e| KvmError::ioctl("KVM_ENABLE_CAP(dirty ring)", e))
}

/// Turns on manual dirty-log protection (`KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2`, without
/// "initially set": a fresh slot's log starts clean).
pub fn enable_manual_protect(vm: &VmFd) -> Result<(), KvmError> {
    let mut enable = kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        ..Default::default()
    };
    enable.args[0] = u64::from(kvm_bindings::KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
    vm.enable_cap(&enable)
        .map_err(|e| KvmError::ioctl("KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)", e))
}

/// `KVM_RESET_DIRTY_RINGS`: KVM takes back every collected entry of every vCPU and
/// write-protects those pages again. Returns the entries reset.
pub fn reset_dirty_rings(vm_fd: RawFd) -> Result<u32, KvmError> {
    // SAFETY: KVM_RESET_DIRTY_RINGS takes no argument and only touches the VM's own
    // rings; `vm_fd` is a live VM fd.
    let ret = unsafe { libc::ioctl(vm_fd, KVM_RESET_DIRTY_RINGS as _) };
    if ret < 0 {
        return Err(KvmError::Ioctl {
            op: "KVM_RESET_DIRTY_RINGS",
            error: std::io::Error::last_os_error(),
        });
    }
    Ok(ret as u32)
}

/// `KVM_GET_DIRTY_LOG` of `slot` into `log` (one bit per page of the slot; reused
/// between calls, so a sync allocates nothing).
pub fn get_dirty_log(vm_fd: RawFd, slot: u32, log: &mut [u64]) -> Result<(), KvmError> {
    let mut arg = kvm_bindings::kvm_dirty_log {
        slot,
        ..Default::default()
    };
    arg.__bindgen_anon_1.dirty_bitmap = log.as_mut_ptr().cast();
    // SAFETY: `arg` names a buffer of `log.len()` words, at least one bit per page of
    // the slot (the caller sizes it with `words_for_pages`); KVM writes only that.
    let ret = unsafe { libc::ioctl(vm_fd, KVM_GET_DIRTY_LOG as _, &mut arg) };
    if ret < 0 {
        return Err(KvmError::Ioctl {
            op: "KVM_GET_DIRTY_LOG",
            error: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `KVM_CLEAR_DIRTY_LOG` of `slot` (of `slot_pages` pages) for the bits set in `log`:
/// one call per run of non-zero words, so `first_page` is always a multiple of 64 as
/// KVM requires, and `num_pages` a multiple of 64 or reaching the slot's end.
pub fn clear_dirty_log(
    vm_fd: RawFd,
    slot: u32,
    slot_pages: u64,
    log: &mut [u64],
) -> Result<(), KvmError> {
    let mut w = 0;
    while w < log.len() {
        if log[w] == 0 {
            w += 1;
            continue;
        }
        let start = w;
        while w < log.len() && log[w] != 0 {
            w += 1;
        }
        let first_page = start as u64 * 64;
        let num_pages = (w as u64 * 64).min(slot_pages) - first_page;
        let mut arg = kvm_bindings::kvm_clear_dirty_log {
            slot,
            num_pages: num_pages as u32,
            first_page,
            ..Default::default()
        };
        arg.__bindgen_anon_1.dirty_bitmap = log[start..].as_mut_ptr().cast();
        // SAFETY: the bitmap pointer covers `num_pages` bits of `log` from word
        // `start` (num_pages <= (w - start) * 64); KVM only reads it.
        let ret = unsafe { libc::ioctl(vm_fd, KVM_CLEAR_DIRTY_LOG as _, &mut arg) };
        if ret < 0 {
            return Err(KvmError::Ioctl {
                op: "KVM_CLEAR_DIRTY_LOG",
                error: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// The memory-slot flags of a VM tracking in `mode`.
pub fn slot_flags(mode: DirtyMode) -> u32 {
    match mode {
        DirtyMode::Off => 0,
        _ => kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES,
    }
}

/// Registers one memory slot per region of `ram`'s layout (slot `i` = region `i`).
pub fn register_slots(
    vm: &VmFd,
    ram: &GuestRam,
    mode: DirtyMode,
) -> Result<KvmSlotTable, KvmError> {
    let layout = *ram.layout();
    let mut table = KvmSlotTable::new(layout);
    for (i, r) in layout.regions().iter().enumerate() {
        let host = ram
            .region_host_addr(i)
            .ok_or_else(|| KvmError::Config(format!("region {i} has no host memory")))?;
        let region = kvm_userspace_memory_region {
            slot: i as u32,
            flags: slot_flags(mode),
            guest_phys_addr: r.guest_addr,
            memory_size: r.pages << layout.page_shift(),
            userspace_addr: host,
        };
        // SAFETY: `userspace_addr` is a live, page-aligned part of `ram`'s mapping of
        // exactly `memory_size` bytes; the caller keeps `ram` alive (an `Arc`) for as
        // long as the VM fd.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| KvmError::ioctl("KVM_SET_USER_MEMORY_REGION", e))?;
        table
            .insert(i as u32, r.guest_addr, r.pages)
            .map_err(|e| KvmError::Config(format!("slot {i}: {e}")))?;
    }
    Ok(table)
}

/// What a tracker keeps between syncs.
enum State {
    Off,
    /// One reusable log buffer per slot.
    Log {
        logs: Vec<Vec<u64>>,
        manual: bool,
    },
    /// The vCPUs' rings and a reusable entry buffer.
    Ring {
        rings: Vec<DirtyRing>,
        entries: Vec<KvmDirtyGfn>,
    },
}

/// A VM's dirty tracking in one [`DirtyMode`], synced into a bitmap.
pub struct DirtyTracker {
    mode: DirtyMode,
    vm_fd: RawFd,
    slots: KvmSlotTable,
    state: Mutex<State>,
    /// Sync counters.
    pub stats: SyncStats,
}

impl std::fmt::Debug for DirtyTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirtyTracker")
            .field("mode", &self.mode)
            .finish()
    }
}

impl DirtyTracker {
    /// A tracker for `vm` (whose fd must outlive it) with `slots`, in `mode`; `rings`
    /// are the vCPUs' mapped rings in [`DirtyMode::Ring`].
    pub fn new(vm: &VmFd, slots: KvmSlotTable, mode: DirtyMode, rings: Vec<DirtyRing>) -> Self {
        let state = match mode {
            DirtyMode::Off => State::Off,
            DirtyMode::Log | DirtyMode::Clear => State::Log {
                logs: slots
                    .slots()
                    .iter()
                    .map(|s| vec![0u64; words_for_pages(s.pages)])
                    .collect(),
                manual: mode == DirtyMode::Clear,
            },
            DirtyMode::Ring => State::Ring {
                rings,
                entries: Vec::new(),
            },
        };
        DirtyTracker {
            mode,
            vm_fd: vm.as_raw_fd(),
            slots,
            state: Mutex::new(state),
            stats: SyncStats::default(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> DirtyMode {
        self.mode
    }

    /// The slot table.
    pub fn slots(&self) -> &KvmSlotTable {
        &self.slots
    }

    /// Brings KVM's dirty pages into `bitmap`: re-protect in KVM, then OR. Returns the
    /// pages (bits or ring entries) KVM reported. Safe to call from any thread (the
    /// coordinator's syncs and a vCPU's ring-full exit take turns).
    pub fn sync<W>(&self, bitmap: &AtomicDirtyBitmap<W>) -> Result<u64, KvmError>
    where
        W: std::ops::Deref<Target = [std::sync::atomic::AtomicU64]>,
    {
        let start = std::time::Instant::now();
        let mut state = self
            .state
            .lock()
            .map_err(|_| KvmError::Config("dirty tracker poisoned by a panic".into()))?;
        let result = match &mut *state {
            State::Off => Ok(0),
            State::Log { logs, manual } => self.sync_logs(logs, *manual, bitmap),
            State::Ring { rings, entries } => self.sync_rings(rings, entries, bitmap),
        };
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .sync_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Ok(n) = result {
            self.stats.reported.fetch_add(n, Ordering::Relaxed);
        }
        result
    }

    fn sync_logs<W>(
        &self,
        logs: &mut [Vec<u64>],
        manual: bool,
        bitmap: &AtomicDirtyBitmap<W>,
    ) -> Result<u64, KvmError>
    where
        W: std::ops::Deref<Target = [std::sync::atomic::AtomicU64]>,
    {
        let mut reported = 0;
        let mut first_err = None;
        for (s, log) in self.slots.slots().iter().zip(logs.iter_mut()) {
            // Classic mode: GET clears and re-protects. Manual mode: GET only reads;
            // CLEAR re-protects exactly what it reported.
            let mut t = std::time::Instant::now();
            let got = get_dirty_log(self.vm_fd, s.slot, log);
            lap(&mut t, &self.stats.fetch_ns);
            if let Err(e) = got {
                first_err.get_or_insert(e);
                continue;
            }
            reported += log.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
            let cleared = if manual {
                clear_dirty_log(self.vm_fd, s.slot, s.pages, log)
            } else {
                Ok(())
            };
            lap(&mut t, &self.stats.protect_ns);
            // Then OR in: also after a failed CLEAR (the pages stay dirty in KVM too;
            // a superset is safe).
            if let Err(e) = bitmap.import_kvm_dirty_log(&self.slots, s.slot, log) {
                // KVM's log was taken but cannot be imported: the whole slot is dirty.
                let _ = bitmap.mark_page_range(s.first_page..s.first_page + s.pages);
                first_err.get_or_insert(KvmError::Config(format!("slot {}: {e}", s.slot)));
            }
            lap(&mut t, &self.stats.import_ns);
            if let Err(e) = cleared {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(reported), Err)
    }

    fn sync_rings<W>(
        &self,
        rings: &mut [DirtyRing],
        entries: &mut Vec<KvmDirtyGfn>,
        bitmap: &AtomicDirtyBitmap<W>,
    ) -> Result<u64, KvmError>
    where
        W: std::ops::Deref<Target = [std::sync::atomic::AtomicU64]>,
    {
        let mut t = std::time::Instant::now();
        entries.clear();
        for ring in rings.iter_mut() {
            ring.collect(entries);
        }
        lap(&mut t, &self.stats.fetch_ns);
        // Re-protect (and recycle the entries), then OR; the entries are imported even
        // if the reset failed.
        let reset = reset_dirty_rings(self.vm_fd);
        lap(&mut t, &self.stats.protect_ns);
        let imported = bitmap.import_kvm_dirty_ring(&self.slots, entries);
        lap(&mut t, &self.stats.import_ns);
        reset?;
        imported.map_err(|e| KvmError::Config(format!("dirty ring entry: {e}")))?;
        Ok(entries.len() as u64)
    }
}
