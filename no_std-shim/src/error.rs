//! Status codes: `PRECOPY_OK`, one positive "more to do" status, negative errors, and
//! `precopy_strerror`. The core's typed errors map onto these codes here, in one place.

use core::ffi::{c_char, c_int, CStr};

use core_precopy::bitmap::BitmapError;
use core_precopy::codec::CodecError;
use core_precopy::engine::{ApplyError, CoordinatorError, EngineError};
use core_precopy::layout::LayoutError;
use core_precopy::schedule::ScheduleError;
use core_precopy::wire::{Location, WireErrorKind};

/// Success.
pub const PRECOPY_OK: c_int = 0;
/// Success, but the output buffer filled before the work was done: call again (only
/// `precopy_bitmap_harvest` returns it).
pub const PRECOPY_MORE: c_int = 1;
/// A required pointer argument is NULL.
pub const PRECOPY_ERR_NULL: c_int = -1;
/// A pointer is not aligned for its type (8 bytes for state blobs and `uint64_t` buffers).
pub const PRECOPY_ERR_MISALIGNED: c_int = -2;
/// An output buffer is too small for the result.
pub const PRECOPY_ERR_BUFFER_TOO_SMALL: c_int = -3;
/// A length or count is out of range (including lengths whose byte size overflows).
pub const PRECOPY_ERR_BAD_LENGTH: c_int = -4;
/// A state blob was not initialized by its `precopy_*_init` function.
pub const PRECOPY_ERR_UNINITIALIZED: c_int = -5;
/// An enumeration argument has a value the API does not define (or a reserved field
/// is not zero, or a stream index is not below its stream count).
pub const PRECOPY_ERR_BAD_ARGUMENT: c_int = -6;
/// The page size is not a power of two (or not supported by the codecs).
pub const PRECOPY_ERR_BAD_PAGE_SIZE: c_int = -7;
/// A region is empty, not page-aligned or wraps past the top of the address space.
pub const PRECOPY_ERR_BAD_REGION: c_int = -8;
/// Two regions overlap.
pub const PRECOPY_ERR_OVERLAPPING_REGIONS: c_int = -9;
/// More regions than `PRECOPY_MAX_REGIONS`.
pub const PRECOPY_ERR_TOO_MANY_REGIONS: c_int = -10;
/// A page index past the end of the guest.
pub const PRECOPY_ERR_PAGE_OUT_OF_RANGE: c_int = -11;
/// A guest-physical address not inside any region (pages inside regions were marked).
pub const PRECOPY_ERR_ADDRESS_OUT_OF_RANGE: c_int = -12;
/// A KVM memory slot id that is not in the slot table.
pub const PRECOPY_ERR_UNKNOWN_SLOT: c_int = -13;
/// A KVM dirty-log bit or ring entry past the end of its slot.
pub const PRECOPY_ERR_SLOT_OFFSET: c_int = -14;
/// A KVM slot that is not contiguous tracked memory, or the slot table is full.
pub const PRECOPY_ERR_BAD_SLOT: c_int = -15;
/// A policy field makes no sense (`precopy_policy_validate` names it).
pub const PRECOPY_ERR_BAD_POLICY: c_int = -16;
/// The scheduler was given a guest of zero pages or a zero page size.
pub const PRECOPY_ERR_BAD_GUEST: c_int = -17;
/// LZ4 or delta page data is corrupt (or does not decode to exactly one page).
pub const PRECOPY_ERR_CORRUPT_PAGE: c_int = -18;
/// A stream header or frame fails its checksum: corrupted in transit.
pub const PRECOPY_ERR_CHECKSUM: c_int = -19;
/// The input ends inside a stream header or frame: more bytes are needed.
pub const PRECOPY_ERR_TRUNCATED: c_int = -20;
/// A frame has an unknown kind, non-zero reserved bytes or a bad length for its kind.
pub const PRECOPY_ERR_BAD_FRAME: c_int = -21;
/// A stream header is malformed: magic, length, version 0, guest layout, stream index
/// not below the stream count, or non-zero stream bytes in a format-1 header (a page
/// size it states that is unsupported is `PRECOPY_ERR_BAD_PAGE_SIZE`).
pub const PRECOPY_ERR_BAD_HEADER: c_int = -22;
/// A stream written by a newer precopy (format version or features unknown here).
pub const PRECOPY_ERR_UNSUPPORTED: c_int = -23;
/// Frames break the stream's rules (page past the end, rounds out of order, ...).
pub const PRECOPY_ERR_STREAM: c_int = -24;

