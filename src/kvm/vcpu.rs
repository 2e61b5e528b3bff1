//! The vCPU thread: runs the guest, paces it at its pacing exits, and parks it there
//! when the host pauses it.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::dirty::DirtyTracker;
use super::program::{FAULT_PORT, PACE_PORT};
use super::KvmError;
use crate::bitmap::AtomicDirtyBitmap;

/// The bitmap a KVM guest's syncs feed.
pub type Bitmap = AtomicDirtyBitmap<Box<[std::sync::atomic::AtomicU64]>>;

/// `KVM_EXIT_DIRTY_RING_FULL`.
const EXIT_DIRTY_RING_FULL: u32 = 31;
/// How long [`VcpuThread::pause`] waits for the vCPU to reach its pause point.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The vCPU state that travels with a migration here. A full VMM also moves the FPU
/// and XSAVE state, XCRs, MSRs (EFER is in `sregs`; the TSC, kernel GS base, syscall
/// MSRs), the local APIC, pending events (`KVM_GET_VCPU_EVENTS`), the MP state, debug
/// registers, kvmclock, and its devices' state; this guest uses none of them.
#[derive(Clone, Copy, Debug)]
pub struct VcpuState {
    /// General-purpose registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// Segments, descriptor tables, control registers, EFER.
    pub sregs: kvm_sregs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Run,
    Pause,
    Stop,
}

struct Ctl {
    want: Want,
    parked: bool,
    throttle: u8,
    error: Option<String>,
    state: Option<VcpuState>,
}

struct Shared {
    ctl: Mutex<Ctl>,
    cv: Condvar,
    exits: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How the vCPU thread paces the guest: `batch` page writes per pacing exit, `rate`
/// pages per second (0: the guest writes nothing; exits come every millisecond).
#[derive(Clone, Copy, Debug)]
pub struct Pacing {
    /// Pages the guest writes between two pacing exits.
    pub batch: u64,
    /// Target pages per second.
    pub rate: u64,
}

impl Pacing {
    /// About 1000 pacing exits per second at `rate` pages per second.
    pub fn for_rate(rate: u64) -> Self {
        Pacing {
            batch: if rate == 0 { 0 } else { (rate / 1000).max(1) },
            rate,
        }
    }

    /// Time between two pacing exits, stretched by `throttle` percent.
    fn interval(&self, throttle: u8) -> Duration {
        let base = if self.rate == 0 {
            Duration::from_millis(1)
        } else {
            Duration::from_secs_f64(self.batch as f64 / self.rate as f64)
        };
        base.div_f64(1.0 - f64::from(throttle.min(99)) / 100.0)
    }
}

/// A running vCPU on its own thread (`guest-vcpu0`), controlled from others.
pub struct VcpuThread {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VcpuThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuThread").finish_non_exhaustive()
    }
}

