//! Frames: a 12-byte frame header, then a body whose layout depends on the kind.
//!
//! ```text
//! frame header: kind (u8), reserved (3 bytes, zero), body length (u32 LE),
//!               CRC-32 (IEEE) of the first 8 header bytes and the body (u32 LE)
//! kind 1 zero run    first page (u64), page count (u64)
//! kind 2 raw page    page (u64), the page's bytes (exactly one page)
//! kind 3 LZ4 page    page (u64), LZ4 block (1..=page size bytes)
//! kind 4 delta page  page (u64), base hash (u64, XXH3-64), delta (0..=page size bytes)
//! kind 5 round begin round (u32), pages planned (u64)
//! kind 6 round end   round (u32), pages carried by the round's frames (u64)
//! kind 7 switchover  pages still to send (u64)
//! kind 8 complete    total pages (u64), digest of guest memory (u128, XXH3-128 over per-page XXH3-64)
//! kind 9 device state  id (u32), state format version (u16), reserved (u16, zero),
//!                      the state's bytes (0..=page size bytes, opaque to precopy)
//! ```
//! Integers are little-endian. Body lengths are bounded by the header's page size, so
//! a frame never needs more than [`max_frame_len`] bytes of buffer.
//!
//! **Device state** (kind 9, feature [`Features::DEVICE_STATE`](super::Features)) is
//! the VMM's own bytes (vCPU registers, device models) under an id and a version of
//! its format that only the VMM interprets. It travels after the final round ends and
//! before the completion frame (the guest is paused: it is part of the downtime); a
//! state longer than a page travels as several items.
//!
//! **Round numbers.** The round frames' `round` field counts from 0 (the bulk round is
//! frame round 0): the stream format keeps it. Every Rust type above the wire
//! (the engine's `StreamRound` and `FinalRound`, the scheduler's `RoundStats`, the
//! coordinator, the CLI's table and JSON) counts the bulk round as round 1: round
//! *r* travels as frame round *r - 1*.

use crate::codec::Encoding;

use super::{crc32, get_u16, get_u32, get_u64, WireErrorKind};

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 12;

/// The longest frame for pages of `page_size` bytes (a delta of a whole page).
pub const fn max_frame_len(page_size: usize) -> usize {
    FRAME_HEADER_LEN + 16 + page_size
}

/// Bytes of a device-state frame's body before the state: id, version, reserved.
pub const DEVICE_STATE_FIXED_LEN: usize = 8;

/// One item of the VMM's device state as a device-state frame carries it: bytes
/// precopy does not interpret, named by `id` and tagged with the `version` of their
/// format (both the VMM's to choose). At most a page of bytes per item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceState<'a> {
    /// Which state this is (e.g. a vCPU's registers; the VMM's numbering).
    pub id: u32,
    /// The version of the state's format, for the destination's decoder.
    pub version: u16,
    /// The state's bytes.
    pub data: &'a [u8],
}

impl DeviceState<'_> {
    /// Bytes of the frame carrying this item.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + DEVICE_STATE_FIXED_LEN + self.data.len()
    }
}

/// Frame kind bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A run of all-zero pages.
    ZeroRun = 1,
    /// A page as it is.
    Raw = 2,
    /// An LZ4-compressed page.
    Lz4 = 3,
    /// A delta against the page's previous version.
    Delta = 4,
    /// Start of a round.
    RoundBegin = 5,
    /// End of a round.
    RoundEnd = 6,
    /// The guest is paused; what follows is the final round.
    Switchover = 7,
    /// All memory sent; carries the digest.
    Complete = 8,
    /// The VMM's opaque device state (after the final round, before completion).
    DeviceState = 9,
}

