//! The round scheduler: a policy, a measurement per round, a decision per round.
//!
//! Sans-IO like the core: the host passes the time (`now_ns`, any epoch, the same on
//! every call) and what it measured; the scheduler never reads a clock.

use core::ffi::{c_char, c_int};
use core::fmt;

use core_precopy::schedule::{
    Decision, DowntimeRamp, OnLimit, Policy, RoundMeasurement, ScheduleError, Scheduler, Shrink,
    SwitchReason, Throttle,
};

use crate::error::{
    schedule_code, status, PRECOPY_ERR_BAD_ARGUMENT, PRECOPY_ERR_BAD_POLICY, PRECOPY_OK,
};
use crate::ffi::{as_mut, as_ref, assert_fits, write_message, Blob};

/// Bytes in a [`PrecopyScheduler`].
pub const PRECOPY_SCHEDULER_SIZE: usize = 512;

/// `on_limit`: end the migration with a `PRECOPY_DECISION_FAIL` (the source keeps
/// running).
pub const PRECOPY_ON_LIMIT_FAIL: u32 = 0;
/// `on_limit`: switch over anyway, accepting a downtime above the limit.
pub const PRECOPY_ON_LIMIT_SWITCH_OVER: u32 = 1;

/// Preset: precopy's defaults (300 ms limit, 10 ms non-memory allowance, 30 rounds,
/// 3x memory, auto-converge throttling).
pub const PRECOPY_POLICY_DEFAULT: c_int = 0;
/// Preset: QEMU's defaults (300 ms, no bounds, no throttling, no allowance).
pub const PRECOPY_POLICY_QEMU: c_int = 1;
/// Preset: Xen (5 rounds or fewer than 50 dirty pages, then switch over).
pub const PRECOPY_POLICY_XEN: c_int = 2;
/// Preset: older Xen (30 rounds or 3x memory, or fewer than 50 dirty pages).
pub const PRECOPY_POLICY_XEN_LEGACY: c_int = 3;

/// Decision: run another live round (see `throttle_percent`).
pub const PRECOPY_DECISION_CONTINUE: u32 = 0;
/// Decision: pause the guest, harvest one last time, send the final round.
pub const PRECOPY_DECISION_SWITCH_OVER: u32 = 1;
/// Decision: give up, the migration does not converge (see `not_converging`).
pub const PRECOPY_DECISION_FAIL: u32 = 2;

/// Switch reason: not a switchover.
pub const PRECOPY_SWITCH_NONE: u32 = 0;
/// Switch reason: the predicted downtime is within the limit in force.
pub const PRECOPY_SWITCH_DOWNTIME_MET: u32 = 1;
/// Switch reason: no more dirty pages than the policy's `switch_below_pages`.
pub const PRECOPY_SWITCH_FEW_DIRTY_PAGES: u32 = 2;
/// Switch reason: a bound was reached with the predicted downtime above the limit,
/// and the policy says switch over anyway (a bound reached with the prediction
/// within the limit is `PRECOPY_SWITCH_DOWNTIME_MET`).
pub const PRECOPY_SWITCH_BOUND_REACHED: u32 = 3;

/// Bound: none (not a failure).
pub const PRECOPY_BOUND_NONE: u32 = 0;
/// Bound: `max_rounds`.
pub const PRECOPY_BOUND_ROUNDS: u32 = 1;
/// Bound: `max_bytes_ratio`.
pub const PRECOPY_BOUND_BYTES: u32 = 2;
/// Bound: `timeout_ns`.
pub const PRECOPY_BOUND_TIMEOUT: u32 = 3;
/// Bound: one this version of the header does not name.
pub const PRECOPY_BOUND_OTHER: u32 = 4;

