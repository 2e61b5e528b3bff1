//! Synthetic guests and page contents, shared by the CLI (`demo`, `send`, the
//! benchmarks), the tests, the benches and the simulator: a [`SyntheticGuest`] whose
//! writer threads dirty real memory at a [`Workload`]'s rate, the page contents of the
//! codec benchmarks ([`pages`]) and the one reproducible generator they all draw from
//! ([`Rng`]).
//!
//! The arrows point one way: this module stands on the core (layout, bitmap, memory,
//! engine's [`Guest`](crate::engine::Guest) trait, which [`SyntheticGuest`]
//! implements); the runtime does not import it, and the CLI uses both.

mod error;
mod guest;
pub mod huge_pages;
pub mod pages;
mod rng;
mod spec;

pub use error::WorkloadError;
pub use guest::{SharedBitmap, SyntheticGuest};
pub use rng::Rng;
pub use spec::{Workload, WriteStream, MAX_RATE};