/// A call that does not fit the engine's state (an event not answered, an answer to
/// an event never given, a call after the migration ended).
pub const PRECOPY_ERR_OUT_OF_ORDER: c_int = -25;
/// A page-memory callback returned an error.
pub const PRECOPY_ERR_MEMORY: c_int = -26;
/// The destination's memory differs from the source's: the completion digest or a
/// delta's base does not match.
pub const PRECOPY_ERR_DIGEST_MISMATCH: c_int = -27;
/// The migration ended (aborted, failed, or done): the state takes no more calls.
pub const PRECOPY_ERR_ENDED: c_int = -28;
/// The scheduler gave up: the guest dirties memory faster than the link sends it.
pub const PRECOPY_ERR_NOT_CONVERGING: c_int = -29;
/// A stream failed or its destination refused it: the migration failed.
pub const PRECOPY_ERR_STREAM_FAILED: c_int = -30;

/// The message for each code, NUL-terminated, `'static`.
fn message(code: c_int) -> &'static CStr {
    match code {
        PRECOPY_OK => c"success",
        PRECOPY_MORE => c"output buffer full, call again to continue",
        crate::codec::PRECOPY_DELTA_GAVE_UP => {
            c"delta would not fit the output buffer: send the page another way"
        }
        PRECOPY_ERR_NULL => c"a required pointer argument is NULL",
        PRECOPY_ERR_MISALIGNED => c"a pointer is not aligned for its type",
        PRECOPY_ERR_BUFFER_TOO_SMALL => c"an output buffer is too small",
        PRECOPY_ERR_BAD_LENGTH => c"a length or count is out of range",
        PRECOPY_ERR_UNINITIALIZED => c"state was not initialized by its precopy_*_init function",
        PRECOPY_ERR_BAD_ARGUMENT => c"an enumeration argument has an undefined value",
        PRECOPY_ERR_BAD_PAGE_SIZE => c"page size is not a supported power of two",
        PRECOPY_ERR_BAD_REGION => {
            c"memory region is empty, not page-aligned or wraps the address space"
        }
        PRECOPY_ERR_OVERLAPPING_REGIONS => c"memory regions overlap",
        PRECOPY_ERR_TOO_MANY_REGIONS => c"too many memory regions",
        PRECOPY_ERR_PAGE_OUT_OF_RANGE => c"page index is past the end of the guest",
        PRECOPY_ERR_ADDRESS_OUT_OF_RANGE => c"guest address is not in any memory region",
        PRECOPY_ERR_UNKNOWN_SLOT => c"KVM memory slot is not in the slot table",
        PRECOPY_ERR_SLOT_OFFSET => c"KVM dirty log or ring entry is past the end of its slot",
        PRECOPY_ERR_BAD_SLOT => {
            c"KVM memory slot is not contiguous tracked memory, or the slot table is full"
        }
        PRECOPY_ERR_BAD_POLICY => c"migration policy field is invalid",
        PRECOPY_ERR_BAD_GUEST => c"guest has zero pages or a zero page size",
        PRECOPY_ERR_CORRUPT_PAGE => c"LZ4 or delta page data is corrupt",
        PRECOPY_ERR_CHECKSUM => c"checksum mismatch: the data was corrupted in transit",
        PRECOPY_ERR_TRUNCATED => c"input ends inside a header or frame: more bytes are needed",
        PRECOPY_ERR_BAD_FRAME => c"frame has an unknown kind, reserved bits set or a bad length",
        PRECOPY_ERR_BAD_HEADER => {
            c"stream header is malformed (magic, length, version or guest layout)"
        }
        PRECOPY_ERR_UNSUPPORTED => {
            c"stream was written by a newer precopy (version or features unknown here)"
        }
        PRECOPY_ERR_STREAM => c"frames break the stream's rules",
        PRECOPY_ERR_OUT_OF_ORDER => {
            c"call out of order: answer the pending event first, or the state ended"
        }
        PRECOPY_ERR_MEMORY => c"a page-memory callback returned an error",
        PRECOPY_ERR_DIGEST_MISMATCH => {
            c"destination memory differs from the source's (digest or delta base mismatch)"
        }
        PRECOPY_ERR_ENDED => c"the migration ended (aborted, failed or done)",
        PRECOPY_ERR_NOT_CONVERGING => {
            c"migration not converging: the guest dirties memory faster than it is sent"
        }
        PRECOPY_ERR_STREAM_FAILED => c"a stream failed or its destination refused it",
        _ => c"unknown precopy status code",
    }
}

