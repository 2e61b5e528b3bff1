//! [`DirtySet`]: a harvested, non-atomic set of dirty pages.

use bitvec::prelude::{BitSlice, Lsb0};

use super::{words_for_pages, BitmapError, DirtyPages, DirtyRuns};
use crate::layout::OwnedWords;

/// A set of dirty pages taken out of an [`super::AtomicDirtyBitmap`] by a harvest: one
/// bit per page in `u64` words held by `S` ([`OwnedWords`] from [`DirtySet::new`],
/// `&mut [u64]` over caller memory from [`DirtySet::over`]), with the same word layout
/// as the bitmap (bit `i` of word `w` is page `64 * w + i`), so harvests OR straight
/// into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtySet<S = OwnedWords> {
    words: S,
    total_pages: u64,
}

#[cfg(feature = "alloc")]
impl DirtySet<OwnedWords> {
    /// An empty set over `total_pages` pages.
    pub fn new(total_pages: u64) -> Self {
        DirtySet {
            words: OwnedWords::zeroed(words_for_pages(total_pages)),
            total_pages,
        }
    }
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> DirtySet<S> {
    /// An empty set over `total_pages` pages in caller words (no allocation): `words`
    /// holds at least [`words_for_pages`]`(total_pages)` words (extra words are left
    /// alone); they are cleared here. Fewer words is
    /// [`BitmapError::StorageTooSmall`].
    pub fn over(mut words: S, total_pages: u64) -> Result<Self, BitmapError> {
        let needed = words_for_pages(total_pages);
        let provided = words.as_ref().len();
        if provided < needed {
            return Err(BitmapError::StorageTooSmall { needed, provided });
        }
        words.as_mut()[..needed].fill(0);
        Ok(DirtySet { words, total_pages })
    }

    /// Pages the set covers (its length, not its population).
    pub fn total_pages(&self) -> u64 {
        self.total_pages
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
        page < self.total_pages && self.words()[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// Adds `page`; returns `false` (and does nothing) when it is out of range.
    pub fn insert(&mut self, page: u64) -> bool {
        if page >= self.total_pages {
            return false;
        }
        self.words_mut()[(page / 64) as usize] |= 1 << (page % 64);
        true
    }

    /// Removes `page`; returns whether it was in the set.
    pub fn remove(&mut self, page: u64) -> bool {
        if !self.contains(page) {
            return false;
        }
        self.words_mut()[(page / 64) as usize] &= !(1 << (page % 64));
        true
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

    /// The set as a bit slice of `total_pages` bits.
    pub fn as_bitslice(&self) -> &BitSlice<u64, Lsb0> {
        &BitSlice::from_slice(self.words())[..self.total_pages as usize]
    }

    /// The raw words (bits past `total_pages` are always zero).
    pub fn words(&self) -> &[u64] {
        &self.words.as_ref()[..words_for_pages(self.total_pages)]
    }

    /// The raw words, for harvests to OR into. Callers keep bits past `total_pages`
    /// zero.
    pub(crate) fn words_mut(&mut self) -> &mut [u64] {
        let n = words_for_pages(self.total_pages);
        &mut self.words.as_mut()[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_words_work_like_owned_ones() {
        let mut words = [u64::MAX; 3];
        let mut set = DirtySet::over(&mut words[..], 130).unwrap();
        assert!(set.is_empty(), "over() clears the words");
        assert!(set.insert(129) && set.insert(3) && !set.insert(130));
        assert_eq!(set.pages().collect::<alloc::vec::Vec<_>>(), [3, 129]);
        assert!(set.remove(3) && !set.remove(3));
        assert_eq!(set.as_bitslice().len(), 130);
        let mut owned = DirtySet::new(130);
        owned.insert(129);
        assert_eq!(owned.words(), set.words());
    }

    #[test]
    fn too_few_or_no_words_are_refused() {
        let mut words = [0u64; 2];
        assert_eq!(
            DirtySet::over(&mut words[..], 129).unwrap_err(),
            BitmapError::StorageTooSmall {
                needed: 3,
                provided: 2
            }
        );
        assert_eq!(
            DirtySet::over(&mut [][..], 1).unwrap_err(),
            BitmapError::StorageTooSmall {
                needed: 1,
                provided: 0
            }
        );
    }
}
