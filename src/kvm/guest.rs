//! A KVM VM running the guest program, as the [`Guest`] a migration drives.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::os::fd::AsRawFd;
use std::sync::Arc;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::dirty::{
    enable_dirty_ring, enable_manual_protect, register_slots, DirtyMode, DirtyOffers, DirtyRing,
    DirtyTracker, RING_ENTRIES,
};
use super::program::{self, PaceExit, COUNTER_ADDR, PAGE, PARAMS_ADDR};
use super::ram::GuestRam;
use super::vcpu::{Bitmap, Pacing, VcpuState, VcpuThread};
use super::KvmError;
use crate::engine::Guest;

/// What guest to run.
#[derive(Clone, Copy, Debug)]
pub struct GuestConfig {
    /// Pages of the working set (page `counter mod set` is written).
    pub working_set_pages: u64,
    /// Target page writes per second (0: idle).
    pub rate: u64,
    /// How KVM tracks writes.
    pub dirty: DirtyMode,
    /// How the loop exits to be paced.
    pub exit: PaceExit,
    /// Dirty-ring entries per vCPU in [`DirtyMode::Ring`] (a power of two; the
    /// kernel's limit if lower). A small ring makes the vCPU exit when it is full.
    pub ring_entries: usize,
}

impl GuestConfig {
    /// A guest writing `rate` pages per second over `working_set_pages`, tracked in
    /// `dirty`, paced by `ud2` exits, with rings of [`RING_ENTRIES`].
    pub fn new(working_set_pages: u64, rate: u64, dirty: DirtyMode) -> Self {
        GuestConfig {
            working_set_pages,
            rate,
            dirty,
            exit: PaceExit::InvalidOpcode,
            ring_entries: RING_ENTRIES,
        }
    }
}

/// A VM of one vCPU over [`GuestRam`], running the guest program on its own thread.
///
/// Fields drop in order: the vCPU thread stops before the VM fd closes and before the
/// RAM may be unmapped.
pub struct KvmGuest {
    vcpu: VcpuThread,
    tracker: Arc<DirtyTracker>,
    bitmap: Arc<Bitmap>,
    _vm: VmFd,
    ram: Arc<GuestRam>,
    paused_state: std::sync::Mutex<Option<VcpuState>>,
}

impl std::fmt::Debug for KvmGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmGuest")
            .field("ram", &self.ram)
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

/// Creates the VM over `ram` with dirty tracking `mode` and its vCPU (CPUID set).
fn create_vm(
    kvm: &Kvm,
    ram: &GuestRam,
    mode: DirtyMode,
    ring_entries: usize,
) -> Result<(VmFd, VcpuFd, DirtyTracker), KvmError> {
    // Its vCPU writes the RAM from now on, unseen by the RAM's record of writes.
    ram.vm_created();
    let offers = DirtyOffers::probe(kvm);
    if !offers.offers(mode) {
        return Err(KvmError::Unsupported(format!(
            "dirty mode '{}' is not offered by this kernel ({})",
            mode.name(),
            offers.describe()
        )));
    }
    let vm = kvm
        .create_vm()
        .map_err(|e| KvmError::ioctl("KVM_CREATE_VM", e))?;
    vm.set_tss_address(0xfffb_d000)
        .map_err(|e| KvmError::ioctl("KVM_SET_TSS_ADDR", e))?;
    let mut ring_bytes = 0;
    match (mode, offers.ring) {
        (DirtyMode::Clear, _) => enable_manual_protect(&vm)?,
        (DirtyMode::Ring, Some((cap, max))) => {
            ring_bytes = max.min(ring_entries * std::mem::size_of::<kvm_bindings::kvm_dirty_gfn>());
            enable_dirty_ring(&vm, cap, ring_bytes)?;
        }
        _ => {}
    }
    let slots = register_slots(&vm, ram, mode)?;
    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| KvmError::ioctl("KVM_CREATE_VCPU", e))?;
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| KvmError::ioctl("KVM_GET_SUPPORTED_CPUID", e))?;
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| KvmError::ioctl("KVM_SET_CPUID2", e))?;
    let rings = if mode == DirtyMode::Ring {
        vec![DirtyRing::map(vcpu.as_raw_fd(), ring_bytes)?]
    } else {
        Vec::new()
    };
    let tracker = DirtyTracker::new(&vm, slots, mode, rings);
    Ok((vm, vcpu, tracker))
}

impl KvmGuest {
    /// Loads the guest program into `ram` (zeroed memory of a
    /// [`layout_for`](super::layout_for) layout) and starts it.
    pub fn boot(kvm: &Kvm, ram: Arc<GuestRam>, config: GuestConfig) -> Result<Self, KvmError> {
        let regs = program::load(&ram, config.working_set_pages, config.exit)?;
        let pacing = Pacing::for_rate(config.rate);
        ram.write_u64(PARAMS_ADDR, pacing.batch)?;
        let (vm, vcpu, tracker) = create_vm(kvm, &ram, config.dirty, config.ring_entries)?;
        let sregs = program::long_mode_sregs(
            vcpu.get_sregs()
                .map_err(|e| KvmError::ioctl("KVM_GET_SREGS", e))?,
        );
        let state = VcpuState { regs, sregs };
        Self::run(vm, vcpu, tracker, ram, &state, pacing)
    }

