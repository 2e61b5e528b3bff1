//! The runtime layer's error type.

use std::fmt;
use std::string::String;

use crate::engine::{ApplyError, CoordinatorError, EngineError};
use crate::memory::MemoryError;

/// Why a migration run by the runtime failed. The source guest keeps running.
#[derive(Debug)]
pub enum RuntimeError {
    /// A socket or file operation failed (what, and the OS error).
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The source engine stopped.
    Engine(EngineError),
    /// The destination refused the stream (the message names frame and byte).
    Apply(ApplyError),
    /// The peer broke the protocol or closed early (the message names the peer).
    Peer(String),
    /// This stream stopped because another stream of the migration failed (that
    /// stream's error is the one a migration reports).
    Stopped,
    /// A migration was given a number of streams (links, or kept hash tables) outside
    /// 1 to [`MAX_STREAMS`](crate::layout::MAX_STREAMS).
    StreamCount {
        /// Streams given.
        streams: usize,
    },
    /// The source's check was given a stream's page hashes that do not cover the
    /// stream's pages: the stream did not complete.
    IncompleteHashes {
        /// The stream.
        stream: usize,
        /// Hashes kept.
        kept: u64,
        /// Pages of the stream.
        pages: u64,
    },
    /// Every stream's threads ended without one saying why (a runtime bug).
    StreamsVanished,
    /// A thread of the runtime panicked (a bug); the migration failed.
    ThreadPanicked {
        /// Which thread.
        thread: String,
    },
    /// The guest could not do what the migration asked ([`Guest`](crate::engine::Guest)):
    /// pause, or bring in its dirty pages.
    Guest {
        /// What was asked.
        what: &'static str,
        /// The guest's error.
        error: std::boxed::Box<dyn std::error::Error + Send + Sync>,
    },
    /// TLS could not be set up (a certificate, key or CA file, or the handshake's
    /// configuration); the message names the option or file.
    Tls(String),
    /// The destination refused the migration.
    Refused {
        /// The destination (its address).
        peer: String,
        /// The reason it sent.
        reason: String,
    },
    /// After every destination stream verified, the source's re-read of its paused
    /// memory found pages that differ from what was sent: written without being
    /// marked dirty (a lost write). The destination's copy is stale; the source still
    /// holds the paused guest and can resume it.
    LostWrites {
        /// Pages that differ.
        differing: u64,
        /// The first of them, in page order.
        first: std::vec::Vec<u64>,
    },
    /// The stream's guest is larger than the destination allows.
    GuestTooLarge {
        /// Pages in the stream's layout.
        pages: u64,
        /// Page size in the stream's layout.
        page_size: u64,
        /// The destination's cap, bytes.
        max_memory: u64,
    },
    /// The multi-stream coordinator refused a stream's report (a runtime bug) or a
    /// stream failed without a reason of its own.
    Coordinator(CoordinatorError),
    /// The destination's guest memory could not be made or used.
    Memory(MemoryError),
    /// A multi-stream destination was given a number of memory views other than the
    /// migration's stream count.
    WrongViewCount {
        /// Views given.
        views: usize,
        /// Streams of the migration.
        streams: u8,
    },
}

impl RuntimeError {
    /// A guest's error while doing `what`.
    pub fn guest(
        what: &'static str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        RuntimeError::Guest {
            what,
            error: std::boxed::Box::new(error),
        }
    }

    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, error: std::io::Error) -> Self {
        RuntimeError::Io {
            what: what.into(),
            error,
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Io { what, error } => write!(f, "{what}: {error}"),
            RuntimeError::Engine(e) => write!(f, "source: {e}"),
            RuntimeError::Apply(e) => e.fmt(f),
            RuntimeError::Peer(e) => f.write_str(e),
            RuntimeError::Stopped => {
                f.write_str("stopped because another stream of the migration failed")
            }
            RuntimeError::StreamCount { streams } => write!(
                f,
                "a migration has 1 to {} streams (one per link), not {streams}",
                crate::layout::MAX_STREAMS
            ),
            RuntimeError::IncompleteHashes {
                stream,
                kept,
                pages,
            } => write!(
                f,
                "stream {stream} kept {kept} page hashes for its {pages} pages: it did not \
                 complete, so the source's memory cannot be checked against what it sent"
            ),
            RuntimeError::StreamsVanished => f.write_str(
                "every stream stopped before the migration completed, none saying why \
                 (a bug in precopy's runtime); the guest runs on at the source",
            ),
            RuntimeError::ThreadPanicked { thread } => write!(
                f,
                "{thread} panicked (a bug in precopy); the migration failed"
            ),
            RuntimeError::Guest { what, error } => write!(f, "{what}: {error}"),
            RuntimeError::Tls(what) => write!(f, "TLS: {what}"),
            RuntimeError::Refused { peer, reason } => {
                write!(f, "{peer} refused the migration: {reason}")
            }
            RuntimeError::LostWrites { differing, first } => {
                write!(
                    f,
                    "the source's memory differs from what was migrated on {differing} page(s) \
                     (first: "
                )?;
                for (i, p) in first.iter().enumerate() {
                    write!(f, "{}{p}", if i == 0 { "" } else { ", " })?;
                }
                write!(
                    f,
                    "): written without being marked dirty (a lost write), so the \
                     destination's copy is stale; keep the guest on the source (it is \
                     paused and intact) and do not resume the destination"
                )
            }
            RuntimeError::GuestTooLarge {
                pages,
                page_size,
                max_memory,
            } => write!(
                f,
                "the stream's guest of {} ({pages} pages of {page_size} bytes) is larger than \
                 this destination's limit of {} (raise the destination's memory limit)",
                Size(pages.saturating_mul(*page_size)),
                Size(*max_memory)
            ),
            RuntimeError::Coordinator(e) => write!(f, "source: {e}"),
            RuntimeError::Memory(e) => write!(f, "destination guest memory: {e}"),
            RuntimeError::WrongViewCount { views, streams } => write!(
                f,
                "the migration has {streams} streams but the destination gave {views} views \
                 of its guest memory (one per stream is needed)"
            ),
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<EngineError> for RuntimeError {
    fn from(e: EngineError) -> Self {
        RuntimeError::Engine(e)
    }
}

impl From<ApplyError> for RuntimeError {
    fn from(e: ApplyError) -> Self {
        RuntimeError::Apply(e)
    }
}

impl From<crate::engine::TransportClosed> for RuntimeError {
    fn from(e: crate::engine::TransportClosed) -> Self {
        RuntimeError::Peer(std::string::ToString::to_string(&e))
    }
}

impl From<std::io::Error> for RuntimeError {
    fn from(e: std::io::Error) -> Self {
        RuntimeError::io("sending", e)
    }
}

/// A byte count in the largest binary unit that divides it (`64 MiB`, `4097 bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if n != 0 && n % (1 << shift) == 0 {
                return write!(f, "{} {unit}", n >> shift);
            }
        }
        write!(f, "{n} bytes")
    }
}
