//! The atomics and fences of the mark/harvest protocol, in one place.
//!
//! Normally these are `core`'s. Built with `RUSTFLAGS="--cfg loom"` they are loom's, so
//! the model check (`tests/bitmap_loom.rs`) runs the bitmap's real marking and
//! harvesting code under every interleaving and every weak-memory outcome loom
//! explores. Nothing else in the bitmap may name `core::sync::atomic` for a word of the
//! bitmap or a fence of the protocol: that is what keeps the checked code the shipped
//! code.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicU64, Ordering};
