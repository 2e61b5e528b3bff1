//! Lock-free dirty-page tracking.
//!
//! [`AtomicDirtyBitmap`] keeps one bit per guest page in `AtomicU64` words. Any number
//! of vCPU, device or VMM threads mark pages while one or more harvesters take the dirty
//! pages with fetch-and-clear, a word at a time. The bitmap can own its words (feature
//! `alloc`) or live in memory the caller provides (a C host, a bare-metal monitor).
//!
//! Pages are numbered densely over a [`GuestLayout`](crate::layout::GuestLayout):
//! regions with holes, any page size the layout takes. KVM's dirty log words and dirty-ring entries are imported
//! through [`AtomicDirtyBitmap::import_kvm_dirty_log`] and a [`KvmSlotTable`].
//!
//! # The ordering contract (no lost write)
//!
//! A writer writes guest memory, then marks the page. A harvester clears the words,
//! then reads the pages. Every write that completes before a harvest starts is either
//! in that harvest or in a later one, and when it is in a harvest, the harvester's
//! read of the page after the harvest sees it. Marking skips the atomic write when
//! the bit is already set (so vCPUs dirtying the same hot pages don't bounce the
//! cache line); a `SeqCst` fence on that path and one after each harvest make the
//! skip safe (the store-buffering pattern: either the writer sees the bit cleared
//! and sets it again, or the harvester sees the written bytes).
//!
//! ```
//! use precopy::bitmap::AtomicDirtyBitmap;
//! use precopy::layout::GuestLayout;
//!
//! // 1 GiB guest in two regions with a hole, 4 KiB pages.
//! let layout = GuestLayout::new(4096, &[(0, 512 << 20), (1 << 32, 512 << 20)]).unwrap();
//! let bitmap = AtomicDirtyBitmap::new(layout);
//!
//! bitmap.mark(7).unwrap(); // a vCPU wrote page 7
//! bitmap.mark_range(1 << 32, 3 * 4096).unwrap(); // a device DMA'd 12 KiB
//! assert!(bitmap.mark_range(600 << 20, 1).is_err()); // in the hole: typed error
//!
//! let dirty = bitmap.harvest(); // fetch-and-clear every word
//! let pages: Vec<u64> = dirty.pages().collect();
//! assert_eq!(pages, [7, 131072, 131073, 131074]);
//! assert_eq!(dirty.runs().collect::<Vec<_>>(), [(7, 1), (131072, 3)]);
//! assert_eq!(bitmap.dirty_pages(), 0);
//! ```

mod atomic;
mod dirty_set;
mod error;
mod iter;
mod kvm;
mod sync;
#[cfg(feature = "vm-memory")]
mod vm_memory;

pub use atomic::AtomicDirtyBitmap;
pub use dirty_set::DirtySet;
pub use error::BitmapError;
pub use iter::{DirtyPages, DirtyRuns};
pub use kvm::{KvmDirtyGfn, KvmSlot, KvmSlotTable, MAX_KVM_SLOTS};
#[cfg(feature = "vm-memory")]
pub use vm_memory::{guest_memory_mmap, RegionBitmap};

/// Number of `u64` words needed for `pages` bits.
pub const fn words_for_pages(pages: u64) -> usize {
    pages.div_ceil(64) as usize
}
