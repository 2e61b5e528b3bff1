//! One guest memory written by the streams of a multi-stream migration at once, each
//! through its own [`StreamMemory`] that reaches only that stream's pages, and
//! [`FreshMemory`]: a fresh zeroed allocation whose views know its zero pages and keep
//! the hash of every page they write.

use core::marker::PhantomData;

use super::{check_page_access, hash_chunks, zero_page_hash, MemoryError, PageMemory, VecMemory};
use crate::layout::{seek_bit, Shard, SHARD_CHUNK_PAGES};

// A word of the written bitmap (64 pages) never straddles two streams' chunks, so the
// views of one `FreshMemory` touch disjoint words.
const _: () = assert!(SHARD_CHUNK_PAGES % 64 == 0);

/// Stream `shard`'s share of one memory: reads and writes only the pages that travel
/// on that stream (any other page is [`MemoryError::OtherStream`]), so the appliers of
/// a multi-stream migration each write their own pages of one memory, on their own
/// threads, at memcpy speed. Made by [`VecMemory::whole`] and [`VecMemory::streams`]
/// (plain views: they read and hash what memory holds) or by [`FreshMemory::whole`]
/// and [`FreshMemory::views`] (views that know which pages are still zero and keep
/// the hash of every page they write).
///
/// ```
/// use precopy::memory::{PageMemory, VecMemory};
/// let mut memory = VecMemory::new(4096, 1024);
/// let mut views = memory.streams(2);
/// let (mut a, mut b) = (views.remove(0), views.remove(0));
/// // Views are `Send`: each stream's applier can write from a thread of its own.
/// a.write_page(0, &[1; 4096]).unwrap();
/// b.write_page(512, &[2; 4096]).unwrap();
/// assert!(b.write_page(0, &[2; 4096]).is_err(), "stream 0's page");
/// drop((a, b));
/// assert_eq!(memory.as_bytes()[0], 1);
/// assert_eq!(memory.as_bytes()[512 * 4096], 2);
/// ```
#[derive(Debug)]
pub struct StreamMemory<'a> {
    base: *mut u8,
    page_size: usize,
    total: u64,
    shard: Shard,
    /// For views of a [`FreshMemory`]: its per-page knowledge.
    tracked: Option<Tracked>,
    _memory: PhantomData<&'a mut [u8]>,
}

/// A [`FreshMemory`]'s per-page knowledge, reached by raw pointers so that the views
/// of several streams can each update their own pages' entries.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    /// Bit `p % 64` of word `p / 64`: page `p` was written since it was last zero.
    written: *mut u64,
    /// Entry `p`: the hash of page `p`'s content, valid while its written bit is set.
    hashes: *mut u64,
}

// SAFETY: a `StreamMemory` reaches only its own stream's pages (and, tracked, their
// entries of the written bitmap and hash table: a bitmap word covers 64 pages, all in
// one 512-page chunk of one stream) of a memory that is mutably borrowed for its
// lifetime, and the views made together have different streams, so no two of them,
// on any threads, ever touch the same byte. Sending one to another thread is then
// like sending a `&mut [u8]`.
unsafe impl Send for StreamMemory<'_> {}

// SAFETY: through `&StreamMemory` only reads happen (every write takes `&mut self`),
// so sharing one between threads is like sharing a `&[u8]` of its pages.
unsafe impl Sync for StreamMemory<'_> {}

impl VecMemory {
    /// One plain view of all of this memory (a single-stream migration's).
    pub fn whole(&mut self) -> StreamMemory<'_> {
        let (page_size, total) = (self.page_size(), self.total_pages());
        StreamMemory::over(
            self.as_bytes_mut().as_mut_ptr(),
            page_size,
            total,
            Shard::WHOLE,
            None,
        )
    }

    /// Cuts this memory into `count` plain views, one per stream of a multi-stream
    /// migration (view `i` reaches the pages of [`Shard::new(i, count)`](Shard::new)).
    /// `count` 0 is taken as 1.
    pub fn streams(&mut self, count: u8) -> alloc::vec::Vec<StreamMemory<'_>> {
        let (page_size, total) = (self.page_size(), self.total_pages());
        let base = self.as_bytes_mut().as_mut_ptr();
        cut(base, page_size, total, count, None)
    }
}

