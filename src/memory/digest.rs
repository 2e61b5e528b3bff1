//! The digest of all guest memory that source and destination compare at the end.

use xxhash_rust::xxh3::Xxh3;

use super::{MemoryError, PageMemory};
use crate::layout::Shard;

/// The digest of guest memory: XXH3-128 over the XXH3-64 of every page, in page order
/// (little-endian). Hashing pages one by one lets memory hash them in parallel
/// ([`PageMemory::hash_pages`]) while the result stays the same. Feed pages in order
/// with [`update`](Self::update), or their hashes with [`update_hash`](Self::update_hash);
/// the source and the destination must agree on the result.
///
/// ```
/// use precopy::memory::MemoryDigest;
/// let mut a = MemoryDigest::new();
/// a.update(&[0u8; 512]);
/// let mut b = MemoryDigest::new();
/// b.update(&[1u8; 512]);
/// assert_ne!(a.finish(), b.finish());
/// ```
#[derive(Clone)]
pub struct MemoryDigest {
    hasher: Xxh3,
}

impl core::fmt::Debug for MemoryDigest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MemoryDigest")
    }
}

impl Default for MemoryDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDigest {
    /// A digest of no pages yet.
    pub fn new() -> Self {
        MemoryDigest {
            hasher: Xxh3::new(),
        }
    }

    /// Adds the next page.
    pub fn update(&mut self, page: &[u8]) {
        self.update_hash(crate::codec::base_hash(page));
    }

    /// Adds the next page by its XXH3-64 ([`crate::codec::base_hash`]).
    pub fn update_hash(&mut self, page_hash: u64) {
        self.hasher.update(&page_hash.to_le_bytes());
    }

    /// Adds the next pages by their XXH3-64s, in page order: the same result as
    /// [`update_hash`](Self::update_hash) on each, at memory speed (the hashes are
    /// fed in blocks, not 8 bytes per call). A source or destination that kept its
    /// pages' hashes folds them with this at switchover.
    pub fn update_hashes(&mut self, page_hashes: &[u64]) {
        // Little-endian words are their own little-endian bytes: hashed in place.
        #[cfg(target_endian = "little")]
        {
            self.hasher
                .update(crate::layout::words_as_bytes(page_hashes));
        }
        #[cfg(not(target_endian = "little"))]
        self.update_hashes_copied(page_hashes);
    }

    /// `update_hashes` through a block of little-endian bytes (big-endian targets).
    #[cfg(not(target_endian = "little"))]
    fn update_hashes_copied(&mut self, page_hashes: &[u64]) {
        let mut block = [0u8; 4096];
        for chunk in page_hashes.chunks(block.len() / 8) {
            for (bytes, h) in block.chunks_exact_mut(8).zip(chunk) {
                bytes.copy_from_slice(&h.to_le_bytes());
            }
            self.hasher.update(&block[..chunk.len() * 8]);
        }
    }

    /// The digest of the pages added.
    pub fn finish(&self) -> u128 {
        self.hasher.digest128()
    }
}

/// The digest of all of `memory`, its pages hashed in batches by
/// [`PageMemory::hash_pages`] (`scratch`, one page long, for memories that read pages
/// out one by one).
pub fn digest_memory<M: PageMemory + ?Sized>(
    memory: &M,
    scratch: &mut [u8],
) -> Result<u128, MemoryError> {
    digest_stream(memory, Shard::WHOLE, scratch)
}

/// The digest of the pages of `memory` that travel on stream `stream`, in page order
/// (all of memory for [`Shard::WHOLE`]): what that stream's completion frame carries.
pub fn digest_stream<M: PageMemory + ?Sized>(
    memory: &M,
    stream: Shard,
    scratch: &mut [u8],
) -> Result<u128, MemoryError> {
    let mut digest = MemoryDigest::new();
    let mut hashes = [0u64; 1024];
    let total = memory.total_pages();
    let ranges: &mut dyn Iterator<Item = core::ops::Range<u64>> = if stream == Shard::WHOLE {
        &mut core::iter::once(0..total)
    } else {
        &mut stream.ranges(total)
    };
    for range in ranges {
        let mut first = range.start;
        while first < range.end {
            let n = (range.end - first).min(hashes.len() as u64) as usize;
            memory.hash_pages(first, &mut hashes[..n], scratch)?;
            digest.update_hashes(&hashes[..n]);
            first += n as u64;
        }
    }
    Ok(digest.finish())
}

/// The digest of a whole migration from its streams' digests (in stream order): the
/// one digest itself for a single stream, else XXH3-128 over the streams' digests
/// (little-endian). Source and destination print it to show they agree.
pub fn migration_digest(stream_digests: &[u128]) -> u128 {
    match stream_digests {
        [one] => *one,
        many => {
            let mut h = Xxh3::new();
            many.iter().for_each(|d| h.update(&d.to_le_bytes()));
            h.digest128()
        }
    }
}
