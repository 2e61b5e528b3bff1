//! The stream format: the stream header, single frames (encode into a caller buffer,
//! decode from a caller buffer), and the memory digest of the completion frame.
//!
//! Decoding is total: any bytes give a frame or an error code, never a read outside
//! the given buffer. These functions check each unit's own bytes (length, kind,
//! checksum); the order of frames in a stream (rounds, switchover, completion) is the
//! host's to follow.

use core::ffi::{c_char, c_int};

use core_precopy::layout::Shard;
use core_precopy::layout::MIN_PAGE_SIZE;
use core_precopy::layout::{GuestLayout, MAX_REGIONS};
use core_precopy::memory::MemoryDigest;
use core_precopy::wire::{
    decoder_buffer_len, max_frame_len, Decoder, Event, Features, Frame, Location, StreamHeader,
    WireErrorKind, MAX_HEADER_LEN,
};

use crate::bitmap::{PrecopyRegion, PRECOPY_MAX_REGIONS};
use crate::codec::supported;
use crate::error::{
    layout_code, status, wire_code, wire_code_at, PRECOPY_ERR_BAD_ARGUMENT, PRECOPY_ERR_BAD_LENGTH,
    PRECOPY_ERR_BUFFER_TOO_SMALL, PRECOPY_ERR_TOO_MANY_REGIONS, PRECOPY_ERR_TRUNCATED,
    PRECOPY_MORE, PRECOPY_OK,
};
use crate::ffi::{
    as_mut, as_ref, as_slice, as_slice_mut, assert_fits, out_buffer, write_message, Blob,
};

/// Bytes of a frame header; a frame is at most this plus 16 plus a page.
pub const PRECOPY_FRAME_HEADER_LEN: usize = 12;
/// Bytes of the longest stream header (`PRECOPY_MAX_REGIONS` regions).
pub const PRECOPY_MAX_STREAM_HEADER_LEN: usize = 1068;
/// Bytes in a [`PrecopyDigest`].
pub const PRECOPY_DIGEST_SIZE: usize = 704;
/// Bytes in a [`PrecopyDecoder`].
pub const PRECOPY_DECODER_SIZE: usize = 1856;

/// Pages per chunk of the stream split: chunk `c` travels on stream `c % count`.
pub const PRECOPY_STREAM_CHUNK_PAGES: u64 = 512;

const _: () = assert!(PRECOPY_STREAM_CHUNK_PAGES == core_precopy::layout::SHARD_CHUNK_PAGES);

/// Decoder event: the stream header (read it with `precopy_decoder_header`).
pub const PRECOPY_EVENT_HEADER: u32 = 1;
/// Decoder event: a frame, in `frame`.
pub const PRECOPY_EVENT_FRAME: u32 = 2;

/// Stream feature: LZ4 page frames may appear.
pub const PRECOPY_FEATURE_LZ4: u32 = 1;
/// Stream feature: delta page frames may appear.
pub const PRECOPY_FEATURE_DELTA: u32 = 2;

/// Frame kind: pages `page..page + pages` are all zero.
pub const PRECOPY_FRAME_ZERO_RUN: u32 = 1;
/// Frame kind: page `page` is `data` (exactly one page).
pub const PRECOPY_FRAME_RAW: u32 = 2;
/// Frame kind: page `page` is the LZ4 block `data` decompressed.
pub const PRECOPY_FRAME_LZ4: u32 = 3;
/// Frame kind: page `page` is its base (hashing to `base_hash`) with delta `data`.
pub const PRECOPY_FRAME_DELTA: u32 = 4;
/// Frame kind: round `round` begins; `pages` are planned.
pub const PRECOPY_FRAME_ROUND_BEGIN: u32 = 5;
/// Frame kind: round `round` ends; its frames carried `pages` pages.
pub const PRECOPY_FRAME_ROUND_END: u32 = 6;
/// Frame kind: the guest is paused; `pages` pages remain to send.
pub const PRECOPY_FRAME_SWITCHOVER: u32 = 7;
/// Frame kind: all `pages` pages are sent; `digest_lo`/`digest_hi` is the memory digest.
pub const PRECOPY_FRAME_COMPLETE: u32 = 8;