    /// A VM over `ram` (memory received from a migration) whose vCPU continues from
    /// `state`, paced at `rate` pages per second (the batch the source set travels in
    /// memory). No dirty tracking.
    pub fn restore(
        kvm: &Kvm,
        ram: Arc<GuestRam>,
        state: &VcpuState,
        rate: u64,
    ) -> Result<Self, KvmError> {
        let (vm, vcpu, tracker) = create_vm(kvm, &ram, DirtyMode::Off, 0)?;
        let batch = ram.read_u64(PARAMS_ADDR)?;
        let pacing = Pacing { batch, rate };
        Self::run(vm, vcpu, tracker, ram, state, pacing)
    }

    fn run(
        vm: VmFd,
        vcpu: VcpuFd,
        tracker: DirtyTracker,
        ram: Arc<GuestRam>,
        state: &VcpuState,
        pacing: Pacing,
    ) -> Result<Self, KvmError> {
        vcpu.set_sregs(&state.sregs)
            .map_err(|e| KvmError::ioctl("KVM_SET_SREGS", e))?;
        vcpu.set_regs(&state.regs)
            .map_err(|e| KvmError::ioctl("KVM_SET_REGS", e))?;
        let tracker = Arc::new(tracker);
        let bitmap = Arc::new(Bitmap::new(*ram.layout()));
        let vcpu = VcpuThread::start(vcpu, pacing, tracker.clone(), bitmap.clone())?;
        Ok(KvmGuest {
            vcpu,
            tracker,
            bitmap,
            _vm: vm,
            ram,
            paused_state: std::sync::Mutex::new(None),
        })
    }

    /// The guest's RAM.
    pub fn ram(&self) -> &Arc<GuestRam> {
        &self.ram
    }

    /// The dirty tracker (mode, sync counters).
    pub fn tracker(&self) -> &DirtyTracker {
        &self.tracker
    }

    /// The vCPU thread (pacing exits, errors).
    pub fn vcpu(&self) -> &VcpuThread {
        &self.vcpu
    }

    /// The counter at the fixed address (the last value the loop wrote).
    pub fn counter(&self) -> Result<u64, KvmError> {
        self.ram.read_u64(COUNTER_ADDR)
    }

    /// The first `u64` of working-set page `index`: the counter value last written
    /// there.
    pub fn working_set_value(&self, index: u64) -> Result<u64, KvmError> {
        let gpa = self
            .ram
            .layout()
            .addr_of(program::working_set_page(index))
            .map_err(|e| KvmError::Config(format!("working-set page {index}: {e}")))?;
        self.ram.read_u64(gpa)
    }

    /// The vCPU state taken at the last pause (`None`: never paused).
    pub fn paused_state(&self) -> Option<VcpuState> {
        *self.paused_state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pauses the vCPU at its pause point and returns its state.
    pub fn pause_vcpu(&self) -> Result<VcpuState, KvmError> {
        let state = self.vcpu.pause()?;
        *self.paused_state.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
        Ok(state)
    }

    /// Lets the vCPU run again.
    pub fn resume_vcpu(&self) {
        self.vcpu.resume();
    }
}

/// The page size of the guests here.
pub const GUEST_PAGE: u64 = PAGE;

impl Guest for KvmGuest {
    type Memory = GuestRam;
    type Words = Box<[std::sync::atomic::AtomicU64]>;
    type Error = KvmError;

    fn memory(&self) -> &GuestRam {
        &self.ram
    }

    fn bitmap(&self) -> &Bitmap {
        &self.bitmap
    }

    fn pause(&self) -> Result<(), KvmError> {
        self.pause_vcpu().map(|_| ())
    }

    fn resume(&self) {
        self.resume_vcpu();
    }

    fn throttle(&self, percent: u8) {
        self.vcpu.throttle(percent);
    }

    fn sync_dirty(&self) -> Result<(), KvmError> {
        self.tracker.sync(&self.bitmap).map(|_| ())
    }

    fn has_device_state(&self) -> bool {
        true
    }

    /// The vCPU's registers, taken at the pause, as one item
    /// ([`VCPU_STATE_ID`](super::VCPU_STATE_ID), version
    /// [`VCPU_STATE_VERSION`](super::VCPU_STATE_VERSION)).
    fn save_device_state(
        &self,
        save: &mut dyn FnMut(crate::wire::DeviceState<'_>),
    ) -> Result<(), KvmError> {
        let state = self
            .paused_state()
            .ok_or_else(|| KvmError::Vcpu("device state asked for before the pause".into()))?;
        let bytes = state.to_bytes();
        save(crate::wire::DeviceState {
            id: super::state::VCPU_STATE_ID,
            version: super::state::VCPU_STATE_VERSION,
            data: &bytes,
        });
        Ok(())
    }
}
