//! [`AtomicDirtyBitmap`]: marking and harvesting over `AtomicU64` words.

use super::sync::{fence, AtomicU64, Ordering};
use core::ops::{Deref, Range};

use super::iter::WordBits;
use super::{words_for_pages, BitmapError};
use crate::layout::GuestLayout;

/// A lock-free dirty-page bitmap over a [`GuestLayout`]: one bit per page in `AtomicU64`
/// words held by `W` (`Box<[AtomicU64]>` when owned, `&[AtomicU64]` over caller memory).
///
/// Marking is wait-free; harvesting is fetch-and-clear a word at a time, so marks that
/// race with a harvest land either in it or in the next one (see the module docs for
/// the ordering contract). Harvests of disjoint page ranges may run in parallel.
#[derive(Debug)]
pub struct AtomicDirtyBitmap<W: Deref<Target = [AtomicU64]>> {
    layout: GuestLayout,
    // No other field, and none with interior mutability: `&self` is then read-only
    // to the compiler, which keeps `layout` and `words` in registers across the
    // atomics of a caller's marking loop instead of reloading them after each one.
    words: W,
}

#[cfg(feature = "alloc")]
impl AtomicDirtyBitmap<alloc::boxed::Box<[AtomicU64]>> {
    /// An owned, all-clean bitmap for `layout`.
    pub fn new(layout: GuestLayout) -> Self {
        let words = (0..words_for_pages(layout.total_pages()))
            .map(|_| AtomicU64::new(0))
            .collect();
        AtomicDirtyBitmap { layout, words }
    }
}

impl<'a> AtomicDirtyBitmap<&'a [AtomicU64]> {
    /// A bitmap over caller-provided words (no allocation). `words` must hold at least
    /// [`words_for_pages`]`(layout.total_pages())` words; they are cleared here.
    pub fn from_words(layout: GuestLayout, words: &'a [AtomicU64]) -> Result<Self, BitmapError> {
        let needed = words_for_pages(layout.total_pages());
        if words.len() < needed {
            return Err(BitmapError::StorageTooSmall {
                needed,
                provided: words.len(),
            });
        }
        let words = &words[..needed];
        for w in words {
            w.store(0, Ordering::Relaxed);
        }
        Ok(AtomicDirtyBitmap { layout, words })
    }
}

impl<W: Deref<Target = [AtomicU64]>> AtomicDirtyBitmap<W> {
    /// The guest layout this bitmap tracks.
    pub fn layout(&self) -> &GuestLayout {
        &self.layout
    }

    /// Number of pages tracked.
    pub fn total_pages(&self) -> u64 {
        self.layout.total_pages()
    }

    /// The raw words (bit `i` of word `w` is page `64 * w + i`).
    pub fn words(&self) -> &[AtomicU64] {
        &self.words
    }

    /// Marks page `page` dirty. Call after the write to the page.
    #[inline]
    pub fn mark(&self, page: u64) -> Result<(), BitmapError> {
        if page >= self.total_pages() {
            return Err(BitmapError::PageOutOfRange {
                page,
                total: self.total_pages(),
            });
        }
        self.set_bits((page / 64) as usize, 1 << (page % 64), &mut false);
        Ok(())
    }

    /// Marks every page touched by the guest range `[addr, addr + len)` dirty, including
    /// partial pages at either end and spans crossing regions. Whole words are set with
    /// one atomic operation. Zero length marks nothing.
    ///
    /// If part of the range lies outside every region, the pages inside regions are
    /// still marked (no tracked write is lost) and the first untracked address is
    /// returned as [`BitmapError::AddressOutOfRange`].
    pub fn mark_range(&self, addr: u64, len: u64) -> Result<(), BitmapError> {
        if len == 0 {
            return Ok(());
        }
        let mut fenced = false;
        // Fast path: the whole range inside one region (nearly every write).
        if let Some(r) = self.layout.region_of(addr) {
            let shift = self.layout.page_shift();
            let offset = addr - r.guest_addr;
            if len <= (r.pages << shift) - offset {
                let first = r.first_page + (offset >> shift);
                let end = r.first_page + ((offset + len - 1) >> shift) + 1;
                self.mark_pages(first..end, &mut fenced);
                return Ok(());
            }
        }
        let untracked = self.layout.for_each_run(addr, len, |first, count| {
            self.mark_pages(first..first + count, &mut fenced)
        });
        match untracked {
            None => Ok(()),
            Some(addr) => Err(BitmapError::AddressOutOfRange { addr }),
        }
    }

