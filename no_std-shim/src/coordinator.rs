//! The coordinator of a migration's streams over caller memory:
//! `precopy_coordinator_*`. One scheduler decides for every stream; the round barrier
//! and the one pause are here.

use core::ffi::c_int;

use core_precopy::codec::CodecStats;
use core_precopy::engine::{
    coordinator_storage_words, CoordinatorConfig, CoordinatorCore, CoordinatorError, CoreEvent,
    FinalRound, StreamRound,
};
use core_precopy::schedule::{Decision, SwitchReason};

use crate::error::{
    coordinator_code, status, PRECOPY_ERR_BAD_ARGUMENT, PRECOPY_ERR_BUFFER_TOO_SMALL, PRECOPY_OK,
};
use crate::ffi::{as_mut, as_ref, as_slice_mut, assert_fits, Blob};
use crate::schedule::{
    to_policy, PrecopyPolicy, PRECOPY_DECISION_CONTINUE, PRECOPY_DECISION_FAIL,
    PRECOPY_DECISION_SWITCH_OVER, PRECOPY_SWITCH_BOUND_REACHED, PRECOPY_SWITCH_DOWNTIME_MET,
    PRECOPY_SWITCH_FEW_DIRTY_PAGES, PRECOPY_SWITCH_NONE,
};
use crate::source::{
    PrecopySourceEvent, PRECOPY_SOURCE_EVENT_COMPLETE, PRECOPY_SOURCE_EVENT_PAUSE_GUEST,
    PRECOPY_SOURCE_EVENT_ROUND_MEASURED,
};

/// Bytes in a [`PrecopyCoordinator`].
pub const PRECOPY_COORDINATOR_SIZE: usize = 4096;
/// `precopy_coordinator_event_t.kind`: nothing to do.
pub const PRECOPY_COORDINATOR_EVENT_NONE: u32 = 0;
/// Every stream ended a live round (`round`, `pages_sent`, `wire_bytes`,
/// `dirty_pages` summed).
pub const PRECOPY_COORDINATOR_EVENT_ROUND_DONE: u32 = 1;
/// Throttle the vCPUs by `throttle_percent` (0: stop throttling).
pub const PRECOPY_COORDINATOR_EVENT_THROTTLE: u32 = 2;
/// Pass this event to `precopy_source_decide` of every stream.
pub const PRECOPY_COORDINATOR_EVENT_DECIDE: u32 = 3;
/// Pause the guest, then call `precopy_coordinator_guest_paused`.
pub const PRECOPY_COORDINATOR_EVENT_PAUSE_GUEST: u32 = 4;
/// The guest is paused: call `precopy_source_guest_paused` on every stream.
pub const PRECOPY_COORDINATOR_EVENT_GUEST_PAUSED: u32 = 5;
/// Every stream completed (the final round summed); give each destination's verdict.
pub const PRECOPY_COORDINATOR_EVENT_FINAL_ROUND: u32 = 6;
/// Every destination stream verified its pages: the migration is done (`round`: all
/// rounds, `pages_sent` and `wire_bytes`: all of them).
pub const PRECOPY_COORDINATOR_EVENT_DONE: u32 = 7;
/// The migration failed (`error`, `stream`): abort every source still running; the
/// guest keeps running on the source.
pub const PRECOPY_COORDINATOR_EVENT_FAILED: u32 = 8;

/// What the coordinator asks for (`precopy_coordinator_poll_event`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrecopyCoordinatorEvent {
    /// `PRECOPY_COORDINATOR_EVENT_*`.
    pub kind: u32,
    /// DECIDE: `PRECOPY_DECISION_*`.
    pub decision: u32,
    /// DECIDE (switch over): `PRECOPY_SWITCH_*`.
    pub switch_reason: u32,
    /// THROTTLE, DECIDE (continue): percent of vCPU time to take away.
    pub throttle_percent: u32,
    /// ROUND_DONE: the round; FINAL_ROUND: the final round; DONE: all rounds.
    pub round: u32,
    /// FAILED: why, a `PRECOPY_ERR_*` code.
    pub error: i32,
    /// FAILED: the stream that failed or was refused (0 otherwise).
    pub stream: u32,
    /// Zero.
    pub reserved: u32,
    /// ROUND_DONE, FINAL_ROUND, DONE: pages sent.
    pub pages_sent: u64,
    /// ROUND_DONE, FINAL_ROUND, DONE: bytes put on the wire.
    pub wire_bytes: u64,
    /// ROUND_DONE: pages dirty at its end.
    pub dirty_pages: u64,
    /// DECIDE, PAUSE_GUEST, FINAL_ROUND, DONE: the predicted downtime, ns.
    pub predicted_downtime_ns: u64,
    /// DONE: when the guest was paused, ns.
    pub paused_at_ns: u64,
}

