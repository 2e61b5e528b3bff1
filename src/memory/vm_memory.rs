//! [`PageMemory`] over rust-vmm vm-memory's guest memory (`GuestMemoryMmap` and any
//! other [`GuestMemoryBackend`]): the VMM's own guest RAM as a migration's source or
//! destination.
//!
//! # Why volatile copies, not `&[u8]`
//!
//! While a migration runs, the guest's vCPUs keep writing guest RAM (on the source
//! until the final pause; on a destination, devices may already map it). A Rust `&[u8]`
//! promises that no one mutates those bytes while it lives; over memory a vCPU is
//! writing that promise is false, so building one is a data race and undefined
//! behaviour: the compiler may, for instance, read a byte twice and assume both reads
//! agree (a zero check that passed and a copy that then sees other bytes), or keep a
//! value in a register across the vCPU's store. Every access here goes through
//! vm-memory's `read_slice`/`write_slice`, which copy with volatile accesses through a
//! `VolatileSlice`: each byte is read or written exactly once, in the order asked, and
//! no assumption about the memory's content survives the copy. A page read while a
//! vCPU writes it may come out torn; the dirty bitmap's ordering (write memory, then
//! mark; harvest, then read) makes the next round send it again.

use core::ops::Deref;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::{MemoryError, PageMemory, ZERO_PAGE};
use crate::layout::{GuestLayout, LayoutError};

/// Guest memory held by vm-memory (e.g. `&GuestMemoryMmap`, `Arc<GuestMemoryMmap>`, a
/// `GuestMemoryAtomic` load guard) as [`PageMemory`]: pages numbered densely over its
/// regions in address order, holes between regions taking no page numbers, exactly as
/// [`GuestLayout`] numbers them ([`layout`](Self::layout) is that layout).
///
/// vm-memory writes through shared references, so one `VmMemory<&G>` can be copied
/// into one view per stream of a multi-stream destination: each applier writes its own
/// pages from its own thread.
///
/// ```
/// use precopy::memory::{PageMemory, VmMemory};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// // 64 KiB at 0, a hole, 64 KiB at 1 MiB.
/// let guest = GuestMemoryMmap::<()>::from_ranges(&[
///     (GuestAddress(0), 64 << 10),
///     (GuestAddress(1 << 20), 64 << 10),
/// ])
/// .unwrap();
/// let mut memory = VmMemory::new(&guest, 4096).unwrap();
/// assert_eq!(memory.total_pages(), 32);
/// memory.write_page(16, &[7; 4096]).unwrap(); // the first page after the hole
/// let mut byte = [0u8; 1];
/// vm_memory::Bytes::read_slice(&guest, &mut byte, GuestAddress(1 << 20)).unwrap();
/// assert_eq!(byte, [7]);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct VmMemory<M> {
    memory: M,
    layout: GuestLayout,
    page_size: usize,
}