/// The migration policy. Zero means "off" or "none" where the field says so. Fill it
/// with `precopy_policy_default` or `precopy_policy_preset`, then change fields.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyPolicy {
    /// Maximum downtime of the final round, ns (default 300 ms).
    pub downtime_limit_ns: u64,
    /// Fixed non-memory part of downtime (device state, final harvest, resume), ns,
    /// added to every prediction (default 10 ms).
    pub non_memory_downtime_ns: u64,
    /// Bandwidth to predict the final round with, bytes/s; 0 = the measured one.
    pub switchover_bandwidth: u64,
    /// The link's bandwidth cap, bytes/s; predictions never assume more; 0 = none.
    pub bandwidth_cap: u64,
    /// Switch over when at most this many pages are dirty; 0 = off.
    pub switch_below_pages: u64,
    /// Longest migration from `precopy_scheduler_init`, ns; 0 = none.
    pub timeout_ns: u64,
    /// Most bytes on the wire as a multiple of guest memory (at least 1.0); 0 = none.
    pub max_bytes_ratio: f64,
    /// Weight of a new round in the smoothed rates, in (0, 1] (default 0.5).
    pub smoothing: f64,
    /// Most rounds, counting the bulk round (at least 1; `UINT32_MAX`: unbounded).
    pub max_rounds: u32,
    /// `PRECOPY_ON_LIMIT_FAIL` or `PRECOPY_ON_LIMIT_SWITCH_OVER`: what to do when a
    /// bound is reached before convergence.
    pub on_limit: u32,
    /// 1: advise throttling (the `throttle_*` fields); 0: never.
    pub throttle_enabled: u32,
    /// Rounds in a row of "not draining" before throttling starts or steps up.
    pub throttle_trigger_rounds: u32,
    /// Dirty bytes/s over bandwidth that counts as not draining (default 0.5).
    pub throttle_threshold: f64,
    /// First throttle percentage advised (1..=max).
    pub throttle_initial_percent: u32,
    /// Added at each further step.
    pub throttle_step_percent: u32,
    /// Never advised above this (at most 99).
    pub throttle_max_percent: u32,
    /// 1: raise the downtime limit when not converging (the `ramp_*` fields); 0: never.
    pub ramp_enabled: u32,
    /// Rounds at the base limit before the ramp starts.
    pub ramp_after_rounds: u32,
    /// Fewest live rounds before a switchover on the downtime rule (default 2: the
    /// bulk round says little about the final one's rates; 0 or 1: none).
    pub min_rounds: u32,
    /// Added to the limit each round after `ramp_after_rounds`, ns.
    pub ramp_step_ns: u64,
    /// The ramped limit never rises above this, ns (at least `downtime_limit_ns`).
    pub ramp_max_ns: u64,
    /// 1: keep iterating past the first round within the limit while rounds still
    /// shrink the dirty set (the `shrink_*` fields; on in the default policy); 0: never.
    pub shrink_enabled: u32,
    /// Most rounds after the first one that met the limit (at least 1; default 8).
    pub shrink_max_extra_rounds: u32,
    /// Keep iterating only while the memory part of the prediction (less the fixed
    /// non-memory allowance) is above this share of the limit, in (0, 1) (default
    /// 0.002).
    pub shrink_target_fraction: f64,
    /// Least share a round must shrink the dirty set by, in (0, 1) (default 0.1).
    pub shrink_min_shrink: f64,
    /// The next round's prediction, extrapolated from this round's shrink, times this
    /// must stay within the limit, >= 1.0 (default 1.25).
    pub shrink_headroom: f64,
    /// Most bytes in the extra rounds, as a multiple of guest memory, > 0 (default 0.5).
    pub shrink_max_extra_bytes_ratio: f64,
}

/// What the host measured over one live round.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyRoundMeasurement {
    /// When the round ended and the next dirty set was harvested, ns.
    pub now_ns: u64,
    /// Pages sent in the round.
    pub pages_sent: u64,
    /// Bytes the round put on the wire (after compression, with framing).
    pub wire_bytes: u64,
    /// Pages harvested dirty at the end of the round (what the next round sends).
    pub dirty_pages: u64,
}

/// The details of a `PRECOPY_DECISION_FAIL` (all zero for other decisions).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyNotConverging {
    /// Which bound was reached: `PRECOPY_BOUND_*`.
    pub bound: u32,
    /// Rounds completed.
    pub rounds: u32,
    /// Smoothed dirty rate, pages/s.
    pub dirty_pages_per_sec: f64,
    /// Smoothed link bandwidth, bytes/s.
    pub bandwidth_bytes_per_sec: f64,
    /// Downtime predicted if switching over now, ns.
    pub predicted_downtime_ns: u64,
    /// The downtime limit in force, ns.
    pub downtime_limit_ns: u64,
}

