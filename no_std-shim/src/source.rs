//! The source engine over caller memory: `precopy_source_*`.
//!
//! The host gives a bitmap, a configuration, its guest memory as a table of callbacks
//! and storage sized by `precopy_source_storage_size`; it polls bytes
//! (`precopy_source_poll_transmit`) and events (`precopy_source_poll_event`) and
//! answers each event: round measurements and pause requests go to the coordinator,
//! whose decisions come back through `precopy_source_decide`.

use core::ffi::{c_char, c_int};
use core::sync::atomic::AtomicU64;

use core_precopy::codec::EncoderConfig;
use core_precopy::engine::{
    put_back_undelivered, source_storage_words, EngineError, SourceConfig, SourceEngine,
    SourceEvent, Verify,
};
use core_precopy::layout::Shard;
use core_precopy::schedule::{Decision, ScheduleError, SwitchReason};

use crate::bitmap::{bitmap, PrecopyBitmap};
use crate::coordinator::PrecopyCoordinatorEvent;
use crate::error::{
    engine_code, status, PRECOPY_ERR_BAD_ARGUMENT, PRECOPY_ERR_BUFFER_TOO_SMALL, PRECOPY_ERR_ENDED,
    PRECOPY_ERR_NOT_CONVERGING, PRECOPY_ERR_OUT_OF_ORDER, PRECOPY_OK,
};
use crate::ffi::{
    as_mut, as_ref, as_slice, as_slice_mut, assert_fits, write_message, write_opt, Blob,
};
use crate::memory::{memory_table, CMemory, PrecopyPageMemory};
use crate::schedule::{
    PRECOPY_DECISION_CONTINUE, PRECOPY_DECISION_FAIL, PRECOPY_DECISION_SWITCH_OVER,
    PRECOPY_SWITCH_BOUND_REACHED, PRECOPY_SWITCH_DOWNTIME_MET, PRECOPY_SWITCH_FEW_DIRTY_PAGES,
};

/// Bytes in a [`PrecopySource`].
pub const PRECOPY_SOURCE_SIZE: usize = 20480;
/// `precopy_source_config_t.verify`: the digest folds the hashes kept as pages were
/// sent (the default; re-read the paused source afterwards to catch lost writes).
pub const PRECOPY_VERIFY_AFTER_RESUME: u32 = 0;
/// `precopy_source_config_t.verify`: the digest re-reads all memory with the guest
/// paused.
pub const PRECOPY_VERIFY_IN_DOWNTIME: u32 = 1;
/// `precopy_source_event_t.kind`: nothing happened.
pub const PRECOPY_SOURCE_EVENT_NONE: u32 = 0;
/// A live round ended: pass the event to `precopy_coordinator_handle_source_event`.
pub const PRECOPY_SOURCE_EVENT_ROUND_MEASURED: u32 = 1;
/// A harvest is due: bring outside dirty logs into the bitmap, then call
/// `precopy_source_dirty_log_synced` (`paused` says which harvest).
pub const PRECOPY_SOURCE_EVENT_SYNC_DIRTY_LOG: u32 = 2;
/// The engine wants the pause: pass the event to the coordinator.
pub const PRECOPY_SOURCE_EVENT_PAUSE_GUEST: u32 = 3;
/// The completion frame is in the bytes polled: pass the event to the coordinator.
pub const PRECOPY_SOURCE_EVENT_COMPLETE: u32 = 4;