const _: () = assert!(PRECOPY_FRAME_HEADER_LEN == core_precopy::wire::FRAME_HEADER_LEN);
const _: () = assert!(PRECOPY_MAX_STREAM_HEADER_LEN == MAX_HEADER_LEN);
const _: () = assert!(PRECOPY_FEATURE_LZ4 == Features::LZ4.0);
const _: () = assert!(PRECOPY_FEATURE_DELTA == Features::DELTA.0);

/// The stream header: what a destination needs before the first frame.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyStreamHeader {
    /// `PRECOPY_FEATURE_*` flags: the codecs the stream may use beyond zero and raw.
    pub features: u32,
    /// Page size in bytes (`PRECOPY_MIN_PAGE_SIZE..=PRECOPY_MAX_PAGE_SIZE`).
    pub page_size: u32,
    /// Identifies the migration (chosen by the source).
    pub session_id: [u8; 16],
    /// Regions used in `regions` (1..=`PRECOPY_MAX_REGIONS`).
    pub nregions: u32,
    /// Which stream of a multi-stream migration this is: `stream_index <
    /// stream_count` (see `precopy_stream_owns_page`). Encoding takes a
    /// `stream_count` of 0 as 1 (a zero-initialized header is the single stream).
    pub stream_index: u8,
    /// How many streams the migration has (1..=255; decoded: never 0).
    pub stream_count: u8,
    /// Must be zero.
    pub reserved: u16,
    /// The guest layout, `len` in bytes (decoded in guest address order).
    pub regions: [PrecopyRegion; PRECOPY_MAX_REGIONS],
}

/// One frame, of any kind; the fields a kind does not use are ignored when encoding and
/// zero when decoded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyFrame {
    /// `PRECOPY_FRAME_*`.
    pub kind: u32,
    /// Round number (`ROUND_BEGIN`, `ROUND_END`).
    pub round: u32,
    /// Page number (`RAW`, `LZ4`, `DELTA`), first page (`ZERO_RUN`).
    pub page: u64,
    /// Page count: run length (`ZERO_RUN`), planned (`ROUND_BEGIN`), carried
    /// (`ROUND_END`), remaining (`SWITCHOVER`), total (`COMPLETE`).
    pub pages: u64,
    /// XXH3-64 of the delta's base (`DELTA`; see `precopy_base_hash`).
    pub base_hash: u64,
    /// Low 64 bits of the memory digest (`COMPLETE`).
    pub digest_lo: u64,
    /// High 64 bits of the memory digest (`COMPLETE`).
    pub digest_hi: u64,
    /// Payload (`RAW`, `LZ4`, `DELTA`). Decoded frames point into the input buffer.
    pub data: *const u8,
    /// Payload bytes.
    pub data_len: usize,
}

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

/// Sets `*len_out` to the longest frame for pages of `page_size` bytes: the buffer
/// that holds any frame of such a stream.
///
/// # Safety
/// `len_out` points at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_frame_max_len(page_size: usize, len_out: *mut usize) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(len_out) }?;
        *out = max_frame_len(supported(page_size)?);
        Ok(())
    })())
}

/// Writes the stream header `*header` into `out`. In: `*out_len` = capacity (at most
/// `PRECOPY_MAX_STREAM_HEADER_LEN` is ever needed). Out: bytes written, or the bytes
/// needed with `PRECOPY_ERR_BUFFER_TOO_SMALL`. `stream_index` not below
/// `stream_count` (0 counting as 1), unknown features or a non-zero `reserved` is
/// `PRECOPY_ERR_BAD_ARGUMENT`.
///
/// # Safety
/// `header` points at a `precopy_stream_header_t`; `out_len` at a writable `size_t`;
/// `out` at `*out_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_stream_header_encode(
    header: *const PrecopyStreamHeader,
    out: *mut u8,
    out_len: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (h, out_len) = unsafe { (as_ref(header)?, as_mut(out_len)?) };
        if h.reserved != 0 {
            return Err(PRECOPY_ERR_BAD_ARGUMENT);
        }
        if h.features & !Features::ALL.0 != 0 {
            return Err(PRECOPY_ERR_BAD_ARGUMENT);
        }
        let n = h.nregions as usize;
        if n == 0 {
            return Err(PRECOPY_ERR_BAD_LENGTH);
        }
        if n > MAX_REGIONS {
            return Err(PRECOPY_ERR_TOO_MANY_REGIONS);
        }
        let page_size = supported(h.page_size as usize)?;
        let mut ranges = [(0u64, 0u64); MAX_REGIONS];
        for (dst, r) in ranges.iter_mut().zip(&h.regions[..n]) {
            *dst = (r.guest_addr, r.len);
        }
        let layout = GuestLayout::new(page_size as u64, &ranges[..n]).map_err(layout_code)?;
        let header = StreamHeader {
            features: Features(h.features),
            session_id: h.session_id,
            layout,
            stream: shard(h.stream_index, h.stream_count)?,
        };
        // SAFETY: per this function's contract.
        let out = unsafe { out_buffer(out, out_len, header.encoded_len()) }?;
        *out_len = header.emit(out).map_err(wire_code)?;
        Ok(())
    })())
}