/// A round's statistics and the decision it led to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyRoundOutcome {
    /// `PRECOPY_DECISION_*`.
    pub decision: u32,
    /// `PRECOPY_SWITCH_*` for a switchover, else `PRECOPY_SWITCH_NONE`.
    pub switch_reason: u32,
    /// Throttling advice for the next round: percent of vCPU time to take away.
    pub throttle_percent: u32,
    /// Round number, 1 = the bulk round.
    pub round: u32,
    /// Pages sent in the round.
    pub pages_sent: u64,
    /// Bytes on the wire in the round.
    pub wire_bytes: u64,
    /// Pages dirty at the end of the round.
    pub dirty_pages: u64,
    /// Round duration, ns.
    pub duration_ns: u64,
    /// Smoothed bandwidth, bytes/s (0 until measured).
    pub bandwidth_bytes_per_sec: f64,
    /// Smoothed dirty rate, pages/s.
    pub dirty_pages_per_sec: f64,
    /// Downtime predicted if switching over now, ns (`UINT64_MAX` while unknown).
    pub predicted_downtime_ns: u64,
    /// Downtime limit in force (after any ramp), ns.
    pub downtime_limit_ns: u64,
    /// Why the migration fails, when `decision == PRECOPY_DECISION_FAIL`.
    pub not_converging: PrecopyNotConverging,
}

/// Predicted against real downtime, after the fact.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyDowntimeReport {
    /// The prediction at switchover, ns.
    pub predicted_ns: u64,
    /// What the host measured from pause to resume, ns.
    pub real_ns: u64,
    /// Real over predicted (above 1.0: the prediction was optimistic).
    pub ratio: f64,
}

/// Storage for a round scheduler: opaque, 8-byte aligned, valid after
/// `precopy_scheduler_init`. Not for concurrent use.
#[repr(C)]
pub struct PrecopyScheduler {
    /// Opaque.
    pub opaque: [u64; PRECOPY_SCHEDULER_SIZE / 8],
}

assert_fits!(PrecopyScheduler, Scheduler);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyScheduler {
    type State = Scheduler;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcSCHEDL");
}

impl From<Policy> for PrecopyPolicy {
    fn from(p: Policy) -> Self {
        let t = p.throttle.unwrap_or_default();
        let sh = p.shrink.unwrap_or_default();
        let r = p.ramp.unwrap_or(DowntimeRamp {
            after_rounds: 0,
            step_ns: 0,
            max_ns: 0,
        });
        PrecopyPolicy {
            downtime_limit_ns: p.downtime_limit_ns,
            non_memory_downtime_ns: p.non_memory_downtime_ns,
            switchover_bandwidth: p.switchover_bandwidth.unwrap_or(0),
            bandwidth_cap: p.bandwidth_cap.unwrap_or(0),
            switch_below_pages: p.switch_below_pages,
            timeout_ns: p.timeout_ns.unwrap_or(0),
            max_bytes_ratio: p.max_bytes_ratio.unwrap_or(0.0),
            smoothing: p.smoothing,
            max_rounds: p.max_rounds,
            on_limit: match p.on_limit {
                OnLimit::Fail => PRECOPY_ON_LIMIT_FAIL,
                OnLimit::SwitchOver => PRECOPY_ON_LIMIT_SWITCH_OVER,
            },
            throttle_enabled: u32::from(p.throttle.is_some()),
            throttle_trigger_rounds: t.trigger_rounds,
            throttle_threshold: t.threshold,
            throttle_initial_percent: u32::from(t.initial_percent),
            throttle_step_percent: u32::from(t.step_percent),
            throttle_max_percent: u32::from(t.max_percent),
            ramp_enabled: u32::from(p.ramp.is_some()),
            ramp_after_rounds: r.after_rounds,
            min_rounds: p.min_rounds,
            ramp_step_ns: r.step_ns,
            ramp_max_ns: r.max_ns,
            shrink_enabled: u32::from(p.shrink.is_some()),
            shrink_max_extra_rounds: sh.max_extra_rounds,
            shrink_target_fraction: sh.target_fraction,
            shrink_min_shrink: sh.min_shrink,
            shrink_headroom: sh.headroom,
            shrink_max_extra_bytes_ratio: sh.max_extra_bytes_ratio,
        }
    }
}

