//! Guest RAM: one page-aligned anonymous mapping, laid out by a [`GuestLayout`] (each
//! region of the layout is a contiguous piece of the mapping, in dense page order), and
//! read and written with volatile accesses because a running vCPU writes it too.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::ptr::NonNull;

use super::KvmError;
use crate::layout::GuestLayout;
use crate::memory::{MemoryError, PageMemory};

/// Guest RAM: `layout.total_bytes()` of anonymous memory, dense page `p` at byte
/// `p * page_size` of the mapping. A KVM memory slot per region of the layout points
/// into it ([`GuestRam::region_host_addr`]).
///
/// Shared between threads as `&GuestRam`: the vCPU writes it, the migration's encoders
/// read it, and a destination's appliers write their own pages of it through
/// `&GuestRam` views, all with volatile accesses (no reference to guest bytes is ever
/// formed).
pub struct GuestRam {
    ptr: NonNull<u8>,
    len: usize,
    layout: GuestLayout,
}

// SAFETY: `GuestRam` owns its mapping; all access goes through raw pointers with
// volatile reads and writes at page granularity, never through references, so sharing
// or sending it across threads creates no aliasing references. Concurrent writes to
// one page (a vCPU and an applier) are a guest-level race the migration protocol
// excludes (the destination's vCPU does not run while memory is applied).
unsafe impl Send for GuestRam {}
// SAFETY: as for `Send`.
unsafe impl Sync for GuestRam {}

impl std::fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRam")
            .field("bytes", &self.len)
            .field("regions", &self.layout.regions().len())
            .finish()
    }
}

impl GuestRam {
    /// Maps zeroed anonymous memory for `layout` (pages are not touched: the OS hands
    /// them out as the guest or the migration writes them).
    pub fn new(layout: GuestLayout) -> Result<Self, KvmError> {
        let len = usize::try_from(layout.total_bytes()).map_err(|_| KvmError::Mmap {
            bytes: layout.total_bytes(),
            error: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected and
        // the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(KvmError::Mmap {
                bytes: len as u64,
                error: std::io::Error::last_os_error(),
            });
        }
        // Transparent huge pages where the kernel offers them: a destination applying
        // a migration takes one page fault per 2 MiB instead of per 4 KiB page, which
        // would otherwise hold its apply behind the source. Advice only: a kernel
        // without THP keeps 4 KiB pages.
        // SAFETY: advice on the mapping just made, which nothing uses yet.
        unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        let ptr = NonNull::new(ptr.cast()).ok_or(KvmError::Mmap {
            bytes: len as u64,
            error: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        Ok(GuestRam { ptr, len, layout })
    }

    /// The guest's memory map.
    pub fn layout(&self) -> &GuestLayout {
        &self.layout
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: a layout has at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host address of region `index` of the layout (for its KVM memory slot).
    pub fn region_host_addr(&self, index: usize) -> Option<u64> {
        let r = self.layout.regions().get(index)?;
        Some(self.ptr.as_ptr() as u64 + (r.first_page << self.layout.page_shift()))
    }

    /// Host pointer to `[offset, offset + len)` of the mapping, checked.
    fn range(&self, offset: u64, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len as u64)?;
        if end > self.len as u64 {
            return None;
        }
        // SAFETY: `offset + len <= self.len`, so the result is inside the mapping.
        Some(unsafe { self.ptr.as_ptr().add(offset as usize) })
    }

    /// Host pointer to guest-physical `[gpa, gpa + len)`, which must lie in one region.
    fn gpa_range(&self, gpa: u64, len: usize) -> Result<*mut u8, KvmError> {
        let bad = || KvmError::BadAddress { gpa, len };
        let page = self.layout.page_of(gpa).map_err(|_| bad())?;
        let region = self.layout.region_of(gpa).ok_or_else(bad)?;
        let region_end = region.guest_addr + (region.pages << self.layout.page_shift());
        if gpa + len as u64 > region_end {
            return Err(bad());
        }
        let offset = (page << self.layout.page_shift()) + gpa % self.layout.page_size();
        self.range(offset, len).ok_or_else(bad)
    }

    /// Copies `bytes` into guest-physical memory at `gpa` (volatile, as a VMM loads
    /// code; KVM's dirty log does not see it).
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), KvmError> {
        let dst = self.gpa_range(gpa, bytes.len())?;
        // SAFETY: `dst..dst + len` is inside the mapping (checked by `gpa_range`).
        unsafe { volatile_copy(bytes.as_ptr(), dst, bytes.len()) };
        Ok(())
    }

