//! One guest memory written by the streams of a multi-stream migration at once, each
//! through its own [`StreamMemory`] that reaches only that stream's pages.

use core::marker::PhantomData;

use super::{check_page_access, hash_chunks, MemoryError, PageMemory, VecMemory};
use crate::layout::Shard;

/// Stream `shard`'s share of a [`VecMemory`]: reads and writes only the pages that
/// travel on that stream (any other page is [`MemoryError::OtherStream`]), so the
/// appliers of a multi-stream migration each write their own pages of one memory, on
/// their own threads, at memcpy speed. Made by [`VecMemory::streams`].
///
/// ```
/// use precopy::memory::{PageMemory, VecMemory};
/// let mut memory = VecMemory::new(4096, 1024);
/// let mut views = memory.streams(2);
/// let (mut a, mut b) = (views.remove(0), views.remove(0));
/// std::thread::scope(|s| {
///     s.spawn(move || a.write_page(0, &[1; 4096]).unwrap());
///     s.spawn(move || {
///         b.write_page(512, &[2; 4096]).unwrap();
///         assert!(b.write_page(0, &[2; 4096]).is_err(), "stream 0's page");
///     });
/// });
/// assert_eq!(memory.as_bytes()[0], 1);
/// assert_eq!(memory.as_bytes()[512 * 4096], 2);
/// ```
#[derive(Debug)]
pub struct StreamMemory<'a> {
    base: *mut u8,
    page_size: usize,
    total: u64,
    shard: Shard,
    /// With [`assume_zero`](StreamMemory::assume_zero): what this view knows of its
    /// pages without reading them.
    tracked: Option<Tracked>,
    _memory: PhantomData<&'a mut [u8]>,
}

/// Per page of the stream (by [`Shard::local_index`]): whether this view wrote it
/// since it was last zero, and the hash of its content.
#[derive(Debug)]
struct Tracked {
    written: alloc::vec::Vec<u64>,
    hashes: alloc::vec::Vec<u64>,
}

// SAFETY: a `StreamMemory` reaches only its own stream's pages of a memory that is
// mutably borrowed for its lifetime, and the views made together have different
// streams (`VecMemory::streams`), so no two of them, on any threads, ever touch the
// same byte. Sending one to another thread is then like sending a `&mut [u8]`.
unsafe impl Send for StreamMemory<'_> {}

impl VecMemory {
    /// One view of all of this memory (a single-stream migration's).
    pub fn whole(&mut self) -> StreamMemory<'_> {
        let (page_size, total) = (self.page_size(), self.total_pages());
        StreamMemory::over(
            self.as_bytes_mut().as_mut_ptr(),
            page_size,
            total,
            Shard::WHOLE,
        )
    }

    /// Cuts this memory into `count` views, one per stream of a multi-stream migration
    /// (view `i` reaches the pages of [`Shard::new(i, count)`](Shard::new)). `count`
    /// 0 is taken as 1.
    pub fn streams(&mut self, count: u8) -> alloc::vec::Vec<StreamMemory<'_>> {
        let count = count.max(1);
        let (page_size, total) = (self.page_size(), self.total_pages());
        let base = self.as_bytes_mut().as_mut_ptr();
        (0..count)
            .map(|i| {
                let shard = Shard::new(i, count).unwrap_or(Shard::WHOLE);
                // Each view takes the memory's base pointer; their streams differ, so
                // no two reach the same page (see the `Send` impl).
                StreamMemory::over(base, page_size, total, shard)
            })
            .collect()
    }
}

impl StreamMemory<'_> {
    /// The view of `shard`'s pages of the memory at `base` (`total` pages of
    /// `page_size`), for the lifetime of the caller's borrow of that memory.
    fn over(base: *mut u8, page_size: usize, total: u64, shard: Shard) -> Self {
        StreamMemory {
            base,
            page_size,
            total,
            shard,
            tracked: None,
            _memory: PhantomData,
        }
    }
}

impl StreamMemory<'_> {
    /// The stream whose pages this view reaches.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Takes every page as zero until this view writes it (the caller's promise: the
    /// memory is fresh, all zero, and written only through this view), and keeps the
    /// hash of every page as this view writes it. Zero runs on never-written pages,
    /// their reads, and the hashes of all pages then never touch the memory: a
    /// destination never faults in a guest's zero memory, and its end-to-end digest
    /// folds the kept hashes instead of reading memory with the guest paused. Costs
    /// about 8 bytes per page of the stream, and a hash per page written.
    pub fn assume_zero(mut self) -> Self {
        let pages = self.shard.pages(self.total);
        self.tracked = Some(Tracked {
            written: alloc::vec![0; pages.div_ceil(64) as usize],
            hashes: alloc::vec![super::zero_page_hash(self.page_size); pages as usize],
        });
        self
    }

    /// Whether page `page` (this stream's) is known to be zero (never written through
    /// an [`assume_zero`](Self::assume_zero) view, or zeroed since).
    fn known_zero(&self, page: u64) -> bool {
        let i = self.shard.local_index(page);
        self.tracked
            .as_ref()
            .is_some_and(|t| t.written[(i / 64) as usize] & (1 << (i % 64)) == 0)
    }

    /// Records that page `page` (this stream's) now holds content with `hash`;
    /// `written` false for zero content.
    fn track(&mut self, page: u64, written: bool, hash: u64) {
        let i = self.shard.local_index(page);
        if let Some(t) = &mut self.tracked {
            let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
            if written {
                t.written[word] |= bit;
            } else {
                t.written[word] &= !bit;
            }
            t.hashes[i as usize] = hash;
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
            self.track(page, true, crate::codec::base_hash(data));
        }
        Ok(())
    }

    fn hash_pages(&self, first: u64, hashes: &mut [u64], _: &mut [u8]) -> Result<(), MemoryError> {
        match &self.tracked {
            // The hashes kept as the pages were written: no page is read.
            Some(t) => {
                self.byte_range(first, hashes.len() as u64)?;
                for (page, hash) in (first..).zip(hashes.iter_mut()) {
                    *hash = t.hashes[self.shard.local_index(page) as usize];
                }
            }
            None => {
                let bytes = self.pages(first, hashes.len() as u64)?;
                hash_chunks(bytes, self.page_size, hashes);
            }
        }
        Ok(())
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        let page_size = self.page_size;
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
            debug_assert_eq!(bytes.len(), page_size);
            self.track(page, false, super::zero_page_hash(page_size));
        }
        Ok(())
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
    fn assume_zero_views_read_hash_and_zero_like_plain_ones() {
        let total = 2 * 512 + 7;
        let mut content = alloc::vec::Vec::new();
        let mut hashes = alloc::vec::Vec::new();
        for assume in [false, true] {
            let mut memory = VecMemory::new(512, total);
            let mut views = memory.streams(2);
            if assume {
                views = views.into_iter().map(StreamMemory::assume_zero).collect();
            }
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
            content.push(memory.as_bytes().to_vec());
        }
        assert_eq!(content[0], content[1]);
        let half = hashes.len() / 2;
        assert_eq!(hashes[..half], hashes[half..]);
    }
}