/// Why a C policy was refused: a field the C encoding adds, or the core's validation.
pub(crate) enum PolicyFault {
    Field {
        code: c_int,
        field: &'static str,
        reason: &'static str,
    },
    Core(ScheduleError),
}

impl PolicyFault {
    pub(crate) fn code(&self) -> c_int {
        match self {
            PolicyFault::Field { code, .. } => *code,
            PolicyFault::Core(e) => schedule_code(*e),
        }
    }
}

impl fmt::Display for PolicyFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyFault::Field { field, reason, .. } => {
                write!(f, "migration policy: {field} {reason}")
            }
            PolicyFault::Core(e) => e.fmt(f),
        }
    }
}

/// 0 = `None`, anything else `Some`.
fn nonzero<T: PartialEq + Default>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

/// A 0/1 flag field.
fn flag(v: u32, field: &'static str) -> Result<bool, PolicyFault> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(PolicyFault::Field {
            code: PRECOPY_ERR_BAD_ARGUMENT,
            field,
            reason: "must be 0 or 1",
        }),
    }
}

/// A percentage field (checked further by the core's validation).
fn percent(v: u32, field: &'static str) -> Result<u8, PolicyFault> {
    u8::try_from(v).map_err(|_| PolicyFault::Field {
        code: PRECOPY_ERR_BAD_POLICY,
        field,
        reason: "must be at most 99",
    })
}

/// The core policy a C policy stands for, validated.
pub(crate) fn to_policy(c: &PrecopyPolicy) -> Result<Policy, PolicyFault> {
    let on_limit = match c.on_limit {
        PRECOPY_ON_LIMIT_FAIL => OnLimit::Fail,
        PRECOPY_ON_LIMIT_SWITCH_OVER => OnLimit::SwitchOver,
        _ => {
            return Err(PolicyFault::Field {
                code: PRECOPY_ERR_BAD_ARGUMENT,
                field: "on_limit",
                reason: "must be PRECOPY_ON_LIMIT_FAIL or PRECOPY_ON_LIMIT_SWITCH_OVER",
            })
        }
    };
    let throttle = if flag(c.throttle_enabled, "throttle_enabled")? {
        Some(Throttle {
            threshold: c.throttle_threshold,
            trigger_rounds: c.throttle_trigger_rounds,
            initial_percent: percent(c.throttle_initial_percent, "throttle_initial_percent")?,
            step_percent: percent(c.throttle_step_percent, "throttle_step_percent")?,
            max_percent: percent(c.throttle_max_percent, "throttle_max_percent")?,
        })
    } else {
        None
    };
    let ramp = flag(c.ramp_enabled, "ramp_enabled")?.then_some(DowntimeRamp {
        after_rounds: c.ramp_after_rounds,
        step_ns: c.ramp_step_ns,
        max_ns: c.ramp_max_ns,
    });
    let shrink = flag(c.shrink_enabled, "shrink_enabled")?.then_some(Shrink {
        target_fraction: c.shrink_target_fraction,
        min_shrink: c.shrink_min_shrink,
        headroom: c.shrink_headroom,
        max_extra_rounds: c.shrink_max_extra_rounds,
        max_extra_bytes_ratio: c.shrink_max_extra_bytes_ratio,
    });
    let policy = Policy {
        downtime_limit_ns: c.downtime_limit_ns,
        non_memory_downtime_ns: c.non_memory_downtime_ns,
        switchover_bandwidth: nonzero(c.switchover_bandwidth),
        bandwidth_cap: nonzero(c.bandwidth_cap),
        switch_below_pages: c.switch_below_pages,
        min_rounds: c.min_rounds,
        max_rounds: c.max_rounds,
        max_bytes_ratio: nonzero(c.max_bytes_ratio),
        timeout_ns: nonzero(c.timeout_ns),
        on_limit,
        throttle,
        ramp,
        smoothing: c.smoothing,
        shrink,
    };
    policy.validate().map_err(PolicyFault::Core)?;
    Ok(policy)
}

