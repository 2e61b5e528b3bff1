//! The migration engines. For now the destination side: [`Applier`] turns a decoded
//! stream into guest memory.

mod apply;

pub use apply::{Applier, ApplyError, ApplyStats, Progress};