impl FrameKind {
    /// The kind of a kind byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        use FrameKind::*;
        [
            ZeroRun,
            Raw,
            Lz4,
            Delta,
            RoundBegin,
            RoundEnd,
            Switchover,
            Complete,
            DeviceState,
        ]
        .get(usize::from(b).wrapping_sub(1))
        .copied()
    }

    /// Allowed body lengths for pages of `page_size` bytes.
    pub fn body_len_range(self, page_size: usize) -> (usize, usize) {
        match self {
            FrameKind::ZeroRun => (16, 16),
            FrameKind::Raw => (8 + page_size, 8 + page_size),
            FrameKind::Lz4 => (9, 8 + page_size),
            FrameKind::Delta => (16, 16 + page_size),
            FrameKind::RoundBegin | FrameKind::RoundEnd => (12, 12),
            FrameKind::Switchover => (8, 8),
            FrameKind::Complete => (24, 24),
            FrameKind::DeviceState => (DEVICE_STATE_FIXED_LEN, DEVICE_STATE_FIXED_LEN + page_size),
        }
    }
}

/// A checked view of a frame header (smoltcp style): [`new_checked`](Self::new_checked)
/// checks the length once, after which the accessors cannot fail.
#[derive(Clone, Copy, Debug)]
pub struct FrameHeaderView<'a> {
    bytes: &'a [u8; FRAME_HEADER_LEN],
}

impl<'a> FrameHeaderView<'a> {
    /// Views the first [`FRAME_HEADER_LEN`] bytes of `bytes`, if there are that many.
    pub fn new_checked(bytes: &'a [u8]) -> Option<Self> {
        Some(FrameHeaderView {
            bytes: bytes.get(..FRAME_HEADER_LEN)?.try_into().ok()?,
        })
    }

    /// The kind byte.
    pub fn kind_byte(&self) -> u8 {
        self.bytes[0]
    }

    /// Whether the reserved bytes are zero.
    pub fn reserved_is_zero(&self) -> bool {
        self.bytes[1..4] == [0, 0, 0]
    }

    /// The body length field.
    pub fn body_len(&self) -> u32 {
        get_u32(self.bytes, 4)
    }

    /// The stored checksum.
    pub fn checksum(&self) -> u32 {
        get_u32(self.bytes, 8)
    }

    /// Validates kind, reserved bytes and body length for `page_size`; returns the
    /// kind and the whole frame's length.
    pub fn check(&self, page_size: usize) -> Result<(FrameKind, usize), WireErrorKind> {
        let kind =
            FrameKind::from_byte(self.kind_byte()).ok_or(WireErrorKind::UnknownFrameKind {
                kind: self.kind_byte(),
            })?;
        if !self.reserved_is_zero() {
            return Err(WireErrorKind::ReservedNotZero);
        }
        let (min, max) = kind.body_len_range(page_size);
        let len = self.body_len() as usize;
        if !(min..=max).contains(&len) {
            return Err(WireErrorKind::BadFrameLength {
                kind: kind as u8,
                len: len as u64,
                min: min as u64,
                max: max as u64,
            });
        }
        Ok((kind, FRAME_HEADER_LEN + len))
    }
}

/// A validated frame (the `Repr`); page data borrows from the buffer it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Pages `first_page..first_page + count` are all zero.
    ZeroRun {
        /// First page.
        first_page: u64,
        /// Pages in the run (at least 1).
        count: u64,
    },
    /// Page `page` is `data`.
    Raw {
        /// Page number.
        page: u64,
        /// One page of bytes.
        data: &'a [u8],
    },
    /// Page `page` is the LZ4 block `data` decompressed.
    Lz4 {
        /// Page number.
        page: u64,
        /// LZ4 block.
        data: &'a [u8],
    },
    /// Page `page` is its current bytes, which must hash to `base_hash`, with delta
    /// `data` applied.
    Delta {
        /// Page number.
        page: u64,
        /// XXH3-64 of the base the delta was made against.
        base_hash: u64,
        /// Delta (see [`crate::codec::delta_encode`]).
        data: &'a [u8],
    },
    /// Round `round` begins.
    RoundBegin {
        /// Round number, from 0 on the wire (the bulk round is 0; the engine's round
        /// *r*, counted from 1, is frame round *r - 1*).
        round: u32,
        /// Pages the source plans to send in it (informative).
        planned_pages: u64,
    },
    /// Round `round` ends.
    RoundEnd {
        /// Round number, from 0 like [`Frame::RoundBegin`]'s.
        round: u32,
        /// Pages its frames carried (a zero run counts its pages).
        pages: u64,
    },
    /// The guest is paused; the next round is the last.
    Switchover {
        /// Pages still dirty at the pause.
        remaining_pages: u64,
    },
    /// All memory is sent.
    Complete {
        /// Pages in guest memory.
        total_pages: u64,
        /// The memory digest (`memory::MemoryDigest`) of all guest memory: XXH3-128 over the
        /// XXH3-64 of each page, in page order.
        digest: u128,
    },
    /// An item of the VMM's device state (the guest is paused; after the final round).
    DeviceState(DeviceState<'a>),
}