/// Fills `*policy` with precopy's default policy (the same as
/// `precopy_policy_preset(policy, PRECOPY_POLICY_DEFAULT)`).
///
/// # Safety
/// `policy` points at a writable `precopy_policy_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_policy_default(policy: *mut PrecopyPolicy) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { precopy_policy_preset(policy, PRECOPY_POLICY_DEFAULT) }
}

/// Fills `*policy` with a preset: `PRECOPY_POLICY_DEFAULT`, `_QEMU`, `_XEN` or
/// `_XEN_LEGACY`. Disabled throttling keeps the default `throttle_*` values, so setting
/// `throttle_enabled = 1` is enough to turn it on.
///
/// # Safety
/// `policy` points at a writable `precopy_policy_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_policy_preset(policy: *mut PrecopyPolicy, preset: c_int) -> c_int {
    status((|| {
        // SAFETY: per this function's contract (only written, never read).
        let out = unsafe { as_mut(policy) }?;
        *out = match preset {
            PRECOPY_POLICY_DEFAULT => Policy::default(),
            PRECOPY_POLICY_QEMU => Policy::qemu(),
            PRECOPY_POLICY_XEN => Policy::xen(),
            PRECOPY_POLICY_XEN_LEGACY => Policy::xen_legacy(),
            _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
        }
        .into();
        Ok(())
    })())
}

/// Checks every field of `*policy`. On error, if `msg_len` is not NULL, writes a
/// message naming the field into `msg` (`*msg_len` bytes, NUL-terminated, truncated if
/// short) and sets `*msg_len` to the message's full length; on success `*msg_len` is 0.
///
/// # Safety
/// `policy` points at a `precopy_policy_t`; `msg_len` is NULL or points at a writable
/// `size_t`; when it is not NULL and `*msg_len > 0`, `msg` points at `*msg_len` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_policy_validate(
    policy: *const PrecopyPolicy,
    msg: *mut c_char,
    msg_len: *mut usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let policy = match unsafe { as_ref(policy) } {
        Ok(p) => p,
        Err(code) => return code,
    };
    let result = to_policy(policy);
    if !msg_len.is_null() {
        // Writing the message has its own status (a short buffer), secondary to the
        // policy's: the caller sees the full length in `*msg_len` either way.
        let _ = match &result {
            // SAFETY: per this function's contract.
            Ok(_) => unsafe { write_message(msg, msg_len, "") },
            // SAFETY: per this function's contract.
            Err(fault) => unsafe { write_message(msg, msg_len, fault) },
        };
    }
    match result {
        Ok(_) => PRECOPY_OK,
        Err(fault) => fault.code(),
    }
}

/// Initializes `sched` for a guest of `total_pages` pages of `page_size` bytes under
/// `*policy`, at time `now_ns` (the bulk round starts now).
///
/// # Safety
/// `sched` points at writable storage for a `precopy_scheduler_t`; `policy` at a
/// `precopy_policy_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_scheduler_init(
    sched: *mut PrecopyScheduler,
    policy: *const PrecopyPolicy,
    total_pages: u64,
    page_size: u64,
    now_ns: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let policy = unsafe { as_ref(policy) }?;
        let policy = to_policy(policy).map_err(|f| f.code())?;
        let s = Scheduler::new(policy, total_pages, page_size, now_ns).map_err(schedule_code)?;
        // SAFETY: per this function's contract.
        match unsafe { PrecopyScheduler::init(sched, s) } {
            PRECOPY_OK => Ok(()),
            code => Err(code),
        }
    })())
}

