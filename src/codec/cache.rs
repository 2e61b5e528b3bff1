//! The bounded cache of "the version last sent" that delta encoding works against.

use super::{base_hash, CodecError};
use crate::layout::{words_as_bytes, words_as_bytes_mut, OwnedWords};

/// Index entry meaning "no slot".
const EMPTY: u64 = u64::MAX;
/// Highest heat a slot reaches: a page re-sent this often survives three clock sweeps.
const MAX_HEAT: u64 = 3;
/// Words of bookkeeping per slot: page, hash, heat, free-list entry.
const SLOT_WORDS: usize = 4;
/// Most slots a cache holds (index positions stay far from `EMPTY`).
const MAX_SLOTS: usize = u32::MAX as usize / 2;
/// Bookkeeping bytes per slot charged to the budget: its metadata and free-list entry
/// (4 words) and up to 4 words of index (the index has at most 4 entries per slot).
pub const SLOT_OVERHEAD: usize = (SLOT_WORDS + 4) * 8;

/// Counters of a [`PageCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found the page.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Pages pushed out to make room for another.
    pub evictions: u64,
    /// Pages stored (new or replaced).
    pub stores: u64,
    /// Pages dropped because they were sent in a form that is not a delta base.
    pub drops: u64,
}

/// A cached delta base: the bytes last sent for a page and their hash (carried in a
/// delta frame so the destination can check it holds the same base).
#[derive(Clone, Copy, Debug)]
pub struct CachedBase<'a> {
    /// The page as last sent.
    pub bytes: &'a [u8],
    /// [`base_hash`] of `bytes`.
    pub hash: u64,
}

/// A fixed-size page cache over `u64` words held by `S`: [`OwnedWords`] allocated once
/// in [`PageCache::new`] from a budget the caller sets, or caller words
/// ([`PageCache::over`], no allocator); storing, finding and dropping a page never
/// allocate.
///
/// Eviction is CLOCK with a small frequency count: storing a page that is already
/// cached (it was re-dirtied and sent again) heats it, the clock hand cools pages as it
/// sweeps and evicts the first cold one, so pages the guest keeps rewriting, the ones
/// delta encoding pays off for, outlive pages sent once in the bulk round.
///
/// ```
/// use precopy::codec::PageCache;
/// let mut cache = PageCache::new(4096, 2 * 4200).unwrap();
/// assert_eq!(cache.capacity(), 2);
/// cache.store(7, &[1u8; 4096]);
/// assert_eq!(cache.lookup(7).unwrap().bytes[0], 1);
/// assert!(cache.lookup(8).is_none());
/// assert_eq!((cache.stats().hits, cache.stats().misses), (1, 1));
/// ```
pub struct PageCache<S = OwnedWords> {
    page_size: usize,
    /// Layout of `words`: page data (`slots * page_size / 8` words), then per slot
    /// page, hash and heat (`meta`), the index (`index_len` words, a power of two) and
    /// the free list (`slots` words).
    words: S,
    slots: usize,
    meta: usize,
    index: usize,
    index_len: usize,
    free: usize,
    free_len: usize,
    used: usize,
    hand: usize,
    stats: CacheStats,
}

impl<S> core::fmt::Debug for PageCache<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageCache")
            .field("page_size", &self.page_size)
            .field("capacity", &self.slots)
            .field("len", &(self.used - self.free_len))
            .field("stats", &self.stats)
            .finish()
    }
}

/// Slots a budget pays for.
fn slots_for(page_size: usize, budget_bytes: usize) -> usize {
    (budget_bytes / (page_size + SLOT_OVERHEAD)).min(MAX_SLOTS)
}

/// Index entries for `slots` slots: a power of two at least twice as many (none for
/// a cache that holds nothing).
fn index_len_for(slots: usize) -> usize {
    if slots == 0 {
        0
    } else {
        (slots * 2).next_power_of_two()
    }
}

#[cfg(feature = "alloc")]
impl PageCache<OwnedWords> {
    /// A cache of as many pages as fit in `budget_bytes` (page bytes plus
    /// [`SLOT_OVERHEAD`] each), allocated here. A budget below one page gives a cache
    /// that holds nothing (every lookup misses), which turns delta encoding off.
    pub fn new(page_size: usize, budget_bytes: usize) -> Result<Self, CodecError> {
        super::check_page_size(page_size)?;
        let words = Self::storage_words(page_size, budget_bytes)?;
        let storage = OwnedWords::try_zeroed(words).ok_or(CodecError::CacheAllocation {
            bytes: words.saturating_mul(8),
        })?;
        PageCache::over(page_size, budget_bytes, storage)
    }
}

