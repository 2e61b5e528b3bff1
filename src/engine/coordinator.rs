//! The multi-stream coordinator, sans-IO: one [`Scheduler`] deciding for N streams, the
//! round barrier, the pause once every stream is ready, and the final report.
//!
//! A migration runs one [`SourceEngine`](super::SourceEngine) per stream (each with
//! its own [`Shard`](crate::layout::Shard)); engines have no scheduler, the
//! coordinator's is the one. A single-stream migration is a 1-stream coordinator
//! ([`Migration`](super::Migration) pairs the two). The coordinator does not own the
//! engines: in the threaded runtime each engine lives on its own encoder thread, in a
//! simulator they are stepped one after another on a virtual clock. The caller feeds
//! it what each engine reported (`handle_*`) and polls it for what to do
//! ([`Coordinator::poll_event`]), quinn-proto style; time comes in as `now_ns`.
//!
//! ```text
//!  engine i: RoundMeasured(r) ──► handle_round_measured(i, r, lz4, now)
//!            (every stream)   ◄── RoundDone(sum), Throttle(p), Decide(decision) for all
//!  engine i: PauseGuest       ──► handle_pause_wanted(i)
//!            (every stream)   ◄── PauseGuest { predicted }   (once)
//!  the VMM paused the guest   ──► handle_guest_paused(now)
//!                             ◄── GuestPaused: call guest_paused(now) on every engine
//!  engine i: Complete         ──► handle_complete(i, digest, final round)
//!            (every stream)   ◄── FinalRound(sum)
//!  destination i verified     ──► handle_verdict(i, ok)
//!            (every stream)   ◄── Done(report)  /  anywhere: Failed(error)
//! ```
//!
//! (An engine's [`SourceEvent::SyncDirtyLog`](super::SourceEvent::SyncDirtyLog) is
//! between it and the VMM: the coordinator does not see it.)
//!
//! **Round numbering.** Every round number counts the bulk round as round 1: the
//! engines' [`StreamRound::round`] and [`FinalRound::round`], the scheduler's
//! [`RoundStats::round`](crate::schedule::RoundStats) and everything the coordinator
//! puts out (only the stream's round frames count from 0, see
//! [`wire::Frame::RoundBegin`](crate::wire::Frame)). Its report names both counts:
//! [`CoordinatorReport::live_rounds`] (rounds with the guest running) and
//! [`CoordinatorReport::rounds`] (all rounds, the final one included, so equal to the
//! final round's number).
//!
//! **Storage.** [`CoordinatorCore`] is the state machine over caller words (three per
//! stream, [`coordinator_storage_words`]) with a fixed queue of 8 events: no
//! allocator. [`Coordinator`] (feature `alloc`) is that core over words it allocates,
//! with a queue that grows and the report's digests in a `Vec`. No clock, thread or
//! I/O.
//!
//! **Misuse** (a stream out of range, an event twice or out of order) is answered with
//! a [`CoordinatorError`] from the `handle_*` call and changes nothing; the migration
//! itself fails only through [`CoordinatorEvent::Failed`].

#[cfg(feature = "alloc")]
use alloc::collections::VecDeque;
#[cfg(feature = "alloc")]
use alloc::vec::Vec;
use core::fmt;

#[cfg(feature = "alloc")]
use super::{FinalRound, StreamRound};
use crate::codec::CodecStats;
#[cfg(feature = "alloc")]
use crate::layout::OwnedWords;
#[cfg(feature = "alloc")]
use crate::schedule::{Decision, DowntimeReport, Scheduler};
use crate::schedule::{Policy, RoundOutcome, ScheduleError};

mod state;

pub use state::{coordinator_storage_words, CoordinatorCore, CoreEvent, CoreReport};

/// A live round over all streams: the scheduler's view of the summed measurements,
/// and the sums the per-round table shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamsRound {
    /// The scheduler's view of the summed round (its `stats.round` counts the bulk
    /// round as 1).
    pub outcome: RoundOutcome,
    /// Pages per codec, all streams.
    pub codecs: CodecStats,
    /// Pages skipped because the guest dirtied them again, all streams.
    pub deferred_pages: u64,
    /// Streams that had LZ4 on at the round's end.
    pub lz4_streams: u8,
}

/// What a [`Coordinator`] coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoordinatorConfig {
    /// When to switch over, throttle or give up (the one scheduler's policy).
    pub policy: Policy,
    /// Pages of the whole guest (all streams).
    pub total_pages: u64,
    /// Page size, bytes.
    pub page_size: u64,
    /// Streams, 1 to [`MAX_STREAMS`](crate::layout::MAX_STREAMS).
    pub streams: usize,
}