/// A static, NUL-terminated English description of status code `code` (never NULL;
/// unknown codes get "unknown precopy status code").
#[no_mangle]
pub extern "C" fn precopy_strerror(code: c_int) -> *const c_char {
    message(code).as_ptr()
}

/// The code for a layout-layer error.
pub(crate) fn layout_code(e: LayoutError) -> c_int {
    match e {
        LayoutError::BadPageSize { .. } => PRECOPY_ERR_BAD_PAGE_SIZE,
        LayoutError::BadRegion { .. } => PRECOPY_ERR_BAD_REGION,
        LayoutError::OverlappingRegions { .. } => PRECOPY_ERR_OVERLAPPING_REGIONS,
        LayoutError::TooManyRegions { .. } => PRECOPY_ERR_TOO_MANY_REGIONS,
        LayoutError::PageOutOfRange { .. } => PRECOPY_ERR_PAGE_OUT_OF_RANGE,
        LayoutError::AddressOutOfRange { .. } => PRECOPY_ERR_ADDRESS_OUT_OF_RANGE,
    }
}

/// The code for a bitmap-layer error.
pub(crate) fn bitmap_code(e: BitmapError) -> c_int {
    match e {
        BitmapError::PageOutOfRange { .. } => PRECOPY_ERR_PAGE_OUT_OF_RANGE,
        BitmapError::AddressOutOfRange { .. } => PRECOPY_ERR_ADDRESS_OUT_OF_RANGE,
        BitmapError::StorageTooSmall { .. } => PRECOPY_ERR_BUFFER_TOO_SMALL,
        BitmapError::SizeMismatch { .. } => PRECOPY_ERR_BAD_LENGTH,
        BitmapError::UnknownSlot { .. } => PRECOPY_ERR_UNKNOWN_SLOT,
        BitmapError::SlotOffsetOutOfRange { .. } => PRECOPY_ERR_SLOT_OFFSET,
        BitmapError::BadSlot { .. } => PRECOPY_ERR_BAD_SLOT,
    }
}

/// The code for a scheduling-layer error returned by a constructor or validation.
pub(crate) fn schedule_code(e: ScheduleError) -> c_int {
    match e {
        // `NotConverging` is a decision, reported in a round outcome; constructors and
        // validation never return it.
        ScheduleError::BadPolicy { .. } | ScheduleError::NotConverging { .. } => {
            PRECOPY_ERR_BAD_POLICY
        }
        ScheduleError::BadGuest { .. } => PRECOPY_ERR_BAD_GUEST,
    }
}

/// The code for a codec-layer error.
pub(crate) fn codec_code(e: CodecError) -> c_int {
    match e {
        CodecError::BadPageSize { .. } => PRECOPY_ERR_BAD_PAGE_SIZE,
        CodecError::BadPageLength { .. } => PRECOPY_ERR_BAD_LENGTH,
        CodecError::OutputTooSmall { .. }
        | CodecError::CacheAllocation { .. }
        | CodecError::CacheStorageTooSmall { .. } => PRECOPY_ERR_BUFFER_TOO_SMALL,
        CodecError::Lz4Corrupt { .. } | CodecError::DeltaCorrupt { .. } => PRECOPY_ERR_CORRUPT_PAGE,
    }
}

/// The code for an engine-layer error (the source engine).
pub(crate) fn engine_code(e: EngineError) -> c_int {
    match e {
        EngineError::Schedule(ScheduleError::NotConverging { .. }) => PRECOPY_ERR_NOT_CONVERGING,
        EngineError::Schedule(e) => schedule_code(e),
        EngineError::Memory(_) => PRECOPY_ERR_MEMORY,
        EngineError::Codec(e) => codec_code(e),
        EngineError::Bitmap(e) => bitmap_code(e),
        EngineError::Emit(e) => wire_code(e),
        EngineError::BufferTooSmall { .. } | EngineError::StorageTooSmall { .. } => {
            PRECOPY_ERR_BUFFER_TOO_SMALL
        }
        EngineError::PageSizeMismatch { .. } => PRECOPY_ERR_BAD_PAGE_SIZE,
        EngineError::InvalidConfig { .. } => PRECOPY_ERR_BAD_ARGUMENT,
        EngineError::OutOfOrder { .. } => PRECOPY_ERR_OUT_OF_ORDER,
    }
}

