//! # precopy C API
//!
//! A `#![no_std]` static library (`libprecopy.a`) with a C ABI over the precopy core,
//! for hypervisors written in C, kernel modules and bare-metal monitors. The API is
//! declared in `include/precopy.h`; `tests/c_api_test.c` exercises all of it.
//!
//! Conventions, the same for every function:
//! - Status codes: `PRECOPY_OK` (0), `PRECOPY_MORE` (1, "call again"), negative
//!   `PRECOPY_ERR_*` codes; `precopy_strerror` describes each.
//! - No allocation: state lives in fixed-size structs the caller allocates
//!   (`precopy_bitmap_t`, `precopy_kvm_slots_t`, `precopy_scheduler_t`,
//!   `precopy_decoder_t`, `precopy_coordinator_t`; 64-byte aligned: `precopy_lz4_t`,
//!   `precopy_digest_t`, `precopy_source_t`, `precopy_applier_t`), the engines' pages
//!   and buffers in storage the caller sizes with `precopy_storage_needs`, and every
//!   output goes into caller buffers with explicit lengths.
//! - NULL pointers, misaligned pointers, short buffers, bad lengths, out-of-range pages,
//!   undefined enumeration values and state never initialized return an error code.
//!   What cannot be checked is each function's contract: a pointer points at as many
//!   elements as its length says, and stays valid while used.
//! - No panics on any input; if one happened anyway (a bug), the panic handler traps.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod applier;
mod bitmap;
mod codec;
mod coordinator;
mod error;
mod ffi;
mod memory;
mod schedule;
mod source;
mod wire;

pub use applier::*;
pub use bitmap::*;
pub use codec::*;
pub use coordinator::*;
pub use error::*;
pub use memory::*;
pub use schedule::*;
pub use source::*;
pub use wire::*;

/// Version of the C ABI: bumped whenever a declaration in `precopy.h` changes
/// incompatibly. Compare with `precopy_abi_version()` at startup.
pub const PRECOPY_ABI_VERSION: u32 = 1;

/// The library's `PRECOPY_ABI_VERSION`; a host compiled against another header
/// version must not use the library.
#[no_mangle]
pub extern "C" fn precopy_abi_version() -> u32 {
    PRECOPY_ABI_VERSION
}

// The C layout of every struct in `precopy.h`, which asserts the same sizes
// (`check-header.py` checks that the two lists agree).
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<PrecopyRegion>() == 16);
    assert!(size_of::<PrecopyBitmap>() == PRECOPY_BITMAP_SIZE);
    assert!(size_of::<PrecopyKvmSlots>() == PRECOPY_KVM_SLOTS_SIZE);
    assert!(size_of::<PrecopyKvmDirtyGfn>() == 16);
    assert!(size_of::<PrecopyPolicy>() == 168);
    assert!(size_of::<PrecopyRoundMeasurement>() == 32);
    assert!(size_of::<PrecopyNotConverging>() == 40);
    assert!(size_of::<PrecopyRoundOutcome>() == 120);
    assert!(size_of::<PrecopyDowntimeReport>() == 24);
    assert!(size_of::<PrecopyScheduler>() == PRECOPY_SCHEDULER_SIZE);
    assert!(size_of::<PrecopyLz4>() == PRECOPY_LZ4_SIZE);
    assert!(size_of::<PrecopyStreamHeader>() == 1056);
    assert!(size_of::<PrecopyFrame>() == 64);
    assert!(size_of::<PrecopyDigest>() == PRECOPY_DIGEST_SIZE);
    assert!(size_of::<PrecopyDecoder>() == PRECOPY_DECODER_SIZE);
    assert!(size_of::<PrecopyEvent>() == 72);
    assert!(size_of::<PrecopyPageMemory>() == 40);
    assert!(size_of::<PrecopyStorageNeeds>() == 40);
    assert!(size_of::<PrecopySourceConfig>() == 56);
    assert!(size_of::<PrecopySourceEvent>() == 88);
    assert!(size_of::<PrecopySource>() == PRECOPY_SOURCE_SIZE);
    assert!(size_of::<PrecopyCoordinatorEvent>() == 72);
    assert!(size_of::<PrecopyCoordinator>() == PRECOPY_COORDINATOR_SIZE);
    assert!(size_of::<PrecopyApplyProgress>() == 48);
    assert!(size_of::<PrecopyApplier>() == PRECOPY_APPLIER_SIZE);
};

/// Nothing in the API panics on any input (every argument is checked and every error
/// returned as a code). Should a bug panic anyway, stop at once: trap, so the host's
/// crash handling sees a fault at the culprit instead of a hang or a corrupted state.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    // SAFETY: `ud2` raises an invalid-opcode exception; it touches no memory.
    unsafe {
        core::arch::asm!("ud2", options(nomem, nostack, noreturn))
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: `udf #0` raises an undefined-instruction exception; it touches no memory.
    unsafe {
        core::arch::asm!("udf #0", options(nomem, nostack, noreturn))
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    loop {
        core::hint::spin_loop();
    }
}

// `rust_eh_personality`, for hosted targets (x86_64-unknown-linux-gnu and the like).
//
// The prebuilt `core` of a hosted target is compiled with `panic = "unwind"`: its object
// files carry unwind tables that name `rust_eh_personality`, the personality routine
// that `std` normally provides. This library is built with `panic = "abort"` and without
// `std`, so nothing defines it, and linking the archive into a C program fails with
// "undefined reference to `rust_eh_personality`" whenever `core`'s objects are linked as
// they are (a `cargo build` without LTO; the release profile's LTO happens to drop the
// reference). Nothing can unwind through this library (panics trap, and no callback
// into the host exists), so the routine is never called: it only has to exist.
//
// It is defined in assembly as a *weak* symbol (stable Rust has no weak linkage), so a
// program that also links a Rust library with `std` uses std's routine and does not hit
// a duplicate definition. Should anything call it, it answers `_URC_CONTINUE_UNWIND`
// (8, "no handler in this frame"), what a frame without cleanups answers. Bare-metal
// targets (`*-unknown-none`) build `core` with `panic = "abort"` and need none of this.
#[cfg(all(
    any(target_os = "linux", target_os = "android", target_os = "freebsd"),
    target_arch = "x86_64"
))]
core::arch::global_asm!(
    ".pushsection .text.rust_eh_personality,\"ax\",@progbits",
    ".weak rust_eh_personality",
    ".type rust_eh_personality,@function",
    "rust_eh_personality:",
    "mov eax, 8",
    "ret",
    ".size rust_eh_personality, . - rust_eh_personality",
    ".popsection",
);
#[cfg(all(
    any(target_os = "linux", target_os = "android", target_os = "freebsd"),
    target_arch = "aarch64"
))]
core::arch::global_asm!(
    ".pushsection .text.rust_eh_personality,\"ax\",%progbits",
    ".weak rust_eh_personality",
    ".type rust_eh_personality,%function",
    "rust_eh_personality:",
    "mov w0, #8",
    "ret",
    ".size rust_eh_personality, . - rust_eh_personality",
    ".popsection",
);
