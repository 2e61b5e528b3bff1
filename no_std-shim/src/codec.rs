//! Page codecs over caller buffers: zero check, LZ4, delta against a caller-held base,
//! and decoding any of them.
//!
//! Page sizes are powers of two from `PRECOPY_MIN_PAGE_SIZE` to `PRECOPY_MAX_PAGE_SIZE`.
//! The host keeps the delta base (the version of each page it last sent) itself; the
//! library only computes and applies deltas.

use core::ffi::c_int;

use core_precopy::codec::{
    base_hash, check_page_size, decode_page, delta_apply, delta_encode, is_zero_page,
    lz4_decompress_page, lz4_max_output_len, CodecError, Encoding, Lz4Compressor,
};
use core_precopy::layout::{MAX_PAGE_SIZE, MIN_PAGE_SIZE};

use crate::error::{
    codec_code, status, PRECOPY_ERR_BAD_ARGUMENT, PRECOPY_ERR_BAD_LENGTH, PRECOPY_OK,
};
use crate::ffi::{as_mut, as_slice, as_slice_mut, assert_fits, out_buffer, Blob};

/// Smallest page size the codecs and the stream format accept.
pub const PRECOPY_MIN_PAGE_SIZE: usize = 512;
/// Largest page size the codecs and the stream format accept.
pub const PRECOPY_MAX_PAGE_SIZE: usize = 65536;
/// Bytes in a [`PrecopyLz4`].
pub const PRECOPY_LZ4_SIZE: usize = 16576;

const _: () = assert!(PRECOPY_MIN_PAGE_SIZE == MIN_PAGE_SIZE);
const _: () = assert!(PRECOPY_MAX_PAGE_SIZE == MAX_PAGE_SIZE);

/// Status (not an error): `precopy_delta_encode` gave up because the delta would not
/// fit in the output buffer, whose size is the caller's threshold. Send the page
/// another way (LZ4 or raw).
pub const PRECOPY_DELTA_GAVE_UP: c_int = 2;

/// Encoding: an all-zero page, no payload.
pub const PRECOPY_ENCODING_ZERO: u32 = 0;
/// Encoding: a delta against the version last sent.
pub const PRECOPY_ENCODING_DELTA: u32 = 1;
/// Encoding: an LZ4 block.
pub const PRECOPY_ENCODING_LZ4: u32 = 2;
/// Encoding: the page bytes as they are.
pub const PRECOPY_ENCODING_RAW: u32 = 3;

/// Storage for an LZ4 compressor (its 16 KiB hash table, kept between pages): opaque,
/// **64-byte aligned** (a static or stack variable, or `aligned_alloc(64, ...)`; plain
/// `malloc` memory is refused with `PRECOPY_ERR_MISALIGNED`), valid after
/// `precopy_lz4_init`. Not for concurrent use: one per encoding thread.
#[repr(C, align(64))]
pub struct PrecopyLz4 {
    /// Opaque.
    pub opaque: [u64; PRECOPY_LZ4_SIZE / 8],
}

assert_fits!(PrecopyLz4, Lz4Compressor);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyLz4 {
    type State = Lz4Compressor;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcLZ4CMP");
}

/// Converts a C page size, checking that the codecs and the stream format support it.
pub(crate) fn supported(size: usize) -> Result<usize, c_int> {
    check_page_size(size).map_err(codec_code)?;
    Ok(size)
}

/// The page at `page` of `size` bytes (size checked).
///
/// # Safety
/// As [`as_slice`].
unsafe fn page_ref<'a>(page: *const u8, size: usize) -> Result<&'a [u8], c_int> {
    let size = supported(size)?;
    // SAFETY: per this function's contract.
    unsafe { as_slice(page, size) }
}

/// Sets `*zero_out` to 1 if all `len` bytes at `page` are zero, else 0. Any length.
///
/// # Safety
/// `page` points at `len` readable bytes; `zero_out` at a writable `int`.
#[no_mangle]
pub unsafe extern "C" fn precopy_page_is_zero(
    page: *const u8,
    len: usize,
    zero_out: *mut c_int,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (page, out) = unsafe { (as_slice(page, len)?, as_mut(zero_out)?) };
        *out = c_int::from(is_zero_page(page));
        Ok(())
    })())
}

/// Sets `*hash_out` to the hash that names a delta base (XXH3-64 of the `len` bytes at
/// `page`), as delta frames carry it.
///
/// # Safety
/// `page` points at `len` readable bytes; `hash_out` at a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_base_hash(
    page: *const u8,
    len: usize,
    hash_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (page, out) = unsafe { (as_slice(page, len)?, as_mut(hash_out)?) };
        *out = base_hash(page);
        Ok(())
    })())
}

/// Sets `*len_out` to the output buffer `precopy_lz4_compress` needs for pages of
/// `page_size` bytes (LZ4's worst case, a little over a page).
///
/// # Safety
/// `len_out` points at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_lz4_max_output_len(
    page_size: usize,
    len_out: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(len_out) }?;
        *out = lz4_max_output_len(supported(page_size)?);
        Ok(())
    })())
}

/// Initializes `lz4` as a compressor with a fresh hash table.
///
/// # Safety
/// `lz4` points at writable storage for a `precopy_lz4_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_lz4_init(lz4: *mut PrecopyLz4) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { PrecopyLz4::init(lz4, Lz4Compressor::new()) }
}

