//! The stream format: the stream header, single frames (encode into a caller buffer,
//! decode from a caller buffer), and the memory digest of the completion frame.
//!
//! Decoding is total: any bytes give a frame or an error code, never a read outside
//! the given buffer. These functions check each unit's own bytes (length, kind,
//! checksum); the order of frames in a stream (rounds, switchover, completion) is the
//! host's to follow.

use core::ffi::{c_char, c_int};

use core_precopy::layout::Shard;
use core_precopy::layout::MIN_PAGE_SIZE;
use core_precopy::layout::{GuestLayout, MAX_REGIONS};
use core_precopy::memory::MemoryDigest;
use core_precopy::wire::{
    decoder_buffer_len, max_frame_len, Decoder, DeviceState, Event, Features, Frame, FrameKind,
    Location, StreamHeader, WireErrorKind, MAX_HEADER_LEN,
};

use crate::bitmap::{PrecopyRegion, PRECOPY_MAX_REGIONS};
use crate::codec::supported;
use crate::error::{
    layout_code, status, wire_code, wire_code_at, PRECOPY_ERR_BAD_ARGUMENT, PRECOPY_ERR_BAD_LENGTH,
    PRECOPY_ERR_BUFFER_TOO_SMALL, PRECOPY_ERR_TOO_MANY_REGIONS, PRECOPY_ERR_TRUNCATED,
    PRECOPY_MORE, PRECOPY_OK,
};
use crate::ffi::{
    as_mut, as_ref, as_slice, as_slice_mut, assert_fits, out_buffer, write_message, Blob,
};

/// Bytes of a frame header; a frame is at most this plus 16 plus a page.
pub const PRECOPY_FRAME_HEADER_LEN: usize = 12;
/// Bytes of the longest stream header (`PRECOPY_MAX_REGIONS` regions).
pub const PRECOPY_MAX_STREAM_HEADER_LEN: usize = 1068;
/// Bytes in a [`PrecopyDigest`].
pub const PRECOPY_DIGEST_SIZE: usize = 704;
/// Bytes in a [`PrecopyDecoder`].
pub const PRECOPY_DECODER_SIZE: usize = 1856;

/// Pages per chunk of the stream split: chunk `c` travels on stream `c % count`.
pub const PRECOPY_STREAM_CHUNK_PAGES: u64 = 512;

const _: () = assert!(PRECOPY_STREAM_CHUNK_PAGES == core_precopy::layout::SHARD_CHUNK_PAGES);

/// Decoder event: the stream header (read it with `precopy_decoder_header`).
pub const PRECOPY_EVENT_HEADER: u32 = 1;
/// Decoder event: a frame, in `frame`.
pub const PRECOPY_EVENT_FRAME: u32 = 2;

/// Stream feature: LZ4 page frames may appear.
pub const PRECOPY_FEATURE_LZ4: u32 = 1;
/// Stream feature: delta page frames may appear.
pub const PRECOPY_FEATURE_DELTA: u32 = 2;
/// Stream feature: device-state frames may appear.
pub const PRECOPY_FEATURE_DEVICE_STATE: u32 = 4;

/// Frame kind: pages `page..page + pages` are all zero.
pub const PRECOPY_FRAME_ZERO_RUN: u32 = 1;
/// Frame kind: page `page` is `data` (exactly one page).
pub const PRECOPY_FRAME_RAW: u32 = 2;
/// Frame kind: page `page` is the LZ4 block `data` decompressed.
pub const PRECOPY_FRAME_LZ4: u32 = 3;
/// Frame kind: page `page` is its base (hashing to `base_hash`) with delta `data`.
pub const PRECOPY_FRAME_DELTA: u32 = 4;
/// Frame kind: round `round` begins; `pages` are planned.
pub const PRECOPY_FRAME_ROUND_BEGIN: u32 = 5;
/// Frame kind: round `round` ends; its frames carried `pages` pages.
pub const PRECOPY_FRAME_ROUND_END: u32 = 6;
/// Frame kind: the guest is paused; `pages` pages remain to send.
pub const PRECOPY_FRAME_SWITCHOVER: u32 = 7;
/// Frame kind: all `pages` pages are sent; `digest_lo`/`digest_hi` is the memory digest.
pub const PRECOPY_FRAME_COMPLETE: u32 = 8;
/// Frame kind: the VMM's device state `data` (at most a page), id `page` (a u32),
/// format version `round` (a u16); after the final round, before the completion.
pub const PRECOPY_FRAME_DEVICE_STATE: u32 = 9;

const _: () = assert!(PRECOPY_FRAME_HEADER_LEN == core_precopy::wire::FRAME_HEADER_LEN);
const _: () = assert!(PRECOPY_MAX_STREAM_HEADER_LEN == MAX_HEADER_LEN);
const _: () = assert!(PRECOPY_FEATURE_LZ4 == Features::LZ4.0);
const _: () = assert!(PRECOPY_FEATURE_DELTA == Features::DELTA.0);
const _: () = assert!(PRECOPY_FEATURE_DEVICE_STATE == Features::DEVICE_STATE.0);
const _: () = assert!(PRECOPY_FRAME_DEVICE_STATE == FrameKind::DeviceState as u32);

mod decoder;
mod digest;
mod frame;
mod header;

pub use decoder::*;
pub use digest::*;
pub use frame::*;
pub use header::*;