/// `count` views (0 taken as 1) of the memory at `base`, one per stream.
fn cut<'a>(
    base: *mut u8,
    page_size: usize,
    total: u64,
    count: u8,
    tracked: Option<Tracked>,
) -> alloc::vec::Vec<StreamMemory<'a>> {
    let count = count.max(1);
    (0..count)
        .map(|i| {
            let shard = Shard::new(i, count).unwrap_or(Shard::WHOLE);
            // Each view takes the memory's base pointer; their streams differ, so no
            // two reach the same page (see the `Send` impl).
            StreamMemory::over(base, page_size, total, shard, tracked)
        })
        .collect()
}

impl StreamMemory<'_> {
    /// The view of `shard`'s pages of the memory at `base` (`total` pages of
    /// `page_size`), for the lifetime of the caller's borrow of that memory.
    fn over(
        base: *mut u8,
        page_size: usize,
        total: u64,
        shard: Shard,
        tracked: Option<Tracked>,
    ) -> Self {
        StreamMemory {
            base,
            page_size,
            total,
            shard,
            tracked,
            _memory: PhantomData,
        }
    }

    /// The stream whose pages this view reaches.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Whether this view knows which pages are zero and keeps page hashes (a view of
    /// a [`FreshMemory`]).
    pub fn is_tracked(&self) -> bool {
        self.tracked.is_some()
    }

    /// Whether page `page` (checked to be this stream's) is known to be zero.
    fn known_zero(&self, page: u64) -> bool {
        self.tracked.is_some_and(|t| {
            // SAFETY: `page` is in range and this stream's (checked by the caller), so
            // its word is within the bitmap and only this view touches it.
            let word = unsafe { *t.written.add((page / 64) as usize) };
            word & (1 << (page % 64)) == 0
        })
    }

    /// Records that page `page` (checked to be this stream's) now holds content with
    /// `hash`, or zero content (`None`).
    fn track(&mut self, page: u64, hash: Option<u64>) {
        if let Some(t) = self.tracked {
            let bit = 1u64 << (page % 64);
            // SAFETY: as in `known_zero`, and `&mut self` makes this the only access
            // to this view's entries.
            unsafe {
                let word = t.written.add((page / 64) as usize);
                match hash {
                    Some(h) => {
                        *word |= bit;
                        *t.hashes.add(page as usize) = h;
                    }
                    None => *word &= !bit,
                }
            }
        }
    }

    /// The byte range of pages `first..first + count`, if they exist and are all this
    /// stream's.
    fn byte_range(&self, first: u64, count: u64) -> Result<(usize, usize), MemoryError> {
        let end = first
            .checked_add(count)
            .filter(|&end| end <= self.total)
            .ok_or(MemoryError::PageOutOfRange {
                page: first.saturating_add(count).saturating_sub(1).max(first),
                total: self.total,
            })?;
        if !self.shard.owns_range(first, end - first) {
            let page = (first..end).find(|&p| !self.shard.owns(p)).unwrap_or(first);
            return Err(MemoryError::OtherStream { page });
        }
        Ok((
            first as usize * self.page_size,
            (end - first) as usize * self.page_size,
        ))
    }

    /// Pages `first..first + count`, read-only.
    fn pages(&self, first: u64, count: u64) -> Result<&[u8], MemoryError> {
        let (start, len) = self.byte_range(first, count)?;
        // SAFETY: the range lies within the memory (`byte_range` checked `end <=
        // total`; the memory is `total * page_size` bytes from `base`) and holds only
        // this stream's pages, which no other view reaches (see the `Send` impl); the
        // memory is borrowed for `'a`. While this shared slice lives, `&self` is
        // borrowed, so this view's `pages_mut` cannot run.
        Ok(unsafe { core::slice::from_raw_parts(self.base.add(start), len) })
    }

    /// Pages `first..first + count`, writable.
    fn pages_mut(&mut self, first: u64, count: u64) -> Result<&mut [u8], MemoryError> {
        let (start, len) = self.byte_range(first, count)?;
        // SAFETY: as in `pages`, and `&mut self` makes this the only slice of this
        // view's pages alive.
        Ok(unsafe { core::slice::from_raw_parts_mut(self.base.add(start), len) })
    }
}

