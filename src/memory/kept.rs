//! A destination over the VMM's own memory that remembers the hash of every page it
//! wrote, so the end-of-migration digest does not read memory with the guest paused.

use alloc::vec;
use alloc::vec::Vec;

use super::{zero_page_hash, MemoryError, PageMemory};
use crate::layout::{seek_bit, Shard};

/// Any [`PageMemory`] (the VMM's guest RAM through [`VmMemory`](super::VmMemory), a
/// `&AtomicMemory`, ...) that keeps the XXH3-64 of every page of stream `shard` as it
/// writes or zeroes it. [`hash_pages`](PageMemory::hash_pages) answers from the kept
/// hashes and reads memory only for pages never written through this view. A migration
/// writes every page (the bulk round sends them all, zero pages as zero runs), so at
/// the switchover the destination's half of the end-to-end check folds 8 bytes per
/// page instead of reading all of guest memory while the guest is paused.
///
/// Unlike [`FreshMemory`](super::FreshMemory) it promises nothing about the memory's
/// content: zero runs are written (or skipped by the memory where it can tell a page is
/// zero), and a page never written is hashed from what memory holds. What it does
/// assume is that nothing else writes the pages while it is in use (on a destination
/// the guest is not running yet). Costs 8 bytes and a bit per page of the stream.
///
/// ```
/// use precopy::layout::Shard;
/// use precopy::memory::{KeptHashes, PageMemory, VecMemory};
/// let mut ram = VecMemory::new(4096, 8);
/// let mut memory = KeptHashes::new(&mut ram, Shard::WHOLE);
/// memory.write_page(3, &[7; 4096]).unwrap();
/// memory.zero_pages(0, 3).unwrap();
/// let mut hashes = [0u64; 4];
/// memory.hash_pages(0, &mut hashes, &mut [0; 4096]).unwrap();
/// assert_eq!(hashes[3], precopy::codec::base_hash(&[7; 4096]));
/// assert_eq!(memory.kept_pages(), 4);
/// ```
#[derive(Debug)]
pub struct KeptHashes<M> {
    memory: M,
    shard: Shard,
    /// Bit `i` of word `i / 64`: the stream's page of local index `i` has a kept hash.
    kept: Vec<u64>,
    /// By local index: the hash of what was last written, while its bit is set.
    hashes: Vec<u64>,
}

impl<M: PageMemory> KeptHashes<M> {
    /// Keeps the hashes of stream `shard`'s pages of `memory` ([`Shard::WHOLE`] for a
    /// single-stream destination; one view per stream for several). Writes to pages of
    /// other streams pass through untracked.
    pub fn new(memory: M, shard: Shard) -> Self {
        let pages = shard.pages(memory.total_pages());
        KeptHashes {
            memory,
            shard,
            kept: vec![0; pages.div_ceil(64) as usize],
            hashes: vec![0; pages as usize],
        }
    }

    /// Pages of the stream whose hash is kept.
    pub fn kept_pages(&self) -> u64 {
        self.kept.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The memory underneath.
    pub fn into_inner(self) -> M {
        self.memory
    }

    /// The kept hash of `page`, if it is this stream's and was written through this view.
    fn kept_hash(&self, page: u64) -> Option<u64> {
        if !self.shard.owns(page) {
            return None;
        }
        let i = self.shard.local_index(page) as usize;
        let kept = self.kept.get(i / 64)? & (1 << (i % 64)) != 0;
        kept.then(|| self.hashes[i])
    }

    /// The digest's case, fast: `first..first + hashes.len()` is a run of this
    /// stream's pages, consecutive in its tables too, so the leading pages with a kept
    /// hash are found a word of kept bits at a time and copied out at once, not looked
    /// up page by page (a quarter million pages at the switchover). Returns how many
    /// it filled in (0 when the range is not one such run).
    fn copy_kept_run(&self, first: u64, hashes: &mut [u64]) -> usize {
        if !self.shard.owns_range(first, hashes.len() as u64) {
            return 0;
        }
        let from = self.shard.local_index(first) as usize;
        let Some(kept_hashes) = self.hashes.get(from..from + hashes.len()) else {
            return 0;
        };
        // `kept` has a bit for every entry of `hashes`, so for all of `from..`.
        let end = (from + hashes.len()) as u64;
        let run = (seek_bit(|i| self.kept[i], from as u64, end, false) - from as u64) as usize;
        hashes[..run].copy_from_slice(&kept_hashes[..run]);
        run
    }

    fn keep(&mut self, page: u64, hash: u64) {
        if self.shard.owns(page) {
            let i = self.shard.local_index(page) as usize;
            if let (Some(word), Some(slot)) = (self.kept.get_mut(i / 64), self.hashes.get_mut(i)) {
                *word |= 1 << (i % 64);
                *slot = hash;
            }
        }
    }
}

impl<M: PageMemory> PageMemory for KeptHashes<M> {
    fn page_size(&self) -> usize {
        self.memory.page_size()
    }

    fn total_pages(&self) -> u64 {
        self.memory.total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.memory.read_page(page, buf)
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.memory.write_page(page, data)?;
        self.keep(page, crate::codec::base_hash(data));
        Ok(())
    }

