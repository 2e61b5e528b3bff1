//! The bitmap layer's error type.

use core::fmt;

/// Everything the bitmap layer can refuse. Each variant names the offending value so an
/// operator can find it in the VMM's configuration or logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitmapError {
    /// A page index past the end of the layout.
    PageOutOfRange {
        /// The page index given.
        page: u64,
        /// Pages in the layout.
        total: u64,
    },
    /// A guest address not inside any region (a hole, or past the end).
    AddressOutOfRange {
        /// The first untracked address.
        addr: u64,
    },
    /// Caller-provided storage holds fewer words than the layout needs.
    StorageTooSmall {
        /// Words needed.
        needed: usize,
        /// Words provided.
        provided: usize,
    },
    /// A dirty set or word range does not match this bitmap's size.
    SizeMismatch {
        /// Pages this bitmap tracks.
        expected: u64,
        /// Pages in the argument.
        got: u64,
    },
    /// A KVM memory slot id that is not in the slot table.
    UnknownSlot {
        /// The slot id (address space in the upper 16 bits).
        slot: u32,
    },
    /// A KVM dirty-log word or ring entry names a page past the end of its slot.
    SlotOffsetOutOfRange {
        /// The slot id.
        slot: u32,
        /// The page offset within the slot.
        offset: u64,
        /// Pages in the slot.
        pages: u64,
    },
    /// A KVM slot that is not a contiguous run of tracked pages, or a table that is full.
    BadSlot {
        /// The slot id.
        slot: u32,
        /// Its guest address.
        guest_addr: u64,
        /// Its length in pages.
        pages: u64,
    },
}

impl fmt::Display for BitmapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BitmapError::PageOutOfRange { page, total } => {
                write!(f, "page {page} is out of range (guest has {total} pages)")
            }
            BitmapError::AddressOutOfRange { addr } => {
                write!(f, "guest address {addr:#x} is not in any memory region")
            }
            BitmapError::StorageTooSmall { needed, provided } => write!(
                f,
                "bitmap storage holds {provided} words, the layout needs {needed}"
            ),
            BitmapError::SizeMismatch { expected, got } => write!(
                f,
                "dirty set covers {got} pages, the bitmap tracks {expected}"
            ),
            BitmapError::UnknownSlot { slot } => {
                write!(f, "KVM memory slot {slot:#x} is not in the slot table")
            }
            BitmapError::SlotOffsetOutOfRange {
                slot,
                offset,
                pages,
            } => write!(
                f,
                "KVM memory slot {slot:#x}: page offset {offset} is past its {pages} pages"
            ),
            BitmapError::BadSlot {
                slot,
                guest_addr,
                pages,
            } => write!(
                f,
                "KVM memory slot {slot:#x} at {guest_addr:#x} ({pages} pages) is not contiguous tracked memory, or the slot table is full"
            ),
        }
    }
}

impl core::error::Error for BitmapError {}