impl PageMemory for StreamMemory<'_> {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn total_pages(&self) -> u64 {
        self.total
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        check_page_access(page, buf.len(), self.page_size, self.total)?;
        let bytes = self.pages(page, 1)?;
        if self.known_zero(page) {
            buf.fill(0);
        } else {
            buf.copy_from_slice(bytes);
        }
        Ok(())
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        check_page_access(page, data.len(), self.page_size, self.total)?;
        self.pages_mut(page, 1)?.copy_from_slice(data);
        if self.tracked.is_some() {
            self.track(page, Some(crate::codec::base_hash(data)));
        }
        Ok(())
    }

    fn hash_pages(&self, first: u64, hashes: &mut [u64], _: &mut [u8]) -> Result<(), MemoryError> {
        match self.tracked {
            // The hashes kept as the pages were written: no page is read.
            Some(t) => {
                self.byte_range(first, hashes.len() as u64)?;
                // The hash of a zero page once, not per page: a fresh guest's memory is
                // mostly never-written pages, and this runs with the guest paused.
                let zero = zero_page_hash(self.page_size);
                for (page, hash) in (first..).zip(hashes.iter_mut()) {
                    *hash = if self.known_zero(page) {
                        zero
                    } else {
                        // SAFETY: as in `known_zero` (the range was checked above);
                        // the hash table has an entry per page.
                        unsafe { *t.hashes.add(page as usize) }
                    };
                }
            }
            None => {
                let bytes = self.pages(first, hashes.len() as u64)?;
                hash_chunks(bytes, self.page_size, hashes);
            }
        }
        Ok(())
    }

    fn known_zero_pages(&self, first: u64, max: u64) -> u64 {
        let Some(t) = self.tracked else {
            return 0;
        };
        if first >= self.total || !self.shard.owns(first) {
            return 0;
        }
        // This stream's pages from `first` on that are contiguous: to the end of
        // memory for one stream, else of `first`'s chunk.
        let owned_end = if self.shard == Shard::WHOLE {
            self.total
        } else {
            ((first / SHARD_CHUNK_PAGES + 1) * SHARD_CHUNK_PAGES).min(self.total)
        };
        let end = owned_end.min(first.saturating_add(max));
        // SAFETY: the words read are those of pages in `first..end`, below `total`, so
        // within the bitmap; those pages are this stream's (all of `first..owned_end`
        // is), so only this view writes their words, and not while `&self` is
        // borrowed.
        let word = |i: usize| unsafe { *t.written.add(i) };
        seek_bit(word, first, end, true) - first
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.byte_range(first, count)?;
        for page in first..first + count {
            if self.known_zero(page) {
                continue;
            }
            let bytes = self.pages_mut(page, 1)?;
            // As in `VecMemory`: a never-written page stays unbacked.
            if !crate::codec::is_zero_page(bytes) {
                bytes.fill(0);
            }
            self.track(page, None);
        }
        Ok(())
    }
}

/// Guest memory from a fresh zeroed allocation, for a destination that has no guest
/// memory of its own yet (the CLI's `recv`, tests, fuzzers).
///
/// Only [`FreshMemory::new`] makes one, and it allocates zeroed memory; every later
/// write goes through this type (its [`PageMemory`] impl or the views of
/// [`whole`](Self::whole) and [`views`](Self::views)), which record per page whether it
/// was written since it was last zero and the hash of what was written. So it may
/// claim what no other memory can: a page never written is zero without reading it,
/// and the hash of every page is known without reading memory. A destination of fresh
/// anonymous memory then never faults in a guest's zero pages, and its end-to-end
/// digest folds the kept hashes instead of reading memory with the guest paused. Costs
/// 8 bytes per page written (the hash table is itself a zeroed allocation, backed only
/// where pages were written) plus a bit per page, and a hash per page written.
///
/// ```
/// use precopy::memory::{FreshMemory, PageMemory};
/// let mut memory = FreshMemory::new(4096, 1024).unwrap();
/// let mut views = memory.views(2);
/// views[1].write_page(512, &[7; 4096]).unwrap();
/// drop(views);
/// let mut page = [1u8; 4096];
/// memory.read_page(0, &mut page).unwrap();
/// assert_eq!(page, [0; 4096]);
/// assert_eq!(memory.as_bytes()[512 * 4096], 7);
/// ```
#[derive(Debug)]
pub struct FreshMemory {
    memory: VecMemory,
    /// Bit per page: written since last zero.
    written: alloc::vec::Vec<u64>,
    /// Hash per page, valid where the written bit is set.
    hashes: alloc::vec::Vec<u64>,
}

