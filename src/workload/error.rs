//! The workload module's error type.

use std::fmt;
use std::string::String;

use crate::memory::MemoryError;

/// Why a workload could not be set up or a guest operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadError {
    /// A workload specification (`NAME[:key=value,...]`) could not be parsed: the
    /// specification and what is wrong with it.
    Spec {
        /// The specification as given.
        spec: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Guest memory refused an access (a page out of range).
    Memory(MemoryError),
}

impl fmt::Display for WorkloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadError::Spec { spec, problem } => write!(f, "workload: '{spec}': {problem}"),
            WorkloadError::Memory(e) => write!(f, "synthetic guest memory: {e}"),
        }
    }
}

impl std::error::Error for WorkloadError {}

impl From<MemoryError> for WorkloadError {
    fn from(e: MemoryError) -> Self {
        WorkloadError::Memory(e)
    }
}
