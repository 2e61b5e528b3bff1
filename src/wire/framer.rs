//! Pages into frames, the one way every producer of a stream does it.

use crate::codec::Encoding;

use super::{Frame, WireErrorKind};

/// Frames encoded pages as a stream carries them: one frame per page, neighbouring zero
/// pages merged into one zero-run frame. The source engine and the stream builder of
/// the fuzz targets and tests both frame through it, so what the tests decode is what
/// the engine sends.
///
/// A call writes at most two frames (a pending zero run, then the page): give it
/// `2 * max_frame_len(page_size)` bytes of room.
///
/// ```
/// use precopy::codec::Encoding;
/// use precopy::wire::{max_frame_len, PageFramer};
/// let mut framer = PageFramer::new(512);
/// let mut out = vec![0u8; 2 * max_frame_len(512)];
/// assert_eq!(framer.page(4, Encoding::Zero, 0, &[], &mut out).unwrap(), 0);
/// assert_eq!(framer.page(5, Encoding::Zero, 0, &[], &mut out).unwrap(), 0);
/// assert_eq!(framer.pending_zero_run(), Some((4, 2)));
/// let n = framer.page(9, Encoding::Raw, 0, &[1; 512], &mut out).unwrap();
/// assert!(n > 512, "the run of pages 4 and 5, then page 9");
/// assert_eq!(framer.pending_zero_run(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFramer {
    page_size: usize,
    zero_run: Option<(u64, u64)>,
}

impl PageFramer {
    /// A framer for pages of `page_size` bytes, no run pending.
    pub const fn new(page_size: usize) -> Self {
        PageFramer {
            page_size,
            zero_run: None,
        }
    }

    /// Page `page`, encoded as `encoding` (a delta made against a base of hash
    /// `base_hash`) into `payload`: a zero page joins the pending run; any other page
    /// first ends the run, then gets its frame. Returns the bytes written into `out`.
    #[inline]
    pub fn page(
        &mut self,
        page: u64,
        encoding: Encoding,
        base_hash: u64,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, WireErrorKind> {
        if encoding == Encoding::Zero {
            return self.zero_pages(page, 1, out);
        }
        let mut len = self.flush(out)?;
        let frame = Frame::page(page, encoding, base_hash, payload);
        len += frame.emit(self.page_size, &mut out[len..])?;
        Ok(len)
    }

    /// Pages `first..first + count`, all zero: they join the pending run, or end it and
    /// start another. Returns the bytes written into `out` (a run that ended).
    #[inline]
    pub fn zero_pages(
        &mut self,
        first: u64,
        count: u64,
        out: &mut [u8],
    ) -> Result<usize, WireErrorKind> {
        if let Some((start, run)) = &mut self.zero_run {
            if *start + *run == first {
                *run += count;
                return Ok(0);
            }
        }
        let len = self.flush(out)?;
        self.zero_run = Some((first, count));
        Ok(len)
    }

    /// Writes the pending zero run's frame, if there is one; returns its bytes.
    pub fn flush(&mut self, out: &mut [u8]) -> Result<usize, WireErrorKind> {
        match self.zero_run.take() {
            Some((first_page, count)) => {
                Frame::ZeroRun { first_page, count }.emit(self.page_size, out)
            }
            None => Ok(0),
        }
    }

    /// The zero run counted but not yet framed: `(first page, pages)`.
    pub fn pending_zero_run(&self) -> Option<(u64, u64)> {
        self.zero_run
    }

    /// Forgets the pending zero run and returns it (a failed migration puts its pages
    /// back into the dirty bitmap: they were never framed).
    pub fn take_pending_zero_run(&mut self) -> Option<(u64, u64)> {
        self.zero_run.take()
    }
}
