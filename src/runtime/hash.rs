//! Parallel page hashing: the core hashes pages on the caller's thread; where a digest
//! of all of memory is on the critical path, the runtime spreads
//! [`PageMemory::hash_pages`] over rayon's threads, range by range.

use core::ops::Range;
use std::vec;
use std::vec::Vec;

use rayon::prelude::*;

use crate::layout::Shard;
#[cfg(doc)]
use crate::memory::digest_stream;
use crate::memory::MemoryDigest;
use crate::memory::{MemoryError, PageMemory};

/// Pages each thread hashes per task: large enough that a task costs far more than
/// rayon's hand-off, small enough that two cores share a 1024-page batch.
const PAGES_PER_TASK: usize = 64;

/// `memory` with [`PageMemory::hash_pages`] spread over rayon's thread pool: each
/// range of 64 pages is hashed by the memory's own `hash_pages` on
/// some thread. Every other method, and every hash, is the memory's own, so digests
/// ([`digest_stream`]) come out the same, only sooner.
///
/// ```
/// use precopy::memory::{PageMemory, VecMemory};
/// use precopy::runtime::ParallelHash;
/// use precopy::memory::digest_memory;
/// let mut memory = VecMemory::new(4096, 300);
/// memory.write_page(7, &[1; 4096]).unwrap();
/// let mut scratch = vec![0u8; 4096];
/// let parallel = digest_memory(&ParallelHash(&mut memory), &mut scratch).unwrap();
/// assert_eq!(parallel, digest_memory(&memory, &mut scratch).unwrap());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ParallelHash<M>(pub M);

impl<M: PageMemory + Sync> PageMemory for ParallelHash<M> {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }

    fn total_pages(&self) -> u64 {
        self.0.total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.0.read_page(page, buf)
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.0.write_page(page, data)
    }

    fn hash_pages(
        &self,
        first: u64,
        hashes: &mut [u64],
        scratch: &mut [u8],
    ) -> Result<(), MemoryError> {
        hash_pages_parallel(&self.0, first, hashes, scratch)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.0.zero_pages(first, count)
    }
}

/// [`PageMemory::hash_pages`] of `memory` for `first..first + hashes.len()`, ranges of
/// 64 pages hashed on rayon's threads (`scratch` for a short run on
/// the caller's thread).
pub fn hash_pages_parallel<M: PageMemory + Sync + ?Sized>(
    memory: &M,
    first: u64,
    hashes: &mut [u64],
    scratch: &mut [u8],
) -> Result<(), MemoryError> {
    if hashes.len() <= PAGES_PER_TASK {
        return memory.hash_pages(first, hashes, scratch);
    }
    let page_size = memory.page_size();
    hashes
        .par_chunks_mut(PAGES_PER_TASK)
        .enumerate()
        .try_for_each_init(
            || vec![0u8; page_size],
            |scratch, (task, out)| {
                let from = first.saturating_add((task * PAGES_PER_TASK) as u64);
                memory.hash_pages(from, out, scratch)
            },
        )
}

/// The digest of stream `stream`'s pages of `memory` (what [`digest_stream`] computes,
/// all of memory for [`Shard::WHOLE`]), its pages hashed on rayon's threads.
pub fn digest_parallel<M: PageMemory + Sync + ?Sized>(
    memory: &M,
    stream: Shard,
) -> Result<u128, MemoryError> {
    const BATCH: usize = 16 * 1024;
    let mut scratch = vec![0u8; memory.page_size()];
    let mut hashes = vec![0u64; BATCH];
    let mut digest = MemoryDigest::new();
    let total = memory.total_pages();
    let ranges: Vec<Range<u64>> = if stream == Shard::WHOLE {
        core::iter::once(0..total).collect()
    } else {
        stream.ranges(total).collect()
    };
    for range in ranges {
        let mut first = range.start;
        while first < range.end {
            let n = (range.end - first).min(BATCH as u64) as usize;
            hash_pages_parallel(memory, first, &mut hashes[..n], &mut scratch)?;
            hashes[..n].iter().for_each(|&h| digest.update_hash(h));
            first += n as u64;
        }
    }
    Ok(digest.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{AtomicMemory, VecMemory};

    #[test]
    fn parallel_digests_equal_sequential_ones_and_errors_survive() {
        let memory = AtomicMemory::new(4096, 5000);
        for p in (0..5000).step_by(37) {
            memory.store_word(p, p as usize % 512, p * 3 + 1).unwrap();
        }
        let mut scratch = vec![0u8; 4096];
        for shard in [Shard::WHOLE, Shard::new(1, 3).unwrap()] {
            assert_eq!(
                digest_parallel(&memory, shard).unwrap(),
                crate::memory::digest_stream(&memory, shard, &mut scratch).unwrap()
            );
        }
        // A range past the end is the memory's own error.
        let mut hashes = vec![0u64; 300];
        let e = ParallelHash(&memory).hash_pages(4800, &mut hashes, &mut scratch);
        assert!(
            matches!(e, Err(MemoryError::PageOutOfRange { .. })),
            "{e:?}"
        );
        let v = VecMemory::new(512, 10);
        assert!(ParallelHash(&mut v.clone())
            .hash_pages(0, &mut [0; 10], &mut [0; 512])
            .is_ok());
    }
}