/// Maps the core's bound name to `PRECOPY_BOUND_*`.
fn bound_code(bound: &str) -> u32 {
    match bound {
        "the round limit" => PRECOPY_BOUND_ROUNDS,
        "the byte limit" => PRECOPY_BOUND_BYTES,
        "the timeout" => PRECOPY_BOUND_TIMEOUT,
        _ => PRECOPY_BOUND_OTHER,
    }
}

/// Maps `PRECOPY_BOUND_*` back to the core's bound name.
fn bound_name(bound: u32) -> Option<&'static str> {
    Some(match bound {
        PRECOPY_BOUND_ROUNDS => "the round limit",
        PRECOPY_BOUND_BYTES => "the byte limit",
        PRECOPY_BOUND_TIMEOUT => "the timeout",
        PRECOPY_BOUND_OTHER => "a bound of the policy",
        _ => return None,
    })
}

const NO_FAILURE: PrecopyNotConverging = PrecopyNotConverging {
    bound: PRECOPY_BOUND_NONE,
    rounds: 0,
    dirty_pages_per_sec: 0.0,
    bandwidth_bytes_per_sec: 0.0,
    predicted_downtime_ns: 0,
    downtime_limit_ns: 0,
};

/// Feeds the measurements of the round that just ended and writes its statistics and
/// the decision to `*outcome`.
///
/// # Safety
/// `sched` points at a `precopy_scheduler_t` nothing else uses during the call;
/// `measurement` at a `precopy_round_measurement_t`; `outcome` at a writable
/// `precopy_round_outcome_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_scheduler_round_done(
    sched: *mut PrecopyScheduler,
    measurement: *const PrecopyRoundMeasurement,
    outcome: *mut PrecopyRoundOutcome,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (s, m, out) = unsafe {
            (
                PrecopyScheduler::state_mut(sched)?,
                as_ref(measurement)?,
                as_mut(outcome)?,
            )
        };
        let o = s.round_done(RoundMeasurement {
            now_ns: m.now_ns,
            pages_sent: m.pages_sent,
            wire_bytes: m.wire_bytes,
            dirty_pages: m.dirty_pages,
            // The C struct has no count of pages dirtied after the harvest yet.
            pending_pages: 0,
        });
        let (decision, switch_reason, not_converging) = match o.decision {
            Decision::Continue { .. } => {
                (PRECOPY_DECISION_CONTINUE, PRECOPY_SWITCH_NONE, NO_FAILURE)
            }
            Decision::SwitchOver { reason, .. } => (
                PRECOPY_DECISION_SWITCH_OVER,
                match reason {
                    SwitchReason::DowntimeMet => PRECOPY_SWITCH_DOWNTIME_MET,
                    SwitchReason::FewDirtyPages => PRECOPY_SWITCH_FEW_DIRTY_PAGES,
                    SwitchReason::BoundReached => PRECOPY_SWITCH_BOUND_REACHED,
                },
                NO_FAILURE,
            ),
            Decision::Fail(ScheduleError::NotConverging {
                rounds,
                bound,
                dirty_pages_per_sec,
                bandwidth_bytes_per_sec,
                predicted_downtime_ns,
                downtime_limit_ns,
            }) => (
                PRECOPY_DECISION_FAIL,
                PRECOPY_SWITCH_NONE,
                PrecopyNotConverging {
                    bound: bound_code(bound),
                    rounds,
                    dirty_pages_per_sec,
                    bandwidth_bytes_per_sec,
                    predicted_downtime_ns,
                    downtime_limit_ns,
                },
            ),
            // The scheduler fails rounds only with `NotConverging`; any other error
            // is still a failure, reported without a bound.
            Decision::Fail(_) => (PRECOPY_DECISION_FAIL, PRECOPY_SWITCH_NONE, NO_FAILURE),
        };
        let throttle_percent = match o.decision {
            Decision::Continue { throttle_percent } => throttle_percent,
            _ => o.stats.throttle_percent,
        };
        *out = PrecopyRoundOutcome {
            decision,
            switch_reason,
            throttle_percent: u32::from(throttle_percent),
            round: o.stats.round,
            pages_sent: o.stats.pages_sent,
            wire_bytes: o.stats.wire_bytes,
            dirty_pages: o.stats.dirty_pages,
            duration_ns: o.stats.duration_ns,
            bandwidth_bytes_per_sec: o.stats.bandwidth_bytes_per_sec,
            dirty_pages_per_sec: o.stats.dirty_pages_per_sec,
            predicted_downtime_ns: o.stats.predicted_downtime_ns,
            downtime_limit_ns: o.stats.downtime_limit_ns,
            not_converging,
        };
        Ok(())
    })())
}