/// Decodes and validates the stream header at the start of `bytes` (`len` bytes,
/// untrusted) into `*header`; `*consumed` gets its length. `PRECOPY_ERR_TRUNCATED`:
/// more bytes are needed (`*consumed` = the bytes needed so far as known).
///
/// # Safety
/// `bytes` points at `len` readable bytes; `header` at a writable
/// `precopy_stream_header_t`; `consumed` at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_stream_header_decode(
    bytes: *const u8,
    len: usize,
    header: *mut PrecopyStreamHeader,
    consumed: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bytes, out, consumed) =
            unsafe { (as_slice(bytes, len)?, as_mut(header)?, as_mut(consumed)?) };
        let h = StreamHeader::parse(bytes).map_err(|e| {
            if let WireErrorKind::Truncated { need, .. } = e {
                *consumed = need;
            }
            wire_code_at(e, Location::Header)
        })?;
        let c = c_header(&h);
        *out = c;
        *consumed = h.encoded_len();
        Ok(())
    })())
}

/// Stream `index` of `count` (`count` 0: the single stream, for zero-initialized
/// arguments); `PRECOPY_ERR_BAD_ARGUMENT` unless `index < count`.
fn shard(index: u8, count: u8) -> Result<Shard, c_int> {
    let count = if count == 0 { 1 } else { count };
    Shard::new(index, count).ok_or(PRECOPY_ERR_BAD_ARGUMENT)
}

/// Sets `*owns_out` to 1 if page `page` travels on stream `stream_index` of
/// `stream_count` (the pages are cut into chunks of `PRECOPY_STREAM_CHUNK_PAGES`; chunk
/// `c` travels on stream `c % stream_count`), else 0. A stream's completion digest is
/// the memory digest (`precopy_digest_update`, in page order) of only its own pages.
/// `stream_count` 0 counts as 1; `stream_index` not below it is
/// `PRECOPY_ERR_BAD_ARGUMENT`.
///
/// # Safety
/// `owns_out` points at a writable `int`.
#[no_mangle]
pub unsafe extern "C" fn precopy_stream_owns_page(
    stream_index: u8,
    stream_count: u8,
    page: u64,
    owns_out: *mut c_int,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(owns_out) }?;
        *out = c_int::from(shard(stream_index, stream_count)?.owns(page));
        Ok(())
    })())
}

/// Sets `*pages_out` to the number of pages of `0..total_pages` that travel on stream
/// `stream_index` of `stream_count` (0 counting as 1; `stream_index` not below it is
/// `PRECOPY_ERR_BAD_ARGUMENT`).
///
/// # Safety
/// `pages_out` points at a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_stream_pages(
    stream_index: u8,
    stream_count: u8,
    total_pages: u64,
    pages_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(pages_out) }?;
        *out = shard(stream_index, stream_count)?.pages(total_pages);
        Ok(())
    })())
}

/// The C header for a core header.
fn c_header(h: &StreamHeader) -> PrecopyStreamHeader {
    let regions = h.layout.regions();
    let mut c = PrecopyStreamHeader {
        features: h.features.0,
        page_size: h.page_size() as u32,
        session_id: h.session_id,
        nregions: regions.len() as u32,
        stream_index: h.stream.index(),
        stream_count: h.stream.count(),
        reserved: 0,
        regions: [PrecopyRegion {
            guest_addr: 0,
            len: 0,
        }; PRECOPY_MAX_REGIONS],
    };
    for (dst, r) in c.regions.iter_mut().zip(regions) {
        *dst = PrecopyRegion {
            guest_addr: r.guest_addr,
            len: r.pages << h.layout.page_shift(),
        };
    }
    c
}