/// How a source engine migrates (`precopy_source_config_default` fills it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopySourceConfig {
    /// Delta cache budget, bytes (0: no delta encoding).
    pub cache_bytes: u64,
    /// Pages one poll walks at most (at least 1).
    pub max_pages_per_poll: u64,
    /// Names the migration in the stream header.
    pub session_id: [u8; 16],
    /// This engine's stream, below `stream_count`.
    pub stream_index: u32,
    /// Streams of the migration, 1 to 255.
    pub stream_count: u32,
    /// 1: skip pages dirtied again since their harvest until the next round.
    pub defer_redirtied: u32,
    /// 1: stop before every harvest with `PRECOPY_SOURCE_EVENT_SYNC_DIRTY_LOG`.
    pub sync_before_harvest: u32,
    /// `PRECOPY_VERIFY_*`.
    pub verify: u32,
    /// 1: LZ4 on (pages that are neither zero nor a small delta are compressed).
    pub lz4: u32,
}

/// What a source engine reported (`precopy_source_poll_event`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrecopySourceEvent {
    /// `PRECOPY_SOURCE_EVENT_*`.
    pub kind: u32,
    /// ROUND_MEASURED, COMPLETE: the round (1: the bulk round).
    pub round: u32,
    /// SYNC_DIRTY_LOG: 1 for the harvest after the pause.
    pub paused: u32,
    /// Whether LZ4 was on at the event.
    pub lz4: u32,
    /// ROUND_MEASURED, COMPLETE: pages sent in the round.
    pub pages_sent: u64,
    /// ROUND_MEASURED, COMPLETE: bytes the round put on the wire.
    pub wire_bytes: u64,
    /// ROUND_MEASURED: pages of this stream harvested dirty at its end.
    pub dirty_pages: u64,
    /// ROUND_MEASURED: pages deferred because they were dirtied again.
    pub deferred_pages: u64,
    /// PAUSE_GUEST, COMPLETE: the downtime predicted at the switchover, ns.
    pub predicted_downtime_ns: u64,
    /// COMPLETE: the stream's digest, low 64 bits.
    pub digest_lo: u64,
    /// COMPLETE: the stream's digest, high 64 bits.
    pub digest_hi: u64,
    /// COMPLETE: pages the digest read from memory.
    pub digest_pages_read: u64,
    /// COMPLETE: page hashes the digest folded.
    pub digest_pages_folded: u64,
}

/// Storage for a source engine's state (its pages live in the caller's storage):
/// opaque, 64-byte aligned (static, stack or `aligned_alloc`; other memory is refused
/// with `PRECOPY_ERR_MISALIGNED`), valid after `precopy_source_init`. Not to be
/// copied.
#[repr(C, align(64))]
pub struct PrecopySource {
    /// Opaque.
    pub opaque: [u64; PRECOPY_SOURCE_SIZE / 8],
}

type Engine = SourceEngine<'static, &'static [AtomicU64], &'static mut [u64]>;

/// A source's state: the engine until it ended, and why it ended.
pub(crate) struct SourceState {
    engine: Option<Engine>,
    memory: CMemory,
    /// The error that ended the engine (`None` while it runs, or after an abort).
    error: Option<EngineError>,
}

assert_fits!(PrecopySource, SourceState);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopySource {
    type State = SourceState;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcSOURCE");
}

fn flag(v: u32) -> Result<bool, c_int> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(PRECOPY_ERR_BAD_ARGUMENT),
    }
}

/// The core's configuration from the C one, for pages of `page_size` bytes.
fn to_config(c: &PrecopySourceConfig, page_size: usize) -> Result<(SourceConfig, bool), c_int> {
    let index = u8::try_from(c.stream_index).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)?;
    let count = u8::try_from(c.stream_count).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)?;
    let stream = Shard::new(index, count).ok_or(PRECOPY_ERR_BAD_ARGUMENT)?;
    let verify = match c.verify {
        PRECOPY_VERIFY_AFTER_RESUME => Verify::AfterResume,
        PRECOPY_VERIFY_IN_DOWNTIME => Verify::InDowntime,
        _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
    };
    let config = SourceConfig {
        encoder: EncoderConfig {
            cache_bytes: usize::try_from(c.cache_bytes).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)?,
            ..EncoderConfig::new(page_size)
        },
        session_id: c.session_id,
        defer_redirtied: flag(c.defer_redirtied)?,
        stream,
        verify,
        sync_before_harvest: flag(c.sync_before_harvest)?,
        max_pages_per_poll: c.max_pages_per_poll,
        // The C ABI's source carries no device state (the host sends its own after
        // the stream, or uses the Rust API).
        device_state: false,
    };
    Ok((config, flag(c.lz4)?))
}

