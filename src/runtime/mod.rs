//! The std runtime: a synthetic guest with writer threads, transports over TCP and
//! files, the session protocol between a source and a destination, and the drivers
//! that move an engine's bytes between them.

pub mod calibrate;
mod dest;
mod error;
pub mod file;
pub mod guest;
mod hash;
pub mod huge_pages;
pub mod pacer;
pub mod session;
pub mod streams;
pub mod tcp;

pub use dest::{accept_streams, receive_streams, AppliedStreams, IncomingStreams, ReceivedStreams};
pub use error::{RuntimeError, Size};
pub use file::FileSink;
pub use guest::{SyntheticGuest, Workload};
pub use hash::{digest_parallel, hash_pages_parallel, ParallelHash};
pub use session::{accept, receive, Applied, Incoming, Limits, Received, Reply, SourceLink};
pub use streams::{
    check_source, migrate_streams, SourceCheck, SourceControl, StreamOptions, StreamsFinal,
    StreamsReport, StreamsRound,
};
pub use tcp::TcpTransport;