impl<M> VmMemory<M>
where
    M: Deref,
    M::Target: GuestMemoryBackend,
{
    /// Pages of `page_size` bytes over every region of `memory`. Errors (the
    /// [`GuestLayout`] rules): a page size other than a power of two from 512 B to 64 KiB, a region not
    /// aligned to whole pages, more regions than a layout holds.
    pub fn new(memory: M, page_size: u64) -> Result<Self, LayoutError> {
        let mut ranges = [(0u64, 0u64); crate::layout::MAX_REGIONS];
        let mut count = 0;
        for region in memory.iter() {
            let slot = ranges.get_mut(count).ok_or(LayoutError::TooManyRegions {
                count: memory.num_regions(),
            })?;
            *slot = (region.start_addr().0, region.len());
            count += 1;
        }
        let layout = GuestLayout::new(page_size, &ranges[..count])?;
        let page_size = layout.page_bytes();
        Ok(VmMemory {
            memory,
            layout,
            page_size,
        })
    }

    /// The guest layout the pages are numbered by (what a source puts in its stream
    /// header, and a destination expects).
    pub fn layout(&self) -> GuestLayout {
        self.layout
    }

    /// The guest memory.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Guest-physical address of page `page`, checking an access of `len` bytes.
    fn addr(&self, page: u64, len: usize) -> Result<GuestAddress, MemoryError> {
        if len != self.page_size {
            return Err(MemoryError::BadBufferLength {
                len,
                page_size: self.page_size,
            });
        }
        self.layout
            .addr_of(page)
            .map(GuestAddress)
            .map_err(|_| MemoryError::PageOutOfRange {
                page,
                total: self.layout.total_pages(),
            })
    }

    /// Reads page `page` into `buf` (volatile copies, see the module docs).
    fn read(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let addr = self.addr(page, buf.len())?;
        self.memory
            .read_slice(buf, addr)
            .map_err(|_| MemoryError::Inaccessible { page, addr: addr.0 })
    }

    /// Writes page `page` from `data` through the shared reference vm-memory takes.
    fn write(&self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        let addr = self.addr(page, data.len())?;
        self.memory
            .write_slice(data, addr)
            .map_err(|_| MemoryError::Inaccessible { page, addr: addr.0 })
    }

    /// Makes pages `first..first + count` zero, writing only pages that are not: a
    /// page of fresh anonymous memory never written stays unbacked.
    fn zero(&self, first: u64, count: u64) -> Result<(), MemoryError> {
        const PIECE: usize = 512;
        super::check_pages(first, count, self.layout.total_pages())?;
        let mut piece = [0u8; PIECE];
        for page in first..first + count {
            let addr = self.addr(page, self.page_size)?;
            let inaccessible = |_| MemoryError::Inaccessible { page, addr: addr.0 };
            // Every piece of the page is looked at until one is not zero.
            let mut dirty_from = None;
            let mut at = 0;
            while at < self.page_size {
                let n = PIECE.min(self.page_size - at);
                let piece = &mut piece[..n];
                self.memory
                    .read_slice(piece, GuestAddress(addr.0 + at as u64))
                    .map_err(inaccessible)?;
                if piece.iter().any(|&b| b != 0) {
                    dirty_from = Some(at);
                    break;
                }
                at += n;
            }
            // Zero the page from the first piece that was not zero to its end.
            let Some(mut at) = dirty_from else { continue };
            while at < self.page_size {
                let n = ZERO_PAGE.len().min(self.page_size - at);
                self.memory
                    .write_slice(&ZERO_PAGE[..n], GuestAddress(addr.0 + at as u64))
                    .map_err(inaccessible)?;
                at += n;
            }
        }
        Ok(())
    }
}

impl<M> PageMemory for VmMemory<M>
where
    M: Deref,
    M::Target: GuestMemoryBackend,
{
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn total_pages(&self) -> u64 {
        self.layout.total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.read(page, buf)
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.write(page, data)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.zero(first, count)
    }
}

/// Shared guest memory: several appliers write their own pages of one `VmMemory`
/// through `&VmMemory`, from their own threads (vm-memory writes through `&self`).
impl<M> PageMemory for &VmMemory<M>
where
    M: Deref,
    M::Target: GuestMemoryBackend,
{
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn total_pages(&self) -> u64 {
        self.layout.total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.read(page, buf)
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.write(page, data)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.zero(first, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn pages_follow_the_layout_across_a_hole() {
        let guest = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 4 * 4096),
            (GuestAddress(0x10_0000), 8 * 4096),
        ])
        .unwrap();
        let mut memory = VmMemory::new(&guest, 4096).unwrap();
        let layout = GuestLayout::new(4096, &[(0, 4 * 4096), (0x10_0000, 8 * 4096)]).unwrap();
        assert_eq!(memory.layout(), layout);
        for page in 0..12u64 {
            memory.write_page(page, &[page as u8 + 1; 4096]).unwrap();
            let mut byte = [0u8; 1];
            let addr = layout.addr_of(page).unwrap() + 4095;
            guest.read_slice(&mut byte, GuestAddress(addr)).unwrap();
            assert_eq!(byte[0], page as u8 + 1, "page {page}");
        }
        let mut buf = [0u8; 4096];
        assert_eq!(
            memory.read_page(12, &mut buf),
            Err(MemoryError::PageOutOfRange {
                page: 12,
                total: 12
            })
        );
        // Pages misaligned to the regions are refused.
        assert!(VmMemory::new(&guest, 1 << 16).is_err());
    }
}