/// The core frame a C frame describes.
///
/// # Safety
/// For page frames, `f.data` points at `f.data_len` readable bytes valid for `'a`.
unsafe fn frame<'a>(f: &PrecopyFrame) -> Result<Frame<'a>, c_int> {
    let data = || {
        // SAFETY: per this function's contract.
        unsafe { as_slice(f.data, f.data_len) }
    };
    Ok(match f.kind {
        PRECOPY_FRAME_ZERO_RUN => Frame::ZeroRun {
            first_page: f.page,
            count: f.pages,
        },
        PRECOPY_FRAME_RAW => Frame::Raw {
            page: f.page,
            data: data()?,
        },
        PRECOPY_FRAME_LZ4 => Frame::Lz4 {
            page: f.page,
            data: data()?,
        },
        PRECOPY_FRAME_DELTA => Frame::Delta {
            page: f.page,
            base_hash: f.base_hash,
            data: data()?,
        },
        PRECOPY_FRAME_ROUND_BEGIN => Frame::RoundBegin {
            round: f.round,
            planned_pages: f.pages,
        },
        PRECOPY_FRAME_ROUND_END => Frame::RoundEnd {
            round: f.round,
            pages: f.pages,
        },
        PRECOPY_FRAME_SWITCHOVER => Frame::Switchover {
            remaining_pages: f.pages,
        },
        PRECOPY_FRAME_COMPLETE => Frame::Complete {
            total_pages: f.pages,
            digest: u128::from(f.digest_lo) | u128::from(f.digest_hi) << 64,
        },
        _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
    })
}

/// A C frame with every field zero (no frame).
const NO_FRAME: PrecopyFrame = PrecopyFrame {
    kind: 0,
    round: 0,
    page: 0,
    pages: 0,
    base_hash: 0,
    digest_lo: 0,
    digest_hi: 0,
    data: core::ptr::null(),
    data_len: 0,
};

/// The C frame for a core frame.
fn c_frame(f: &Frame<'_>) -> PrecopyFrame {
    let mut c = PrecopyFrame {
        kind: f.kind() as u32,
        ..NO_FRAME
    };
    let mut set_data = |d: &[u8]| {
        c.data = d.as_ptr();
        c.data_len = d.len();
    };
    match *f {
        Frame::ZeroRun { first_page, count } => {
            c.page = first_page;
            c.pages = count;
        }
        Frame::Raw { page, data } | Frame::Lz4 { page, data } => {
            set_data(data);
            c.page = page;
        }
        Frame::Delta {
            page,
            base_hash,
            data,
        } => {
            set_data(data);
            c.page = page;
            c.base_hash = base_hash;
        }
        Frame::RoundBegin {
            round,
            planned_pages,
        } => {
            c.round = round;
            c.pages = planned_pages;
        }
        Frame::RoundEnd { round, pages } => {
            c.round = round;
            c.pages = pages;
        }
        Frame::Switchover { remaining_pages } => c.pages = remaining_pages,
        Frame::Complete {
            total_pages,
            digest,
        } => {
            c.pages = total_pages;
            c.digest_lo = digest as u64;
            c.digest_hi = (digest >> 64) as u64;
        }
    }
    c
}

/// Writes frame `*frame` for a stream of `page_size`-byte pages into `out`. In:
/// `*out_len` = capacity (`precopy_frame_max_len` always suffices). Out: bytes written,
/// or the bytes needed with `PRECOPY_ERR_BUFFER_TOO_SMALL`. A payload of the wrong
/// length for its kind (a raw page that is not one page, an LZ4 block longer than a
/// page, ...) is `PRECOPY_ERR_BAD_LENGTH`.
///
/// # Safety
/// `frame` points at a `precopy_frame_t` whose `data` points at `data_len` readable
/// bytes (page frames); `out_len` at a writable `size_t`; `out` at `*out_len` writable
/// bytes, not overlapping `data`.
#[no_mangle]
pub unsafe extern "C" fn precopy_frame_encode(
    frame: *const PrecopyFrame,
    page_size: usize,
    out: *mut u8,
    out_len: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (f, out_len) = unsafe { (as_ref(frame)?, as_mut(out_len)?) };
        let page_size = supported(page_size)?;
        // SAFETY: per this function's contract.
        let f = unsafe { self::frame(f) }?;
        let (min, max) = f.kind().body_len_range(page_size);
        let body = f.encoded_len() - PRECOPY_FRAME_HEADER_LEN;
        if !(min..=max).contains(&body) {
            return Err(PRECOPY_ERR_BAD_LENGTH);
        }
        // SAFETY: per this function's contract.
        let out = unsafe { out_buffer(out, out_len, f.encoded_len()) }?;
        *out_len = f.emit(page_size, out).map_err(wire_code)?;
        Ok(())
    })())
}