impl FreshMemory {
    /// Zeroed memory of `pages` pages of `page_size` bytes (a power of two), allocated
    /// lazily by the OS. Errors when the page size is not a power of two or this
    /// machine will not give memory of that size.
    pub fn new(page_size: usize, pages: u64) -> Result<Self, MemoryError> {
        let too_large = MemoryError::TooLarge { page_size, pages };
        if !page_size.is_power_of_two() {
            return Err(MemoryError::BadPageSize { page_size });
        }
        let count = usize::try_from(pages).map_err(|_| too_large)?;
        let bytes = count.checked_mul(page_size).ok_or(too_large)?;
        if isize::try_from(bytes).is_err() || count.checked_mul(8).is_none() {
            return Err(too_large);
        }
        // Zeroed allocations: untouched pages stay unbacked. One this machine will not
        // give is an error, never an abort.
        Ok(FreshMemory {
            memory: VecMemory::try_new(page_size, pages)?,
            written: super::try_zeroed_vec(count.div_ceil(64)).ok_or(too_large)?,
            hashes: super::try_zeroed_vec(count).ok_or(too_large)?,
        })
    }

    /// All of memory as bytes (what it holds, whatever the kept hashes say).
    pub fn as_bytes(&self) -> &[u8] {
        self.memory.as_bytes()
    }

    /// The memory, without the knowledge of its zero pages.
    pub fn into_memory(self) -> VecMemory {
        self.memory
    }

    fn tracked(&mut self) -> Tracked {
        Tracked {
            written: self.written.as_mut_ptr(),
            hashes: self.hashes.as_mut_ptr(),
        }
    }

    /// One tracked view of all of this memory (a single-stream migration's).
    pub fn whole(&mut self) -> StreamMemory<'_> {
        let (page_size, total) = (self.memory.page_size(), self.memory.total_pages());
        let tracked = Some(self.tracked());
        let base = self.memory.as_bytes_mut().as_mut_ptr();
        StreamMemory::over(base, page_size, total, Shard::WHOLE, tracked)
    }

    /// Cuts this memory into `count` tracked views, one per stream of a multi-stream
    /// migration (view `i` reaches the pages of [`Shard::new(i, count)`](Shard::new)).
    /// `count` 0 is taken as 1. What the views learn stays with this memory.
    pub fn views(&mut self, count: u8) -> alloc::vec::Vec<StreamMemory<'_>> {
        let (page_size, total) = (self.memory.page_size(), self.memory.total_pages());
        let tracked = Some(self.tracked());
        let base = self.memory.as_bytes_mut().as_mut_ptr();
        cut(base, page_size, total, count, tracked)
    }

    /// A tracked view for reading only (every method taking `&mut self` stays unused).
    fn reader(&self) -> StreamMemory<'_> {
        let tracked = Tracked {
            written: self.written.as_ptr().cast_mut(),
            hashes: self.hashes.as_ptr().cast_mut(),
        };
        let base = self.memory.as_bytes().as_ptr().cast_mut();
        let (page_size, total) = (self.memory.page_size(), self.memory.total_pages());
        StreamMemory::over(base, page_size, total, Shard::WHOLE, Some(tracked))
    }
}

impl PageMemory for FreshMemory {
    fn page_size(&self) -> usize {
        self.memory.page_size()
    }

    fn total_pages(&self) -> u64 {
        self.memory.total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.reader().read_page(page, buf)
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.whole().write_page(page, data)
    }

    fn hash_pages(
        &self,
        first: u64,
        hashes: &mut [u64],
        scratch: &mut [u8],
    ) -> Result<(), MemoryError> {
        self.reader().hash_pages(first, hashes, scratch)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.whole().zero_pages(first, count)
    }

