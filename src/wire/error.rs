//! The wire layer's one error type: what is wrong, and where in the stream.

use core::fmt;

use crate::layout::LayoutError;

/// Where in the stream a [`WireError`] was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// In the stream header, which starts at byte 0.
    Header,
    /// In frame `number` (0 is the first frame after the header), which starts at
    /// byte `offset` of the stream.
    Frame {
        /// Frame number, counting from 0.
        number: u64,
        /// Stream offset of the frame's first byte.
        offset: u64,
    },
    /// At the end of the stream, `offset` bytes in.
    End {
        /// Bytes in the stream.
        offset: u64,
    },
    /// While encoding (no stream position).
    Encoder,
}

/// A stream that cannot be decoded, or a frame that cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireError {
    /// Where.
    pub location: Location,
    /// What.
    pub kind: WireErrorKind,
}

/// What is wrong with a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireErrorKind {
    /// The stream does not start with the precopy magic.
    BadMagic {
        /// The first eight bytes found.
        found: [u8; 8],
    },
    /// The stream was written by a newer precopy.
    NewerVersion {
        /// The stream's format version.
        version: u16,
    },
    /// Format version 0 does not exist.
    ZeroVersion,
    /// The header length field does not fit the region count or the limits.
    BadHeaderLength {
        /// The header length stated.
        len: usize,
    },
    /// The header announces features this precopy does not know.
    UnknownFeatures {
        /// The unknown feature bits.
        bits: u32,
    },
    /// The page size is unsupported.
    BadPageSize {
        /// The page size stated.
        page_size: u64,
    },
    /// The guest layout (regions) is invalid.
    BadLayout(LayoutError),
    /// A reserved field is not zero.
    ReservedNotZero,
    /// The header's stream index is not below its stream count (or the count is 0).
    BadStream {
        /// The stream index stated.
        index: u8,
        /// The stream count stated.
        count: u8,
    },
    /// A page frame or zero run names a page that travels on another stream of a
    /// multi-stream migration ([`Shard`](crate::layout::Shard)).
    PageOnOtherStream {
        /// The first such page.
        page: u64,
        /// This stream's index.
        index: u8,
        /// The migration's stream count.
        count: u8,
    },
    /// The stored checksum does not match the bytes.
    ChecksumMismatch {
        /// CRC-32 stored in the stream.
        stored: u32,
        /// CRC-32 of the bytes received.
        computed: u32,
    },
    /// A frame kind this precopy does not know.
    UnknownFrameKind {
        /// The kind byte.
        kind: u8,
    },
    /// A frame's body length is wrong for its kind and the page size.
    BadFrameLength {
        /// The frame kind byte.
        kind: u8,
        /// The body length stated.
        len: u64,
        /// The shortest body allowed.
        min: u64,
        /// The longest body allowed.
        max: u64,
    },
    /// A page number past the end of guest memory.
    PageOutOfRange {
        /// The page number.
        page: u64,
        /// Pages in guest memory.
        total: u64,
    },
    /// A zero-page run that is empty or reaches past the end of guest memory.
    BadZeroRun {
        /// First page of the run.
        first: u64,
        /// Pages in the run.
        count: u64,
        /// Pages in guest memory.
        total: u64,
    },
    /// A frame uses a codec the header did not announce.
    FeatureNotAnnounced {
        /// The codec's name.
        feature: &'static str,
    },
    /// A page frame outside a round.
    PageOutsideRound,
    /// A round, switchover or completion frame while a round is still open.
    RoundNotEnded {
        /// The open round.
        round: u32,
    },
    /// A round end while no round is open.
    RoundNotBegun {
        /// The round the frame ends.
        round: u32,
    },
    /// A round begin or end with the wrong round number.
    UnexpectedRound {
        /// The round number expected.
        expected: u32,
        /// The round number found.
        found: u32,
    },
    /// A round end whose page count differs from the pages the round carried.
    RoundCountMismatch {
        /// The round.
        round: u32,
        /// Pages the round end states.
        stated: u64,
        /// Pages the round's frames carried.
        carried: u64,
    },
    /// A second switchover frame.
    DuplicateSwitchover,
    /// A device-state frame before the switchover (the guest was still running).
    DeviceStateBeforeSwitchover,
    /// A completion frame before the switchover frame.
    CompleteBeforeSwitchover,
    /// The completion frame states a memory size other than the header's layout.
    TotalPagesMismatch {
        /// Pages the completion frame states.
        stated: u64,
        /// Pages of the header's layout.
        layout: u64,
    },
    /// Bytes after the completion frame.
    TrailingData,
    /// The stream ends inside the header or a frame.
    Truncated {
        /// Bytes of it received.
        have: usize,
        /// Bytes it needs (as far as known).
        need: usize,
    },
    /// The stream ends without a completion frame.
    EndedBeforeCompletion,
    /// The decoder's frame buffer cannot hold the largest frame of this stream.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        capacity: usize,
    },
    /// The encoder's output buffer is too small.
    OutputTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Location::Header => f.write_str("stream header"),
            Location::Frame { number, offset } => write!(f, "frame {number} (byte {offset})"),
            Location::End { offset } => write!(f, "end of stream (byte {offset})"),
            Location::Encoder => f.write_str("encoding"),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.kind)
    }
}

