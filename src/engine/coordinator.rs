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
//! **Storage.** Needs feature `alloc`: a few words per stream (`Vec`, sized once at
//! [`Coordinator::new`]) and a short queue of pending events (at most four at a time,
//! plus the report's digests, one `u128` per stream). No clock, thread or I/O.
//!
//! **Misuse** (a stream out of range, an event twice or out of order) is answered with
//! a [`CoordinatorError`] from the `handle_*` call and changes nothing; the migration
//! itself fails only through [`CoordinatorEvent::Failed`].

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use super::{FinalRound, StreamRound};
use crate::codec::CodecStats;
use crate::schedule::{
    Decision, DowntimeReport, Policy, RoundMeasurement, RoundOutcome, ScheduleError, Scheduler,
};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Live rounds: collecting each stream's measurement of the round in progress.
    Live,
    /// Switchover decided: collecting pause requests.
    Switching,
    /// `PauseGuest` given; waiting for `handle_guest_paused`.
    Pausing,
    /// The guest is paused: collecting completions and verdicts.
    Final,
    Done,
    Failed,
}

/// Per stream: what it reported in the current phase.
#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    /// Its measurement of the live round in progress, and whether LZ4 was on.
    measured: Option<(StreamRound, bool)>,
    pause_wanted: bool,
    digest: Option<u128>,
    verified: bool,
}

/// The multi-stream coordinator; see the [module docs](self).
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
#[derive(Debug)]
pub struct Coordinator {
    scheduler: Scheduler,
    streams: Vec<Stream>,
    phase: Phase,
    events: VecDeque<CoordinatorEvent>,
    throttle_percent: u8,
    /// Wire bytes and pages of the live rounds, all streams.
    live_wire_bytes: u64,
    live_pages: u64,
    /// The final round, summed over the streams that completed.
    fin: FinalRound,
    completed: usize,
    verified: usize,
    paused_at_ns: u64,
}

impl Coordinator {
    /// A coordinator for `config.streams` streams; the bulk round starts at `now_ns`.
    pub fn new(config: CoordinatorConfig, now_ns: u64) -> Result<Self, CoordinatorError> {
        let n = config.streams;
        if n == 0 || n > usize::from(crate::layout::MAX_STREAMS) {
            return Err(CoordinatorError::StreamCount { streams: n });
        }
        let scheduler =
            Scheduler::new(config.policy, config.total_pages, config.page_size, now_ns)?;
        Ok(Coordinator {
            scheduler,
            streams: vec![Stream::default(); n],
            phase: Phase::Live,
            events: VecDeque::with_capacity(4),
            throttle_percent: 0,
            live_wire_bytes: 0,
            live_pages: 0,
            fin: FinalRound {
                round: 0,
                pages_sent: 0,
                wire_bytes: 0,
                codecs: CodecStats::default(),
                predicted_downtime_ns: 0,
                digest_pages_read: 0,
                digest_pages_folded: 0,
            },
            completed: 0,
            verified: 0,
            paused_at_ns: 0,
        })
    }

    /// Streams coordinated.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// The one scheduler (policy, live rounds so far, last prediction).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Predicted against real downtime, once the destination confirmed: the
    /// scheduler's prediction at the switchover beside `real_downtime_ns` (measured by
    /// the caller, from the pause to the destination's go).
    pub fn downtime_report(&self, real_downtime_ns: u64) -> DowntimeReport {
        self.scheduler.finish(real_downtime_ns)
    }

    /// The live round in progress or last ended, counted from 1 (the bulk round).
    pub fn round(&self) -> u32 {
        match self.phase {
            Phase::Live => self.scheduler.rounds() + 1,
            _ => self.scheduler.rounds(),
        }
    }

    /// Each stream's digest, in stream order, once every stream completed.
    pub fn digests(&self) -> Option<Vec<u128>> {
        self.streams.iter().map(|s| s.digest).collect()
    }

