//! Guest-physical layout: regions with holes, mapped onto a dense page index.

use super::{LayoutError, PageSize};

/// The most regions a [`GuestLayout`] holds. Fixed so the layout needs no allocator
/// (a C host or a bare-metal monitor can build one on its stack).
pub const MAX_REGIONS: usize = 64;

/// One contiguous guest-physical range of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Region {
    /// Guest-physical address of the first byte; a multiple of the page size.
    pub guest_addr: u64,
    /// Number of pages in the region.
    pub pages: u64,
    /// Dense index of the region's first page: regions are numbered in address order
    /// and holes take no page numbers.
    pub first_page: u64,
}

impl Region {
    /// Guest-physical address one past the last byte, given the layout's page shift.
    #[inline]
    fn end_addr(&self, page_shift: u32) -> u64 {
        self.guest_addr + (self.pages << page_shift)
    }
}

/// The guest's memory map: a [`PageSize`] and up to
/// [`MAX_REGIONS`] non-overlapping regions. Pages are numbered densely from 0 in guest
/// address order; holes between regions take no page numbers and no bitmap bits.
///
/// ```
/// use precopy::layout::GuestLayout;
/// // 3 GiB below the PCI hole, 1 GiB above 4 GiB, 4 KiB pages.
/// let layout = GuestLayout::new(4096, &[(0, 3 << 30), (4 << 30, 1 << 30)]).unwrap();
/// assert_eq!(layout.total_pages(), 1 << 20);
/// assert_eq!(layout.page_of(4 << 30).unwrap(), 3 << 18);
/// assert_eq!(layout.addr_of(3 << 18).unwrap(), 4 << 30);
/// assert!(layout.page_of(3 << 30).is_err()); // in the hole
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    page_shift: u32,
    count: usize,
    regions: [Region; MAX_REGIONS],
    total_pages: u64,
}

impl GuestLayout {
    /// Builds a layout from `(guest_addr, len_bytes)` ranges in any order.
    ///
    /// Errors: a page size other than a power of two from 512 B to 64 KiB
    /// ([`PageSize`]), a range not page-aligned, empty, wrapping
    /// past the end of the address space or overlapping another, or more than
    /// [`MAX_REGIONS`] ranges.
    pub fn new(page_size: u64, ranges: &[(u64, u64)]) -> Result<Self, LayoutError> {
        let page_size = PageSize::new(page_size)?.bytes() as u64;
        if ranges.len() > MAX_REGIONS {
            return Err(LayoutError::TooManyRegions {
                count: ranges.len(),
            });
        }
        let page_shift = page_size.trailing_zeros();
        let mut layout = GuestLayout {
            page_shift,
            count: 0,
            regions: [Region::default(); MAX_REGIONS],
            total_pages: 0,
        };
        for &(addr, len) in ranges {
            if len == 0 || addr % page_size != 0 || len % page_size != 0 {
                return Err(LayoutError::BadRegion { addr, len });
            }
            if addr.checked_add(len).is_none() {
                return Err(LayoutError::BadRegion { addr, len });
            }
            // Insertion sort by address: at most MAX_REGIONS entries, no allocator.
            let mut at = layout.count;
            while at > 0 && layout.regions[at - 1].guest_addr > addr {
                layout.regions[at] = layout.regions[at - 1];
                at -= 1;
            }
            layout.regions[at] = Region {
                guest_addr: addr,
                pages: len >> page_shift,
                first_page: 0,
            };
            layout.count += 1;
        }
        let mut next_page = 0u64;
        for i in 0..layout.count {
            if i > 0 {
                let prev = layout.regions[i - 1];
                if prev.end_addr(page_shift) > layout.regions[i].guest_addr {
                    let r = layout.regions[i];
                    return Err(LayoutError::OverlappingRegions {
                        first: prev.guest_addr,
                        second: r.guest_addr,
                    });
                }
            }
            layout.regions[i].first_page = next_page;
            next_page += layout.regions[i].pages;
        }
        layout.total_pages = next_page;
        Ok(layout)
    }

    /// A layout of one region of `len` bytes at guest address 0.
    pub fn flat(page_size: u64, len: u64) -> Result<Self, LayoutError> {
        Self::new(page_size, &[(0, len)])
    }

