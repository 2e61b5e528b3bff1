//! The destination engine over caller memory: `precopy_applier_*`. One applier per
//! stream; several may write one guest memory (each stream carries its own pages).

use core::ffi::{c_char, c_int};

use core_precopy::engine::{Applier, Progress};
use core_precopy::layout::PageSize;
use core_precopy::wire::decoder_buffer_len;

use crate::error::{
    apply_code, layout_code, status, PRECOPY_ERR_BAD_ARGUMENT, PRECOPY_ERR_BUFFER_TOO_SMALL,
    PRECOPY_OK,
};
use crate::ffi::{as_mut, as_slice, as_slice_mut, assert_fits, write_message, write_opt, Blob};
use crate::memory::{memory_table, CMemory, PrecopyPageMemory};

/// Bytes in a [`PrecopyApplier`].
pub const PRECOPY_APPLIER_SIZE: usize = 2560;

/// What a destination stream applied so far (`precopy_applier_progress`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrecopyApplyProgress {
    /// Pages written as zero.
    pub zero_pages: u64,
    /// Raw pages written.
    pub raw_pages: u64,
    /// LZ4 pages written.
    pub lz4_pages: u64,
    /// Delta pages written.
    pub delta_pages: u64,
    /// Rounds ended.
    pub rounds: u64,
    /// 1 once the completion frame arrived and the memory matched the source's digest.
    pub complete: u32,
    /// The error that stopped the stream (`PRECOPY_OK` while none did).
    pub error: i32,
}

/// Storage for a destination stream's state (its buffers live in the caller's
/// storage): opaque, 64-byte aligned (static, stack or `aligned_alloc`), valid after
/// `precopy_applier_init`. Not to be copied.
#[repr(C, align(64))]
pub struct PrecopyApplier {
    /// Opaque.
    pub opaque: [u64; PRECOPY_APPLIER_SIZE / 8],
}

type Apply = Applier<CMemory, &'static mut [u8], &'static mut [u8]>;

/// An applier's state: the core's applier and the first error.
pub(crate) struct ApplierState {
    applier: Apply,
    error: c_int,
}

assert_fits!(PrecopyApplier, ApplierState);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyApplier {
    type State = ApplierState;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcAPPLYR");
}

/// Sets `*bytes_out` to the bytes of storage an applier for pages of `page_size`
/// bytes needs (its frame buffer and a page).
///
/// # Safety
/// `bytes_out` points at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_applier_storage_size(
    page_size: u64,
    bytes_out: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(bytes_out) }?;
        let page = PageSize::new(page_size).map_err(layout_code)?.bytes();
        *out = (decoder_buffer_len(page) + page).next_multiple_of(8);
        Ok(())
    })())
}

/// Starts the destination stream `app` writing into `*memory` (read and write
/// callbacks both required; the table is copied), its buffers in `storage` (8-byte
/// aligned, at least `precopy_applier_storage_size` of the memory's page size).
///
/// # Safety
/// `app` points at writable storage for a `precopy_applier_t`; `memory` at a table
/// whose context stays valid, and `storage` at `storage_bytes` bytes valid and used
/// only through this library, for as long as `app` is used.
#[no_mangle]
pub unsafe extern "C" fn precopy_applier_init(
    app: *mut PrecopyApplier,
    memory: *const PrecopyPageMemory,
    storage: *mut u64,
    storage_bytes: usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let table = unsafe { memory_table(memory) }?;
        let page = PageSize::new(table.page_size).map_err(layout_code)?.bytes();
        if table.total_pages == 0 {
            return Err(PRECOPY_ERR_BAD_ARGUMENT);
        }
        let memory = CMemory::new(table, table.page_size, table.total_pages, true)?;
        let frame_len = decoder_buffer_len(page);
        // Whole words only: the storage is taken as `uint64_t`.
        if storage_bytes / 8 * 8 < frame_len + page {
            return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: per this function's contract (the 'static lifetime stands for "as
        // long as the applier is used"); `as_slice_mut` checks NULL and alignment of
        // the words; bytes have alignment 1 and any value.
        let words: &'static mut [u64] = unsafe { as_slice_mut(storage, storage_bytes / 8) }?;
        // SAFETY: the same memory as bytes: `u8` has alignment 1, every byte of a
        // `u64` is initialized, and the exclusive borrow moves into the byte slice.
        let bytes: &'static mut [u8] = unsafe {
            core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        let (frame_buf, rest) = bytes.split_at_mut(frame_len);
        let applier = Applier::new(memory, frame_buf, &mut rest[..page]).map_err(apply_code)?;
        let state = ApplierState {
            applier,
            error: PRECOPY_OK,
        };
        // SAFETY: per this function's contract.
        match unsafe { PrecopyApplier::init(app, state) } {
            PRECOPY_OK => Ok(()),
            code => Err(code),
        }
    })())
}

