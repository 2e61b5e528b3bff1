//! Single frames: encode into a caller buffer, decode from one.

use super::*;

/// One frame, of any kind; the fields a kind does not use are ignored when encoding and
/// zero when decoded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyFrame {
    /// `PRECOPY_FRAME_*`.
    pub kind: u32,
    /// Round number (`ROUND_BEGIN`, `ROUND_END`); the state's format version
    /// (`DEVICE_STATE`, at most 65535).
    pub round: u32,
    /// Page number (`RAW`, `LZ4`, `DELTA`), first page (`ZERO_RUN`); the state's id
    /// (`DEVICE_STATE`, at most 2^32 - 1).
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
    /// Payload (`RAW`, `LZ4`, `DELTA`), state (`DEVICE_STATE`). Decoded frames point
    /// into the input buffer.
    pub data: *const u8,
    /// Payload bytes.
    pub data_len: usize,
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
        PRECOPY_FRAME_DEVICE_STATE => Frame::DeviceState(DeviceState {
            id: u32::try_from(f.page).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)?,
            version: u16::try_from(f.round).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)?,
            data: data()?,
        }),
        _ => return Err(PRECOPY_ERR_BAD_ARGUMENT),
    })
}

/// A C frame with every field zero (no frame).
pub(super) const NO_FRAME: PrecopyFrame = PrecopyFrame {
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
pub(super) fn c_frame(f: &Frame<'_>) -> PrecopyFrame {
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
        Frame::DeviceState(DeviceState { id, version, data }) => {
            set_data(data);
            c.page = id.into();
            c.round = version.into();
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
