//! The migration engines, sans-IO: [`SourceEngine`] turns the dirty bitmap and guest
//! memory into stream bytes, [`Applier`] (the destination engine) turns stream bytes
//! into guest memory and reports success only when the digests agree. Neither does
//! I/O nor reads a clock: the caller moves the bytes over any [`Transport`] and
//! passes the time. [`Coordinator`] runs the one scheduler, the round barrier and the
//! pause of a multi-stream migration over N source engines.

mod apply;
pub mod compression;
#[cfg(feature = "alloc")]
pub mod coordinator;
mod error;
mod guest;
#[cfg(feature = "alloc")]
mod source;
mod transport;
mod undelivered;

pub use apply::{Applier, ApplyError, ApplyStats, Progress};
pub use compression::{Compression, CompressionChoice, UnknownCompression};
#[cfg(feature = "alloc")]
pub use coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorError, CoordinatorEvent, CoordinatorReport,
    StreamsRound,
};
pub use error::EngineError;
pub use guest::Guest;
#[cfg(feature = "alloc")]
pub use source::{
    FinalRound, SourceConfig, SourceEngine, SourceEvent, SourceRound, StreamRound, Transmit, Verify,
};
pub use transport::Transport;
#[cfg(feature = "alloc")]
pub use transport::{MemoryTransport, TransportClosed};
pub use undelivered::put_back_undelivered;