impl PageCache<OwnedWords> {
    /// Words of storage a cache of `budget_bytes` needs for pages of `page_size`
    /// (never more than `budget_bytes / 8`; 0 when the budget holds no page).
    pub fn storage_words(page_size: usize, budget_bytes: usize) -> Result<usize, CodecError> {
        super::check_page_size(page_size)?;
        let slots = slots_for(page_size, budget_bytes);
        Ok(slots * (page_size / 8 + SLOT_WORDS) + index_len_for(slots))
    }
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> PageCache<S> {
    /// A cache of `budget_bytes` (as [`PageCache::new`]) in caller words (no
    /// allocation): `words` holds at least [`PageCache::storage_words`] words, else
    /// [`CodecError::CacheStorageTooSmall`].
    pub fn over(page_size: usize, budget_bytes: usize, mut words: S) -> Result<Self, CodecError> {
        let needed = PageCache::storage_words(page_size, budget_bytes)?;
        let got = words.as_ref().len();
        if got < needed {
            return Err(CodecError::CacheStorageTooSmall { needed, got });
        }
        let slots = slots_for(page_size, budget_bytes);
        let index_len = index_len_for(slots);
        let meta = slots * (page_size / 8);
        let index = meta + 3 * slots;
        words.as_mut()[index..index + index_len].fill(EMPTY);
        Ok(PageCache {
            page_size,
            words,
            slots,
            meta,
            index,
            index_len,
            free: index + index_len,
            free_len: 0,
            used: 0,
            hand: 0,
            stats: CacheStats::default(),
        })
    }

    /// Pages the cache can hold.
    pub fn capacity(&self) -> usize {
        self.slots
    }

    /// Pages it holds now.
    pub fn len(&self) -> usize {
        self.used - self.free_len
    }

    /// Whether it holds no page.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hit, miss, eviction, store and drop counts so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The base cached for `page`, counting a hit or a miss.
    pub fn lookup(&mut self, page: u64) -> Option<CachedBase<'_>> {
        match self.find(page) {
            Some((_, slot)) => {
                self.stats.hits += 1;
                Some(CachedBase {
                    hash: self.w(self.meta + 3 * slot + 1),
                    bytes: self.slot_bytes(slot),
                })
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Whether `page` is cached (no counter changes).
    pub fn contains(&self, page: u64) -> bool {
        self.find(page).is_some()
    }

    /// Stores `data` (one page) as the version last sent of `page`, replacing and
    /// heating an existing entry or taking a free or evicted slot. Does nothing when
    /// the capacity is zero or `data` is not one page long. Returns the
    /// [`base_hash`] of `data` when it stored it (computed anyway for the entry), so
    /// a caller that also needs it does not hash the page twice.
    pub fn store(&mut self, page: u64, data: &[u8]) -> Option<u64> {
        if self.slots == 0 || data.len() != self.page_size {
            return None;
        }
        self.stats.stores += 1;
        let slot = match self.find(page) {
            Some((_, slot)) => {
                let heat = self.meta + 3 * slot + 2;
                let h = (self.w(heat) + 1).min(MAX_HEAT);
                self.set_w(heat, h);
                slot
            }
            None => {
                let slot = self.take_slot();
                let m = self.meta + 3 * slot;
                self.set_w(m, page);
                self.set_w(m + 2, 0);
                let mut i = self.home(page);
                while self.w(self.index + i) != EMPTY {
                    i = (i + 1) & (self.index_len - 1);
                }
                self.set_w(self.index + i, slot as u64);
                slot
            }
        };
        let hash = base_hash(data);
        self.set_w(self.meta + 3 * slot + 1, hash);
        let pw = self.page_size / 8;
        let start = slot * pw;
        words_as_bytes_mut(&mut self.words.as_mut()[start..start + pw]).copy_from_slice(data);
        Some(hash)
    }

    /// Drops `page` if cached: call it whenever the page is sent in a form the
    /// destination cannot use as this base (the codec's chooser does, for zero pages).
    pub fn drop_page(&mut self, page: u64) {
        if let Some((i, slot)) = self.find(page) {
            self.stats.drops += 1;
            self.unindex(i);
            self.set_w(self.free + self.free_len, slot as u64);
            self.free_len += 1;
        }
    }

    /// Drops every cached page of `first..first + count`: page by page when the range
    /// is no longer than the pages cached, else by one pass over the slots.
    pub fn drop_range(&mut self, first: u64, count: u64) {
        let end = first.saturating_add(count);
        if count <= self.len() as u64 {
            for page in first..end {
                self.drop_page(page);
            }
            return;
        }
        for slot in 0..self.used {
            let page = self.w(self.meta + 3 * slot);
            // A free slot keeps a stale page number: `drop_page` finds only what the
            // index holds.
            if (first..end).contains(&page) {
                self.drop_page(page);
            }
        }
    }

    #[inline]
    fn w(&self, i: usize) -> u64 {
        self.words.as_ref()[i]
    }

    #[inline]
    fn set_w(&mut self, i: usize, value: u64) {
        self.words.as_mut()[i] = value;
    }

    fn slot_bytes(&self, slot: usize) -> &[u8] {
        let pw = self.page_size / 8;
        words_as_bytes(&self.words.as_ref()[slot * pw..(slot + 1) * pw])
    }

    #[inline]
    fn home(&self, page: u64) -> usize {
        let h = page.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & (self.index_len - 1)
    }

    /// (index position, slot) of `page`.
    #[inline]
    fn find(&self, page: u64) -> Option<(usize, usize)> {
        if self.slots == 0 {
            return None;
        }
        let words = self.words.as_ref();
        let index = &words[self.index..self.index + self.index_len];
        let mask = self.index_len - 1;
        let mut i = self.home(page);
        loop {
            let slot = index[i];
            if slot == EMPTY {
                return None;
            }
            if words[self.meta + 3 * slot as usize] == page {
                return Some((i, slot as usize));
            }
            i = (i + 1) & mask;
        }
    }

    /// A slot for a new page: a free one, an unused one, or the clock's victim.
    fn take_slot(&mut self) -> usize {
        if self.free_len > 0 {
            self.free_len -= 1;
            return self.w(self.free + self.free_len) as usize;
        }
        if self.used < self.slots {
            self.used += 1;
            return self.used - 1;
        }
        loop {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.slots;
            let heat = self.meta + 3 * slot + 2;
            if self.w(heat) == 0 {
                let page = self.w(self.meta + 3 * slot);
                if let Some((i, _)) = self.find(page) {
                    self.unindex(i);
                }
                self.stats.evictions += 1;
                return slot;
            }
            self.set_w(heat, self.w(heat) - 1);
        }
    }

    /// Removes index entry `i`, shifting later entries of the probe run back so that
    /// lookups never stop early (linear probing without tombstones).
    fn unindex(&mut self, mut i: usize) {
        let mask = self.index_len - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let slot = self.w(self.index + j);
            if slot == EMPTY {
                break;
            }
            let home = self.home(self.w(self.meta + 3 * slot as usize));
            // Entry j may move to i if its home is not in the cyclic range (i, j].
            let movable = if i <= j {
                home <= i || home > j
            } else {
                home <= i && home > j
            };
            if movable {
                self.set_w(self.index + i, slot);
                i = j;
            }
        }
        self.set_w(self.index + i, EMPTY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_pages_survive_a_stream_of_cold_ones() {
        // 8 slots; every round re-sends 4 hot pages and 3 pages never seen again.
        let mut cache = PageCache::new(512, 8 * (512 + SLOT_OVERHEAD)).unwrap();
        assert_eq!(cache.capacity(), 8);
        let mut cold = 1000u64;
        for round in 0..30u8 {
            for hot in 0..4u64 {
                let found = cache.lookup(hot).map(|b| b.bytes[0]);
                if round > 0 {
                    assert_eq!(found, Some(round - 1), "hot page {hot} in round {round}");
                }
                cache.store(hot, &[round; 512]);
            }
            for _ in 0..3 {
                cache.store(cold, &[0xcc; 512]);
                cold += 1;
            }
        }
        assert_eq!(cache.len(), 8);
        assert!(cache.stats().evictions >= 80, "{:?}", cache.stats());
        assert_eq!(cache.stats().hits, 29 * 4);
    }

    #[test]
    fn drop_and_reinsert_keep_the_index_consistent() {
        let mut cache = PageCache::new(512, 64 * (512 + SLOT_OVERHEAD)).unwrap();
        for p in 0..64u64 {
            cache.store(p * 1024, &[p as u8; 512]);
        }
        for p in (0..64u64).step_by(3) {
            cache.drop_page(p * 1024);
        }
        for p in 0..64u64 {
            let b = cache.lookup(p * 1024).map(|b| b.bytes[0]);
            assert_eq!(b, (p % 3 != 0).then_some(p as u8), "page {p}");
        }
        cache.store(5, &[9; 512]);
        assert_eq!(cache.lookup(5).map(|b| b.hash), Some(base_hash(&[9; 512])));
    }

    #[test]
    fn caller_words_hold_the_same_cache() {
        let words = PageCache::storage_words(512, 8 * (512 + SLOT_OVERHEAD)).unwrap();
        assert!(words * 8 <= 8 * (512 + SLOT_OVERHEAD), "within the budget");
        let mut storage = alloc::vec![0u64; words];
        let mut cache = PageCache::over(512, 8 * (512 + SLOT_OVERHEAD), &mut storage[..]).unwrap();
        assert_eq!(cache.capacity(), 8);
        for p in 0..20u64 {
            cache.store(p, &[p as u8; 512]);
        }
        assert_eq!(cache.len(), 8);
        let hit = (0..20u64).filter(|&p| cache.lookup(p).is_some()).count();
        assert_eq!(hit, 8);
        let short = PageCache::over(512, 8 * (512 + SLOT_OVERHEAD), &mut storage[..words - 1]);
        assert_eq!(
            short.unwrap_err(),
            CodecError::CacheStorageTooSmall {
                needed: words,
                got: words - 1
            }
        );
        // A budget of no page needs no storage and caches nothing.
        let mut none = PageCache::over(512, 100, &mut [][..]).unwrap();
        assert!(none.store(1, &[1; 512]).is_none() && none.lookup(1).is_none());
    }

    #[test]
    fn zero_budget_holds_nothing() {
        let mut cache = PageCache::new(4096, 100).unwrap();
        cache.store(1, &[1; 4096]);
        assert!(cache.lookup(1).is_none());
        assert!(cache.is_empty());
    }
}
