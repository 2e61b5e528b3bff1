//! Guest RAM: one page-aligned anonymous mapping, laid out by a [`GuestLayout`] (each
//! region of the layout is a contiguous piece of the mapping, in dense page order), and
//! read and written with volatile accesses because a running vCPU writes it too.

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::KvmError;
use crate::layout::{seek_bit, GuestLayout};
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
    /// `/proc/self/pagemap`, opened at the first question about untouched pages.
    pagemap: std::sync::OnceLock<Option<std::fs::File>>,
    /// A migration's destination ([`GuestRam::for_migration`]) until a VM is made over
    /// it: bit per page, set when the page is written through this `GuestRam`. A page
    /// whose bit is clear was never written and reads as zero. Empty otherwise.
    written: Box<[AtomicU64]>,
    /// Whether `written` still tells every page written (no vCPU ran over the RAM).
    fresh: AtomicBool,
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
        Ok(GuestRam {
            ptr,
            len,
            layout,
            pagemap: std::sync::OnceLock::new(),
            written: Box::new([]),
            fresh: AtomicBool::new(false),
        })
    }

    /// Memory a migration lands in: like [`new`](Self::new), and until a VM is made
    /// over it, it remembers the pages written through it (a bit per page), so the
    /// stream's zero runs over pages never written cost nothing (no `madvise`, no
    /// fault): most of an idle guest.
    pub fn for_migration(layout: GuestLayout) -> Result<Self, KvmError> {
        let mut ram = Self::new(layout)?;
        let words = layout.total_pages().div_ceil(64) as usize;
        ram.written = (0..words).map(|_| AtomicU64::new(0)).collect();
        ram.fresh = AtomicBool::new(true);
        Ok(ram)
    }

    /// A VM is being made over this memory: from now on its vCPUs write it unseen, so
    /// a destination's record of the pages written ends here.
    pub(crate) fn vm_created(&self) {
        self.fresh.store(false, Ordering::SeqCst);
    }

    /// Records pages `first..end` as written (a migration's destination only).
    fn mark_written(&self, first: u64, end: u64) {
        if !self.fresh.load(Ordering::Relaxed) {
            return;
        }
        for page in first..end {
            if let Some(w) = self.written.get((page / 64) as usize) {
                w.fetch_or(1 << (page % 64), Ordering::Relaxed);
            }
        }
    }

    /// Of `first..first + max`, how many leading pages a fresh destination never
    /// wrote (`None`: not a fresh destination).
    fn never_written(&self, first: u64, max: u64) -> Option<u64> {
        if !self.fresh.load(Ordering::Relaxed) || self.written.is_empty() {
            return None;
        }
        let end = first.saturating_add(max).min(self.layout.total_pages());
        if first >= end {
            return Some(0);
        }
        let word = |i: usize| self.written[i].load(Ordering::Relaxed);
        Some(seek_bit(word, first, end, true) - first)
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
        if !bytes.is_empty() {
            let offset = dst as u64 - self.ptr.as_ptr() as u64;
            let shift = self.layout.page_shift();
            self.mark_written(
                offset >> shift,
                ((offset + bytes.len() as u64 - 1) >> shift) + 1,
            );
        }
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

    /// How many pages from `first` on (at most `max`) the host never backed, from
    /// `/proc/self/pagemap` (see [`PageMemory::known_zero_pages`]); 0 with pages other
    /// than 4 KiB or without pagemap.
    fn untouched(&self, first: u64, max: u64) -> u64 {
        if self.layout.page_bytes() != 4096 {
            return 0;
        }
        match self.pagemap.get_or_init(super::pagemap::open) {
            Some(file) => super::pagemap::untouched_pages(
                file,
                self.ptr.as_ptr() as u64,
                self.layout.total_pages(),
                first,
                max,
            ),
            None => 0,
        }
    }

    fn store_page(&self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        let dst = self.page_ptr(page, data.len())?;
        self.mark_written(page, page + 1);
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
        // A fresh destination's pages never written read as zero already: its zero
        // runs (most of an idle guest) cost neither an madvise nor a fault.
        if count == 0 || self.never_written(first, count) == Some(count) {
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

    /// Pages the host never backed (never written, or discarded), from
    /// `/proc/self/pagemap`: they read as zero, and a source's bulk round sends them
    /// as zero runs without reading them. The answer is true when pagemap was read
    /// (windows of 4096 pages per thread, read again after 100 ms or when a query
    /// goes back); the guest may write such a page afterwards, which its dirty log
    /// reports, as it would a page read before the write. 4 KiB pages only; 0 where
    /// pagemap cannot be read.
    fn known_zero_pages(&self, first: u64, max: u64) -> u64 {
        self.never_written(first, max)
            .unwrap_or_else(|| self.untouched(first, max))
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

    /// A source's RAM answers from `/proc/self/pagemap`: pages never backed are known
    /// zero, a written page never is (with transparent huge pages its whole 2 MiB
    /// block is backed), and a query that goes back reads pagemap again.
    #[test]
    fn untouched_pages_are_known_zero_and_written_ones_are_not() {
        let layout = GuestLayout::flat(4096, 16 << 20).unwrap();
        let mut ram = GuestRam::new(layout).unwrap();
        let total = layout.total_pages();
        if ram.known_zero_pages(0, total) == 0 {
            eprintln!("SKIP: /proc/self/pagemap cannot be read here");
            return;
        }
        assert_eq!(ram.known_zero_pages(0, total), total);
        assert_eq!(ram.known_zero_pages(100, 5), 5, "at most max");
        ram.write_page(1500, &[9; 4096]).unwrap();
        // Asked again from the start: the written page ends the run.
        let run = ram.known_zero_pages(0, total);
        assert!(run <= 1500, "{run}");
        assert_eq!(ram.known_zero_pages(1500, 1), 0);
        // The 2 MiB block after it (pages 2048..) was never backed.
        assert_eq!(ram.known_zero_pages(2048, 512), 512);
        // Every page answered zero reads as zero.
        let mut buf = [0u8; 4096];
        for page in (0..total).step_by(37) {
            if ram.known_zero_pages(page, 1) == 1 {
                ram.read_page(page, &mut buf).unwrap();
                assert_eq!(buf, [0; 4096], "page {page}");
            }
        }
    }

    /// A destination's RAM knows the pages written through it until a VM is made
    /// over it: a zero run over pages never written is free, one over a written page
    /// zeroes it; then the vCPU writes unseen and pagemap answers instead.
    #[test]
    fn a_destination_knows_its_written_pages_until_a_vm_runs() {
        let layout = GuestLayout::flat(4096, 8 << 20).unwrap();
        let mut ram = GuestRam::for_migration(layout).unwrap();
        let total = layout.total_pages();
        assert_eq!(ram.known_zero_pages(0, total), total);
        ram.write_page(70, &[3; 4096]).unwrap();
        ram.write(10 * 4096 + 4090, &[1; 12]).unwrap(); // pages 10 and 11
        assert_eq!(ram.known_zero_pages(0, total), 10);
        assert_eq!(ram.known_zero_pages(12, total), 58);
        assert_eq!(ram.known_zero_pages(71, 9), 9);
        // Zeroing a written page really zeroes it.
        ram.zero_pages(60, 20).unwrap();
        let mut buf = [7u8; 4096];
        ram.read_page(70, &mut buf).unwrap();
        assert_eq!(buf, [0; 4096]);
        ram.vm_created();
        // No longer its own record: pagemap (or nothing) answers. Page 10 was backed.
        assert_eq!(ram.known_zero_pages(10, 1), 0);
    }
}
