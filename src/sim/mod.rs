//! The simulator: a migration of any size (up to 1 TiB and beyond) on one machine, on
//! a virtual clock, running **the same code** that migrates real memory: the real
//! [`SourceEngine`](crate::engine::SourceEngine)s (one per stream), the core's
//! [`Coordinator`](crate::engine::Coordinator) and its scheduler, the real codecs and
//! framing, the real [`Applier`](crate::engine::Applier) at the destination, the
//! compression choice of the runtime ([`CompressionChoice`](crate::engine::CompressionChoice)).
//! What is modelled instead of run: the link ([`LinkModel`]: line rate, latency,
//! per-packet framing, fair round-robin sharing between streams, a bounded send
//! queue per stream), the CPU ([`CpuModel`]: ns per codec attempt, per page hashed,
//! per page walked, calibrated from the real codecs or given) and the guest's
//! writers ([`VirtualGuest`], the workload module's [`WriteStream`](crate::workload::WriteStream),
//! throttled like the real ones).
//!
//! Pages are generated on demand from (page, version, content class) and stamped
//! ([`PageGen`]): the source keeps a version per written page, the destination keeps
//! per page only a version and a hash, and checks every page it receives against the
//! regenerated content of the version its stamp names. At the end every page of the
//! destination is compared with the source's ([`DestCheck`]), so a lost write or a
//! corrupted page is caught, not assumed away.
//!
//! Layering: std; stands on the core and `workload/`, never on `runtime/`. One run
//! is single-threaded and deterministic for a given [`SimConfig`] (a fixed
//! [`CpuModel`]); a sweep runs points in parallel.

use std::string::String;

use crate::codec::EncoderConfig;
use crate::engine::{Compression, Verify};
use crate::schedule::Policy;
use crate::workload::Workload;

mod dest;
mod guest;
mod model;
mod pages;
mod report;
mod run;
pub mod scenarios;

pub use guest::VirtualGuest;
pub use model::{CpuModel, LinkModel};
pub use pages::{Content, DestMemory, PageGen, SourceMemory, CORRUPT};
pub use report::{DestCheck, SimObserver, SimReport};
pub use run::simulate;

/// Why a simulation could not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The configuration is not a migration (a size, a stream count, a policy).
    Config(String),
    /// A source engine refused its configuration.
    Engine(String),
    /// Nothing was left to happen but the migration had not ended: a bug in the
    /// event loop, with where it stood.
    Stalled {
        /// Virtual time, ns.
        at_ns: u64,
        /// The round in progress.
        round: u32,
    },
}

impl core::fmt::Display for SimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SimError::Config(e) => write!(f, "simulation: {e}"),
            SimError::Engine(e) => write!(f, "simulation: source engine: {e}"),
            SimError::Stalled { at_ns, round } => write!(
                f,
                "simulation stalled in round {round} at {:.3} s of virtual time with \
                 nothing left to happen (a simulator bug: please report it with the command)",
                *at_ns as f64 / 1e9
            ),
        }
    }
}

impl std::error::Error for SimError {}

/// One simulated migration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimConfig {
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// Page size, bytes.
    pub page_size: u64,
    /// What the guest writes.
    pub workload: Workload,
    /// What the pages that hold data contain (the demo's by default).
    pub content: Content,
    /// The guest's writers (vCPUs).
    pub writers: usize,
    /// Streams (connections, each with its own encoder).
    pub streams: u8,
    /// The link.
    pub link: LinkModel,
    /// The source's CPU costs.
    pub cpu: CpuModel,
    /// The scheduler's policy. The simulator adds its prediction of the downtime's
    /// verification (both sides folding page hashes) and a round trip to
    /// `non_memory_downtime_ns`, as `precopy demo` adds its calibrated one.
    pub policy: Policy,
    /// LZ4: auto (measured, as the runtime), on or off.
    pub compression: Compression,
    /// Delta cache, bytes, shared out over the streams.
    pub cache_bytes: u64,
    /// Bytes per buffer an encoder fills (the runtime's 256 KiB).
    pub buffer_bytes: usize,
    /// Where the source's half of the end-to-end check runs.
    pub verify: Verify,
    /// Test hook: after the bulk round, the guest changes its last page without
    /// marking it (a lost write the final comparison must catch).
    pub lost_write: bool,
    /// Virtual time after which a migration that has not ended fails, ns.
    pub max_virtual_ns: u64,
}

impl SimConfig {
    /// A migration of `memory_bytes` of 4 KiB pages running `workload`, over `link`,
    /// 2 streams, the default policy (300 ms downtime limit), the fixed default CPU
    /// costs, LZ4 auto, a 64 MiB delta cache.
    pub fn new(memory_bytes: u64, workload: Workload, link: LinkModel) -> Self {
        SimConfig {
            memory_bytes,
            page_size: 4096,
            workload,
            content: Content::Demo,
            writers: 1,
            streams: 2,
            link,
            cpu: CpuModel::default(),
            policy: Policy::default(),
            compression: Compression::Auto,
            cache_bytes: 64 << 20,
            buffer_bytes: 256 << 10,
            verify: Verify::AfterResume,
            lost_write: false,
            max_virtual_ns: 24 * 3600 * 1_000_000_000,
        }
    }

    /// The encoder configuration each stream gets.
    pub fn encoder(&self) -> EncoderConfig {
        EncoderConfig {
            cache_bytes: (self.cache_bytes / u64::from(self.streams.max(1))) as usize,
            ..EncoderConfig::new(self.page_size as usize)
        }
    }
}