    /// Reads `buf.len()` bytes of guest-physical memory at `gpa` (volatile).
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), KvmError> {
        let src = self.gpa_range(gpa, buf.len())?;
        // SAFETY: `src..src + len` is inside the mapping (checked by `gpa_range`).
        unsafe { volatile_copy(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Reads a little-endian `u64` at guest-physical `gpa`.
    pub fn read_u64(&self, gpa: u64) -> Result<u64, KvmError> {
        let mut b = [0u8; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes a little-endian `u64` at guest-physical `gpa`.
    pub fn write_u64(&self, gpa: u64, value: u64) -> Result<(), KvmError> {
        self.write(gpa, &value.to_le_bytes())
    }

    /// The first dense page at which `self` and `other` differ (`None`: byte-equal, and
    /// of the same layout). Both guests must be paused.
    pub fn first_difference(&self, other: &GuestRam) -> Option<u64> {
        if self.layout != other.layout {
            return Some(0);
        }
        let page = self.layout.page_bytes();
        let (mut a, mut b) = (vec![0u8; page], vec![0u8; page]);
        (0..self.layout.total_pages()).find(|&p| {
            let ok = self.read_page(p, &mut a).is_ok() && other.read_page(p, &mut b).is_ok();
            !ok || a != b
        })
    }

    fn page_ptr(&self, page: u64, len: usize) -> Result<*mut u8, MemoryError> {
        let page_size = self.layout.page_bytes();
        if len != page_size {
            return Err(MemoryError::BadBufferLength { len, page_size });
        }
        let total = self.layout.total_pages();
        if page >= total {
            return Err(MemoryError::PageOutOfRange { page, total });
        }
        self.range(page << self.layout.page_shift(), len)
            .ok_or(MemoryError::PageOutOfRange { page, total })
    }

    fn store_page(&self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        let dst = self.page_ptr(page, data.len())?;
        // SAFETY: one page inside the mapping (checked by `page_ptr`).
        unsafe { volatile_copy(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    fn clear_pages(&self, first: u64, count: u64) -> Result<(), MemoryError> {
        let total = self.layout.total_pages();
        let end = first.checked_add(count).filter(|&e| e <= total).ok_or(
            MemoryError::PageOutOfRange {
                page: first.saturating_add(count),
                total,
            },
        )?;
        if count == 0 {
            return Ok(());
        }
        let shift = self.layout.page_shift();
        let start = self
            .range(first << shift, (count << shift) as usize)
            .ok_or(MemoryError::PageOutOfRange { page: end, total })?;
        // Dropping the pages makes them read as zero, without reading or writing them:
        // a destination's zero runs (most of an idle guest) cost no page faults.
        // SAFETY: `start..start + count pages` is a page-aligned part of this private
        // anonymous mapping (checked by `range`); MADV_DONTNEED only discards its
        // contents (later reads see zeros), which is what zeroing asks for.
        let ret =
            unsafe { libc::madvise(start.cast(), (count << shift) as usize, libc::MADV_DONTNEED) };
        if ret == 0 {
            return Ok(());
        }
        let zero = vec![0u8; self.layout.page_bytes()];
        for page in first..end {
            self.store_page(page, &zero)?;
        }
        Ok(())
    }
}

/// Copies `len` bytes with volatile accesses, 8 bytes at a time where both sides allow.
///
/// # Safety
/// `src..src + len` must be readable and `dst..dst + len` writable, not overlapping.
unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    let aligned = (src as usize | dst as usize | len) % 8 == 0;
    if aligned {
        let (s, d) = (src.cast::<u64>(), dst.cast::<u64>());
        for i in 0..len / 8 {
            // SAFETY: in bounds and 8-byte aligned (caller's ranges, checked above).
            unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) };
        }
    } else {
        for i in 0..len {
            // SAFETY: in bounds (caller's ranges).
            unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`, unmapped once; the VMs whose slots
        // point into it hold a borrow or an `Arc` of it, so none is alive now.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl PageMemory for GuestRam {
    fn page_size(&self) -> usize {
        self.layout.page_bytes()
    }

    fn total_pages(&self) -> u64 {
        self.layout.total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let src = self.page_ptr(page, buf.len())?;
        // SAFETY: one page inside the mapping (checked by `page_ptr`).
        unsafe { volatile_copy(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.store_page(page, data)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.clear_pages(first, count)
    }
}

/// A destination's appliers each write their own pages of one `GuestRam` through a
/// `&GuestRam` (wrap each in a [`KeptHashes`](crate::memory::KeptHashes) of its shard).
impl PageMemory for &GuestRam {
    fn page_size(&self) -> usize {
        (**self).page_size()
    }

    fn total_pages(&self) -> u64 {
        (**self).total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read_page(page, buf)
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.store_page(page, data)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.clear_pages(first, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Shard;
    use crate::memory::KeptHashes;

    /// A destination applying into `&GuestRam` through [`KeptHashes`] keeps the hash of
    /// every page it zeroes or writes, so its digest at the switchover reads no memory.
    #[test]
    fn kept_hashes_over_guest_ram_keep_every_page() {
        let layout = GuestLayout::new(4096, &[(0, 2 << 20), (4 << 30, 2 << 20)]).unwrap();
        let ram = GuestRam::new(layout).unwrap();
        let mut view = KeptHashes::new(&ram, Shard::WHOLE);
        view.zero_pages(0, 1000).unwrap();
        view.write_page(1000, &[7; 4096]).unwrap();
        view.zero_pages(1001, 23).unwrap();
        assert_eq!(view.kept_pages(), 1024);
        let mut b = [0u8; 8];
        ram.read(4 << 30, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        ram.read((4 << 30) + (1000 - 512) * 4096, &mut b).unwrap();
        assert_eq!(b, [7; 8], "dense page 1000 is in the second region");
        // Zeroing drops written pages too.
        view.zero_pages(999, 2).unwrap();
        ram.read((4 << 30) + (1000 - 512) * 4096, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        assert!(view.zero_pages(1020, 5).is_err(), "past the end");
    }
}