/// Storage for a coordinator's state (its streams live in the caller's storage):
/// opaque, 8-byte aligned, valid after `precopy_coordinator_init`. Not to be copied.
#[repr(C)]
pub struct PrecopyCoordinator {
    /// Opaque.
    pub opaque: [u64; PRECOPY_COORDINATOR_SIZE / 8],
}

assert_fits!(PrecopyCoordinator, CoordinatorCore<&'static mut [u64]>);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyCoordinator {
    type State = CoordinatorCore<&'static mut [u64]>;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcCOORDN");
}

/// Sets `*bytes_out` to the bytes of storage a coordinator of `streams` streams needs.
///
/// # Safety
/// `bytes_out` points at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_coordinator_storage_size(
    streams: u32,
    bytes_out: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(bytes_out) }?;
        if streams == 0 || streams > 255 {
            return Err(PRECOPY_ERR_BAD_ARGUMENT);
        }
        *out = coordinator_storage_words(streams as usize) * 8;
        Ok(())
    })())
}

/// Starts the coordinator `coord` of `streams` streams (1 to 255) migrating a guest of
/// `total_pages` pages of `page_size` bytes under `*policy`, at `now_ns`, its state
/// in `storage` (8-byte aligned, at least `precopy_coordinator_storage_size` bytes).
///
/// # Safety
/// `coord` points at writable storage for a `precopy_coordinator_t`; `policy` at a
/// `precopy_policy_t`; `storage` at `storage_bytes` bytes valid and used only through
/// this library for as long as `coord` is used.
#[no_mangle]
pub unsafe extern "C" fn precopy_coordinator_init(
    coord: *mut PrecopyCoordinator,
    policy: *const PrecopyPolicy,
    total_pages: u64,
    page_size: u64,
    streams: u32,
    storage: *mut u64,
    storage_bytes: usize,
    now_ns: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let policy = unsafe { as_ref(policy) }?;
        let policy = to_policy(policy).map_err(|f| f.code())?;
        if storage_bytes == 0 {
            return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: per this function's contract (the 'static lifetime stands for "as
        // long as the coordinator is used"); `as_slice_mut` checks NULL and alignment.
        let words: &'static mut [u64] = unsafe { as_slice_mut(storage, storage_bytes / 8) }?;
        let config = CoordinatorConfig {
            policy,
            total_pages,
            page_size,
            streams: streams as usize,
        };
        let core = CoordinatorCore::over(config, now_ns, words).map_err(coordinator_code)?;
        // SAFETY: per this function's contract.
        match unsafe { PrecopyCoordinator::init(coord, core) } {
            PRECOPY_OK => Ok(()),
            code => Err(code),
        }
    })())
}

/// The coordinator's state.
///
/// # Safety
/// `coord` points at a `precopy_coordinator_t` nothing else uses during `'a`.
unsafe fn state<'a>(
    coord: *mut PrecopyCoordinator,
) -> Result<&'a mut CoordinatorCore<&'static mut [u64]>, c_int> {
    // SAFETY: per this function's contract.
    unsafe { PrecopyCoordinator::state_mut(coord) }
}

fn stream_index(stream: u32) -> Result<usize, c_int> {
    usize::try_from(stream).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)
}