    /// Page size in bytes.
    #[inline]
    pub fn page_size(&self) -> u64 {
        1 << self.page_shift
    }

    /// The page size, as validated.
    #[inline]
    pub fn page(&self) -> PageSize {
        // Validated by `new`, the only constructor.
        PageSize::new(self.page_size()).unwrap_or_default()
    }

    /// Page size in bytes, as a `usize` (buffers).
    #[inline]
    pub fn page_bytes(&self) -> usize {
        1 << self.page_shift
    }

    /// log2 of the page size.
    #[inline]
    pub fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// Total number of pages over all regions (the bitmap's length in bits).
    #[inline]
    pub fn total_pages(&self) -> u64 {
        self.total_pages
    }

    /// Total guest memory in bytes over all regions.
    #[inline]
    pub fn total_bytes(&self) -> u64 {
        self.total_pages << self.page_shift
    }

    /// The regions in guest address order.
    #[inline]
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.count]
    }

    /// The region holding `addr`, if any.
    #[inline]
    pub fn region_of(&self, addr: u64) -> Option<&Region> {
        // Regions are sorted and disjoint: the candidate is the last one starting at or
        // below `addr`.
        let regions = self.regions();
        if let [only] = regions {
            // One region (most guests below 3 GiB): a single compare.
            return (addr.wrapping_sub(only.guest_addr) < only.pages << self.page_shift)
                .then_some(only);
        }
        if regions.len() <= 8 {
            // A few compares beat a binary search's dependent branches on the small maps
            // real guests have; this sits in front of every `mark_range`.
            return regions
                .iter()
                .find(|r| addr.wrapping_sub(r.guest_addr) < r.pages << self.page_shift);
        }
        let idx = regions.partition_point(|r| r.guest_addr <= addr);
        let r = regions.get(idx.checked_sub(1)?)?;
        (addr < r.end_addr(self.page_shift)).then_some(r)
    }

    /// Dense page index of the page holding guest address `addr`.
    #[inline]
    pub fn page_of(&self, addr: u64) -> Result<u64, LayoutError> {
        let r = self
            .region_of(addr)
            .ok_or(LayoutError::AddressOutOfRange { addr })?;
        Ok(r.first_page + ((addr - r.guest_addr) >> self.page_shift))
    }

    /// Guest address of the first byte of page `page`.
    #[inline]
    pub fn addr_of(&self, page: u64) -> Result<u64, LayoutError> {
        let regions = self.regions();
        let idx = regions.partition_point(|r| r.first_page <= page);
        let r = idx
            .checked_sub(1)
            .and_then(|i| regions.get(i))
            .filter(|r| page < r.first_page + r.pages)
            .ok_or(LayoutError::PageOutOfRange {
                page,
                total: self.total_pages,
            })?;
        Ok(r.guest_addr + ((page - r.first_page) << self.page_shift))
    }

    /// Splits the guest range `[addr, addr + len)` into the runs of dense pages it
    /// touches, calling `f(first_page, page_count)` for each run inside a region.
    /// Returns the first address of the range not inside any region, if there is one;
    /// the runs inside regions are reported either way.
    pub(crate) fn for_each_run(
        &self,
        addr: u64,
        len: u64,
        mut f: impl FnMut(u64, u64),
    ) -> Option<u64> {
        if len == 0 {
            return None;
        }
        // Inclusive end, so a range ending at the top of the address space is valid.
        let last = addr.saturating_add(len - 1);
        let mut untracked = None;
        let mut cursor = addr;
        for r in self.regions() {
            let r_last = r.end_addr(self.page_shift) - 1;
            if r_last < cursor {
                continue;
            }
            if r.guest_addr > last {
                break;
            }
            if r.guest_addr > cursor && untracked.is_none() {
                untracked = Some(cursor);
            }
            let from = cursor.max(r.guest_addr);
            let to = last.min(r_last);
            let first = r.first_page + ((from - r.guest_addr) >> self.page_shift);
            let end = r.first_page + ((to - r.guest_addr) >> self.page_shift);
            f(first, end - first + 1);
            if to == last {
                return untracked;
            }
            cursor = to + 1;
        }
        untracked.or(Some(cursor))
    }
}
