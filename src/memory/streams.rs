//! One guest memory written by the streams of a multi-stream migration at once, each
//! through its own [`StreamMemory`] that reaches only that stream's pages.

use core::marker::PhantomData;

use super::{check_page_access, hash_chunks, MemoryError, PageMemory, VecMemory};
use crate::wire::Shard;

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
    _memory: PhantomData<&'a mut [u8]>,
}

// SAFETY: a `StreamMemory` reaches only its own stream's pages of a memory that is
// mutably borrowed for its lifetime, and the views made together have different
// streams (`VecMemory::streams`), so no two of them, on any threads, ever touch the
// same byte. Sending one to another thread is then like sending a `&mut [u8]`.
unsafe impl Send for StreamMemory<'_> {}

impl VecMemory {
    /// Cuts this memory into `count` views, one per stream of a multi-stream migration
    /// (view `i` reaches the pages of [`Shard::new(i, count)`](Shard::new)). `count`
    /// 0 is taken as 1.
    pub fn streams(&mut self, count: u8) -> alloc::vec::Vec<StreamMemory<'_>> {
        let count = count.max(1);
        let (page_size, total) = (self.page_size(), self.total_pages());
        let base = self.as_bytes_mut().as_mut_ptr();
        (0..count)
            .map(|i| StreamMemory {
                base,
                page_size,
                total,
                shard: Shard::new(i, count).unwrap_or(Shard::WHOLE),
                _memory: PhantomData,
            })
            .collect()
    }
}

impl StreamMemory<'_> {
    /// The stream whose pages this view reaches.
    pub fn shard(&self) -> Shard {
        self.shard
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
        buf.copy_from_slice(self.pages(page, 1)?);
        Ok(())
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        check_page_access(page, data.len(), self.page_size, self.total)?;
        self.pages_mut(page, 1)?.copy_from_slice(data);
        Ok(())
    }

    fn hash_pages(&self, first: u64, hashes: &mut [u64], _: &mut [u8]) -> Result<(), MemoryError> {
        let bytes = self.pages(first, hashes.len() as u64)?;
        hash_chunks(bytes, self.page_size, hashes);
        Ok(())
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        let page_size = self.page_size;
        for page in self.pages_mut(first, count)?.chunks_exact_mut(page_size) {
            // As in `VecMemory`: a never-written page stays unbacked.
            if !crate::codec::is_zero_page(page) {
                page.fill(0);
            }
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
}