impl VcpuThread {
    /// Starts running `vcpu` (its registers set) paced by `pacing`; a ring-full exit
    /// syncs `tracker` into `bitmap`.
    pub fn start(
        vcpu: VcpuFd,
        pacing: Pacing,
        tracker: Arc<DirtyTracker>,
        bitmap: Arc<Bitmap>,
    ) -> Result<Self, KvmError> {
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Ctl {
                want: Want::Run,
                parked: false,
                throttle: 0,
                error: None,
                state: None,
            }),
            cv: Condvar::new(),
            exits: AtomicU64::new(0),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("guest-vcpu0".into())
            .spawn(move || {
                let mut runner = Runner {
                    vcpu,
                    shared: s,
                    pacing,
                    tracker,
                    bitmap,
                    pending_io: false,
                };
                if let Err(e) = runner.run() {
                    runner.fail(e);
                }
            })
            .map_err(|e| KvmError::Config(format!("spawning the vCPU thread: {e}")))?;
        Ok(VcpuThread {
            shared,
            handle: Some(handle),
        })
    }

    /// Stops the vCPU at its next pacing exit (its pause point: right after the
    /// `out`, the I/O completed) and returns its state.
    pub fn pause(&self) -> Result<VcpuState, KvmError> {
        let mut g = self.shared.lock();
        if g.want == Want::Run {
            g.want = Want::Pause;
            self.shared.cv.notify_all();
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while !g.parked && g.error.is_none() {
            let now = Instant::now();
            if now >= deadline {
                g.want = Want::Run;
                return Err(KvmError::PauseTimeout);
            }
            g = self
                .shared
                .cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if let Some(e) = &g.error {
            return Err(KvmError::Vcpu(e.clone()));
        }
        g.state
            .ok_or(KvmError::Vcpu("paused without a state".into()))
    }

    /// Lets a paused vCPU run again.
    pub fn resume(&self) {
        let mut g = self.shared.lock();
        if g.want == Want::Pause {
            g.want = Want::Run;
            self.shared.cv.notify_all();
        }
    }

    /// Stretches the time between pacing exits: `percent` of the vCPU's time taken.
    pub fn throttle(&self, percent: u8) {
        self.shared.lock().throttle = percent.min(99);
    }

    /// Pacing exits so far.
    pub fn exits(&self) -> u64 {
        self.shared.exits.load(Ordering::Relaxed)
    }

    /// Why the vCPU stopped, if it failed.
    pub fn error(&self) -> Option<String> {
        self.shared.lock().error.clone()
    }
}

impl Drop for VcpuThread {
    fn drop(&mut self) {
        self.shared.lock().want = Want::Stop;
        self.shared.cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Runner {
    vcpu: VcpuFd,
    shared: Arc<Shared>,
    pacing: Pacing,
    tracker: Arc<DirtyTracker>,
    bitmap: Arc<Bitmap>,
    /// The last exit was port I/O that KVM completes on the next `KVM_RUN`.
    pending_io: bool,
}

impl Runner {
    fn run(&mut self) -> Result<(), KvmError> {
        let mut next = Instant::now();
        loop {
            match self.vcpu.run() {
                Ok(VcpuExit::IoOut(PACE_PORT, _)) => {
                    self.pending_io = true;
                    self.shared.exits.fetch_add(1, Ordering::Relaxed);
                    if !self.pace(&mut next)? {
                        return Ok(());
                    }
                }
                Ok(VcpuExit::IoOut(FAULT_PORT, data)) => {
                    let vector = data.first().copied().unwrap_or(0xff);
                    self.pending_io = true;
                    return Err(KvmError::Vcpu(format!(
                        "the guest faulted: exception vector {vector}{}",
                        self.where_()
                    )));
                }
                Ok(VcpuExit::Unsupported(EXIT_DIRTY_RING_FULL)) => {
                    self.tracker
                        .stats
                        .ring_full_exits
                        .fetch_add(1, Ordering::Relaxed);
                    self.tracker.sync(&self.bitmap)?;
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Ok(exit) => {
                    let exit = format!("{exit:?}");
                    return Err(KvmError::Vcpu(format!(
                        "unexpected vCPU exit {exit}{}",
                        self.where_()
                    )));
                }
                Err(e) => return Err(KvmError::ioctl("KVM_RUN", e)),
            }
        }
    }

    fn where_(&self) -> String {
        self.vcpu
            .get_regs()
            .map(|r| format!(" at rip {:#x}", r.rip))
            .unwrap_or_default()
    }

    /// Waits for the next pacing deadline, parking while paused. `false`: stop.
    fn pace(&mut self, next: &mut Instant) -> Result<bool, KvmError> {
        let shared = self.shared.clone();
        let mut g = shared.lock();
        let now = Instant::now();
        *next += self.pacing.interval(g.throttle);
        if *next + Duration::from_millis(20) < now {
            // Fell behind (a long exit, a sync): do not burst to catch up.
            *next = now;
        }
        loop {
            match g.want {
                Want::Stop => {
                    drop(g);
                    self.complete_io()?;
                    return Ok(false);
                }
                Want::Pause => {
                    drop(g);
                    self.complete_io()?;
                    let state = VcpuState {
                        regs: self
                            .vcpu
                            .get_regs()
                            .map_err(|e| KvmError::ioctl("KVM_GET_REGS", e))?,
                        sregs: self
                            .vcpu
                            .get_sregs()
                            .map_err(|e| KvmError::ioctl("KVM_GET_SREGS", e))?,
                    };
                    g = shared.lock();
                    g.state = Some(state);
                    g.parked = true;
                    shared.cv.notify_all();
                    while g.want == Want::Pause {
                        g = shared.cv.wait(g).unwrap_or_else(|p| p.into_inner());
                    }
                    g.parked = false;
                    *next = Instant::now();
                }
                Want::Run => {
                    let now = Instant::now();
                    if now >= *next {
                        return Ok(true);
                    }
                    g = shared
                        .cv
                        .wait_timeout(g, *next - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// KVM documents the vCPU state as inconsistent right after an I/O exit: one more
    /// `KVM_RUN` with `immediate_exit` set completes the `out` and returns at once.
    fn complete_io(&mut self) -> Result<(), KvmError> {
        if !self.pending_io {
            return Ok(());
        }
        self.vcpu.set_kvm_immediate_exit(1);
        let r = self.vcpu.run().map(|_| ());
        self.vcpu.set_kvm_immediate_exit(0);
        self.pending_io = false;
        match r {
            Err(e) if e.errno() != libc::EINTR && e.errno() != libc::EAGAIN => {
                Err(KvmError::ioctl("KVM_RUN (completing port I/O)", e))
            }
            _ => Ok(()),
        }
    }

    /// Records `e` and parks until stopped (a failed vCPU does not run again).
    fn fail(&mut self, e: KvmError) {
        let _ = self.complete_io();
        let mut g = self.shared.lock();
        g.error = Some(e.to_string());
        g.parked = true;
        self.shared.cv.notify_all();
        while g.want != Want::Stop {
            g = self.shared.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}