/// Fills `*config` with the defaults: a 64 MiB delta cache, LZ4 on, redirtied pages
/// deferred, 16384 pages per poll at most, one stream, no sync point.
///
/// # Safety
/// `config` points at a writable `precopy_source_config_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_config_default(config: *mut PrecopySourceConfig) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let config = unsafe { as_mut(config) }?;
        let d = SourceConfig::new(4096);
        *config = PrecopySourceConfig {
            cache_bytes: d.encoder.cache_bytes as u64,
            max_pages_per_poll: d.max_pages_per_poll,
            session_id: d.session_id,
            stream_index: 0,
            stream_count: 1,
            defer_redirtied: u32::from(d.defer_redirtied),
            sync_before_harvest: 0,
            verify: PRECOPY_VERIFY_AFTER_RESUME,
            lz4: 1,
        };
        Ok(())
    })())
}

/// Sets `*bytes_out` to the bytes of storage `precopy_source_init` needs for the
/// bitmap's layout and `*config` (its stream and cache budget).
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `config` at a `precopy_source_config_t`;
/// `bytes_out` at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_storage_size(
    bm: *const PrecopyBitmap,
    config: *const PrecopySourceConfig,
    bytes_out: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, config, out) = unsafe { (bitmap(bm)?, as_ref(config)?, as_mut(bytes_out)?) };
        let (config, _) = to_config(config, bm.layout().page_size() as usize)?;
        let words = source_storage_words(bm.layout(), &config).map_err(engine_code)?;
        *out = words.checked_mul(8).ok_or(PRECOPY_ERR_BAD_ARGUMENT)?;
        Ok(())
    })())
}

/// Starts the source engine `src` of one stream at `now_ns`: over the bitmap `bm` (the
/// marks made before now are taken: the bulk round sends every page), with `*config`,
/// reading guest memory through `*memory` (its page size and count the bitmap's; the
/// table is copied), its state in `storage` (8-byte aligned, `storage_bytes` at least
/// what `precopy_source_storage_size` says). `src` is written whatever it held (its
/// bytes may be garbage, so they are not read): init over a source still running
/// forgets the pages it harvested and has not sent; `precopy_source_abort` it first.
///
/// # Safety
/// `src` points at writable storage for a `precopy_source_t`; `bm` at a bitmap,
/// `storage` at `storage_bytes` bytes and `memory`'s context, all valid and used only
/// through this library for as long as `src` is used.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_init(
    src: *mut PrecopySource,
    bm: *const PrecopyBitmap,
    config: *const PrecopySourceConfig,
    memory: *const PrecopyPageMemory,
    storage: *mut u64,
    storage_bytes: usize,
    now_ns: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract: the bitmap outlives the source.
        let (bm, config, table) = unsafe { (bitmap(bm)?, as_ref(config)?, memory_table(memory)?) };
        let layout = *bm.layout();
        let (config, lz4) = to_config(config, layout.page_size() as usize)?;
        let memory = CMemory::new(table, layout.page_size(), layout.total_pages(), false)?;
        if storage_bytes == 0 {
            return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: per this function's contract (the 'static lifetime stands for "as
        // long as the source is used"); `as_slice_mut` checks NULL and alignment.
        let words: &'static mut [u64] = unsafe { as_slice_mut(storage, storage_bytes / 8) }?;
        let mut engine = SourceEngine::over(bm, config, words, now_ns).map_err(engine_code)?;
        engine.set_lz4(lz4);
        let state = SourceState {
            engine: Some(engine),
            memory,
            error: None,
        };
        // SAFETY: per this function's contract.
        match unsafe { PrecopySource::init(src, state) } {
            PRECOPY_OK => Ok(()),
            code => Err(code),
        }
    })())
}

