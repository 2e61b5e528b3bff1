//! Real KVM guests (feature `kvm`, Linux x86-64): a VM whose memory slots follow a
//! [`GuestLayout`](crate::layout::GuestLayout) over page-aligned mmap'd RAM
//! ([`GuestRam`]), a vCPU thread with start, pause, resume and throttle
//! ([`VcpuThread`]), a guest program that keeps writing a counter at a paced rate
//! ([`program`]), and KVM's dirty tracking in three modes feeding precopy's bitmap at
//! the pre-harvest point ([`DirtyTracker`]). [`KvmGuest`] is the [`Guest`] a
//! migration drives.
//!
//! Like the runtime it uses threads and the OS; it sits above the runtime (which
//! [`migrate_local`] drives) and below the CLI.
//!
//! [`Guest`]: crate::engine::Guest

#[allow(unused_imports)]
use std::prelude::rust_2021::*;
#[allow(unused_imports)]
use std::{format, vec};

mod dirty;
mod guest;
mod migrate;
mod multiboot;
mod pagemap;
pub mod program;
mod ram;
mod state;
mod vcpu;

pub use dirty::{
    clear_dirty_log, enable_dirty_ring, enable_manual_protect, get_dirty_log, register_slots,
    reset_dirty_rings, slot_flags, DirtyMode, DirtyOffers, DirtyRing, DirtyTracker, SyncStats,
    RING_ENTRIES,
};
pub use guest::{GuestConfig, KvmGuest, GUEST_PAGE};
pub use migrate::small_socket_buffers;
pub use migrate::{
    migrate_local, receive_migration, resume_received, Continuity, LocalMigration,
    LocalMigrationError, Resumed,
};
pub use multiboot::{multiboot_image, LOAD_ADDR};
pub use program::{layout_for, PaceExit};
pub use ram::GuestRam;
pub use state::{VcpuStateError, VCPU_STATE_ID, VCPU_STATE_LEN, VCPU_STATE_VERSION};
pub use vcpu::{Bitmap, Pacing, VcpuState, VcpuThread, PAUSE_TIMEOUT};

/// What went wrong with a KVM guest.
#[derive(Debug)]
pub enum KvmError {
    /// A KVM ioctl failed.
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// The OS error.
        error: std::io::Error,
    },
    /// Mapping memory failed.
    Mmap {
        /// Bytes asked for.
        bytes: u64,
        /// The OS error.
        error: std::io::Error,
    },
    /// A guest-physical range outside the guest's memory.
    BadAddress {
        /// The address.
        gpa: u64,
        /// Bytes.
        len: usize,
    },
    /// A configuration this guest cannot run (memory size, working set, layout).
    Config(String),
    /// The kernel lacks something asked for (a dirty mode).
    Unsupported(String),
    /// The vCPU did not reach its pause point within [`PAUSE_TIMEOUT`].
    PauseTimeout,
    /// The vCPU stopped: a guest fault, an unexpected exit.
    Vcpu(String),
}

impl KvmError {
    /// A kvm-ioctls error from `op`.
    pub fn ioctl(op: &'static str, e: kvm_ioctls::Error) -> Self {
        KvmError::Ioctl {
            op,
            error: std::io::Error::from_raw_os_error(e.errno()),
        }
    }
}

impl std::fmt::Display for KvmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvmError::Ioctl { op, error } => write!(f, "{op}: {error}"),
            KvmError::Mmap { bytes, error } => {
                write!(f, "mapping {bytes} bytes of guest memory: {error}")
            }
            KvmError::BadAddress { gpa, len } => write!(
                f,
                "guest range {gpa:#x}+{len} is not inside one region of guest memory"
            ),
            KvmError::Config(why) | KvmError::Unsupported(why) => f.write_str(why),
            KvmError::PauseTimeout => write!(
                f,
                "the vCPU did not reach its pause point within {} s",
                PAUSE_TIMEOUT.as_secs()
            ),
            KvmError::Vcpu(why) => write!(f, "vCPU: {why}"),
        }
    }
}

impl std::error::Error for KvmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KvmError::Ioctl { error, .. } | KvmError::Mmap { error, .. } => Some(error),
            _ => None,
        }
    }
}