/// What the caller must do, from [`Coordinator::poll_event`], in the order given.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
pub enum CoordinatorEvent {
    /// Every stream ended a live round: the summed round, for the per-round table.
    /// Followed by `Throttle` (when the advice changed) and `Decide`.
    RoundDone(StreamsRound),
    /// Throttle the vCPUs by this percent of their time (0: stop throttling). Given
    /// when the advice changes.
    Throttle(u8),
    /// Pass this decision to every stream's engine
    /// ([`SourceEngine::decide`](super::SourceEngine::decide)). The barrier: no engine
    /// gets it before every engine measured the round. After `Fail`, `Failed`
    /// follows (each engine puts the pages it harvested back into the bitmap).
    Decide(Decision),
    /// Every stream wants the pause: pause the guest, then call
    /// [`Coordinator::handle_guest_paused`]. Given exactly once.
    PauseGuest {
        /// The downtime the scheduler expects, ns.
        predicted_downtime_ns: u64,
    },
    /// The guest is paused: call
    /// [`SourceEngine::guest_paused`](super::SourceEngine::guest_paused) on every
    /// engine (each harvests its last pages).
    GuestPaused,
    /// Every stream produced its final round and completion: the summed final round
    /// (`round` is the final round's number; `predicted_downtime_ns` the
    /// coordinator's prediction).
    FinalRound(FinalRound),
    /// Every destination stream verified its pages: the migration is done.
    Done(CoordinatorReport),
    /// The migration failed; the guest keeps running on the source. Engines still
    /// running must be aborted ([`SourceEngine::abort`](super::SourceEngine::abort)).
    Failed(CoordinatorError),
}

/// How a coordinated migration went, with [`CoordinatorEvent::Done`].
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinatorReport {
    /// Rounds with the guest running (the bulk round and the iterative rounds).
    pub live_rounds: u32,
    /// All rounds, the final one (guest paused) included: `live_rounds + 1`, the
    /// final round's number.
    pub rounds: u32,
    /// The scheduler's prediction of the downtime at switchover, ns.
    pub predicted_downtime_ns: u64,
    /// When the guest was paused, ns (the caller's clock).
    pub paused_at_ns: u64,
    /// Stream bytes of every round, all streams: every byte put out (the stream
    /// headers count in the bulk round, the completion frames in the final one).
    pub wire_bytes: u64,
    /// Pages sent in every round, all streams.
    pub pages_sent: u64,
    /// Each stream's memory digest, in stream order.
    pub digests: Vec<u128>,
}

/// Why a coordinated migration failed, or why a call was refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CoordinatorError {
    /// A migration needs 1 to [`MAX_STREAMS`](crate::layout::MAX_STREAMS) streams.
    StreamCount {
        /// Streams asked for.
        streams: usize,
    },
    /// An event names a stream the migration does not have.
    StreamOutOfRange {
        /// The stream named.
        stream: usize,
        /// Streams in the migration.
        streams: usize,
    },
    /// A stream reported the same thing twice.
    Twice {
        /// The stream.
        stream: usize,
        /// What it reported.
        what: &'static str,
    },
    /// A stream reported something that does not fit where the migration stands.
    OutOfOrder {
        /// The stream.
        stream: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// A stream reported a round other than the one in progress (both counted from 1,
    /// the bulk round).
    WrongRound {
        /// The stream.
        stream: usize,
        /// The round in progress.
        expected: u32,
        /// The round the stream reported.
        got: u32,
    },
    /// A call after the migration already ended (done or failed).
    Ended,
    /// The scheduler gave up (not converging), or the policy is invalid.
    Schedule(ScheduleError),
    /// A stream failed (its engine or its transport; the caller has the cause).
    StreamFailed {
        /// The stream.
        stream: usize,
    },
    /// A destination stream did not verify its pages.
    Refused {
        /// The stream.
        stream: usize,
    },
    /// Caller storage for a [`CoordinatorCore`] is smaller than
    /// [`coordinator_storage_words`] of the stream count (none at all included).
    StorageTooSmall {
        /// Bytes needed.
        needed_bytes: usize,
        /// Bytes given.
        got_bytes: usize,
    },
}