/// Records the real downtime of the final round (`real_downtime_ns`, measured by the
/// host from pause to resume) against the prediction made at switchover.
///
/// # Safety
/// `sched` points at a `precopy_scheduler_t`; `report` at a writable
/// `precopy_downtime_report_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_scheduler_finish(
    sched: *const PrecopyScheduler,
    real_downtime_ns: u64,
    report: *mut PrecopyDowntimeReport,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (s, out) = unsafe { (PrecopyScheduler::state(sched)?, as_mut(report)?) };
        let r = s.finish(real_downtime_ns);
        *out = PrecopyDowntimeReport {
            predicted_ns: r.predicted_ns,
            real_ns: r.real_ns,
            ratio: r.ratio(),
        };
        Ok(())
    })())
}

/// An outcome as an operator reads it.
struct Describe<'a>(&'a PrecopyRoundOutcome, Option<&'static str>);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        let ms = |ns: u64| ns as f64 / 1e6;
        match o.decision {
            PRECOPY_DECISION_CONTINUE => {
                write!(f, "round {}: continue", o.round)?;
                if o.throttle_percent > 0 {
                    write!(f, ", throttle the vCPUs by {}%", o.throttle_percent)?;
                }
                Ok(())
            }
            PRECOPY_DECISION_SWITCH_OVER => write!(
                f,
                "round {}: switch over ({}): {} dirty pages, predicted downtime {:.1} ms, \
                 limit {:.1} ms",
                o.round,
                match o.switch_reason {
                    PRECOPY_SWITCH_FEW_DIRTY_PAGES => "few dirty pages",
                    PRECOPY_SWITCH_BOUND_REACHED => "a bound was reached",
                    _ => "downtime limit met",
                },
                o.dirty_pages,
                ms(o.predicted_downtime_ns),
                ms(o.downtime_limit_ns)
            ),
            _ => {
                let n = &o.not_converging;
                ScheduleError::NotConverging {
                    rounds: n.rounds,
                    bound: self.1.unwrap_or("a bound of the policy"),
                    dirty_pages_per_sec: n.dirty_pages_per_sec,
                    bandwidth_bytes_per_sec: n.bandwidth_bytes_per_sec,
                    predicted_downtime_ns: n.predicted_downtime_ns,
                    downtime_limit_ns: n.downtime_limit_ns,
                }
                .fmt(f)
            }
        }
    }
}

/// Writes a one-line description of `*outcome` for an operator (for a failure, what was
/// measured and what to change) into `buf` (`*len` bytes, NUL-terminated) and sets
/// `*len` to its full length. `PRECOPY_ERR_BUFFER_TOO_SMALL` if it was truncated
/// (`*len == 0` with `buf` NULL asks for the length).
///
/// # Safety
/// `outcome` points at a `precopy_round_outcome_t`; `len` at a writable `size_t`; when
/// `*len > 0`, `buf` points at `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_outcome_describe(
    outcome: *const PrecopyRoundOutcome,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let o = match unsafe { as_ref(outcome) } {
        Ok(o) => o,
        Err(code) => return code,
    };
    let bound = match o.decision {
        PRECOPY_DECISION_CONTINUE | PRECOPY_DECISION_SWITCH_OVER => None,
        PRECOPY_DECISION_FAIL => match bound_name(o.not_converging.bound) {
            Some(name) => Some(name),
            None if o.not_converging.bound == PRECOPY_BOUND_NONE => None,
            None => return PRECOPY_ERR_BAD_ARGUMENT,
        },
        _ => return PRECOPY_ERR_BAD_ARGUMENT,
    };
    // SAFETY: per this function's contract.
    unsafe { write_message(buf, len, Describe(o, bound)) }
}
