//! The std runtime: a synthetic guest with writer threads, transports over TCP, and
//! the drivers that move an engine's bytes between them.

mod error;
pub mod guest;
pub mod tcp;

pub use error::RuntimeError;
pub use guest::{SyntheticGuest, Workload};
pub use tcp::TcpTransport;