/// Applies the next `len` bytes of the stream (any split of it); `*complete_out` (if
/// not NULL) gets 1 once the completion frame arrived and the memory matched the
/// source's digest. The first error is final: every later call returns it. Memory is
/// never written with bytes that failed a check.
///
/// # Safety
/// `app` points at a `precopy_applier_t` nothing else uses during the call; `bytes`
/// at `len` readable bytes; `complete_out` is NULL or points at a writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_applier_feed(
    app: *mut PrecopyApplier,
    bytes: *const u8,
    len: usize,
    complete_out: *mut u32,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (state, input) = unsafe { (PrecopyApplier::state_mut(app)?, as_slice(bytes, len)?) };
        if state.error != PRECOPY_OK {
            return Err(state.error);
        }
        let progress = state.applier.feed(input).map_err(|e| {
            state.error = apply_code(e);
            state.error
        })?;
        // SAFETY: per this function's contract.
        unsafe { write_opt(complete_out, u32::from(progress == Progress::Complete)) }
    })())
}

/// What the stream applied so far, into `*out`.
///
/// # Safety
/// `app` points at a `precopy_applier_t`; `out` at a writable
/// `precopy_apply_progress_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_applier_progress(
    app: *mut PrecopyApplier,
    out: *mut PrecopyApplyProgress,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (state, out) = unsafe { (PrecopyApplier::state_mut(app)?, as_mut(out)?) };
        let s = state.applier.stats();
        *out = PrecopyApplyProgress {
            zero_pages: s.zero_pages,
            raw_pages: s.raw_pages,
            lz4_pages: s.lz4_pages,
            delta_pages: s.delta_pages,
            rounds: s.rounds,
            complete: u32::from(state.applier.is_complete()),
            error: state.error,
        };
        Ok(())
    })())
}

/// The stream's verdict at the end of its input: `PRECOPY_OK` only when the
/// completion frame arrived and the memory matched the source's digest, which goes to
/// `digest_out[0]` (low 64 bits) and `digest_out[1]` (if `digest_out` is not NULL);
/// else the error that stopped it, or `PRECOPY_ERR_TRUNCATED` / `PRECOPY_ERR_STREAM`
/// for a stream that ended early.
///
/// # Safety
/// `app` points at a `precopy_applier_t`; `digest_out` is NULL or points at two
/// writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_applier_verdict(
    app: *mut PrecopyApplier,
    digest_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let state = unsafe { PrecopyApplier::state_mut(app) }?;
        if state.error != PRECOPY_OK {
            return Err(state.error);
        }
        state.applier.finish().map_err(apply_code)?;
        let digest = state.applier.digest().ok_or(PRECOPY_ERR_BAD_ARGUMENT)?;
        if !digest_out.is_null() {
            // SAFETY: per this function's contract.
            let out = unsafe { as_slice_mut(digest_out, 2) }?;
            out[0] = digest as u64;
            out[1] = (digest >> 64) as u64;
        }
        Ok(())
    })())
}

/// Writes what `precopy_applier_verdict` would report, for an operator ("frame 1832
/// (byte 7405568): checksum mismatch ..."; empty once the stream verified), into `buf`
/// (`*len` bytes, NUL-terminated) and sets `*len` to its full length.
/// `PRECOPY_ERR_BUFFER_TOO_SMALL` if truncated (`buf` NULL: a length query).
///
/// # Safety
/// `app` points at a `precopy_applier_t`; `len` at a writable `size_t`; `buf` is NULL or
/// points at `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_applier_error_message(
    app: *const PrecopyApplier,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let state = match unsafe { PrecopyApplier::state(app) } {
        Ok(state) => state,
        Err(code) => return code,
    };
    match state.applier.finish() {
        // SAFETY: per this function's contract.
        Ok(()) => unsafe { write_message(buf, len, "") },
        // SAFETY: per this function's contract.
        Err(e) => unsafe { write_message(buf, len, e) },
    }
}
