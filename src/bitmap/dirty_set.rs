//! [`DirtySet`]: a harvested, non-atomic set of dirty pages.

use bitvec::prelude::{BitVec, Lsb0};

use super::{words_for_pages, DirtyPages, DirtyRuns};

/// A set of dirty pages taken out of an [`super::AtomicDirtyBitmap`] by a harvest: a
/// `bitvec` bit vector with the same word layout as the bitmap (bit `i` of word `w` is
/// page `64 * w + i`), so harvests OR straight into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtySet {
    bits: BitVec<u64, Lsb0>,
}

impl DirtySet {
    /// An empty set over `total_pages` pages.
    pub fn new(total_pages: u64) -> Self {
        let mut bits = BitVec::from_vec(alloc::vec![0u64; words_for_pages(total_pages)]);
        bits.truncate(total_pages as usize);
        DirtySet { bits }
    }

    /// Pages the set covers (its length, not its population).
    pub fn total_pages(&self) -> u64 {
        self.bits.len() as u64
    }

    /// Number of dirty pages in the set.
    pub fn count(&self) -> u64 {
        self.words().iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no page is dirty.
    pub fn is_empty(&self) -> bool {
        self.words().iter().all(|&w| w == 0)
    }

    /// Whether `page` is in the set (`false` when out of range).
    pub fn contains(&self, page: u64) -> bool {
        self.bits.get(page as usize).is_some_and(|b| *b)
    }

    /// Adds `page`; returns `false` (and does nothing) when it is out of range.
    pub fn insert(&mut self, page: u64) -> bool {
        match self.bits.get_mut(page as usize) {
            Some(mut b) => {
                *b = true;
                true
            }
            None => false,
        }
    }

    /// Removes `page`; returns whether it was in the set.
    pub fn remove(&mut self, page: u64) -> bool {
        match self.bits.get_mut(page as usize) {
            Some(mut b) => core::mem::replace(&mut *b, false),
            None => false,
        }
    }

    /// Removes every page.
    pub fn clear(&mut self) {
        self.words_mut().fill(0);
    }

    /// Dirty pages in ascending order.
    pub fn pages(&self) -> DirtyPages<'_> {
        DirtyPages::new(self.words(), 0)
    }

    /// Runs of consecutive dirty pages as `(first_page, count)`, ascending.
    pub fn runs(&self) -> DirtyRuns<'_> {
        DirtyRuns::new(self.words(), 0)
    }

    /// The underlying bit vector.
    pub fn as_bitslice(&self) -> &bitvec::slice::BitSlice<u64, Lsb0> {
        &self.bits
    }

    /// The raw words (bits past `total_pages` are always zero).
    pub fn words(&self) -> &[u64] {
        self.bits.as_raw_slice()
    }

    /// The raw words, for harvests to OR into. Callers keep bits past `total_pages`
    /// zero.
    pub(crate) fn words_mut(&mut self) -> &mut [u64] {
        self.bits.as_raw_mut_slice()
    }
}