    /// Whether the migration ended (done or failed).
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
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
        let s = self.stream(stream)?;
        if self.phase != Phase::Live {
            return Err(CoordinatorError::OutOfOrder {
                stream,
                what: "a live round ended after the switchover was decided",
            });
        }
        if s.measured.is_some() {
            return Err(CoordinatorError::Twice {
                stream,
                what: "the end of a live round",
            });
        }
        let expected = self.scheduler.rounds() + 1;
        let got = round.round;
        if got != expected {
            return Err(CoordinatorError::WrongRound {
                stream,
                expected,
                got,
            });
        }
        self.streams[stream].measured = Some((round, lz4));
        if self.streams.iter().all(|s| s.measured.is_some()) {
            self.end_round(now_ns);
        }
        Ok(())
    }

    /// The barrier: every stream measured the round.
    fn end_round(&mut self, now_ns: u64) {
        let mut m = RoundMeasurement {
            now_ns,
            pages_sent: 0,
            wire_bytes: 0,
            dirty_pages: 0,
        };
        let (mut codecs, mut deferred_pages, mut lz4_streams) = (CodecStats::default(), 0, 0u8);
        for (r, lz4) in self.streams.iter_mut().filter_map(|s| s.measured.take()) {
            m.pages_sent += r.pages_sent;
            m.wire_bytes += r.wire_bytes;
            m.dirty_pages += r.dirty_pages;
            codecs.add(&r.codecs);
            deferred_pages += r.deferred_pages;
            lz4_streams = lz4_streams.saturating_add(u8::from(lz4));
        }
        self.live_pages += m.pages_sent;
        self.live_wire_bytes += m.wire_bytes;
        let outcome = self.scheduler.round_done(m);
        self.events
            .push_back(CoordinatorEvent::RoundDone(StreamsRound {
                outcome,
                codecs,
                deferred_pages,
                lz4_streams,
            }));
        let decision = outcome.decision;
        match decision {
            Decision::Continue { throttle_percent } => {
                if throttle_percent != self.throttle_percent {
                    self.throttle_percent = throttle_percent;
                    self.events
                        .push_back(CoordinatorEvent::Throttle(throttle_percent));
                }
                self.events.push_back(CoordinatorEvent::Decide(decision));
            }
            Decision::SwitchOver {
                predicted_downtime_ns,
                ..
            } => {
                self.fin.predicted_downtime_ns = predicted_downtime_ns;
                self.phase = Phase::Switching;
                self.events.push_back(CoordinatorEvent::Decide(decision));
            }
            Decision::Fail(e) => {
                self.events.push_back(CoordinatorEvent::Decide(decision));
                self.fail(CoordinatorError::Schedule(e));
            }
        }
    }

    /// Stream `stream`'s engine asks for the pause
    /// ([`SourceEvent::PauseGuest`](super::SourceEvent::PauseGuest)). When every
    /// stream has, [`CoordinatorEvent::PauseGuest`] follows, once.
    pub fn handle_pause_wanted(&mut self, stream: usize) -> Result<(), CoordinatorError> {
        let s = self.stream(stream)?;
        if self.phase != Phase::Switching {
            return Err(CoordinatorError::OutOfOrder {
                stream,
                what: "asked for the pause before the switchover was decided",
            });
        }
        if s.pause_wanted {
            return Err(CoordinatorError::Twice {
                stream,
                what: "the pause request",
            });
        }
        self.streams[stream].pause_wanted = true;
        if self.streams.iter().all(|s| s.pause_wanted) {
            self.phase = Phase::Pausing;
            self.events.push_back(CoordinatorEvent::PauseGuest {
                predicted_downtime_ns: self.fin.predicted_downtime_ns,
            });
        }
        Ok(())
    }

    /// The caller paused the guest (after [`CoordinatorEvent::PauseGuest`]), at
    /// `now_ns`: [`CoordinatorEvent::GuestPaused`] follows.
    pub fn handle_guest_paused(&mut self, now_ns: u64) -> Result<(), CoordinatorError> {
        if self.is_ended() {
            return Err(CoordinatorError::Ended);
        }
        if self.phase != Phase::Pausing {
            return Err(CoordinatorError::OutOfOrder {
                stream: 0,
                what: "the guest was paused before every stream asked for it",
            });
        }
        self.phase = Phase::Final;
        self.paused_at_ns = now_ns;
        self.events.push_back(CoordinatorEvent::GuestPaused);
        Ok(())
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
        let s = self.stream(stream)?;
        if self.phase != Phase::Final {
            return Err(CoordinatorError::OutOfOrder {
                stream,
                what: "completed before the guest was paused",
            });
        }
        if s.digest.is_some() {
            return Err(CoordinatorError::Twice {
                stream,
                what: "its completion",
            });
        }
        let expected = self.scheduler.rounds() + 1;
        if round.round != expected {
            return Err(CoordinatorError::WrongRound {
                stream,
                expected,
                got: round.round,
            });
        }
        self.streams[stream].digest = Some(digest);
        self.fin.round = expected;
        self.fin.pages_sent += round.pages_sent;
        self.fin.wire_bytes += round.wire_bytes;
        self.fin.codecs.add(&round.codecs);
        self.fin.digest_pages_read += round.digest_pages_read;
        self.fin.digest_pages_folded += round.digest_pages_folded;
        self.completed += 1;
        if self.completed == self.streams.len() {
            self.events
                .push_back(CoordinatorEvent::FinalRound(self.fin));
            self.finish_if_verified();
        }
        Ok(())
    }

    /// Destination stream `stream` verified its pages (`ok`) or did not. Every stream
    /// verified: [`CoordinatorEvent::Done`]; one did not:
    /// [`CoordinatorEvent::Failed`] with [`CoordinatorError::Refused`].
    pub fn handle_verdict(&mut self, stream: usize, ok: bool) -> Result<(), CoordinatorError> {
        let s = self.stream(stream)?;
        if s.digest.is_none() {
            return Err(CoordinatorError::OutOfOrder {
                stream,
                what: "a verdict before the stream completed",
            });
        }
        if s.verified {
            return Err(CoordinatorError::Twice {
                stream,
                what: "its verdict",
            });
        }
        if !ok {
            self.fail(CoordinatorError::Refused { stream });
            return Ok(());
        }
        self.streams[stream].verified = true;
        self.verified += 1;
        self.finish_if_verified();
        Ok(())
    }

    /// Stream `stream` failed (its engine, its transport; the caller keeps the
    /// cause): [`CoordinatorEvent::Failed`] follows. Failures after the first are
    /// echoes and are ignored.
    pub fn handle_failure(&mut self, stream: usize) -> Result<(), CoordinatorError> {
        self.stream_index(stream)?;
        match self.phase {
            Phase::Failed => Ok(()),
            Phase::Done => Err(CoordinatorError::Ended),
            _ => {
                self.fail(CoordinatorError::StreamFailed { stream });
                Ok(())
            }
        }
    }

    fn finish_if_verified(&mut self) {
        if self.completed < self.streams.len() || self.verified < self.streams.len() {
            return;
        }
        self.phase = Phase::Done;
        let live_rounds = self.scheduler.rounds();
        self.events
            .push_back(CoordinatorEvent::Done(CoordinatorReport {
                live_rounds,
                rounds: live_rounds + 1,
                predicted_downtime_ns: self.fin.predicted_downtime_ns,
                paused_at_ns: self.paused_at_ns,
                wire_bytes: self.live_wire_bytes + self.fin.wire_bytes,
                pages_sent: self.live_pages + self.fin.pages_sent,
                digests: self.streams.iter().map(|s| s.digest.unwrap_or(0)).collect(),
            }));
    }

    fn fail(&mut self, error: CoordinatorError) {
        self.phase = Phase::Failed;
        self.events.push_back(CoordinatorEvent::Failed(error));
    }

    fn stream_index(&self, stream: usize) -> Result<usize, CoordinatorError> {
        if stream >= self.streams.len() {
            return Err(CoordinatorError::StreamOutOfRange {
                stream,
                streams: self.streams.len(),
            });
        }
        Ok(stream)
    }

    /// Stream `stream`'s state, for a call that needs the migration running.
    fn stream(&self, stream: usize) -> Result<Stream, CoordinatorError> {
        let i = self.stream_index(stream)?;
        if self.is_ended() {
            return Err(CoordinatorError::Ended);
        }
        Ok(self.streams[i])
    }
}

#[cfg(test)]
mod tests;