    /// Marks the dense page range `pages` dirty.
    pub fn mark_page_range(&self, pages: Range<u64>) -> Result<(), BitmapError> {
        if pages.end > self.total_pages() || pages.start > pages.end {
            return Err(BitmapError::PageOutOfRange {
                page: pages.end.max(pages.start),
                total: self.total_pages(),
            });
        }
        self.mark_pages(pages, &mut false);
        Ok(())
    }

    /// Sets bits `pages` (in range, checked by the caller).
    #[inline]
    fn mark_pages(&self, pages: Range<u64>, fenced: &mut bool) {
        let word = (pages.start / 64) as usize;
        let count = pages.end.saturating_sub(pages.start);
        let lo = pages.start % 64;
        if count == 0 {
            return;
        }
        if lo + count <= 64 {
            // Within one word (every write up to 256 KiB that does not straddle a
            // word): one mask, one atomic.
            let mask = (!0u64 >> (64 - count)) << lo;
            self.set_bits(word, mask, fenced);
            return;
        }
        let mut page = pages.start;
        while page < pages.end {
            let word = (page / 64) as usize;
            let lo = page % 64;
            let hi = (pages.end - word as u64 * 64).min(64);
            let mask = (!0u64 >> (64 - (hi - lo))) << lo;
            self.set_bits(word, mask, fenced);
            page = word as u64 * 64 + hi;
        }
    }

    /// ORs `mask` into word `word`, skipping the atomic write when every bit is already
    /// set. `fenced` records whether this call already issued the `SeqCst` fence.
    #[inline]
    pub(super) fn set_bits(&self, word: usize, mask: u64, fenced: &mut bool) {
        let w = &self.words[word];
        if w.load(Ordering::Relaxed) & mask == mask {
            // The bits look set, but a harvester may be clearing them right now and
            // about to read the page. The fence orders our earlier write to guest memory
            // before the re-check (store-load order, which Release alone does not give):
            // either the re-check sees the harvester's clear and we set the bits again,
            // or the harvester's read after its own fence sees our write.
            if !*fenced {
                fence(Ordering::SeqCst);
                *fenced = true;
            }
            if w.load(Ordering::Relaxed) & mask == mask {
                return;
            }
        }
        // Release: a harvester that takes these bits (Acquire) sees the guest write.
        w.fetch_or(mask, Ordering::Release);
    }

    /// Whether page `page` is currently dirty (`false` when out of range).
    pub fn is_dirty(&self, page: u64) -> bool {
        page < self.total_pages()
            && self.words[(page / 64) as usize].load(Ordering::Acquire) & (1 << (page % 64)) != 0
    }