    fn known_zero_pages(&self, first: u64, max: u64) -> u64 {
        self.reader().known_zero_pages(first, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_reach_only_their_stream_and_together_all_of_memory() {
        let total = 3 * 512 + 100;
        let mut memory = VecMemory::new(512, total);
        let mut views = memory.streams(2);
        let mut page = [0u8; 512];
        for view in &mut views {
            let shard = view.shard();
            for p in 0..total {
                let fill = [p as u8 | 1; 512];
                let owned = shard.owns(p);
                assert_eq!(view.write_page(p, &fill).is_ok(), owned, "page {p}");
                assert_eq!(view.read_page(p, &mut page).is_ok(), owned);
                if !owned {
                    assert_eq!(
                        view.write_page(p, &fill),
                        Err(MemoryError::OtherStream { page: p })
                    );
                }
            }
            assert!(view.read_page(total, &mut page).is_err());
            assert!(view.read_page(0, &mut page[..8]).is_err());
        }
        // Hash and zero: within a chunk of the stream, not across into the next.
        let mut hashes = [0u64; 4];
        assert!(views[1].hash_pages(512, &mut hashes, &mut page).is_ok());
        assert!(views[1].hash_pages(1022, &mut hashes, &mut page).is_err());
        assert!(views[0].zero_pages(1024, 100).is_ok());
        assert!(views[0].zero_pages(1024, 600).is_err());
        drop(views);
        for p in 0..total {
            let want = if (1024..1124).contains(&p) {
                0
            } else {
                p as u8 | 1
            };
            assert_eq!(memory.as_bytes()[p as usize * 512], want, "page {p}");
        }
    }

    #[test]
    fn fresh_views_read_hash_and_zero_like_plain_ones() {
        let total = 2 * 512 + 7;
        let mut content = alloc::vec::Vec::new();
        let mut hashes = alloc::vec::Vec::new();
        for fresh in [false, true] {
            let mut plain = VecMemory::new(512, total);
            let mut tracked = FreshMemory::new(512, total).unwrap();
            let mut views = if fresh {
                tracked.views(2)
            } else {
                plain.streams(2)
            };
            assert_eq!(views[0].is_tracked(), fresh);
            let mut buf = [9u8; 512];
            for view in &mut views {
                let shard = view.shard();
                for p in (0..total).filter(|&p| shard.owns(p)) {
                    if p % 3 == 0 {
                        view.write_page(p, &[p as u8 | 1; 512]).unwrap();
                    }
                    if p % 7 == 0 {
                        view.zero_pages(p, 1).unwrap();
                    }
                    view.read_page(p, &mut buf).unwrap();
                    let want = if p % 3 == 0 && p % 7 != 0 {
                        p as u8 | 1
                    } else {
                        0
                    };
                    assert!(buf.iter().all(|&b| b == want), "page {p}");
                }
                // Rewritten after being zeroed: no longer known zero.
                let p = (0..total)
                    .find(|&p| view.shard().owns(p) && p % 21 == 0)
                    .unwrap();
                view.write_page(p, &[5; 512]).unwrap();
                view.read_page(p, &mut buf).unwrap();
                assert_eq!(buf[0], 5);
                for r in view.shard().ranges(total) {
                    let mut h = alloc::vec![0u64; (r.end - r.start) as usize];
                    view.hash_pages(r.start, &mut h, &mut buf).unwrap();
                    hashes.push(h);
                }
            }
            drop(views);
            content.push(if fresh {
                tracked.as_bytes().to_vec()
            } else {
                plain.as_bytes().to_vec()
            });
        }
        assert_eq!(content[0], content[1]);
        let half = hashes.len() / 2;
        assert_eq!(hashes[..half], hashes[half..]);
    }

    #[test]
    fn what_views_learn_stays_with_the_fresh_memory() {
        let mut memory = FreshMemory::new(512, 1030).unwrap();
        let mut views = memory.views(2);
        views[1].write_page(600, &[3; 512]).unwrap();
        drop(views);
        // Later views, and the memory itself, know page 600 is no longer zero.
        let mut buf = [0u8; 512];
        memory.whole().read_page(600, &mut buf).unwrap();
        assert_eq!(buf, [3; 512]);
        let views = memory.views(3);
        views[1].read_page(600, &mut buf).unwrap();
        assert_eq!(buf, [3; 512]);
        drop(views);
        let mut h = [0u64; 1];
        memory.hash_pages(600, &mut h, &mut buf).unwrap();
        assert_eq!(h[0], crate::codec::base_hash(&[3; 512]));
        assert_eq!(
            FreshMemory::new(3000, 1).unwrap_err(),
            MemoryError::BadPageSize { page_size: 3000 }
        );
        assert!(matches!(
            FreshMemory::new(1 << 16, u64::MAX / 2),
            Err(MemoryError::TooLarge { .. })
        ));
    }
}
