//! The stream format: a versioned, checksummed header and frames that a destination
//! decodes from any byte source without trusting it.
//!
//! A stream is one [`StreamHeader`] followed by [`Frame`]s (layouts in [`header`]
//! and [`frame`]). Every header and frame carries its length and a CRC-32 (IEEE,
//! which catches every single-bit error and every burst up to 32 bits); lengths are
//! bounded by the header's page size and checked before anything is buffered. Guest
//! memory as a whole is summed up by [`MemoryDigest`] (XXH3-128) in the completion
//! frame; a delta frame names its base by XXH3-64 ([`crate::codec::base_hash`]).
//!
//! Encoding writes into caller buffers ([`StreamHeader::emit`], [`Frame::emit`]);
//! decoding is [`Decoder`], which takes the stream in pieces of any size and returns
//! frames or a [`WireError`] giving the frame number and byte offset. With
//! `cfg(fuzzing)` checksums are not verified, so a fuzzer reaches the code behind them.

mod decoder;
mod digest;
mod error;
pub mod frame;
pub mod header;

pub use decoder::{decoder_buffer_len, Decoder, Event};
pub use digest::{digest_memory, MemoryDigest};
pub use error::{Location, WireError, WireErrorKind};
pub use frame::{max_frame_len, Frame, FrameHeaderView, FrameKind, FRAME_HEADER_LEN};
pub use header::{Features, HeaderPrefix, StreamHeader, MAGIC, MAX_HEADER_LEN};

/// The stream format version this precopy writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

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