    fn hash_pages(
        &self,
        first: u64,
        hashes: &mut [u64],
        scratch: &mut [u8],
    ) -> Result<(), MemoryError> {
        let mut at = self.copy_kept_run(first, hashes);
        while at < hashes.len() {
            let page = first + at as u64;
            if let Some(h) = self.kept_hash(page) {
                hashes[at] = h;
                at += 1;
                continue;
            }
            // A run of pages without a kept hash: memory hashes them.
            let run = (at..hashes.len())
                .take_while(|&j| self.kept_hash(first + j as u64).is_none())
                .count();
            self.memory
                .hash_pages(page, &mut hashes[at..at + run], scratch)?;
            at += run;
        }
        Ok(())
    }

    fn known_zero_pages(&self, first: u64, max: u64) -> u64 {
        self.memory.known_zero_pages(first, max)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.memory.zero_pages(first, count)?;
        let zero = zero_page_hash(self.page_size());
        if count > 0 && self.shard.owns_range(first, count) {
            // A run of this stream's pages, consecutive in its tables (a bulk round's
            // zero runs): filled and marked a word at a time, not page by page.
            let from = self.shard.local_index(first) as usize;
            let to = from.saturating_add(count as usize);
            if let Some(slots) = self.hashes.get_mut(from..to) {
                slots.fill(zero);
                set_bits(&mut self.kept, from, to);
                return Ok(());
            }
        }
        for page in first..first.saturating_add(count) {
            self.keep(page, zero);
        }
        Ok(())
    }
}

/// Sets bits `from..to` of `words` (which must hold them).
fn set_bits(words: &mut [u64], from: usize, to: usize) {
    let mut i = from;
    while i < to {
        let n = (64 - i % 64).min(to - i);
        words[i / 64] |= (u64::MAX >> (64 - n)) << (i % 64);
        i += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::VecMemory;

    /// Zero runs of a stream's pages are kept a word at a time: exactly the run's
    /// pages, with the zero page's hash, and memory zeroed.
    #[test]
    fn zero_runs_keep_exactly_their_pages() {
        const PS: usize = 512;
        const TOTAL: u64 = 4 * 512;
        for count in [1u8, 2] {
            let shard = Shard::new(0, count).unwrap();
            let mut ram = VecMemory::new(PS, TOTAL);
            for page in 0..TOTAL {
                ram.write_page(page, &[1; PS]).unwrap();
            }
            let mut view = KeptHashes::new(&mut ram, shard);
            // Inside one word, across words, a whole chunk; and one single page.
            let runs = [(3u64, 10u64), (60, 200), (1024, 512), (300, 1)];
            for (first, n) in runs {
                view.zero_pages(first, n).unwrap();
            }
            let kept: std::collections::BTreeSet<u64> =
                runs.iter().flat_map(|&(f, n)| f..f + n).collect();
            assert_eq!(view.kept_pages(), kept.len() as u64, "{shard:?}");
            let zero = zero_page_hash(PS);
            let mut buf = [0u8; PS];
            for page in shard.ranges(TOTAL).flatten() {
                let hash = view.kept_hash(page);
                view.read_page(page, &mut buf).unwrap();
                if kept.contains(&page) {
                    assert_eq!(hash, Some(zero), "page {page}");
                    assert_eq!(buf, [0; PS], "page {page}");
                } else {
                    assert_eq!(hash, None, "page {page}");
                    assert_eq!(buf, [1; PS], "page {page}");
                }
            }
        }
    }

    /// `hash_pages` from the kept hashes equals hashing what memory holds, for every
    /// run a digest asks for and runs that start and end inside a word of kept bits,
    /// with pages kept and pages never written through the view (some holding data
    /// written before the view was made) in the same words.
    #[test]
    fn hash_pages_matches_memory_for_any_run_of_kept_and_unkept_pages() {
        const PS: usize = 512;
        const TOTAL: u64 = 3 * 1024 + 77;
        for count in [1u8, 3] {
            for index in 0..count {
                let shard = Shard::new(index, count).unwrap();
                let mut ram = VecMemory::new(PS, TOTAL);
                // Content behind the view's back first: never kept.
                for page in (0..TOTAL).step_by(7) {
                    ram.write_page(page, &[page as u8 ^ 0x5a; PS]).unwrap();
                }
                let mut view = KeptHashes::new(&mut ram, shard);
                // Kept: most pages, a gap in the middle of a word, a whole word
                // missing, the last page.
                for page in 0..TOTAL {
                    let local = shard.local_index(page);
                    let skip = (local % 64 == 13) || (local / 64 == 5) || page % 11 == 0;
                    if shard.owns(page) && !skip {
                        view.write_page(page, &[(page % 251) as u8; PS]).unwrap();
                    }
                }
                let mut scratch = [0u8; PS];
                let mut page = [0u8; PS];
                for range in shard.ranges(TOTAL) {
                    for (off, len) in [(0, 512), (0, 64), (13, 100), (63, 2), (200, 312)] {
                        let first = range.start + off;
                        let len = len.min(range.end.saturating_sub(first));
                        let mut got = std::vec![0u64; len as usize];
                        view.hash_pages(first, &mut got, &mut scratch).unwrap();
                        for (j, h) in got.iter().enumerate() {
                            view.read_page(first + j as u64, &mut page).unwrap();
                            assert_eq!(
                                *h,
                                crate::codec::base_hash(&page),
                                "{shard:?}: page {} of run {first}+{len}",
                                first + j as u64
                            );
                        }
                    }
                }
            }
        }
    }
}
