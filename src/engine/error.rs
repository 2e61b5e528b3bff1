//! The engine layer's error type.

use core::fmt;

use crate::bitmap::BitmapError;
use crate::codec::CodecError;
use crate::memory::MemoryError;
use crate::schedule::ScheduleError;
use crate::wire::WireErrorKind;

/// Why the source engine stopped. After any of these the guest keeps running on the
/// source, its memory untouched, and pages harvested but not sent are back in the
/// bitmap.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EngineError {
    /// The scheduler gave up (not converging) or the policy is invalid.
    Schedule(ScheduleError),
    /// A page could not be read from guest memory.
    Memory(MemoryError),
    /// A page could not be encoded (a configuration error, such as a page size the
    /// codecs do not support).
    Codec(CodecError),
    /// The bitmap refused an operation.
    Bitmap(BitmapError),
    /// A frame could not be written (a bug: the engine sizes its frames).
    Emit(WireErrorKind),
    /// The caller's buffer is too small for the next frame.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// Caller storage for an engine is smaller than it needs (none at all included):
    /// size it with the engine's sizing function.
    StorageTooSmall {
        /// Bytes needed.
        needed_bytes: usize,
        /// Bytes given.
        got_bytes: usize,
    },
    /// The encoder's page size differs from the bitmap's.
    PageSizeMismatch {
        /// The bitmap's page size.
        expected: usize,
        /// The encoder's.
        got: usize,
    },
    /// A configuration the engine refuses.
    InvalidConfig {
        /// What is wrong with it.
        what: &'static str,
    },
    /// A call that does not fit the engine's state.
    OutOfOrder {
        /// What was wrong.
        what: &'static str,
    },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Schedule(e) => e.fmt(f),
            EngineError::Memory(e) => write!(f, "reading guest memory: {e}"),
            EngineError::Codec(e) => write!(f, "encoding a page: {e}"),
            EngineError::Bitmap(e) => write!(f, "dirty bitmap: {e}"),
            EngineError::Emit(e) => write!(f, "writing a frame: {e}"),
            EngineError::BufferTooSmall { needed, got } => write!(
                f,
                "output buffer of {got} bytes is too small, the engine needs {needed}"
            ),
            EngineError::StorageTooSmall {
                needed_bytes,
                got_bytes: 0,
            } => write!(
                f,
                "no engine storage given: this layout, stream and cache budget need \
                 {needed_bytes} bytes (see the storage sizing functions)"
            ),
            EngineError::StorageTooSmall {
                needed_bytes,
                got_bytes,
            } => write!(
                f,
                "engine storage of {got_bytes} bytes is too small: this layout, stream and \
                 cache budget need {needed_bytes} bytes (see the storage sizing functions)"
            ),
            EngineError::PageSizeMismatch { expected, got } => write!(
                f,
                "encoder page size {got} differs from the bitmap's page size {expected}"
            ),
            EngineError::InvalidConfig { what } => {
                write!(f, "invalid engine configuration: {what}")
            }
            EngineError::OutOfOrder { what } => write!(f, "engine misuse: {what}"),
        }
    }
}

impl core::error::Error for EngineError {}

macro_rules! from_error {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for EngineError {
            fn from(e: $t) -> Self {
                EngineError::$v(e)
            }
        }
    )*};
}

from_error!(ScheduleError => Schedule, MemoryError => Memory, CodecError => Codec, BitmapError => Bitmap);
