//! The vocabulary every other layer stands on: the guest's memory map
//! ([`GuestLayout`]: regions, holes, a dense page numbering), the [`PageSize`]
//! (validated once, by one rule), which pages travel on which stream of a
//! multi-stream migration ([`Shard`]), and the limits that follow from them.
//!
//! This module imports no other module of precopy; every other module may import it.
//!
//! ```
//! use precopy::layout::{GuestLayout, Shard};
//!
//! // 3 GiB below the PCI hole, 1 GiB above 4 GiB, 4 KiB pages.
//! let layout = GuestLayout::new(4096, &[(0, 3 << 30), (4 << 30, 1 << 30)]).unwrap();
//! assert_eq!(layout.total_pages(), 1 << 20);
//! // Two streams: chunks of 512 pages alternate between them.
//! let second = Shard::new(1, 2).unwrap();
//! assert_eq!(second.pages(layout.total_pages()), 1 << 19);
//! ```

mod error;
mod guest;
mod page_size;
mod shard;
mod words;

pub use error::LayoutError;
pub use guest::{GuestLayout, Region, MAX_REGIONS};
pub use page_size::{PageSize, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE};
pub use shard::{Shard, MAX_STREAMS, SHARD_CHUNK_PAGES};
pub use words::OwnedWords;
pub(crate) use words::{seek_bit, words_as_bytes, words_as_bytes_mut};
