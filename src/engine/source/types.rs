//! What a source engine is configured with and what it reports.

use crate::codec::{CodecStats, EncoderConfig};
use crate::layout::Shard;

/// Where the source's half of the end-to-end check runs.
///
/// Either way the completion frame carries a digest of the stream's pages that the
/// destination compares with its own (a fold of the hashes it kept as it wrote the
/// pages): that catches any page lost or corrupted between the two. What differs is
/// how the source's digest is made, and so what it catches and what it costs with
/// the guest paused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Verify {
    /// The digest folds the XXH3-64 of every page as it was sent (kept per page,
    /// updated on every send): with the guest paused this costs the final round's
    /// pages plus 8 bytes per page of memory, whatever the memory size. A write the
    /// dirty log missed (the source's memory differs from what it sent) is caught by
    /// re-reading the source's frozen memory after the destination took over and
    /// comparing it with the kept hashes ([`SourceEngine::sent_hashes`](super::SourceEngine::sent_hashes)): the caller
    /// (the runtime) does that while it still holds the paused source, so it can fail
    /// back. The default.
    #[default]
    AfterResume,
    /// The digest re-reads and hashes all of the stream's memory with the guest
    /// paused (a lost write makes the destination refuse the migration before it
    /// resumes): downtime grows with memory size. For tests and the paranoid.
    InDowntime,
}

/// The default of [`SourceConfig::max_pages_per_poll`].
pub const DEFAULT_MAX_PAGES_PER_POLL: u64 = 16384;

/// How a [`SourceEngine`](super::SourceEngine) migrates. The policy (when to switch over) is not here: it
/// belongs to the one scheduler of the migration, the
/// [`Coordinator`](crate::engine::Coordinator)'s ([`CoordinatorConfig::policy`](crate::engine::CoordinatorConfig)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceConfig {
    /// Codec choices and the delta cache budget.
    pub encoder: EncoderConfig,
    /// Names the migration in the stream header.
    pub session_id: [u8; 16],
    /// Skip pages dirtied again after their harvest until the next round (Xen's idea):
    /// they would be stale by the time they land. On by default.
    pub defer_redirtied: bool,
    /// Which pages this engine sends: [`Shard::WHOLE`] (the default) for a
    /// single-stream migration, or one stream of several, each with its own engine.
    pub stream: Shard,
    /// How the completion frame's digest is made (see [`Verify`]):
    /// [`Verify::AfterResume`] by default.
    pub verify: Verify,
    /// Stop before every harvest (the end of each live round, and the final harvest
    /// after the pause) with [`SourceEvent::SyncDirtyLog`] until the caller has
    /// brought outside dirty sources into the bitmap and called
    /// [`SourceEngine::dirty_log_synced`](super::SourceEngine::dirty_log_synced). For a VMM whose dirty pages are also
    /// tracked elsewhere (KVM's dirty log or dirty ring). Off by default.
    pub sync_before_harvest: bool,
    /// Pages one [`poll_transmit`](super::SourceEngine::poll_transmit) walks at most (sent,
    /// deferred, or a run of zero pages skipped at once), whatever room the buffer
    /// has left: zero and deferred pages produce no bytes, so without a bound one
    /// poll over an idle guest would walk all of memory. At least 1;
    /// [`DEFAULT_MAX_PAGES_PER_POLL`] by default.
    pub max_pages_per_poll: u64,
    /// This stream carries the guest's device state (vCPU registers, device models):
    /// its header announces [`Features::DEVICE_STATE`](crate::wire::Features), and
    /// after the final round's pages the engine stops with
    /// [`SourceEvent::DeviceState`] until the caller hands the state to
    /// [`SourceEngine::send_device_state`](super::SourceEngine::send_device_state),
    /// which frames it before the completion frame. A migration's streams share their
    /// header features: the runtime sets it on every stream, gives stream 0 the
    /// items and the others none. Off by default.
    pub device_state: bool,
}

impl SourceConfig {
    /// Defaults for pages of `page_size` bytes: the default codecs.
    pub fn new(page_size: usize) -> Self {
        SourceConfig {
            encoder: EncoderConfig::new(page_size),
            session_id: [0; 16],
            defer_redirtied: true,
            stream: Shard::WHOLE,
            verify: Verify::AfterResume,
            sync_before_harvest: false,
            max_pages_per_poll: DEFAULT_MAX_PAGES_PER_POLL,
            device_state: false,
        }
    }
}