/// Decodes and checks (kind, length for `page_size`, checksum) the frame at the start
/// of `bytes` (`len` bytes, untrusted) into `*frame`; `*consumed` gets the frame's
/// length. A payload points into `bytes`. `PRECOPY_ERR_TRUNCATED`: more bytes are
/// needed (`*consumed` = the frame's length once its 12-byte header is in, else 12).
///
/// # Safety
/// `bytes` points at `len` readable bytes; `frame` at a writable `precopy_frame_t`;
/// `consumed` at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_frame_decode(
    bytes: *const u8,
    len: usize,
    page_size: usize,
    frame: *mut PrecopyFrame,
    consumed: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bytes, out, consumed) =
            unsafe { (as_slice(bytes, len)?, as_mut(frame)?, as_mut(consumed)?) };
        let page_size = supported(page_size)?;
        let f = Frame::parse(bytes, page_size).map_err(|e| {
            if let WireErrorKind::Truncated { need, .. } = e {
                *consumed = need;
            }
            wire_code(e)
        })?;
        *out = c_frame(&f);
        *consumed = f.encoded_len();
        Ok(())
    })())
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

/// Storage for a stream decoder: opaque, 8-byte aligned, valid after
/// `precopy_decoder_init`. Not for concurrent use, and not to be copied: it refers to
/// its buffer, which two copies would share.
#[repr(C)]
pub struct PrecopyDecoder {
    /// Opaque.
    pub opaque: [u64; PRECOPY_DECODER_SIZE / 8],
}

/// What the decoder produced.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyEvent {
    /// `PRECOPY_EVENT_HEADER` or `PRECOPY_EVENT_FRAME`.
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
    /// The frame (`PRECOPY_EVENT_FRAME`); its payload points into the input or into the
    /// decoder's buffer, valid until the next call on the decoder.
    pub frame: PrecopyFrame,
}

type StreamDecoder = Decoder<&'static mut [u8]>;

assert_fits!(PrecopyDecoder, StreamDecoder);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyDecoder {
    type State = StreamDecoder;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcDECODR");
}

/// Sets `*len_out` to the buffer a decoder needs for streams of pages up to
/// `max_page_size` bytes (the largest frame, or the largest header).
///
/// # Safety
/// `len_out` points at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_buffer_len(
    max_page_size: usize,
    len_out: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(len_out) }?;
        *out = decoder_buffer_len(supported(max_page_size)?);
        Ok(())
    })())
}

