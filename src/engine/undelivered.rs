//! Pages whose frames never reached the destination go back into the bitmap.
//!
//! [`SourceEngine::poll_transmit`](super::SourceEngine::poll_transmit) counts a page as
//! sent once its frame is in the caller's buffer; the bitmap bit was cleared at the
//! harvest before. If the caller's transport then fails with buffers still queued (a
//! sender thread behind its encoder, a socket that took half a buffer), the pages in
//! them are lost to the bitmap unless they are marked again: the guest's latest write
//! to them reached neither the destination nor a later harvest. The frames say which
//! pages they carry, so no bookkeeping is needed: [`put_back_undelivered`] parses them.

use core::ops::Deref;
use core::sync::atomic::AtomicU64;

use crate::bitmap::AtomicDirtyBitmap;
use crate::wire::{Frame, FrameHeaderView, HeaderPrefix, MAGIC};

use super::EngineError;

/// Marks dirty again every page carried by the frames in `bytes`: the output of one
/// or more [`poll_transmit`](super::SourceEngine::poll_transmit) calls, from the start
/// of one of them (so from a frame boundary, or the stream header), that did not all
/// reach the destination. Put back the whole of every buffer not entirely handed to
/// the transport: a page marked needlessly is only sent once more, a page missed is a
/// lost write. Returns the pages marked.
///
/// Zero runs mark their whole run; round, switchover and completion frames carry no
/// page. Bytes that do not parse (a torn last frame cannot happen in an engine's
/// buffer, whose frames are whole) are an [`EngineError::Emit`].
pub fn put_back_undelivered<W: Deref<Target = [AtomicU64]>>(
    bitmap: &AtomicDirtyBitmap<W>,
    mut bytes: &[u8],
) -> Result<u64, EngineError> {
    let page_size = bitmap.layout().page_bytes();
    if bytes.starts_with(&MAGIC) {
        let len = HeaderPrefix::new_checked(bytes)
            .ok_or(EngineError::OutOfOrder {
                what: "put_back_undelivered given a torn stream header",
            })?
            .header_len()
            .map_err(EngineError::Emit)?;
        bytes = bytes.get(len..).unwrap_or_default();
    }
    let mut marked = 0;
    while !bytes.is_empty() {
        let (_, len) = FrameHeaderView::new_checked(bytes)
            .ok_or(EngineError::OutOfOrder {
                what: "put_back_undelivered given bytes that end inside a frame header",
            })?
            .check(page_size)
            .map_err(EngineError::Emit)?;
        let frame = Frame::parse(bytes, page_size).map_err(EngineError::Emit)?;
        let pages = match frame {
            Frame::ZeroRun { first_page, count } => first_page..first_page.saturating_add(count),
            Frame::Raw { page, .. } | Frame::Lz4 { page, .. } | Frame::Delta { page, .. } => {
                page..page.saturating_add(1)
            }
            _ => 0..0,
        };
        if !pages.is_empty() {
            marked += pages.end - pages.start;
            bitmap.mark_page_range(pages)?;
        }
        bytes = &bytes[len..];
    }
    Ok(marked)
}