/// The running engine of `src`, or why there is none.
///
/// # Safety
/// `src` points at a `precopy_source_t` nothing else uses during `'a`.
unsafe fn engine<'a>(src: *mut PrecopySource) -> Result<(&'a mut Engine, CMemory), c_int> {
    // SAFETY: per this function's contract.
    let state = unsafe { PrecopySource::state_mut(src) }?;
    let memory = state.memory;
    Ok((state.engine.as_mut().ok_or(PRECOPY_ERR_ENDED)?, memory))
}

/// Sets `*len_out` to the smallest buffer `precopy_source_poll_transmit` takes.
///
/// # Safety
/// `src` points at a `precopy_source_t`; `len_out` at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_min_buffer(
    src: *mut PrecopySource,
    len_out: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let ((engine, _), out) = unsafe { (engine(src)?, as_mut(len_out)?) };
        *out = engine.min_buffer_len();
        Ok(())
    })())
}

/// Fills `out` (`out_len` bytes, at least `precopy_source_min_buffer`) with stream bytes
/// at `now_ns`; `*written` gets how many (0 is no error: check the events). An error
/// ends the engine: pages harvested but not sent are back in the bitmap, guest memory
/// was only read; later calls return `PRECOPY_ERR_ENDED`.
///
/// # Safety
/// `src` points at a `precopy_source_t` nothing else uses during the call; `out` at
/// `out_len` writable bytes; `written` at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_poll_transmit(
    src: *mut PrecopySource,
    now_ns: u64,
    out: *mut u8,
    out_len: usize,
    written: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (state, written) = unsafe { (PrecopySource::state_mut(src)?, as_mut(written)?) };
        *written = 0;
        let engine = state.engine.as_mut().ok_or(PRECOPY_ERR_ENDED)?;
        if out_len < engine.min_buffer_len() {
            return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: per this function's contract.
        let out = unsafe { as_slice_mut(out, out_len) }?;
        match engine.poll_transmit(&state.memory, now_ns, out) {
            Ok(n) => {
                *written = n;
                Ok(())
            }
            Err(e) => {
                // The engine put its pages back when it failed; it takes no more calls.
                state.engine = None;
                state.error = Some(e);
                Err(engine_code(e))
            }
        }
    })())
}

/// Takes what happened into `*event` (`kind` `PRECOPY_SOURCE_EVENT_NONE` when
/// nothing did). Each event asks for an answer before the engine produces more.
///
/// # Safety
/// `src` points at a `precopy_source_t` nothing else uses during the call; `event` at
/// a writable `precopy_source_event_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_poll_event(
    src: *mut PrecopySource,
    event: *mut PrecopySourceEvent,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let ((engine, _), out) = unsafe { (engine(src)?, as_mut(event)?) };
        let lz4 = u32::from(engine.lz4_enabled());
        *out = match engine.poll_event() {
            None => PrecopySourceEvent::default(),
            Some(SourceEvent::RoundMeasured(r)) => PrecopySourceEvent {
                kind: PRECOPY_SOURCE_EVENT_ROUND_MEASURED,
                round: r.round,
                pages_sent: r.pages_sent,
                wire_bytes: r.wire_bytes,
                dirty_pages: r.dirty_pages,
                deferred_pages: r.deferred_pages,
                ..PrecopySourceEvent::default()
            },
            // Never: the C source does not announce device state.
            Some(SourceEvent::DeviceState) => return Err(PRECOPY_ERR_OUT_OF_ORDER),
            Some(SourceEvent::SyncDirtyLog { paused }) => PrecopySourceEvent {
                kind: PRECOPY_SOURCE_EVENT_SYNC_DIRTY_LOG,
                paused: u32::from(paused),
                ..PrecopySourceEvent::default()
            },
            Some(SourceEvent::PauseGuest {
                predicted_downtime_ns,
            }) => PrecopySourceEvent {
                kind: PRECOPY_SOURCE_EVENT_PAUSE_GUEST,
                predicted_downtime_ns,
                ..PrecopySourceEvent::default()
            },
            Some(SourceEvent::Complete { digest, round }) => PrecopySourceEvent {
                kind: PRECOPY_SOURCE_EVENT_COMPLETE,
                round: round.round,
                pages_sent: round.pages_sent,
                wire_bytes: round.wire_bytes,
                predicted_downtime_ns: round.predicted_downtime_ns,
                digest_lo: digest as u64,
                digest_hi: (digest >> 64) as u64,
                digest_pages_read: round.digest_pages_read,
                digest_pages_folded: round.digest_pages_folded,
                ..PrecopySourceEvent::default()
            },
        };
        out.lz4 = lz4;
        Ok(())
    })())
}

