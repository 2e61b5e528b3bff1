//! rust-vmm `vm-memory` integration: our bitmap behind vm-memory's `Bitmap` traits, so
//! every write a VMM makes through `GuestMemoryMmap` is tracked.
//!
//! Two ways in:
//! - `GuestMemoryMmap<AtomicDirtyBitmap<Box<[AtomicU64]>>>`: vm-memory creates one bitmap
//!   per region (`NewBitmap::with_len`), offsets relative to the region, 4 KiB pages.
//! - [`guest_memory_mmap`]: one shared bitmap over the whole guest layout, each region
//!   marking into it through a [`RegionBitmap`]; one harvest sees every region.

use std::boxed::Box;
use std::format;
use std::string::ToString;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::vec::Vec;

use vm_memory::bitmap::{Bitmap, NewBitmap, RefSlice, WithBitmapSlice};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use super::AtomicDirtyBitmap;
use crate::layout::{GuestLayout, DEFAULT_PAGE_SIZE};

/// An owned bitmap, as vm-memory stores one per region.
type OwnedBitmap = AtomicDirtyBitmap<Box<[AtomicU64]>>;

impl<'a> WithBitmapSlice<'a> for OwnedBitmap {
    type S = RefSlice<'a, Self>;
}

impl Bitmap for OwnedBitmap {
    /// Marks `[offset, offset + len)` relative to the first region's address; bytes
    /// outside the layout are ignored, as vm-memory's own bitmaps do.
    fn mark_dirty(&self, offset: usize, len: usize) {
        let base = self.layout().regions().first().map_or(0, |r| r.guest_addr);
        let _ = self.mark_range(base.wrapping_add(offset as u64), len as u64);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        let base = self.layout().regions().first().map_or(0, |r| r.guest_addr);
        self.layout()
            .page_of(base.wrapping_add(offset as u64))
            .is_ok_and(|p| self.is_dirty(p))
    }

    fn slice_at(&self, offset: usize) -> RefSlice<'_, Self> {
        RefSlice::new(self, offset)
    }
}

impl Default for OwnedBitmap {
    /// A bitmap tracking nothing (no regions).
    fn default() -> Self {
        AtomicDirtyBitmap::new(
            GuestLayout::new(DEFAULT_PAGE_SIZE, &[]).expect("an empty layout is valid"),
        )
    }
}

impl NewBitmap for OwnedBitmap {
    /// A bitmap for one region of `len` bytes (rounded up to whole 4 KiB pages).
    fn with_len(len: usize) -> Self {
        let bytes = (len as u64).div_ceil(DEFAULT_PAGE_SIZE) * DEFAULT_PAGE_SIZE;
        let ranges: &[(u64, u64)] = if bytes == 0 { &[] } else { &[(0, bytes)] };
        let layout =
            GuestLayout::new(DEFAULT_PAGE_SIZE, ranges).expect("one page-aligned region is valid");
        AtomicDirtyBitmap::new(layout)
    }
}

/// One region's view of a bitmap shared by the whole guest: offsets are relative to
/// the region's guest address.
#[derive(Clone, Debug)]
pub struct RegionBitmap {
    bitmap: Arc<OwnedBitmap>,
    guest_addr: u64,
}

impl RegionBitmap {
    /// The view of `bitmap` for the region starting at `guest_addr`.
    pub fn new(bitmap: Arc<OwnedBitmap>, guest_addr: u64) -> Self {
        RegionBitmap { bitmap, guest_addr }
    }

    /// The shared bitmap.
    pub fn bitmap(&self) -> &Arc<OwnedBitmap> {
        &self.bitmap
    }
}

impl<'a> WithBitmapSlice<'a> for RegionBitmap {
    type S = RefSlice<'a, Self>;
}

impl Bitmap for RegionBitmap {
    fn mark_dirty(&self, offset: usize, len: usize) {
        let _ = self
            .bitmap
            .mark_range(self.guest_addr.wrapping_add(offset as u64), len as u64);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.bitmap
            .layout()
            .page_of(self.guest_addr.wrapping_add(offset as u64))
            .is_ok_and(|p| self.bitmap.is_dirty(p))
    }

    fn slice_at(&self, offset: usize) -> RefSlice<'_, Self> {
        RefSlice::new(self, offset)
    }
}

/// Anonymous guest memory for every region of `bitmap`'s layout, with every write made
/// through vm-memory marked in `bitmap`.
///
/// ```
/// use std::sync::Arc;
/// use precopy::bitmap::{guest_memory_mmap, AtomicDirtyBitmap};
/// use precopy::layout::GuestLayout;
/// use vm_memory::{Bytes, GuestAddress};
///
/// let layout = GuestLayout::new(4096, &[(0, 1 << 20), (1 << 30, 1 << 20)]).unwrap();
/// let bitmap = Arc::new(AtomicDirtyBitmap::new(layout));
/// let mem = guest_memory_mmap(&bitmap).unwrap();
/// mem.write_slice(&[1, 2, 3], GuestAddress((1 << 30) + 4096)).unwrap();
/// assert_eq!(bitmap.harvest().pages().collect::<Vec<_>>(), [256 + 1]);
/// ```
pub fn guest_memory_mmap(
    bitmap: &Arc<OwnedBitmap>,
) -> std::io::Result<GuestMemoryMmap<RegionBitmap>> {
    let layout = bitmap.layout();
    let regions = layout
        .regions()
        .iter()
        .map(|r| {
            let size = usize::try_from(r.pages << layout.page_shift())
                .map_err(|_| std::io::Error::other("region larger than the address space"))?;
            let view = RegionBitmap::new(Arc::clone(bitmap), r.guest_addr);
            // Private anonymous memory, readable and writable, reserved lazily (as
            // vm-memory's own `MmapRegion::new` maps it).
            let mapping = MmapRegionBuilder::new_with_bitmap(size, view)
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_PRIVATE)
                .build()
                .map_err(|e| std::io::Error::other(format!("mmap of {size} bytes: {e}")))?;
            GuestRegionMmap::new(mapping, GuestAddress(r.guest_addr))
                .ok_or_else(|| std::io::Error::other("region wraps the guest address space"))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(|e| std::io::Error::other(e.to_string()))
}
