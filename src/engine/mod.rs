//! The migration engines, sans-IO: [`SourceEngine`] turns the dirty bitmap and guest
//! memory into one stream's bytes, [`Applier`] (the destination engine) turns stream
//! bytes into guest memory and reports success only when the digests agree. Neither
//! does I/O nor reads a clock: the caller moves the bytes over any [`Transport`] and
//! passes the time. Engines have no scheduler: [`Coordinator`] runs the one
//! scheduler, the round barrier and the pause of a migration over its N source
//! engines, and [`Migration`] pairs one engine with a 1-stream coordinator for a
//! single-stream migration.

mod apply;
pub mod compression;
pub mod coordinator;
mod device;
mod error;
mod guest;
#[cfg(feature = "alloc")]
mod migration;
mod sizing;
mod source;
mod transport;
mod undelivered;

#[cfg(feature = "alloc")]
pub use apply::OwnedApplier;
pub use apply::{Applier, ApplyError, ApplyStats, Progress};
pub use compression::{Compression, CompressionChoice, UnknownCompression};
pub use coordinator::{
    coordinator_storage_words, CoordinatorConfig, CoordinatorCore, CoordinatorError, CoreEvent,
    CoreReport, StreamsRound,
};
#[cfg(feature = "alloc")]
pub use coordinator::{Coordinator, CoordinatorEvent, CoordinatorReport};
#[cfg(feature = "alloc")]
pub use device::OwnedDeviceState;
pub use device::{
    DeviceStateBuf, DeviceStateStore, DeviceStates, NoDeviceState, MAX_DEVICE_STATE_BYTES,
};
pub use error::EngineError;
pub use guest::Guest;
#[cfg(feature = "alloc")]
pub use migration::{Migration, MigrationEvent};
pub use sizing::{storage_needs, StorageNeeds};
pub use source::{
    source_storage_words, FinalRound, SourceConfig, SourceEngine, SourceEvent, StreamRound, Verify,
    DEFAULT_MAX_PAGES_PER_POLL,
};
pub use transport::Transport;
#[cfg(feature = "alloc")]
pub use transport::{MemoryTransport, TransportClosed};
pub use undelivered::put_back_undelivered;
