//! Which pages travel on which stream of a multi-stream migration.
//!
//! Guest pages are cut into chunks of [`SHARD_CHUNK_PAGES`] pages (eight bitmap words,
//! one cache line of the dirty bitmap); chunk `c` belongs to stream `c % count`. Every
//! version of a page therefore travels on the same stream, in order, so a late copy of
//! a page can never overtake a newer one from another stream, and each stream keeps its
//! own delta cache. The round number of a stream is the generation of the pages in it.
//! A chunk's bitmap words are 64 bytes, a cache line's worth: where the bitmap's
//! words start on a cache line, two streams' harvests never touch the same line (an
//! owned bitmap's allocation is only 8-byte aligned, so they may share one line at
//! each chunk boundary).

/// Pages per chunk: eight 64-bit bitmap words, 64 bytes (a cache line's worth).
pub const SHARD_CHUNK_PAGES: u64 = 512;

/// The most streams a migration can have.
pub const MAX_STREAMS: u8 = 255;

/// Stream `index` of `count`: the pages of the chunks `c` with `c % count == index`.
///
/// ```
/// use precopy::layout::Shard;
/// let s = Shard::new(1, 2).unwrap();
/// assert!(!s.owns(0) && s.owns(512) && !s.owns(1024));
/// assert_eq!(s.next_owned(3, 2000), Some(512));
/// assert_eq!(s.pages(1500), 512);
/// assert_eq!(Shard::WHOLE.pages(1500), 1500);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u8,
    count: u8,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::WHOLE
    }
}

impl Shard {
    /// The only stream of a single-stream migration: every page.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Stream `index` of `count`; `None` unless `index < count` (so `count >= 1`).
    pub const fn new(index: u8, count: u8) -> Option<Shard> {
        if index < count {
            Some(Shard { index, count })
        } else {
            None
        }
    }

    /// This stream's index.
    pub const fn index(self) -> u8 {
        self.index
    }

    /// How many streams the migration has.
    pub const fn count(self) -> u8 {
        self.count
    }

    /// The chunk page `page` is in.
    const fn chunk(page: u64) -> u64 {
        page / SHARD_CHUNK_PAGES
    }

    /// Whether page `page` travels on this stream.
    pub const fn owns(self, page: u64) -> bool {
        Self::chunk(page) % self.count as u64 == self.index as u64
    }

    /// Whether every page of `first..first + count` travels on this stream (an empty
    /// range is owned if `first` is).
    pub fn owns_range(self, first: u64, count: u64) -> bool {
        if self.count == 1 {
            return true;
        }
        let last = first.saturating_add(count.saturating_sub(1));
        // With two or more streams, consecutive owned pages never leave one chunk.
        self.owns(first) && Self::chunk(first) == Self::chunk(last)
    }

    /// The first page at or after `from` (and below `total`) on this stream.
    pub fn next_owned(self, from: u64, total: u64) -> Option<u64> {
        if from >= total {
            return None;
        }
        if self.owns(from) {
            return Some(from);
        }
        let chunk = Self::chunk(from);
        let n = u64::from(self.count);
        let ahead = (u64::from(self.index) + n - chunk % n) % n;
        let page = (chunk + ahead).checked_mul(SHARD_CHUNK_PAGES)?;
        (page < total).then_some(page)
    }

    /// Where page `page` (one of this stream's) stands among the stream's pages: 0 for
    /// its first page, up to [`pages`](Self::pages) - 1 for its last. For a table
    /// with one entry per page of the stream.
    pub const fn local_index(self, page: u64) -> u64 {
        if self.count == 1 {
            // Every page is the only stream's: no division on the single-stream path.
            return page;
        }
        let chunk = Self::chunk(page);
        (chunk / self.count as u64) * SHARD_CHUNK_PAGES + page % SHARD_CHUNK_PAGES
    }

    /// Pages of `0..total` on this stream.
    pub fn pages(self, total: u64) -> u64 {
        let n = u64::from(self.count);
        let i = u64::from(self.index);
        let full_chunks = total / SHARD_CHUNK_PAGES;
        let tail = total % SHARD_CHUNK_PAGES;
        let mine = full_chunks / n + u64::from(full_chunks % n > i);
        let tail_mine = if full_chunks % n == i { tail } else { 0 };
        mine * SHARD_CHUNK_PAGES + tail_mine
    }

    /// This stream's page ranges of `0..total`, in order: whole chunks, and the last
    /// one cut at `total`.
    pub fn ranges(self, total: u64) -> impl Iterator<Item = core::ops::Range<u64>> {
        let step = SHARD_CHUNK_PAGES * u64::from(self.count);
        let first = SHARD_CHUNK_PAGES * u64::from(self.index);
        (0..)
            .map(move |k: u64| first.saturating_add(k.saturating_mul(step)))
            .take_while(move |&start| start < total)
            .map(move |start| start..(start + SHARD_CHUNK_PAGES).min(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_pages() {
        for count in 1..=5u8 {
            for total in [0u64, 1, 511, 512, 513, 2048, 5000] {
                let shards: alloc::vec::Vec<Shard> =
                    (0..count).map(|i| Shard::new(i, count).unwrap()).collect();
                let mut owned_total = 0;
                for s in &shards {
                    let by_ranges: u64 = s.ranges(total).map(|r| r.end - r.start).sum();
                    let by_pages = (0..total).filter(|&p| s.owns(p)).count() as u64;
                    assert_eq!(by_ranges, by_pages);
                    assert_eq!(s.pages(total), by_pages, "count {count} total {total}");
                    // Local indices number the stream's pages 0, 1, 2, ... in order.
                    let local: alloc::vec::Vec<u64> = (0..total)
                        .filter(|&p| s.owns(p))
                        .map(|p| s.local_index(p))
                        .collect();
                    assert!(local.iter().enumerate().all(|(i, &l)| l == i as u64));
                    owned_total += by_pages;
                    // next_owned agrees with owns.
                    for from in (0..total + 3).step_by(97) {
                        let want = (from..total).find(|&p| s.owns(p));
                        assert_eq!(s.next_owned(from, total), want);
                    }
                }
                assert_eq!(owned_total, total);
                for p in 0..total {
                    assert_eq!(shards.iter().filter(|s| s.owns(p)).count(), 1);
                }
            }
        }
        assert_eq!(Shard::new(2, 2), None);
        assert_eq!(Shard::new(0, 0), None);
        let s = Shard::new(0, 2).unwrap();
        assert!(s.owns_range(0, 512) && !s.owns_range(0, 513) && !s.owns_range(512, 1));
        assert!(Shard::WHOLE.owns_range(0, 10_000));
    }
}
