//! The bounded cache of "the version last sent" that delta encoding works against.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{base_hash, CodecError};

/// Index entry meaning "no slot".
const EMPTY: u32 = u32::MAX;
/// Highest heat a slot reaches: a page re-sent this often survives three clock sweeps.
const MAX_HEAT: u8 = 3;
/// Bookkeeping bytes per slot charged to the budget (metadata, index, free list).
pub const SLOT_OVERHEAD: usize = core::mem::size_of::<Slot>() + 3 * 4;

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

#[derive(Clone, Copy, Debug)]
struct Slot {
    page: u64,
    hash: u64,
    heat: u8,
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

/// A fixed-size page cache: every byte is allocated once in [`PageCache::new`], from a
/// budget the caller sets; storing, finding and dropping a page never allocate.
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
pub struct PageCache {
    page_size: usize,
    data: Box<[u8]>,
    slots: Box<[Slot]>,
    index: Box<[u32]>,
    free: Box<[u32]>,
    free_len: usize,
    used: usize,
    hand: usize,
    stats: CacheStats,
}

impl core::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageCache")
            .field("page_size", &self.page_size)
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn try_boxed<T: Clone>(value: T, n: usize) -> Result<Box<[T]>, CodecError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| CodecError::CacheAllocation {
            bytes: n.saturating_mul(core::mem::size_of::<T>()),
        })?;
    v.resize(n, value);
    Ok(v.into_boxed_slice())
}

impl PageCache {
    /// A cache of as many pages as fit in `budget_bytes` (page bytes plus
    /// [`SLOT_OVERHEAD`] each). A budget below one page gives a cache that holds
    /// nothing (every lookup misses), which turns delta encoding off.
    pub fn new(page_size: usize, budget_bytes: usize) -> Result<Self, CodecError> {
        super::check_page_size(page_size)?;
        let slots = (budget_bytes / (page_size + SLOT_OVERHEAD)).min(EMPTY as usize / 2);
        let index_len = (slots * 2).next_power_of_two().max(2);
        Ok(PageCache {
            page_size,
            data: try_boxed(0u8, slots * page_size)?,
            slots: try_boxed(
                Slot {
                    page: 0,
                    hash: 0,
                    heat: 0,
                },
                slots,
            )?,
            index: try_boxed(EMPTY, index_len)?,
            free: try_boxed(0u32, slots)?,
            free_len: 0,
            used: 0,
            hand: 0,
            stats: CacheStats::default(),
        })
    }

    /// Pages the cache can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len()
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
                let s = self.slots[slot];
                Some(CachedBase {
                    bytes: self.slot_bytes(slot),
                    hash: s.hash,
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
        if self.slots.is_empty() || data.len() != self.page_size {
            return None;
        }
        self.stats.stores += 1;
        let slot = match self.find(page) {
            Some((_, slot)) => {
                let s = &mut self.slots[slot];
                s.heat = (s.heat + 1).min(MAX_HEAT);
                slot
            }
            None => {
                let slot = self.take_slot();
                self.slots[slot] = Slot {
                    page,
                    hash: 0,
                    heat: 0,
                };
                let mut i = self.home(page);
                while self.index[i] != EMPTY {
                    i = (i + 1) & (self.index.len() - 1);
                }
                self.index[i] = slot as u32;
                slot
            }
        };
        let hash = base_hash(data);
        self.slots[slot].hash = hash;
        let start = slot * self.page_size;
        self.data[start..start + self.page_size].copy_from_slice(data);
        Some(hash)
    }

    /// Drops `page` if cached: call it whenever the page is sent in a form the
    /// destination cannot use as this base (the codec's chooser does, for zero pages).
    pub fn drop_page(&mut self, page: u64) {
        if let Some((i, slot)) = self.find(page) {
            self.stats.drops += 1;
            self.unindex(i);
            self.free[self.free_len] = slot as u32;
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
            let page = self.slots[slot].page;
            // A free slot keeps a stale page number: `drop_page` finds only what the
            // index holds.
            if (first..end).contains(&page) {
                self.drop_page(page);
            }
        }
    }

    fn slot_bytes(&self, slot: usize) -> &[u8] {
        let start = slot * self.page_size;
        &self.data[start..start + self.page_size]
    }

    fn home(&self, page: u64) -> usize {
        let h = page.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & (self.index.len() - 1)
    }

    /// (index position, slot) of `page`.
    fn find(&self, page: u64) -> Option<(usize, usize)> {
        let mask = self.index.len() - 1;
        let mut i = self.home(page);
        loop {
            let slot = self.index[i];
            if slot == EMPTY {
                return None;
            }
            if self.slots[slot as usize].page == page {
                return Some((i, slot as usize));
            }
            i = (i + 1) & mask;
        }
    }

    /// A slot for a new page: a free one, an unused one, or the clock's victim.
    fn take_slot(&mut self) -> usize {
        if self.free_len > 0 {
            self.free_len -= 1;
            return self.free[self.free_len] as usize;
        }
        if self.used < self.slots.len() {
            self.used += 1;
            return self.used - 1;
        }
        loop {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if self.slots[slot].heat == 0 {
                let page = self.slots[slot].page;
                if let Some((i, _)) = self.find(page) {
                    self.unindex(i);
                }
                self.stats.evictions += 1;
                return slot;
            }
            self.slots[slot].heat -= 1;
        }
    }

    /// Removes index entry `i`, shifting later entries of the probe run back so that
    /// lookups never stop early (linear probing without tombstones).
    fn unindex(&mut self, mut i: usize) {
        let mask = self.index.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let slot = self.index[j];
            if slot == EMPTY {
                break;
            }
            let home = self.home(self.slots[slot as usize].page);
            // Entry j may move to i if its home is not in the cyclic range (i, j].
            let movable = if i <= j {
                home <= i || home > j
            } else {
                home <= i && home > j
            };
            if movable {
                self.index[i] = slot;
                i = j;
            }
        }
        self.index[i] = EMPTY;
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
    fn zero_budget_holds_nothing() {
        let mut cache = PageCache::new(4096, 100).unwrap();
        cache.store(1, &[1; 4096]);
        assert!(cache.lookup(1).is_none());
        assert!(cache.is_empty());
    }
}