    /// Pages dirty now (a scan of the words).
    pub fn dirty_pages(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Fetch-and-clear of word range `words` into `out` (`out[i]` gets word
    /// `words.start + i`; zero words are skipped without a write). Returns the number of
    /// dirty pages taken. The primitive under every harvest; needs no allocator.
    ///
    /// Harvests of disjoint word ranges may run in parallel on different threads.
    pub fn harvest_words_into(
        &self,
        words: Range<usize>,
        out: &mut [u64],
    ) -> Result<u64, BitmapError> {
        if words.end > self.words.len() || words.start > words.end {
            return Err(BitmapError::PageOutOfRange {
                page: words.end.max(words.start) as u64 * 64,
                total: self.total_pages(),
            });
        }
        if out.len() != words.len() {
            return Err(BitmapError::SizeMismatch {
                expected: words.len() as u64 * 64,
                got: out.len() as u64 * 64,
            });
        }
        let first = words.start;
        let mut taken = 0u64;
        self.take_words(words, |i, bits| {
            out[i - first] = bits;
            taken += u64::from(bits.count_ones());
        });
        Ok(taken)
    }

    /// Fetch-and-clear of the words in `range`, calling `sink(index, bits)` for every
    /// word in order (`bits` is 0 for clean words). Ends with the harvest fence.
    ///
    /// Works a cache line (8 words) at a time: a line whose words all read zero is
    /// skipped without a write, so sparse bitmaps are harvested at memory-scan speed
    /// and clean lines are never pulled into exclusive state; in a line with any dirty
    /// word every word is swapped, which avoids a mispredicted branch per word.
    #[inline]
    fn take_words(&self, range: Range<usize>, mut sink: impl FnMut(usize, u64)) {
        const LINE: usize = 8;
        let words = &self.words[range.clone()];
        let mut chunks = words.chunks_exact(LINE);
        let mut index = range.start;
        for line in &mut chunks {
            let any = line
                .iter()
                .fold(0, |acc, w| acc | w.load(Ordering::Relaxed));
            for w in line {
                let bits = if any == 0 {
                    0
                } else {
                    w.swap(0, Ordering::AcqRel)
                };
                sink(index, bits);
                index += 1;
            }
        }
        for w in chunks.remainder() {
            let bits = if w.load(Ordering::Relaxed) == 0 {
                0
            } else {
                w.swap(0, Ordering::AcqRel)
            };
            sink(index, bits);
            index += 1;
        }
        // Pairs with the fence in `set_bits`: reads of guest pages after this harvest
        // see every write whose mark found its bit already set.
        fence(Ordering::SeqCst);
    }

    /// Fetch-and-clear of the dense page range `pages` (any alignment), calling
    /// `f(page)` for each dirty page in ascending order. Returns the number taken.
    /// Partial words at the edges are cleared with `fetch_and`, so neighbouring ranges
    /// harvested by other threads are left alone.
    ///
    /// `f` may read the page: it is called only after the harvest fence that follows
    /// the clearing of its word (words are taken a cache line at a time, then fenced,
    /// then handed to `f`), so it sees every write whose mark found its bit already set.
    pub fn harvest_range_with(
        &self,
        pages: Range<u64>,
        mut f: impl FnMut(u64),
    ) -> Result<u64, BitmapError> {
        if pages.end > self.total_pages() || pages.start > pages.end {
            return Err(BitmapError::PageOutOfRange {
                page: pages.end.max(pages.start),
                total: self.total_pages(),
            });
        }
        const BATCH: usize = 8;
        let mut taken = 0u64;
        let mut page = pages.start;
        while page < pages.end {
            // Take up to one cache line of words, then fence, then call back: reading
            // a page before the fence would break the store-buffering argument of
            // `set_bits` (the model check in tests/bitmap_loom.rs finds that outcome).
            let mut batch = [(0u64, 0u64); BATCH];
            let mut n = 0;
            while page < pages.end && n < BATCH {
                let word = (page / 64) as usize;
                let lo = page % 64;
                let hi = (pages.end - word as u64 * 64).min(64);
                let mask = (!0u64 >> (64 - (hi - lo))) << lo;
                let w = &self.words[word];
                let bits = if w.load(Ordering::Relaxed) & mask == 0 {
                    0
                } else if mask == !0 {
                    w.swap(0, Ordering::AcqRel)
                } else {
                    w.fetch_and(!mask, Ordering::AcqRel) & mask
                };
                if bits != 0 {
                    batch[n] = (word as u64 * 64, bits);
                    n += 1;
                }
                page = word as u64 * 64 + hi;
            }
            if n == 0 {
                continue;
            }
            fence(Ordering::SeqCst);
            for &(first, bits) in &batch[..n] {
                taken += u64::from(bits.count_ones());
                WordBits::new(bits, first).for_each(&mut f);
            }
        }
        // A harvest that took nothing still ends with the fence: pages the caller reads
        // after it see the writes whose marks it could have raced with.
        fence(Ordering::SeqCst);
        Ok(taken)
    }

    /// ORs dirty words back in (`words[i]` onto word `first_word + i`): what was
    /// harvested but could not be sent goes back for the next round. Bits past the last
    /// page are refused.
    pub fn restore_words(&self, first_word: usize, words: &[u64]) -> Result<(), BitmapError> {
        let end = first_word
            .checked_add(words.len())
            .filter(|&e| e <= self.words.len())
            .ok_or(BitmapError::SizeMismatch {
                expected: self.total_pages(),
                got: (first_word as u64 + words.len() as u64) * 64,
            })?;
        let tail_bits = self.total_pages() % 64;
        if end == self.words.len() && tail_bits != 0 {
            if let Some(&last) = words.last() {
                if last >> tail_bits != 0 {
                    return Err(BitmapError::PageOutOfRange {
                        page: (end as u64 - 1) * 64 + u64::from(63 - last.leading_zeros()),
                        total: self.total_pages(),
                    });
                }
            }
        }
        for (dst, &bits) in self.words[first_word..end].iter().zip(words) {
            if bits != 0 {
                dst.fetch_or(bits, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Fetch-and-clear of every page, into a [`super::DirtySet`].
    #[cfg(feature = "alloc")]
    pub fn harvest(&self) -> super::DirtySet {
        let mut set = super::DirtySet::new(self.total_pages());
        self.harvest_into(&mut set)
            .expect("a set made for this bitmap has its size");
        set
    }

    /// Fetch-and-clear of every page, ORed into `set` (which may already hold pages
    /// deferred from an earlier round). Returns the number of pages taken.
    pub fn harvest_into<S: AsRef<[u64]> + AsMut<[u64]>>(
        &self,
        set: &mut super::DirtySet<S>,
    ) -> Result<u64, BitmapError> {
        self.check_set(set.total_pages())?;
        let mut taken = 0;
        // Harvest in 4 KiB chunks through a stack buffer so `set` keeps its old bits.
        let mut buf = [0u64; 512];
        let mut start = 0;
        while start < self.words.len() {
            let end = (start + buf.len()).min(self.words.len());
            let chunk = &mut buf[..end - start];
            taken += self.harvest_words_into(start..end, chunk)?;
            for (dst, src) in set.words_mut()[start..end].iter_mut().zip(chunk.iter()) {
                *dst |= *src;
            }
            start = end;
        }
        Ok(taken)
    }

    /// Fetch-and-clear of every page, appending the dirty page indices to `out` in
    /// ascending order. Returns the number of pages taken.
    #[cfg(feature = "alloc")]
    pub fn harvest_to_vec(&self, out: &mut alloc::vec::Vec<u64>) -> u64 {
        let before = out.len();
        self.take_words(0..self.words.len(), |i, bits| {
            out.extend(WordBits::new(bits, i as u64 * 64));
        });
        (out.len() - before) as u64
    }

    /// Puts every page of `set` back (see [`Self::restore_words`]).
    pub fn restore<S: AsRef<[u64]> + AsMut<[u64]>>(
        &self,
        set: &super::DirtySet<S>,
    ) -> Result<(), BitmapError> {
        self.check_set(set.total_pages())?;
        self.restore_words(0, set.words())
    }

    fn check_set(&self, set_pages: u64) -> Result<(), BitmapError> {
        if set_pages != self.total_pages() {
            return Err(BitmapError::SizeMismatch {
                expected: self.total_pages(),
                got: set_pages,
            });
        }
        Ok(())
    }
}