/// The core's decision from a coordinator's `PRECOPY_COORDINATOR_EVENT_DECIDE`.
pub(crate) fn decision_of(ev: &PrecopyCoordinatorEvent) -> Result<Decision, c_int> {
    if ev.kind != crate::coordinator::PRECOPY_COORDINATOR_EVENT_DECIDE {
        return Err(PRECOPY_ERR_BAD_ARGUMENT);
    }
    Ok(match ev.decision {
        PRECOPY_DECISION_CONTINUE => Decision::Continue {
            throttle_percent: u8::try_from(ev.throttle_percent)
                .ok()
                .filter(|&p| p <= 100)
                .ok_or(PRECOPY_ERR_BAD_ARGUMENT)?,
        },
        PRECOPY_DECISION_SWITCH_OVER => Decision::SwitchOver {
            predicted_downtime_ns: ev.predicted_downtime_ns,
            reason: match ev.switch_reason {
                PRECOPY_SWITCH_DOWNTIME_MET => SwitchReason::DowntimeMet,
                PRECOPY_SWITCH_FEW_DIRTY_PAGES => SwitchReason::FewDirtyPages,
                PRECOPY_SWITCH_BOUND_REACHED => SwitchReason::BoundReached,
                _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
            },
        },
        PRECOPY_DECISION_FAIL => Decision::Fail(ScheduleError::NotConverging {
            rounds: ev.round,
            bound: "a bound of the policy",
            dirty_pages_per_sec: 0.0,
            bandwidth_bytes_per_sec: 0.0,
            predicted_downtime_ns: ev.predicted_downtime_ns,
            downtime_limit_ns: 0,
        }),
        _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
    })
}

/// Passes the coordinator's decision (`*decide`, a `PRECOPY_COORDINATOR_EVENT_DECIDE`
/// event) to the engine, after its ROUND_MEASURED: continue with the next round,
/// switch over (a PAUSE_GUEST event follows), or fail (the engine ends, its pages back
/// in the bitmap, `PRECOPY_ERR_NOT_CONVERGING`).
///
/// # Safety
/// `src` points at a `precopy_source_t` nothing else uses during the call; `decide` at
/// a `precopy_coordinator_event_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_decide(
    src: *mut PrecopySource,
    decide: *const PrecopyCoordinatorEvent,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (state, ev) = unsafe { (PrecopySource::state_mut(src)?, as_ref(decide)?) };
        let engine = state.engine.as_mut().ok_or(PRECOPY_ERR_ENDED)?;
        let decision = decision_of(ev)?;
        match engine.decide(decision) {
            Ok(()) => Ok(()),
            Err(e) if engine_code(e) == PRECOPY_ERR_OUT_OF_ORDER => Err(PRECOPY_ERR_OUT_OF_ORDER),
            Err(e) => {
                state.engine = None;
                state.error = Some(e);
                Err(PRECOPY_ERR_NOT_CONVERGING)
            }
        }
    })())
}