impl<'a> Frame<'a> {
    /// The frame that sends page `page` encoded as `encoding` with payload `data`
    /// (for a delta, made against a base of hash `base_hash`), as a
    /// [`PageEncoder`](crate::codec::PageEncoder) returns them. A zero page becomes a
    /// zero run of one page; the engine merges neighbouring ones.
    pub fn page(page: u64, encoding: Encoding, base_hash: u64, data: &'a [u8]) -> Self {
        match encoding {
            Encoding::Zero => Frame::ZeroRun {
                first_page: page,
                count: 1,
            },
            Encoding::Raw => Frame::Raw { page, data },
            Encoding::Lz4 => Frame::Lz4 { page, data },
            Encoding::Delta => Frame::Delta {
                page,
                base_hash,
                data,
            },
        }
    }

    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::ZeroRun { .. } => FrameKind::ZeroRun,
            Frame::Raw { .. } => FrameKind::Raw,
            Frame::Lz4 { .. } => FrameKind::Lz4,
            Frame::Delta { .. } => FrameKind::Delta,
            Frame::RoundBegin { .. } => FrameKind::RoundBegin,
            Frame::RoundEnd { .. } => FrameKind::RoundEnd,
            Frame::Switchover { .. } => FrameKind::Switchover,
            Frame::Complete { .. } => FrameKind::Complete,
            Frame::DeviceState(_) => FrameKind::DeviceState,
        }
    }

    /// The page data of a page frame, the state of a device-state frame (empty for
    /// others).
    fn data(&self) -> &'a [u8] {
        match *self {
            Frame::Raw { data, .. } | Frame::Lz4 { data, .. } | Frame::Delta { data, .. } => data,
            Frame::DeviceState(DeviceState { data, .. }) => data,
            _ => &[],
        }
    }

    /// The fixed fields of the body, before any page data, as (bytes, length).
    fn fixed(&self) -> ([u8; 24], usize) {
        let mut b = [0u8; 24];
        let mut put = |at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        let len = match *self {
            Frame::ZeroRun { first_page, count } => {
                put(0, &first_page.to_le_bytes());
                put(8, &count.to_le_bytes());
                16
            }
            Frame::Raw { page, .. } | Frame::Lz4 { page, .. } => {
                put(0, &page.to_le_bytes());
                8
            }
            Frame::Delta {
                page, base_hash, ..
            } => {
                put(0, &page.to_le_bytes());
                put(8, &base_hash.to_le_bytes());
                16
            }
            Frame::RoundBegin {
                round,
                planned_pages: n,
            }
            | Frame::RoundEnd { round, pages: n } => {
                put(0, &round.to_le_bytes());
                put(4, &n.to_le_bytes());
                12
            }
            Frame::Switchover { remaining_pages } => {
                put(0, &remaining_pages.to_le_bytes());
                8
            }
            Frame::Complete {
                total_pages,
                digest,
            } => {
                put(0, &total_pages.to_le_bytes());
                put(8, &digest.to_le_bytes());
                24
            }
            Frame::DeviceState(DeviceState { id, version, .. }) => {
                put(0, &id.to_le_bytes());
                put(4, &version.to_le_bytes());
                DEVICE_STATE_FIXED_LEN
            }
        };
        (b, len)
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.fixed().1 + self.data().len()
    }

    /// Writes the frame (header, body, checksum) into `out` after checking its body
    /// length for `page_size`; returns the bytes written.
    pub fn emit(&self, page_size: usize, out: &mut [u8]) -> Result<usize, WireErrorKind> {
        let (fixed, fixed_len) = self.fixed();
        let data = self.data();
        let body_len = fixed_len + data.len();
        check_body_len(self.kind(), body_len, page_size)?;
        let len = FRAME_HEADER_LEN + body_len;
        let got = out.len();
        let out = out
            .get_mut(..len)
            .ok_or(WireErrorKind::OutputTooSmall { needed: len, got })?;
        out[0] = self.kind() as u8;
        out[1..4].fill(0);
        out[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
        let body = FRAME_HEADER_LEN;
        out[body..body + fixed_len].copy_from_slice(&fixed[..fixed_len]);
        out[body + fixed_len..].copy_from_slice(data);
        let crc = crc32(&[&out[..8], &out[body..]]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }

    /// Parses a whole frame (as sized by [`FrameHeaderView::check`]), verifying its
    /// checksum. Only the frame's own bytes are checked here; the stream rules (page
    /// numbers, rounds) are the decoder's.
    pub fn parse(bytes: &'a [u8], page_size: usize) -> Result<Self, WireErrorKind> {
        let view = FrameHeaderView::new_checked(bytes).ok_or(WireErrorKind::Truncated {
            have: bytes.len(),
            need: FRAME_HEADER_LEN,
        })?;
        let (kind, len) = view.check(page_size)?;
        let bytes = bytes.get(..len).ok_or(WireErrorKind::Truncated {
            have: bytes.len(),
            need: len,
        })?;
        let body = &bytes[FRAME_HEADER_LEN..];
        let computed = crc32(&[&bytes[..8], body]);
        if view.checksum() != computed && !cfg!(fuzzing) {
            return Err(WireErrorKind::ChecksumMismatch {
                stored: view.checksum(),
                computed,
            });
        }
        // Lengths were checked against the kind, so these reads are in bounds.
        Ok(match kind {
            FrameKind::ZeroRun => Frame::ZeroRun {
                first_page: get_u64(body, 0),
                count: get_u64(body, 8),
            },
            FrameKind::Raw => Frame::Raw {
                page: get_u64(body, 0),
                data: &body[8..],
            },
            FrameKind::Lz4 => Frame::Lz4 {
                page: get_u64(body, 0),
                data: &body[8..],
            },
            FrameKind::Delta => Frame::Delta {
                page: get_u64(body, 0),
                base_hash: get_u64(body, 8),
                data: &body[16..],
            },
            FrameKind::RoundBegin => Frame::RoundBegin {
                round: get_u32(body, 0),
                planned_pages: get_u64(body, 4),
            },
            FrameKind::RoundEnd => Frame::RoundEnd {
                round: get_u32(body, 0),
                pages: get_u64(body, 4),
            },
            FrameKind::Switchover => Frame::Switchover {
                remaining_pages: get_u64(body, 0),
            },
            FrameKind::Complete => Frame::Complete {
                total_pages: get_u64(body, 0),
                digest: u128::from(get_u64(body, 8)) | (u128::from(get_u64(body, 16)) << 64),
            },
            FrameKind::DeviceState => {
                if get_u16(body, 6) != 0 {
                    return Err(WireErrorKind::ReservedNotZero);
                }
                Frame::DeviceState(DeviceState {
                    id: get_u32(body, 0),
                    version: get_u16(body, 4),
                    data: &body[DEVICE_STATE_FIXED_LEN..],
                })
            }
        })
    }
}

/// Where [`seal_page_frame`] expects a page payload: after room for the longest
/// page-frame header and fields (a delta's).
pub const PAGE_PAYLOAD_OFFSET: usize = FRAME_HEADER_LEN + 16;

/// Zero-copy framing of an encoded page: the payload was written by the encoder at
/// `buf[PAGE_PAYLOAD_OFFSET..][..len]`; this writes the frame header and fields in
/// front of it and returns the range of `buf` holding the whole frame (the same bytes
/// [`Frame::emit`] would write for [`Frame::page`]).
///
/// ```
/// use precopy::codec::{EncoderConfig, PageEncoder};
/// use precopy::wire::frame::{seal_page_frame, PAGE_PAYLOAD_OFFSET};
/// let mut enc = PageEncoder::new(EncoderConfig::new(4096)).unwrap();
/// let mut buf = vec![0u8; PAGE_PAYLOAD_OFFSET + enc.max_payload_len()];
/// let sent = enc.encode(5, &[9u8; 4096], &mut buf[PAGE_PAYLOAD_OFFSET..]).unwrap();
/// let frame = seal_page_frame(&mut buf, 4096, 5, sent.encoding, sent.base_hash, sent.len)
///     .unwrap();
/// assert!(frame.len() < 64); // a run of one byte value compresses to a few bytes
/// ```
pub fn seal_page_frame(
    buf: &mut [u8],
    page_size: usize,
    page: u64,
    encoding: Encoding,
    base_hash: u64,
    len: usize,
) -> Result<core::ops::Range<usize>, WireErrorKind> {
    let frame = match encoding {
        Encoding::Zero => Frame::ZeroRun {
            first_page: page,
            count: 1,
        },
        _ => Frame::page(page, encoding, base_hash, &[]),
    };
    let (fixed, fixed_len) = frame.fixed();
    let data_len = if encoding == Encoding::Zero { 0 } else { len };
    let body_len = fixed_len + data_len;
    check_body_len(frame.kind(), body_len, page_size)?;
    let start = PAGE_PAYLOAD_OFFSET - fixed_len - FRAME_HEADER_LEN;
    let end = PAGE_PAYLOAD_OFFSET + data_len;
    let got = buf.len();
    let out = buf
        .get_mut(start..end)
        .ok_or(WireErrorKind::OutputTooSmall { needed: end, got })?;
    out[0] = frame.kind() as u8;
    out[1..4].fill(0);
    out[4..8].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + fixed_len].copy_from_slice(&fixed[..fixed_len]);
    let crc = crc32(&[&out[..8], &out[FRAME_HEADER_LEN..]]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(start..end)
}

/// Checks that a frame of `kind` may carry a body of `body_len` bytes for pages of
/// `page_size` bytes (before anything is written).
fn check_body_len(kind: FrameKind, body_len: usize, page_size: usize) -> Result<(), WireErrorKind> {
    let (min, max) = kind.body_len_range(page_size);
    if (min..=max).contains(&body_len) {
        return Ok(());
    }
    Err(WireErrorKind::BadFrameLength {
        kind: kind as u8,
        len: body_len as u64,
        min: min as u64,
        max: max as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_page_frames_equal_emitted_ones() {
        let payload = [0xabu8; 100];
        for encoding in Encoding::ALL {
            let data: &[u8] = match encoding {
                Encoding::Zero => &[],
                Encoding::Raw => &[0xab; 512],
                _ => &payload,
            };
            let frame = Frame::page(3, encoding, 77, data);
            let mut emitted = [0u8; 600];
            let n = frame.emit(512, &mut emitted).unwrap();
            let mut buf = [0u8; 600];
            buf[PAGE_PAYLOAD_OFFSET..][..data.len()].copy_from_slice(data);
            let r = seal_page_frame(&mut buf, 512, 3, encoding, 77, data.len()).unwrap();
            assert_eq!(&buf[r], &emitted[..n], "{encoding:?}");
            assert_eq!(Frame::parse(&emitted[..n], 512), Ok(frame));
        }
        let mut small = [0u8; 40];
        assert!(seal_page_frame(&mut small, 512, 0, Encoding::Raw, 0, 512).is_err());
    }
}
