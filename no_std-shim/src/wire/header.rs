//! The stream header: encode, decode, and which pages a stream of several carries.

use super::*;

/// The stream header: what a destination needs before the first frame.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyStreamHeader {
    /// `PRECOPY_FEATURE_*` flags: the codecs the stream may use beyond zero and raw,
    /// and whether it carries device state.
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
pub(super) fn c_header(h: &StreamHeader) -> PrecopyStreamHeader {
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
