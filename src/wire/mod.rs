//! The stream format: a versioned, checksummed header and frames that a destination
//! decodes from any byte source without trusting it.
//!
//! A stream is one [`StreamHeader`] followed by [`Frame`]s (layouts in [`header`]
//! and [`frame`]). Every header and frame carries its length and a CRC-32 (IEEE,
//! which catches every single-bit error and every burst up to 32 bits); lengths are
//! bounded by the header's page size and checked before anything is buffered. Guest
//! memory as a whole is summed up by a digest
//! (`memory::MemoryDigest`: XXH3-128 over per-page XXH3-64)
//! that the completion frame carries; a delta frame names its base by XXH3-64 ([`crate::codec::base_hash`]).
//!
//! Encoding writes into caller buffers ([`StreamHeader::emit`], [`Frame::emit`]);
//! decoding is [`Decoder`], which takes the stream in pieces of any size and returns
//! frames or a [`WireError`] giving the frame number and byte offset. With
//! `cfg(fuzzing)` checksums are not verified, so a fuzzer reaches the code behind them.
//!
//! A whole migration of a small guest, source to destination:
//!
//! ```
//! use precopy::codec::{EncoderConfig, PageEncoder};
//! use precopy::engine::{Applier, Progress};
//! use precopy::layout::{GuestLayout, Shard};
//! use precopy::memory::{digest_memory, PageMemory, VecMemory};
//! use precopy::wire::{Features, Frame, StreamHeader};
//!
//! const PAGE: usize = 4096;
//! let mut source = VecMemory::new(PAGE, 4);
//! source.write_page(1, &[7; PAGE]).unwrap();
//! let header = StreamHeader {
//!     features: Features::ALL,
//!     session_id: [0; 16],
//!     layout: GuestLayout::flat(PAGE as u64, 4 * PAGE as u64).unwrap(),
//!     stream: Shard::WHOLE,
//! };
//!
//! // Source: header, one round of all pages, switchover, completion.
//! let mut stream = vec![0u8; 64 * 1024];
//! let mut n = header.emit(&mut stream).unwrap();
//! let mut emit = |f: Frame<'_>, n: &mut usize| *n += f.emit(PAGE, &mut stream[*n..]).unwrap();
//! emit(Frame::RoundBegin { round: 0, planned_pages: 4 }, &mut n);
//! let mut encoder = PageEncoder::new(EncoderConfig::new(PAGE)).unwrap();
//! let (mut page, mut payload) = (vec![0; PAGE], vec![0; encoder.max_payload_len()]);
//! for p in 0..4 {
//!     source.read_page(p, &mut page).unwrap(); // a private copy, then encode it
//!     let sent = encoder.encode(p, &page, &mut payload).unwrap();
//!     emit(Frame::page(p, sent.encoding, sent.base_hash, &payload[..sent.len]), &mut n);
//! }
//! emit(Frame::RoundEnd { round: 0, pages: 4 }, &mut n);
//! emit(Frame::Switchover { remaining_pages: 0 }, &mut n);
//! let digest = digest_memory(&source, &mut page).unwrap();
//! emit(Frame::Complete { total_pages: 4, digest }, &mut n);
//!
//! // Destination: any chunking of the bytes will do.
//! let mut applier = Applier::with_memory(VecMemory::new(PAGE, 4));
//! let mut progress = Progress::InProgress;
//! for piece in stream[..n].chunks(1000) {
//!     progress = applier.feed(piece).unwrap();
//! }
//! assert_eq!(progress, Progress::Complete);
//! assert_eq!(applier.memory(), &source);
//! ```

mod decoder;
mod error;
pub mod frame;
mod framer;
pub mod header;

pub use decoder::{decoder_buffer_len, Decoder, Event};
pub use error::{Location, WireError, WireErrorKind};
pub use frame::{
    max_frame_len, seal_page_frame, DeviceState, Frame, FrameHeaderView, FrameKind,
    DEVICE_STATE_FIXED_LEN, FRAME_HEADER_LEN, PAGE_PAYLOAD_OFFSET,
};
pub use framer::PageFramer;
pub use header::{Features, HeaderPrefix, StreamHeader, MAGIC, MAX_HEADER_LEN};

/// The stream format version this precopy writes and the newest it reads.
///
/// Version 2 added the stream index and count (multi-stream migrations); a version 1
/// stream is still read, as the only stream of its migration. Device-state frames
/// (kind 9) did not bump it: they are announced by the header's
/// [`Features::DEVICE_STATE`] bit, so a version 2 reader that does not know them
/// refuses such a stream at its header ("features unknown to this precopy"), and a
/// stream without device state stays readable by it.
pub const FORMAT_VERSION: u16 = 2;

/// CRC-32 (IEEE) of the concatenation of `parts`.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

// Little-endian reads at offsets the callers have bounds-checked.
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