/// The host paused the guest (after the coordinator's GUEST_PAUSED), at `now_ns`: the
/// final harvest happens here (or after the SYNC_DIRTY_LOG event this queues).
///
/// # Safety
/// `src` points at a `precopy_source_t` nothing else uses during the call.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_guest_paused(
    src: *mut PrecopySource,
    now_ns: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (engine, _) = unsafe { engine(src) }?;
        engine.guest_paused(now_ns).map_err(engine_code)
    })())
}

/// The pre-harvest sync point: after a SYNC_DIRTY_LOG event the host cleared and
/// re-protected its outside dirty log (KVM_CLEAR_DIRTY_LOG, dirty-ring reset), then
/// ORed what it took into the bitmap; the harvest happens here, at `now_ns`.
///
/// # Safety
/// `src` points at a `precopy_source_t` nothing else uses during the call.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_dirty_log_synced(
    src: *mut PrecopySource,
    now_ns: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (state, _) = (unsafe { PrecopySource::state_mut(src) }?, ());
        let engine = state.engine.as_mut().ok_or(PRECOPY_ERR_ENDED)?;
        match engine.dirty_log_synced(now_ns) {
            Ok(()) => Ok(()),
            Err(e) if engine_code(e) == PRECOPY_ERR_OUT_OF_ORDER => Err(PRECOPY_ERR_OUT_OF_ORDER),
            Err(e) => {
                state.engine = None;
                state.error = Some(e);
                Err(engine_code(e))
            }
        }
    })())
}

/// Abandons the migration on this stream: pages harvested but not yet in bytes polled
/// go back into the bitmap (in the bulk round, every page not reached); bytes polled
/// but not delivered are the host's to put back (`precopy_put_back_undelivered`). Guest
/// memory was never written. Later calls on `src` return `PRECOPY_ERR_ENDED`; aborting
/// twice is `PRECOPY_ERR_ENDED` too.
///
/// # Safety
/// `src` points at a `precopy_source_t` nothing else uses during the call.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_abort(src: *mut PrecopySource) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let state = unsafe { PrecopySource::state_mut(src) }?;
        state.engine.take().ok_or(PRECOPY_ERR_ENDED)?.abort();
        Ok(())
    })())
}

/// Writes why the engine ended, for an operator ("reading guest memory: page 7 ...";
/// empty while it runs, or after an abort), into `buf` (`*len` bytes, NUL-terminated)
/// and sets `*len` to its full length. `PRECOPY_ERR_BUFFER_TOO_SMALL` if truncated
/// (`buf` NULL: a length query).
///
/// # Safety
/// `src` points at a `precopy_source_t`; `len` at a writable `size_t`; `buf` is NULL or
/// points at `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_source_error_message(
    src: *const PrecopySource,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let state = match unsafe { PrecopySource::state(src) } {
        Ok(state) => state,
        Err(code) => return code,
    };
    match state.error {
        // SAFETY: per this function's contract.
        Some(e) => unsafe { write_message(buf, len, e) },
        // SAFETY: per this function's contract.
        None => unsafe { write_message(buf, len, "") },
    }
}

/// Marks dirty again every page carried by `bytes` (`len` bytes: the output of one or
/// more `precopy_source_poll_transmit` calls, from the start of one, that did not all
/// reach the destination); `*pages_out` (if not NULL) gets the pages marked.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `bytes` at `len` readable bytes; `pages_out`
/// is NULL or points at a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_put_back_undelivered(
    bm: *const PrecopyBitmap,
    bytes: *const u8,
    len: usize,
    pages_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, bytes) = unsafe { (bitmap(bm)?, as_slice(bytes, len)?) };
        let pages = put_back_undelivered(bm, bytes).map_err(engine_code)?;
        // SAFETY: per this function's contract.
        unsafe { write_opt(pages_out, pages) }
    })())
}
