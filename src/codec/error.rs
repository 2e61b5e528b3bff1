//! The codec layer's one error type.

use core::fmt;

/// Why a page could not be encoded or decoded. Every variant says what to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The page size is not a power of two in
    /// [`MIN_PAGE_SIZE`](crate::layout::MIN_PAGE_SIZE)..=[`MAX_PAGE_SIZE`](crate::layout::MAX_PAGE_SIZE).
    BadPageSize {
        /// The page size given.
        page_size: usize,
    },
    /// A page buffer is not exactly one page long.
    BadPageLength {
        /// Bytes given.
        len: usize,
        /// The page size.
        page_size: usize,
    },
    /// An output buffer is smaller than the codec needs.
    OutputTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The page cache's one-time allocation failed.
    CacheAllocation {
        /// Bytes asked for.
        bytes: usize,
    },
    /// Caller storage for the page cache holds fewer words than its budget needs
    /// (see [`PageCache::storage_words`](crate::codec::PageCache::storage_words)).
    CacheStorageTooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        got: usize,
    },
    /// LZ4 data is corrupt or does not decode to exactly one page.
    Lz4Corrupt {
        /// What is wrong.
        reason: Lz4Fault,
    },
    /// Delta data is corrupt.
    DeltaCorrupt {
        /// Offset in the delta data where the fault was found.
        offset: usize,
        /// What is wrong.
        reason: DeltaFault,
    },
}

/// What is wrong with LZ4 data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lz4Fault {
    /// The block is malformed (a literal or match reaches outside the block or page).
    Malformed,
    /// The block decodes to fewer bytes than a page.
    ShortPage {
        /// Bytes the block decoded to.
        decoded: usize,
    },
}

/// What is wrong with delta data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaFault {
    /// A run length is cut off by the end of the data.
    TruncatedVarint,
    /// A run length is longer than three bytes or not in its shortest form.
    BadVarint,
    /// A changed run has length zero.
    EmptyChangedRun,
    /// A run reaches past the end of the page.
    RunPastPageEnd,
    /// The changed bytes of a run are cut off by the end of the data.
    TruncatedBytes,
}

impl fmt::Display for DeltaFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeltaFault::TruncatedVarint => "a run length is cut off",
            DeltaFault::BadVarint => "a run length is over-long",
            DeltaFault::EmptyChangedRun => "a changed run is empty",
            DeltaFault::RunPastPageEnd => "a run reaches past the end of the page",
            DeltaFault::TruncatedBytes => "the changed bytes of a run are cut off",
        })
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CodecError::BadPageSize { page_size } => write!(
                f,
                "page size {page_size} is not supported (use a power of two from {} to {})",
                crate::layout::MIN_PAGE_SIZE,
                crate::layout::MAX_PAGE_SIZE
            ),
            CodecError::BadPageLength { len, page_size } => {
                write!(
                    f,
                    "buffer of {len} bytes given for a page of {page_size} bytes"
                )
            }
            CodecError::OutputTooSmall { needed, got } => write!(
                f,
                "output buffer of {got} bytes is too small (the codec needs {needed})"
            ),
            CodecError::CacheAllocation { bytes } => write!(
                f,
                "could not allocate {bytes} bytes for the delta page cache (lower its budget)"
            ),
            CodecError::CacheStorageTooSmall { needed, got } => write!(
                f,
                "delta page cache storage of {got} words is smaller than its budget needs \
                 ({needed} words): give more storage or lower the cache budget"
            ),
            CodecError::Lz4Corrupt {
                reason: Lz4Fault::Malformed,
            } => f.write_str("LZ4 page data is corrupt"),
            CodecError::Lz4Corrupt {
                reason: Lz4Fault::ShortPage { decoded },
            } => write!(
                f,
                "LZ4 page data decodes to {decoded} bytes, not a whole page"
            ),
            CodecError::DeltaCorrupt { offset, reason } => {
                write!(f, "delta page data is corrupt at byte {offset}: {reason}")
            }
        }
    }
}

impl core::error::Error for CodecError {}
