//! Guest memory the C host owns, reached through a table of C callbacks, and the
//! sizing helper of every engine's storage.

use core::ffi::{c_int, c_void};

use core_precopy::engine::storage_needs;
use core_precopy::memory::{MemoryError, PageMemory};

use crate::bitmap::{layout, PrecopyRegion};
use crate::error::{PRECOPY_ERR_BAD_ARGUMENT, PRECOPY_ERR_BAD_GUEST, PRECOPY_ERR_NULL};
use crate::ffi::{as_mut, as_ref, check_ptr};

/// Copies page `page` into `buf` (`len` bytes, one page); 0 on success, anything else
/// fails the migration with `PRECOPY_ERR_MEMORY`.
pub type PrecopyReadPageFn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, page: u64, buf: *mut u8, len: usize) -> c_int>;

/// Overwrites page `page` with `buf` (`len` bytes, one page); 0 on success, anything
/// else fails the stream with `PRECOPY_ERR_MEMORY`.
pub type PrecopyWritePageFn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, page: u64, buf: *const u8, len: usize) -> c_int>;

/// Guest memory as the engines see it: `total_pages` pages of `page_size` bytes, read
/// and written through the host's callbacks with its `ctx`. The source needs
/// `read_page`; a destination both.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyPageMemory {
    /// Passed to every callback, untouched.
    pub ctx: *mut c_void,
    /// Reads a page (required).
    pub read_page: PrecopyReadPageFn,
    /// Writes a page (required by a destination; may be NULL at the source).
    pub write_page: PrecopyWritePageFn,
    /// Page size, bytes (the layout's).
    pub page_size: u64,
    /// Pages (the layout's).
    pub total_pages: u64,
}

/// Bytes of storage each part of a migration needs (every part 8-byte aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PrecopyStorageNeeds {
    /// The dirty bitmap's words (`precopy_bitmap_init`), one for all streams.
    pub bitmap_bytes: u64,
    /// The largest stream's source engine (`precopy_source_init`; stream 0).
    pub source_bytes: u64,
    /// All streams' source engines together.
    pub sources_total_bytes: u64,
    /// The coordinator (`precopy_coordinator_init`).
    pub coordinator_bytes: u64,
    /// Each destination stream's applier (`precopy_applier_init`).
    pub applier_bytes: u64,
}

/// The host's memory behind the [`PageMemory`] trait.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CMemory {
    ctx: *mut c_void,
    read: unsafe extern "C" fn(*mut c_void, u64, *mut u8, usize) -> c_int,
    write: PrecopyWritePageFn,
    page_size: usize,
    total_pages: u64,
}

impl CMemory {
    /// Checks a C memory table: a read callback, a page size and page count matching
    /// `page_size` and `total_pages`, and a write callback when `writes`.
    pub(crate) fn new(
        m: &PrecopyPageMemory,
        page_size: u64,
        total_pages: u64,
        writes: bool,
    ) -> Result<Self, c_int> {
        let read = m.read_page.ok_or(PRECOPY_ERR_NULL)?;
        if writes && m.write_page.is_none() {
            return Err(PRECOPY_ERR_NULL);
        }
        if m.page_size != page_size || m.total_pages != total_pages {
            return Err(PRECOPY_ERR_BAD_GUEST);
        }
        Ok(CMemory {
            ctx: m.ctx,
            read,
            write: m.write_page,
            page_size: usize::try_from(page_size).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)?,
            total_pages,
        })
    }

    fn check(&self, page: u64, len: usize) -> Result<(), MemoryError> {
        if page >= self.total_pages {
            return Err(MemoryError::PageOutOfRange {
                page,
                total: self.total_pages,
            });
        }
        if len != self.page_size {
            return Err(MemoryError::BadBufferLength {
                len,
                page_size: self.page_size,
            });
        }
        Ok(())
    }
}

/// The error a failed callback becomes.
fn refused(page: u64) -> MemoryError {
    MemoryError::Inaccessible { page, addr: 0 }
}

impl PageMemory for CMemory {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn total_pages(&self) -> u64 {
        self.total_pages
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(page, buf.len())?;
        // SAFETY: the callback and its context are the host's (the contract of the
        // init call that took them); `buf` is one writable page for the call.
        match unsafe { (self.read)(self.ctx, page, buf.as_mut_ptr(), buf.len()) } {
            0 => Ok(()),
            _ => Err(refused(page)),
        }
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.check(page, data.len())?;
        let write = self.write.ok_or(refused(page))?;
        // SAFETY: as in `read_page`; `data` is one readable page for the call.
        match unsafe { write(self.ctx, page, data.as_ptr(), data.len()) } {
            0 => Ok(()),
            _ => Err(refused(page)),
        }
    }
}

/// Bytes of storage a migration of the guest layout (`page_size`, `regions`) over
/// `streams` streams (1 to 255) with a delta cache of `cache_bytes` per stream needs,
/// per part, into `*out`.
///
/// # Safety
/// `regions` points at `nregions` regions; `out` at a writable
/// `precopy_storage_needs_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_storage_needs(
    page_size: u64,
    regions: *const PrecopyRegion,
    nregions: usize,
    cache_bytes: u64,
    streams: u32,
    out: *mut PrecopyStorageNeeds,
) -> c_int {
    crate::error::status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(out) }?;
        // SAFETY: per this function's contract.
        let layout = unsafe { layout(page_size, regions, nregions) }?;
        let cache = usize::try_from(cache_bytes).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)?;
        let streams = usize::try_from(streams).map_err(|_| PRECOPY_ERR_BAD_ARGUMENT)?;
        let n = storage_needs(&layout, cache, streams).map_err(crate::error::engine_code)?;
        *out = PrecopyStorageNeeds {
            bitmap_bytes: n.bitmap_bytes as u64,
            source_bytes: n.source_bytes[0] as u64,
            sources_total_bytes: n.sources_total_bytes as u64,
            coordinator_bytes: n.coordinator_bytes as u64,
            applier_bytes: n.applier_bytes as u64,
        };
        Ok(())
    })())
}

/// The memory table at `m`, checked.
///
/// # Safety
/// As [`as_ref`].
pub(crate) unsafe fn memory_table<'a>(
    m: *const PrecopyPageMemory,
) -> Result<&'a PrecopyPageMemory, c_int> {
    check_ptr(m)?;
    // SAFETY: per this function's contract.
    unsafe { as_ref(m) }
}
