//! The runtime layer's error type.

use std::fmt;
use std::string::String;

use crate::engine::{ApplyError, EngineError};

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
    /// The destination refused the stream.
    Apply(ApplyError),
    /// A workload specification could not be parsed.
    Workload(String),
    /// The peer broke the protocol or closed early.
    Peer(String),
}

impl RuntimeError {
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
            RuntimeError::Apply(e) => write!(f, "destination: {e}"),
            RuntimeError::Workload(e) => write!(f, "workload: {e}"),
            RuntimeError::Peer(e) => write!(f, "peer: {e}"),
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
