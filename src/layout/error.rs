//! The layout layer's error type.

use core::fmt;

use super::{MAX_PAGE_SIZE, MAX_REGIONS, MIN_PAGE_SIZE};

/// Everything the layout layer refuses: a page size, a memory map or a page number
/// that no guest of precopy can have. Each variant names the offending value so an
/// operator can find it in the VMM's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The page size is not a power of two from [`MIN_PAGE_SIZE`] to [`MAX_PAGE_SIZE`].
    BadPageSize {
        /// The page size given.
        page_size: u64,
    },
    /// A region is empty, not page-aligned, or wraps past the top of the address space.
    BadRegion {
        /// Its guest address.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// Two regions overlap.
    OverlappingRegions {
        /// Guest address of the lower region.
        first: u64,
        /// Guest address of the region that starts inside it.
        second: u64,
    },
    /// More regions than [`MAX_REGIONS`].
    TooManyRegions {
        /// How many were given.
        count: usize,
    },
    /// A page index past the end of the layout.
    PageOutOfRange {
        /// The page index given.
        page: u64,
        /// Pages in the layout.
        total: u64,
    },
    /// A guest address not inside any region (a hole, or past the end).
    AddressOutOfRange {
        /// The address.
        addr: u64,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::BadPageSize { page_size } if page_size.is_power_of_two()
                && page_size > MAX_PAGE_SIZE as u64 =>
            {
                write!(
                    f,
                    "page size {page_size} is above the largest precopy migrates ({MAX_PAGE_SIZE} \
                     bytes): describe a guest backed by huge pages in 4096-byte pages (KVM's \
                     dirty log tracks 4 KiB pages regardless)"
                )
            }
            LayoutError::BadPageSize { page_size } => write!(
                f,
                "page size {page_size} is not a power of two from {MIN_PAGE_SIZE} to \
                 {MAX_PAGE_SIZE} bytes"
            ),
            LayoutError::BadRegion { addr, len } => write!(
                f,
                "region at {addr:#x} of {len:#x} bytes is empty, not page-aligned or wraps the address space"
            ),
            LayoutError::OverlappingRegions { first, second } => {
                write!(f, "region at {second:#x} overlaps the region at {first:#x}")
            }
            LayoutError::TooManyRegions { count } => {
                write!(f, "{count} regions given, at most {MAX_REGIONS} supported")
            }
            LayoutError::PageOutOfRange { page, total } => {
                write!(f, "page {page} is out of range (guest has {total} pages)")
            }
            LayoutError::AddressOutOfRange { addr } => {
                write!(f, "guest address {addr:#x} is not in any memory region")
            }
        }
    }
}

impl core::error::Error for LayoutError {}