/// What one stream's live round did ([`SourceEvent::RoundMeasured`]), for the
/// coordinator that decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamRound {
    /// The round, counted from 1 (the bulk round) like
    /// [`RoundStats::round`](crate::schedule::RoundStats) (the stream's round frames
    /// count from 0: see [`wire::Frame::RoundBegin`](crate::wire::Frame)).
    pub round: u32,
    /// Pages sent in it (a run of zero pages skipped at once counts its pages).
    pub pages_sent: u64,
    /// Bytes it put on the wire (the bulk round's include the stream header).
    pub wire_bytes: u64,
    /// Pages of this stream harvested dirty at its end.
    pub dirty_pages: u64,
    /// Per-codec counts for this round alone.
    pub codecs: CodecStats,
    /// Pages skipped because the guest dirtied them again before they were sent.
    pub deferred_pages: u64,
}

/// What happened, from [`SourceEngine::poll_event`](super::SourceEngine::poll_event): each asks the caller to do
/// something before the engine produces more.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceEvent {
    /// A live round ended (its frames are in the bytes polled) and this stream's
    /// dirty pages were harvested. Nothing more is produced until
    /// [`SourceEngine::decide`](super::SourceEngine::decide) (the coordinator's decision for every stream).
    RoundMeasured(StreamRound),
    /// With [`SourceConfig::sync_before_harvest`]: a harvest is due. Bring every
    /// outside dirty source into the bitmap, then call
    /// [`SourceEngine::dirty_log_synced`](super::SourceEngine::dirty_log_synced), which harvests. Nothing more is produced
    /// until then.
    ///
    /// The rule, for KVM: first re-protect and clear in KVM (`KVM_CLEAR_DIRTY_LOG`
    /// for the pages taken, or `KVM_RESET_DIRTY_RINGS` after collecting the rings),
    /// then OR what was taken into this engine's bitmap, then call
    /// `dirty_log_synced`. A guest write after the clear is then either in a later
    /// KVM log or already in the bitmap; clearing after the OR would lose writes made
    /// in between.
    SyncDirtyLog {
        /// The harvest after the pause (the final round's); else the end of a live
        /// round.
        paused: bool,
    },
    /// With [`SourceConfig::device_state`]: the final round's pages are in the bytes
    /// polled and the guest is paused; hand the engine the guest's device state with
    /// [`SourceEngine::send_device_state`](super::SourceEngine::send_device_state)
    /// (the completion frame follows it). Nothing more is produced until then.
    DeviceState,
    /// Pause the guest, then call [`SourceEngine::guest_paused`](super::SourceEngine::guest_paused). Nothing more is
    /// produced until then.
    PauseGuest {
        /// The downtime predicted at the switchover decision, ns.
        predicted_downtime_ns: u64,
    },
    /// The completion frame is in the bytes polled (the final round's pages were in
    /// earlier ones): once they reach the destination and it reports success, the
    /// migration is done. The poll that produced it did nothing but make the digest
    /// and emit the completion frame, so a caller that times that poll measures what
    /// verification cost with the guest paused (the core reads no clock).
    Complete {
        /// Digest of the source's memory (the destination must match it).
        digest: u128,
        /// The final round.
        round: FinalRound,
    },
}

/// The final round, sent with the guest paused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinalRound {
    /// Round number, counted from 1 (the bulk round) like [`StreamRound::round`].
    pub round: u32,
    /// Pages sent in it.
    pub pages_sent: u64,
    /// Bytes it put on the wire, completion frame included.
    pub wire_bytes: u64,
    /// Per-codec counts for the final round.
    pub codecs: CodecStats,
    /// The downtime predicted at the switchover decision, ns.
    pub predicted_downtime_ns: u64,
    /// Pages the completion digest read from guest memory: none with
    /// [`Verify::AfterResume`] (it folds the kept hashes), every page of the stream
    /// with [`Verify::InDowntime`].
    pub digest_pages_read: u64,
    /// Page hashes the completion digest folded (every page of the stream).
    pub digest_pages_folded: u64,
}
