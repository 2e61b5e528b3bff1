//! The migration engines, sans-IO: [`SourceEngine`] turns the dirty bitmap and guest
//! memory into stream bytes, [`Applier`] (the destination engine) turns stream bytes
//! into guest memory and reports success only when the digests agree. Neither does
//! I/O nor reads a clock: the caller moves the bytes over any [`Transport`] and
//! passes the time.

mod apply;
mod error;
#[cfg(feature = "alloc")]
mod source;
mod transport;

pub use apply::{Applier, ApplyError, ApplyStats, Progress};
pub use error::EngineError;
#[cfg(feature = "alloc")]
pub use source::{
    FinalRound, SourceConfig, SourceEngine, SourceEvent, SourceRound, StreamRound, Transmit, Verify,
};
pub use transport::Transport;
#[cfg(feature = "alloc")]
pub use transport::{MemoryTransport, TransportClosed};