/// Initializes `decoder` for a new stream, gathering split frames in the caller's
/// `buf` (`len` bytes, at least `precopy_decoder_buffer_len` of the largest page size
/// expected; a stream whose page size needs more fails with
/// `PRECOPY_ERR_BUFFER_TOO_SMALL` when its header arrives).
///
/// # Safety
/// `decoder` points at writable storage for a `precopy_decoder_t`; `buf` at `len`
/// writable bytes that stay valid, and are used by nothing else, while the decoder is.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_init(
    decoder: *mut PrecopyDecoder,
    buf: *mut u8,
    len: usize,
) -> c_int {
    status((|| {
        if len < decoder_buffer_len(MIN_PAGE_SIZE) {
            return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: per this function's contract; the buffer outlives every use of the
        // decoder, which the 'static lifetime stands for.
        let buf: &'static mut [u8] = unsafe { as_slice_mut(buf, len) }?;
        // SAFETY: per this function's contract.
        match unsafe { PrecopyDecoder::init(decoder, Decoder::new(buf)) } {
            PRECOPY_OK => Ok(()),
            code => Err(code),
        }
    })())
}

/// Decodes the next header or frame from `*input` (`*input_len` bytes, untrusted, split
/// anywhere), advancing `*input` and `*input_len` past the bytes used. Returns
/// `PRECOPY_OK` with `*event` filled, or `PRECOPY_MORE` when the input is used up (feed
/// the next piece). Besides each frame's own checks, the stream's rules are enforced:
/// header first, pages in range and inside rounds, rounds in order with matching page
/// counts, codecs announced in the header, switchover before completion, nothing after
/// it. The first error is final: every later call returns it again;
/// `precopy_decoder_error_message` says what and where.
///
/// # Safety
/// `decoder` points at a `precopy_decoder_t` nothing else uses during the call; `input`
/// and `input_len` at writable values, `*input` at `*input_len` readable bytes (NULL
/// allowed when 0); `event` at a writable `precopy_event_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_next(
    decoder: *mut PrecopyDecoder,
    input: *mut *const u8,
    input_len: *mut usize,
    event: *mut PrecopyEvent,
) -> c_int {
    let r = (|| {
        // SAFETY: per this function's contract.
        let (d, input, input_len, event) = unsafe {
            (
                PrecopyDecoder::state_mut(decoder)?,
                as_mut(input)?,
                as_mut(input_len)?,
                as_mut(event)?,
            )
        };
        // SAFETY: per this function's contract.
        let bytes: &[u8] = unsafe { as_slice(*input, *input_len) }?;
        let mut rest = bytes;
        let next = d.next(&mut rest);
        let used = bytes.len() - rest.len();
        if used > 0 {
            // SAFETY: `used <= *input_len`: the result stays within (or one past the
            // end of) the caller's input buffer.
            *input = unsafe { (*input).add(used) };
            *input_len -= used;
        }
        let frame = match next.map_err(|e| wire_code_at(e.kind, e.location))? {
            None => return Ok(PRECOPY_MORE),
            Some(Event::Header(_)) => None,
            Some(Event::Frame(f)) => Some(c_frame(&f)),
        };
        *event = PrecopyEvent {
            kind: if frame.is_some() {
                PRECOPY_EVENT_FRAME
            } else {
                PRECOPY_EVENT_HEADER
            },
            reserved: 0,
            frame: frame.unwrap_or(NO_FRAME),
        };
        Ok(PRECOPY_OK)
    })();
    r.unwrap_or_else(|code| code)
}

/// Copies the stream header, once decoded, to `*header`; `PRECOPY_ERR_TRUNCATED`
/// before it has arrived.
///
/// # Safety
/// `decoder` points at a `precopy_decoder_t`; `header` at a writable
/// `precopy_stream_header_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_header(
    decoder: *const PrecopyDecoder,
    header: *mut PrecopyStreamHeader,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (d, out) = unsafe { (PrecopyDecoder::state(decoder)?, as_mut(header)?) };
        *out = c_header(d.header().ok_or(PRECOPY_ERR_TRUNCATED)?);
        Ok(())
    })())
}

/// Checks that the stream ended where it may: right after the completion frame.
/// `PRECOPY_OK`, or the decoder's error, or `PRECOPY_ERR_TRUNCATED` (it ends inside a
/// header or frame) or `PRECOPY_ERR_STREAM` (before the completion frame).
///
/// # Safety
/// `decoder` points at a `precopy_decoder_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_finish(decoder: *const PrecopyDecoder) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let d = unsafe { PrecopyDecoder::state(decoder) }?;
        d.finish().map_err(|e| wire_code_at(e.kind, e.location))
    })())
}

/// Writes what `precopy_decoder_finish` would report, for an operator ("frame 1832
/// (byte 7405568): checksum mismatch ..."; empty when the stream is complete), into
/// `buf` (`*len` bytes, NUL-terminated) and sets `*len` to its full length.
/// `PRECOPY_ERR_BUFFER_TOO_SMALL` if truncated (`buf` NULL: a length query).
///
/// # Safety
/// `decoder` points at a `precopy_decoder_t`; `len` at a writable `size_t`; `buf` is
/// NULL or points at `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_error_message(
    decoder: *const PrecopyDecoder,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let d = match unsafe { PrecopyDecoder::state(decoder) } {
        Ok(d) => d,
        Err(code) => return code,
    };
    match d.finish() {
        // SAFETY: per this function's contract.
        Ok(()) => unsafe { write_message(buf, len, "") },
        // SAFETY: per this function's contract.
        Err(e) => unsafe { write_message(buf, len, e) },
    }
}
