//! The std runtime: the threads, transports over TCP and files, the session protocol
//! between a source and a destination, and the drivers that move an engine's bytes
//! between them. It drives any [`Guest`](crate::engine::Guest); the synthetic guest
//! of the CLI and tests lives in the `workload` module, which this module does
//! not import.

pub mod calibrate;
mod dest;
mod error;
pub mod file;
mod hash;
mod listen;
pub mod pacer;
pub mod session;
pub mod streams;
#[cfg(feature = "tls")]
pub mod tls;

pub use dest::{
    accept_streams, receive_into_fresh, receive_streams, AppliedStreams, IncomingStreams,
    ReceivedStreams,
};
pub use error::{RuntimeError, Size};
pub use file::FileSink;
pub use hash::{digest_parallel, hash_pages_parallel, ParallelHash};
pub use listen::{listen_streams, ConnIo, ListenOptions, Wrap};
pub use session::{accept, receive, Applied, Incoming, Limits, Received, Reply, SourceLink};
pub use streams::{
    check_source, migrate_streams, MigrationOptions, MigrationReport, Observer, SourceCheck,
    StreamsFinal, StreamsRound,
};