/// Hands stream `stream`'s source event to the coordinator: ROUND_MEASURED,
/// PAUSE_GUEST and COMPLETE (SYNC_DIRTY_LOG and NONE are the host's, not the
/// coordinator's: `PRECOPY_ERR_BAD_ARGUMENT`). Poll the coordinator's events after
/// each call; a call made while more than 4 wait is `PRECOPY_ERR_OUT_OF_ORDER`.
///
/// # Safety
/// `coord` points at a `precopy_coordinator_t` nothing else uses during the call;
/// `event` at a `precopy_source_event_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_coordinator_handle_source_event(
    coord: *mut PrecopyCoordinator,
    stream: u32,
    event: *const PrecopySourceEvent,
    now_ns: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (c, ev) = unsafe { (state(coord)?, as_ref(event)?) };
        let stream = stream_index(stream)?;
        let result = match ev.kind {
            PRECOPY_SOURCE_EVENT_ROUND_MEASURED => c.handle_round_measured(
                stream,
                StreamRound {
                    round: ev.round,
                    pages_sent: ev.pages_sent,
                    wire_bytes: ev.wire_bytes,
                    dirty_pages: ev.dirty_pages,
                    codecs: CodecStats::default(),
                    deferred_pages: ev.deferred_pages,
                },
                ev.lz4 != 0,
                now_ns,
            ),
            PRECOPY_SOURCE_EVENT_PAUSE_GUEST => c.handle_pause_wanted(stream),
            PRECOPY_SOURCE_EVENT_COMPLETE => c.handle_complete(
                stream,
                u128::from(ev.digest_lo) | u128::from(ev.digest_hi) << 64,
                FinalRound {
                    round: ev.round,
                    pages_sent: ev.pages_sent,
                    wire_bytes: ev.wire_bytes,
                    codecs: CodecStats::default(),
                    predicted_downtime_ns: ev.predicted_downtime_ns,
                    digest_pages_read: ev.digest_pages_read,
                    digest_pages_folded: ev.digest_pages_folded,
                },
            ),
            _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
        };
        result.map_err(coordinator_code)
    })())
}

/// Pages dirtied since the streams harvested the round now ending (the host's count of
/// its bitmap, `precopy_bitmap_dirty_count`, after bringing in KVM's log), given just
/// before the round's last ROUND_MEASURED: a pause now would send them too, so the
/// prediction and the shrink rule count them (the dirty rate does not). Used by that
/// round's decision only; a host that does not count them leaves them at 0.
///
/// # Safety
/// `coord` points at a `precopy_coordinator_t` nothing else uses during the call.
#[no_mangle]
pub unsafe extern "C" fn precopy_coordinator_note_pending_pages(
    coord: *mut PrecopyCoordinator,
    pages: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let c = unsafe { state(coord) }?;
        c.note_pending_pages(pages);
        Ok(())
    })())
}

/// The host paused the guest (after PAUSE_GUEST), at `now_ns`.
///
/// # Safety
/// `coord` points at a `precopy_coordinator_t` nothing else uses during the call.
#[no_mangle]
pub unsafe extern "C" fn precopy_coordinator_guest_paused(
    coord: *mut PrecopyCoordinator,
    now_ns: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let c = unsafe { state(coord) }?;
        c.handle_guest_paused(now_ns).map_err(coordinator_code)
    })())
}

/// Destination stream `stream`'s verdict after its COMPLETE: `verified` 1 (its memory
/// matched the digest) or 0 (refused: the migration fails).
///
/// # Safety
/// `coord` points at a `precopy_coordinator_t` nothing else uses during the call.
#[no_mangle]
pub unsafe extern "C" fn precopy_coordinator_verdict(
    coord: *mut PrecopyCoordinator,
    stream: u32,
    verified: u32,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let c = unsafe { state(coord) }?;
        let ok = match verified {
            0 => false,
            1 => true,
            _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
        };
        c.handle_verdict(stream_index(stream)?, ok)
            .map_err(coordinator_code)
    })())
}

/// Stream `stream` failed (its engine or its transport): FAILED follows (later
/// failures are echoes and change nothing).
///
/// # Safety
/// `coord` points at a `precopy_coordinator_t` nothing else uses during the call.
#[no_mangle]
pub unsafe extern "C" fn precopy_coordinator_stream_failed(
    coord: *mut PrecopyCoordinator,
    stream: u32,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let c = unsafe { state(coord) }?;
        c.handle_failure(stream_index(stream)?)
            .map_err(coordinator_code)
    })())
}

fn switch_code(reason: SwitchReason) -> u32 {
    match reason {
        SwitchReason::DowntimeMet => PRECOPY_SWITCH_DOWNTIME_MET,
        SwitchReason::FewDirtyPages => PRECOPY_SWITCH_FEW_DIRTY_PAGES,
        SwitchReason::BoundReached => PRECOPY_SWITCH_BOUND_REACHED,
    }
}

