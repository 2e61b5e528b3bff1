//! # precopy
//!
//! The dirty-page tracking and pre-copy live-migration core that a hypervisor or VMM
//! links in. The VMM owns the vCPUs, the guest memory and the socket; precopy owns the
//! decisions and the bytes.
//!
//! The core is `#![no_std]`: the [`bitmap`] module works without an allocator, over
//! memory the caller provides. Feature `alloc` adds owned bitmaps and dirty sets,
//! `std` the runtime, and `vm-memory` the rust-vmm integration.
//!
//! ```
//! use precopy::bitmap::AtomicDirtyBitmap;
//! use precopy::layout::GuestLayout;
//!
//! let bitmap = AtomicDirtyBitmap::new(GuestLayout::flat(4096, 1 << 30).unwrap());
//! bitmap.mark_range(0x1000, 0x2001).unwrap(); // pages 1, 2, 3
//! assert_eq!(bitmap.harvest().pages().collect::<Vec<_>>(), [1, 2, 3]);
//! ```
#![no_std]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod bitmap;
pub mod codec;
// Under `--cfg loom` (the bitmap's model check, tests/bitmap_loom.rs) the bitmap's words
// are loom's atomics; the engine, which holds bitmaps of `core` atomics, is left out of
// that build (the check needs no allocator, so nothing above the engine is built either).
#[cfg(not(loom))]
pub mod engine;
#[cfg(feature = "alloc")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;
pub mod layout;
pub mod memory;
#[cfg(feature = "std")]
pub mod runtime;
pub mod schedule;
#[cfg(feature = "std")]
pub mod sim;
pub mod wire;
#[cfg(feature = "std")]
pub mod workload;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