/// The code for a destination (applier) error.
pub(crate) fn apply_code(e: ApplyError) -> c_int {
    match e {
        ApplyError::Wire(e) => wire_code_at(e.kind, e.location),
        ApplyError::LayoutMismatch { .. } => PRECOPY_ERR_BAD_GUEST,
        ApplyError::Codec { error, .. } => codec_code(error),
        ApplyError::BaseMismatch { .. } | ApplyError::DigestMismatch { .. } => {
            PRECOPY_ERR_DIGEST_MISMATCH
        }
        ApplyError::Memory { .. } => PRECOPY_ERR_MEMORY,
        ApplyError::PageBufferTooSmall { .. } => PRECOPY_ERR_BUFFER_TOO_SMALL,
        // The C applier keeps no device state: a stream carrying some is refused.
        ApplyError::DeviceStateTooLarge { .. } => PRECOPY_ERR_UNSUPPORTED,
    }
}

/// The code for a coordinator error (misuse, or why the migration failed).
pub(crate) fn coordinator_code(e: CoordinatorError) -> c_int {
    match e {
        CoordinatorError::StreamCount { .. } | CoordinatorError::StreamOutOfRange { .. } => {
            PRECOPY_ERR_BAD_ARGUMENT
        }
        CoordinatorError::Twice { .. }
        | CoordinatorError::OutOfOrder { .. }
        | CoordinatorError::WrongRound { .. } => PRECOPY_ERR_OUT_OF_ORDER,
        CoordinatorError::Ended => PRECOPY_ERR_ENDED,
        CoordinatorError::Schedule(ScheduleError::NotConverging { .. }) => {
            PRECOPY_ERR_NOT_CONVERGING
        }
        CoordinatorError::Schedule(e) => schedule_code(e),
        CoordinatorError::StreamFailed { .. } | CoordinatorError::Refused { .. } => {
            PRECOPY_ERR_STREAM_FAILED
        }
        CoordinatorError::StorageTooSmall { .. } => PRECOPY_ERR_BUFFER_TOO_SMALL,
    }
}

/// The code for a wire-layer error.
pub(crate) fn wire_code(e: WireErrorKind) -> c_int {
    use WireErrorKind::*;
    match e {
        BadMagic { .. }
        | ZeroVersion
        | BadHeaderLength { .. }
        | BadLayout(_)
        | BadStream { .. } => PRECOPY_ERR_BAD_HEADER,
        BadPageSize { .. } => PRECOPY_ERR_BAD_PAGE_SIZE,
        NewerVersion { .. } | UnknownFeatures { .. } => PRECOPY_ERR_UNSUPPORTED,
        ChecksumMismatch { .. } => PRECOPY_ERR_CHECKSUM,
        UnknownFrameKind { .. } | ReservedNotZero | BadFrameLength { .. } => PRECOPY_ERR_BAD_FRAME,
        Truncated { .. } => PRECOPY_ERR_TRUNCATED,
        BufferTooSmall { .. } | OutputTooSmall { .. } => PRECOPY_ERR_BUFFER_TOO_SMALL,
        PageOutOfRange { .. }
        | BadZeroRun { .. }
        | FeatureNotAnnounced { .. }
        | PageOutsideRound
        | RoundNotEnded { .. }
        | RoundNotBegun { .. }
        | UnexpectedRound { .. }
        | RoundCountMismatch { .. }
        | DuplicateSwitchover
        | CompleteBeforeSwitchover
        | DeviceStateBeforeSwitchover
        | TotalPagesMismatch { .. }
        | TrailingData
        | PageOnOtherStream { .. }
        | EndedBeforeCompletion => PRECOPY_ERR_STREAM,
    }
}

/// The code for a wire-layer error found at `location`: a non-zero reserved field is
/// `PRECOPY_ERR_BAD_HEADER` in the stream header and `PRECOPY_ERR_BAD_FRAME` in a
/// frame.
pub(crate) fn wire_code_at(e: WireErrorKind, location: Location) -> c_int {
    match (e, location) {
        (WireErrorKind::ReservedNotZero, Location::Header) => PRECOPY_ERR_BAD_HEADER,
        (e, _) => wire_code(e),
    }
}

/// Turns a `Result` whose error is already a code into a status code.
pub(crate) fn status(r: Result<(), c_int>) -> c_int {
    match r {
        Ok(()) => PRECOPY_OK,
        Err(code) => code,
    }
}