impl fmt::Display for CoordinatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CoordinatorError::StreamCount { streams } => write!(
                f,
                "a migration needs 1 to {} streams, not {streams}",
                crate::layout::MAX_STREAMS
            ),
            CoordinatorError::StreamOutOfRange { stream, streams } => write!(
                f,
                "coordinator misuse: stream {stream} reported, but the migration has \
                 {streams} streams"
            ),
            CoordinatorError::Twice { stream, what } => {
                write!(
                    f,
                    "coordinator misuse: stream {stream} reported {what} twice"
                )
            }
            CoordinatorError::OutOfOrder { stream, what } => {
                write!(f, "coordinator misuse: stream {stream}: {what}")
            }
            CoordinatorError::WrongRound {
                stream,
                expected,
                got,
            } => write!(
                f,
                "coordinator misuse: stream {stream} reported round {got} while round \
                 {expected} is in progress"
            ),
            CoordinatorError::Ended => f.write_str("coordinator misuse: the migration ended"),
            CoordinatorError::Schedule(e) => e.fmt(f),
            CoordinatorError::StreamFailed { stream } => write!(f, "stream {stream} failed"),
            CoordinatorError::Refused { stream } => {
                write!(f, "destination stream {stream} did not verify its pages")
            }
            CoordinatorError::StorageTooSmall {
                needed_bytes,
                got_bytes,
            } => write!(
                f,
                "coordinator storage of {got_bytes} bytes is too small: its streams need \
                 {needed_bytes} bytes (24 per stream)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CoordinatorError {}

impl From<ScheduleError> for CoordinatorError {
    fn from(e: ScheduleError) -> Self {
        CoordinatorError::Schedule(e)
    }
}

/// The multi-stream coordinator; see the [module docs](self). A [`CoordinatorCore`]
/// over words it allocates, with a queue of events that grows and the report's digests
/// in a `Vec`.
///
/// ```
/// use precopy::engine::{Coordinator, CoordinatorConfig, CoordinatorError};
/// use precopy::schedule::Policy;
///
/// let config = CoordinatorConfig { policy: Policy::default(), total_pages: 1024,
///                                  page_size: 4096, streams: 2 };
/// let mut c = Coordinator::new(config, 0).unwrap();
/// // Stream 5 does not exist; nothing is due yet.
/// assert_eq!(c.handle_pause_wanted(5),
///            Err(CoordinatorError::StreamOutOfRange { stream: 5, streams: 2 }));
/// assert_eq!(c.poll_event(), None);
/// ```
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct Coordinator {
    core: CoordinatorCore<OwnedWords>,
    events: VecDeque<CoordinatorEvent>,
}

#[cfg(feature = "alloc")]
impl Coordinator {
    /// A coordinator for `config.streams` streams; the bulk round starts at `now_ns`.
    pub fn new(config: CoordinatorConfig, now_ns: u64) -> Result<Self, CoordinatorError> {
        let words = OwnedWords::zeroed(coordinator_storage_words(
            config.streams.min(usize::from(crate::layout::MAX_STREAMS)),
        ));
        Ok(Coordinator {
            core: CoordinatorCore::over(config, now_ns, words)?,
            events: VecDeque::with_capacity(4),
        })
    }

    /// Streams coordinated.
    pub fn streams(&self) -> usize {
        self.core.streams()
    }

    /// The one scheduler (policy, live rounds so far, last prediction).
    pub fn scheduler(&self) -> &Scheduler {
        self.core.scheduler()
    }

    /// Predicted against real downtime, once the destination confirmed: the
    /// scheduler's prediction at the switchover beside `real_downtime_ns` (measured by
    /// the caller, from the pause to the destination's go).
    pub fn downtime_report(&self, real_downtime_ns: u64) -> DowntimeReport {
        self.core.downtime_report(real_downtime_ns)
    }

    /// The live round in progress or last ended, counted from 1 (the bulk round).
    pub fn round(&self) -> u32 {
        self.core.round()
    }

    /// Each stream's digest, in stream order, once every stream completed.
    pub fn digests(&self) -> Option<Vec<u128>> {
        (0..self.core.streams())
            .map(|i| self.core.digest(i))
            .collect()
    }

    /// Whether the migration ended (done or failed).
    pub fn is_ended(&self) -> bool {
        self.core.is_ended()
    }

    /// The next thing to do, in order; `None` until more is handled.
    pub fn poll_event(&mut self) -> Option<CoordinatorEvent> {
        self.events.pop_front()
    }

    /// Stream `stream`'s engine ended a live round
    /// ([`SourceEvent::RoundMeasured`](super::SourceEvent::RoundMeasured)), with LZ4
    /// on (`lz4`) or off at its end. When every stream has, the scheduler sees the sum
    /// at `now_ns` and decides for all.
    pub fn handle_round_measured(
        &mut self,
        stream: usize,
        round: StreamRound,
        lz4: bool,
        now_ns: u64,
    ) -> Result<(), CoordinatorError> {
        let result = self.core.handle_round_measured(stream, round, lz4, now_ns);
        self.drain();
        result
    }

    /// Whether the next round measurement ends the live round: see
    /// [`CoordinatorCore::round_ends_with_next_measurement`].
    pub fn round_ends_with_next_measurement(&self) -> bool {
        self.core.round_ends_with_next_measurement()
    }

    /// Pages dirtied since the streams harvested the round now ending: see
    /// [`CoordinatorCore::note_pending_pages`].
    pub fn note_pending_pages(&mut self, pages: u64) {
        self.core.note_pending_pages(pages);
    }

    /// Stream `stream`'s engine asks for the pause
    /// ([`SourceEvent::PauseGuest`](super::SourceEvent::PauseGuest)). When every
    /// stream has, [`CoordinatorEvent::PauseGuest`] follows, once.
    pub fn handle_pause_wanted(&mut self, stream: usize) -> Result<(), CoordinatorError> {
        let result = self.core.handle_pause_wanted(stream);
        self.drain();
        result
    }

    /// The caller paused the guest (after [`CoordinatorEvent::PauseGuest`]), at
    /// `now_ns`: [`CoordinatorEvent::GuestPaused`] follows.
    pub fn handle_guest_paused(&mut self, now_ns: u64) -> Result<(), CoordinatorError> {
        let result = self.core.handle_guest_paused(now_ns);
        self.drain();
        result
    }

    /// Stream `stream`'s engine produced its final round and completion frame
    /// ([`SourceEvent::Complete`](super::SourceEvent::Complete)). When every stream
    /// has, [`CoordinatorEvent::FinalRound`] follows with the sum.
    pub fn handle_complete(
        &mut self,
        stream: usize,
        digest: u128,
        round: FinalRound,
    ) -> Result<(), CoordinatorError> {
        let result = self.core.handle_complete(stream, digest, round);
        self.drain();
        result
    }

    /// Destination stream `stream` verified its pages (`ok`) or did not. Every stream
    /// verified: [`CoordinatorEvent::Done`]; one did not:
    /// [`CoordinatorEvent::Failed`] with [`CoordinatorError::Refused`].
    pub fn handle_verdict(&mut self, stream: usize, ok: bool) -> Result<(), CoordinatorError> {
        let result = self.core.handle_verdict(stream, ok);
        self.drain();
        result
    }

    /// Stream `stream` failed (its engine, its transport; the caller keeps the
    /// cause): [`CoordinatorEvent::Failed`] follows. Failures after the first are
    /// echoes and are ignored.
    pub fn handle_failure(&mut self, stream: usize) -> Result<(), CoordinatorError> {
        let result = self.core.handle_failure(stream);
        self.drain();
        result
    }

    /// Moves the core's events into the queue (so the core never refuses a call for
    /// want of room).
    fn drain(&mut self) {
        while let Some(event) = self.core.poll_event() {
            let event = match event {
                CoreEvent::RoundDone(r) => CoordinatorEvent::RoundDone(r),
                CoreEvent::Throttle(p) => CoordinatorEvent::Throttle(p),
                CoreEvent::Decide(d) => CoordinatorEvent::Decide(d),
                CoreEvent::PauseGuest {
                    predicted_downtime_ns,
                } => CoordinatorEvent::PauseGuest {
                    predicted_downtime_ns,
                },
                CoreEvent::GuestPaused => CoordinatorEvent::GuestPaused,
                CoreEvent::FinalRound(f) => CoordinatorEvent::FinalRound(f),
                CoreEvent::Done(r) => CoordinatorEvent::Done(CoordinatorReport {
                    live_rounds: r.live_rounds,
                    rounds: r.rounds,
                    predicted_downtime_ns: r.predicted_downtime_ns,
                    paused_at_ns: r.paused_at_ns,
                    wire_bytes: r.wire_bytes,
                    pages_sent: r.pages_sent,
                    digests: (0..self.core.streams())
                        .map(|i| self.core.digest(i).unwrap_or(0))
                        .collect(),
                }),
                CoreEvent::Failed(e) => CoordinatorEvent::Failed(e),
            };
            self.events.push_back(event);
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests;
