//! The memory digest of the completion frame, page by page.

use super::*;

/// Storage for a running memory digest (XXH3-128 over the XXH3-64 of every page, in
/// page order):
/// opaque, **64-byte aligned** (as `precopy_lz4_t`), valid after `precopy_digest_init`.
#[repr(C, align(64))]
pub struct PrecopyDigest {
    /// Opaque.
    pub opaque: [u64; PRECOPY_DIGEST_SIZE / 8],
}

assert_fits!(PrecopyDigest, MemoryDigest);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyDigest {
    type State = MemoryDigest;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcDIGEST");
}

/// Initializes `digest` as the digest of no pages.
///
/// # Safety
/// `digest` points at writable storage for a `precopy_digest_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_digest_init(digest: *mut PrecopyDigest) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { PrecopyDigest::init(digest, MemoryDigest::new()) }
}

/// Adds the next page (`len` bytes) to the digest; pages go in page order.
///
/// # Safety
/// `digest` points at a `precopy_digest_t` nothing else uses during the call; `page`
/// at `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_digest_update(
    digest: *mut PrecopyDigest,
    page: *const u8,
    len: usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (d, page) = unsafe { (PrecopyDigest::state_mut(digest)?, as_slice(page, len)?) };
        d.update(page);
        Ok(())
    })())
}

/// The digest of the pages added so far, as the completion frame carries it.
///
/// # Safety
/// `digest` points at a `precopy_digest_t`; `lo_out` and `hi_out` at writable
/// `uint64_t`s.
#[no_mangle]
pub unsafe extern "C" fn precopy_digest_finish(
    digest: *const PrecopyDigest,
    lo_out: *mut u64,
    hi_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (d, lo, hi) = unsafe {
            (
                PrecopyDigest::state(digest)?,
                as_mut(lo_out)?,
                as_mut(hi_out)?,
            )
        };
        let v = d.finish();
        *lo = v as u64;
        *hi = (v >> 64) as u64;
        Ok(())
    })())
}