impl fmt::Display for WireErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use WireErrorKind::*;
        match *self {
            BadMagic { found } => write!(f, "not a precopy stream (starts with {found:02x?})"),
            NewerVersion { version } => write!(
                f,
                "stream format version {version} is newer than this precopy supports ({}); \
                 upgrade the destination",
                super::FORMAT_VERSION
            ),
            ZeroVersion => f.write_str("stream format version 0 is invalid"),
            BadHeaderLength { len } => write!(f, "header length {len} is invalid"),
            UnknownFeatures { bits } => write!(
                f,
                "stream uses features {bits:#x} unknown to this precopy; upgrade the destination"
            ),
            BadPageSize { page_size } => write!(
                f,
                "page size {page_size} is not supported (a power of two from {} to {})",
                crate::layout::MIN_PAGE_SIZE,
                crate::layout::MAX_PAGE_SIZE
            ),
            BadLayout(e) => write!(f, "invalid guest layout: {e}"),
            ReservedNotZero => f.write_str("a reserved field is not zero (corrupt stream)"),
            BadStream { index, count } => write!(
                f,
                "stream index {index} of {count} streams is impossible (corrupt stream)"
            ),
            PageOnOtherStream { page, index, count } => write!(
                f,
                "page {page} belongs to another stream than this one ({index} of {count}): \
                 the stream is corrupt or the streams were crossed"
            ),
            ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): \
                 the stream's bytes changed after they were written (on the network, \
                 on disk or in a copy)"
            ),
            UnknownFrameKind { kind } => write!(
                f,
                "unknown frame kind {kind}: the stream is corrupt or was written by a newer \
                 precopy (upgrade the destination)"
            ),
            BadFrameLength {
                kind,
                len,
                min,
                max,
            } => write!(
                f,
                "frame kind {kind} has a body of {len} bytes (allowed {min}..={max})"
            ),
            PageOutOfRange { page, total } => {
                write!(
                    f,
                    "page {page} is past the end of guest memory ({total} pages)"
                )
            }
            BadZeroRun {
                first,
                count,
                total,
            } => write!(
                f,
                "zero-page run of {count} pages from page {first} does not fit guest memory \
                 ({total} pages)"
            ),
            FeatureNotAnnounced { feature } => {
                write!(
                    f,
                    "{feature} frame in a stream whose header did not announce {feature}"
                )
            }
            PageOutsideRound => f.write_str("page frame outside a round"),
            RoundNotEnded { round } => write!(f, "round {round} has not ended"),
            RoundNotBegun { round } => write!(f, "end of round {round}, which has not begun"),
            UnexpectedRound { expected, found } => {
                write!(f, "round {found} where round {expected} was expected")
            }
            RoundCountMismatch {
                round,
                stated,
                carried,
            } => write!(
                f,
                "round {round} states {stated} pages but carried {carried}: frames were lost"
            ),
            DuplicateSwitchover => f.write_str("second switchover frame"),
            DeviceStateBeforeSwitchover => f.write_str(
                "device-state frame before the switchover: device state travels only with \
                 the guest paused, after the final round",
            ),
            CompleteBeforeSwitchover => f.write_str("completion frame before switchover"),
            TotalPagesMismatch { stated, layout } => write!(
                f,
                "completion frame states {stated} pages but the layout has {layout}"
            ),
            TrailingData => f.write_str("data after the completion frame"),
            Truncated { have, need } => write!(
                f,
                "stream ends inside a frame ({have} of {need} bytes): the connection was cut"
            ),
            EndedBeforeCompletion => {
                f.write_str("stream ends before the completion frame: the migration did not finish")
            }
            BufferTooSmall { needed, capacity } => write!(
                f,
                "decoder buffer of {capacity} bytes cannot hold this stream's largest frame \
                 ({needed} bytes)"
            ),
            OutputTooSmall { needed, got } => {
                write!(
                    f,
                    "output buffer of {got} bytes is too small ({needed} needed)"
                )
            }
        }
    }
}

impl core::error::Error for WireError {}

impl WireErrorKind {
    /// This error at `location`.
    pub fn at(self, location: Location) -> WireError {
        WireError {
            location,
            kind: self,
        }
    }
}