fn failed_stream(e: CoordinatorError) -> u32 {
    match e {
        CoordinatorError::StreamFailed { stream } | CoordinatorError::Refused { stream } => {
            stream as u32
        }
        _ => 0,
    }
}

/// Takes the next thing to do into `*event` (`kind` `PRECOPY_COORDINATOR_EVENT_NONE`
/// when nothing waits).
///
/// # Safety
/// `coord` points at a `precopy_coordinator_t` nothing else uses during the call;
/// `event` at a writable `precopy_coordinator_event_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_coordinator_poll_event(
    coord: *mut PrecopyCoordinator,
    event: *mut PrecopyCoordinatorEvent,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (c, out) = unsafe { (state(coord)?, as_mut(event)?) };
        let d = PrecopyCoordinatorEvent::default();
        *out = match c.poll_event() {
            None => d,
            Some(CoreEvent::RoundDone(r)) => PrecopyCoordinatorEvent {
                kind: PRECOPY_COORDINATOR_EVENT_ROUND_DONE,
                round: r.outcome.stats.round,
                pages_sent: r.outcome.stats.pages_sent,
                wire_bytes: r.outcome.stats.wire_bytes,
                dirty_pages: r.outcome.stats.dirty_pages,
                predicted_downtime_ns: r.outcome.stats.predicted_downtime_ns,
                ..d
            },
            Some(CoreEvent::Throttle(p)) => PrecopyCoordinatorEvent {
                kind: PRECOPY_COORDINATOR_EVENT_THROTTLE,
                throttle_percent: u32::from(p),
                ..d
            },
            Some(CoreEvent::Decide(decision)) => {
                let (code, reason, throttle, predicted) = match decision {
                    Decision::Continue { throttle_percent } => (
                        PRECOPY_DECISION_CONTINUE,
                        PRECOPY_SWITCH_NONE,
                        throttle_percent,
                        0,
                    ),
                    Decision::SwitchOver {
                        predicted_downtime_ns,
                        reason,
                    } => (
                        PRECOPY_DECISION_SWITCH_OVER,
                        switch_code(reason),
                        0,
                        predicted_downtime_ns,
                    ),
                    Decision::Fail(_) => (PRECOPY_DECISION_FAIL, PRECOPY_SWITCH_NONE, 0, 0),
                };
                PrecopyCoordinatorEvent {
                    kind: PRECOPY_COORDINATOR_EVENT_DECIDE,
                    decision: code,
                    switch_reason: reason,
                    throttle_percent: u32::from(throttle),
                    round: c.round(),
                    predicted_downtime_ns: predicted,
                    ..d
                }
            }
            Some(CoreEvent::PauseGuest {
                predicted_downtime_ns,
            }) => PrecopyCoordinatorEvent {
                kind: PRECOPY_COORDINATOR_EVENT_PAUSE_GUEST,
                predicted_downtime_ns,
                ..d
            },
            Some(CoreEvent::GuestPaused) => PrecopyCoordinatorEvent {
                kind: PRECOPY_COORDINATOR_EVENT_GUEST_PAUSED,
                ..d
            },
            Some(CoreEvent::FinalRound(f)) => PrecopyCoordinatorEvent {
                kind: PRECOPY_COORDINATOR_EVENT_FINAL_ROUND,
                round: f.round,
                pages_sent: f.pages_sent,
                wire_bytes: f.wire_bytes,
                predicted_downtime_ns: f.predicted_downtime_ns,
                ..d
            },
            Some(CoreEvent::Done(r)) => PrecopyCoordinatorEvent {
                kind: PRECOPY_COORDINATOR_EVENT_DONE,
                round: r.rounds,
                pages_sent: r.pages_sent,
                wire_bytes: r.wire_bytes,
                predicted_downtime_ns: r.predicted_downtime_ns,
                paused_at_ns: r.paused_at_ns,
                ..d
            },
            Some(CoreEvent::Failed(e)) => PrecopyCoordinatorEvent {
                kind: PRECOPY_COORDINATOR_EVENT_FAILED,
                error: coordinator_code(e),
                stream: failed_stream(e),
                ..d
            },
        };
        Ok(())
    })())
}