/// Compresses the page at `page` (`page_size` bytes) into `out`. In: `*out_len` = the
/// capacity of `out` (at least `precopy_lz4_max_output_len`). Out: the compressed
/// length, which may exceed the page size (then send the page raw).
///
/// # Safety
/// `lz4` points at a `precopy_lz4_t` nothing else uses during the call; `page` at
/// `page_size` readable bytes; `out_len` at a writable `size_t`; `out` at `*out_len`
/// writable bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_lz4_compress(
    lz4: *mut PrecopyLz4,
    page: *const u8,
    page_size: usize,
    out: *mut u8,
    out_len: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (lz4, page, out_len) = unsafe {
            (
                PrecopyLz4::state_mut(lz4)?,
                page_ref(page, page_size)?,
                as_mut(out_len)?,
            )
        };
        // SAFETY: per this function's contract.
        let out = unsafe { out_buffer(out, out_len, lz4_max_output_len(page.len())) }?;
        *out_len = lz4.compress(page, out).map_err(codec_code)?;
        Ok(())
    })())
}

/// Decompresses the LZ4 block `data` (`len` bytes, untrusted) into `page`, which it
/// must fill exactly (`page_size` bytes). Corrupt data is `PRECOPY_ERR_CORRUPT_PAGE`;
/// `page` may then be partly written.
///
/// # Safety
/// `data` points at `len` readable bytes; `page` at `page_size` writable bytes, not
/// overlapping `data`.
#[no_mangle]
pub unsafe extern "C" fn precopy_lz4_decompress(
    data: *const u8,
    len: usize,
    page: *mut u8,
    page_size: usize,
) -> c_int {
    status((|| {
        let size = supported(page_size)?;
        // SAFETY: per this function's contract.
        let (data, page) = unsafe { (as_slice(data, len)?, as_slice_mut(page, size)?) };
        lz4_decompress_page(data, page).map_err(codec_code)
    })())
}

/// Encodes the page at `page` against `base` (the version the destination holds; both
/// `page_size` bytes) into `out`. In: `*out_len` = the capacity of `out`, which is the
/// threshold: the encoder gives up as soon as the delta would not fit and returns
/// `PRECOPY_DELTA_GAVE_UP` (not an error: send the page another way). Out: the delta's
/// length (0 for an identical page).
///
/// # Safety
/// `base` and `page` point at `page_size` readable bytes; `out_len` at a writable
/// `size_t`; `out` at `*out_len` writable bytes (NULL allowed when 0).
#[no_mangle]
pub unsafe extern "C" fn precopy_delta_encode(
    base: *const u8,
    page: *const u8,
    page_size: usize,
    out: *mut u8,
    out_len: *mut usize,
) -> c_int {
    let r = (|| {
        // SAFETY: per this function's contract.
        let (base, page, out_len) = unsafe {
            (
                page_ref(base, page_size)?,
                page_ref(page, page_size)?,
                as_mut(out_len)?,
            )
        };
        // SAFETY: per this function's contract.
        let out = unsafe { as_slice_mut(out, *out_len) }?;
        Ok(match delta_encode(base, page, out).map_err(codec_code)? {
            Some(n) => {
                *out_len = n;
                PRECOPY_OK
            }
            None => PRECOPY_DELTA_GAVE_UP,
        })
    })();
    r.unwrap_or_else(|code| code)
}

/// Applies the delta `data` (`len` bytes, untrusted) to `page` (`page_size` bytes),
/// which holds the base the delta was made against (check `precopy_base_hash` first).
/// Corrupt data is `PRECOPY_ERR_CORRUPT_PAGE`; `page` may then be partly updated, so
/// apply into a scratch copy and keep it only on success.
///
/// # Safety
/// `page` points at `page_size` writable bytes; `data` at `len` readable bytes, not
/// overlapping `page`.
#[no_mangle]
pub unsafe extern "C" fn precopy_delta_apply(
    page: *mut u8,
    page_size: usize,
    data: *const u8,
    len: usize,
) -> c_int {
    status((|| {
        let size = supported(page_size)?;
        // SAFETY: per this function's contract.
        let (page, data) = unsafe { (as_slice_mut(page, size)?, as_slice(data, len)?) };
        delta_apply(page, data).map_err(codec_code)
    })())
}

/// The core encoding of a `PRECOPY_ENCODING_*` value.
pub(crate) fn to_encoding(e: u32) -> Result<Encoding, c_int> {
    Ok(match e {
        PRECOPY_ENCODING_ZERO => Encoding::Zero,
        PRECOPY_ENCODING_DELTA => Encoding::Delta,
        PRECOPY_ENCODING_LZ4 => Encoding::Lz4,
        PRECOPY_ENCODING_RAW => Encoding::Raw,
        _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
    })
}

/// Decodes a payload of `encoding` (`PRECOPY_ENCODING_*`; `len` bytes, untrusted) into
/// `page` (`page_size` bytes): zero fills it, raw copies (`len` must be the page size),
/// LZ4 decompresses, delta applies onto the base `page` holds.
///
/// # Safety
/// `payload` points at `len` readable bytes (NULL allowed when 0); `page` at `page_size`
/// writable bytes, not overlapping `payload`.
#[no_mangle]
pub unsafe extern "C" fn precopy_page_decode(
    encoding: u32,
    payload: *const u8,
    len: usize,
    page: *mut u8,
    page_size: usize,
) -> c_int {
    status((|| {
        let encoding = to_encoding(encoding)?;
        let size = supported(page_size)?;
        // SAFETY: per this function's contract.
        let (payload, page) = unsafe { (as_slice(payload, len)?, as_slice_mut(page, size)?) };
        decode_page(encoding, payload, page).map_err(|e| match e {
            CodecError::BadPageLength { .. } => PRECOPY_ERR_BAD_LENGTH,
            e => codec_code(e),
        })
    })())
}
