//! [`CoordinatorCore`]: the coordinator's state machine over caller words, with a fixed
//! queue of events (no allocator).

use super::{CoordinatorConfig, CoordinatorError, StreamsRound};
use crate::codec::CodecStats;
use crate::engine::{FinalRound, StreamRound};
use crate::layout::OwnedWords;
use crate::schedule::{Decision, DowntimeReport, RoundMeasurement, Scheduler};

/// Words of storage per stream: its flags and its digest (two words).
const STREAM_WORDS: usize = 3;
const MEASURED: u64 = 1;
const PAUSE_WANTED: u64 = 2;
const COMPLETED: u64 = 4;
const VERIFIED: u64 = 8;
/// Events the queue holds; a `handle_*` call adds at most [`EVENTS_PER_CALL`].
const EVENT_QUEUE: usize = 8;
const EVENTS_PER_CALL: usize = 4;

/// Words of storage a [`CoordinatorCore`] of `streams` streams needs (three per
/// stream); times 8 for bytes.
pub const fn coordinator_storage_words(streams: usize) -> usize {
    streams.saturating_mul(STREAM_WORDS)
}

/// How a coordinated migration went, with [`CoreEvent::Done`]: the
/// [`CoordinatorReport`](super::CoordinatorReport) without the digests, which
/// [`CoordinatorCore::digest`] gives per stream.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoreReport {
    /// Rounds with the guest running (the bulk round and the iterative rounds).
    pub live_rounds: u32,
    /// All rounds, the final one included: `live_rounds + 1`.
    pub rounds: u32,
    /// The scheduler's prediction of the downtime at switchover, ns.
    pub predicted_downtime_ns: u64,
    /// When the guest was paused, ns (the caller's clock).
    pub paused_at_ns: u64,
    /// Stream bytes of every round, all streams.
    pub wire_bytes: u64,
    /// Pages sent in every round, all streams.
    pub pages_sent: u64,
}

/// What the caller must do, from [`CoordinatorCore::poll_event`]: the events of
/// [`CoordinatorEvent`](super::CoordinatorEvent), with a [`CoreReport`] at the end.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CoreEvent {
    /// Every stream ended a live round (then `Throttle` when the advice changed, and
    /// `Decide`).
    RoundDone(StreamsRound),
    /// Throttle the vCPUs by this percent of their time (0: stop throttling).
    Throttle(u8),
    /// Pass this decision to every stream's engine.
    Decide(Decision),
    /// Pause the guest, then call [`CoordinatorCore::handle_guest_paused`].
    PauseGuest {
        /// The downtime the scheduler expects, ns.
        predicted_downtime_ns: u64,
    },
    /// Call `guest_paused` on every engine.
    GuestPaused,
    /// Every stream completed: the summed final round.
    FinalRound(FinalRound),
    /// Every destination stream verified its pages: the migration is done.
    Done(CoreReport),
    /// The migration failed; the guest keeps running on the source.
    Failed(CoordinatorError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Live,
    Switching,
    Pausing,
    Final,
    Done,
    Failed,
}

/// The multi-stream coordinator over caller storage: the same state machine as
/// [`Coordinator`](super::Coordinator) (which is this over [`OwnedWords`], plus a
/// queue that grows), with per-stream state in `u64` words held by `S` (at least
/// [`coordinator_storage_words`]) and a fixed queue of 8 events. Poll the events
/// after every `handle_*` call: a call made while more than 4 events wait is refused
/// with [`CoordinatorError::OutOfOrder`] and changes nothing.
///
/// ```
/// use precopy::engine::{coordinator_storage_words, CoordinatorConfig, CoordinatorCore};
/// use precopy::schedule::Policy;
///
/// let config = CoordinatorConfig { policy: Policy::default(), total_pages: 1024,
///                                  page_size: 4096, streams: 2 };
/// let mut words = [0u64; coordinator_storage_words(2)];
/// let mut c = CoordinatorCore::over(config, 0, &mut words[..]).unwrap();
/// assert!(c.handle_pause_wanted(5).is_err());
/// assert_eq!(c.poll_event(), None);
/// ```
#[derive(Debug)]
pub struct CoordinatorCore<S = OwnedWords> {
    scheduler: Scheduler,
    words: S,
    streams: usize,
    phase: Phase,
    events: [Option<CoreEvent>; EVENT_QUEUE],
    head: usize,
    queued: usize,
    throttle_percent: u8,
    /// The live round in progress, summed over the streams that measured it.
    round_measurement: RoundMeasurement,
    round_codecs: CodecStats,
    round_deferred: u64,
    round_lz4: u8,
    measured: usize,
    pause_wanted: usize,
    live_wire_bytes: u64,
    live_pages: u64,
    fin: FinalRound,
    completed: usize,
    verified: usize,
    paused_at_ns: u64,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> CoordinatorCore<S> {
    /// A coordinator for `config.streams` streams over `words` (at least
    /// [`coordinator_storage_words`]; cleared here); the bulk round starts at `now_ns`.
    pub fn over(
        config: CoordinatorConfig,
        now_ns: u64,
        mut words: S,
    ) -> Result<Self, CoordinatorError> {
        let n = config.streams;
        if n == 0 || n > usize::from(crate::layout::MAX_STREAMS) {
            return Err(CoordinatorError::StreamCount { streams: n });
        }
        let needed = coordinator_storage_words(n);
        let got = words.as_ref().len();
        if got < needed {
            return Err(CoordinatorError::StorageTooSmall {
                needed_bytes: needed * 8,
                got_bytes: got.saturating_mul(8),
            });
        }
        words.as_mut()[..needed].fill(0);
        let scheduler =
            Scheduler::new(config.policy, config.total_pages, config.page_size, now_ns)?;
        Ok(CoordinatorCore {
            scheduler,
            words,
            streams: n,
            phase: Phase::Live,
            events: [None; EVENT_QUEUE],
            head: 0,
            queued: 0,
            throttle_percent: 0,
            round_codecs: CodecStats::default(),
            round_deferred: 0,
            round_lz4: 0,
            round_measurement: RoundMeasurement {
                now_ns: 0,
                pages_sent: 0,
                wire_bytes: 0,
                dirty_pages: 0,
                pending_pages: 0,
            },
            measured: 0,
            pause_wanted: 0,
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
        self.streams
    }

    /// The one scheduler (policy, live rounds so far, last prediction).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Predicted against real downtime (see
    /// [`Coordinator::downtime_report`](super::Coordinator::downtime_report)).
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

    /// Stream `stream`'s digest once it completed (`None` before, or out of range).
    pub fn digest(&self, stream: usize) -> Option<u128> {
        if stream >= self.streams || self.flags(stream) & COMPLETED == 0 {
            return None;
        }
        let w = self.words.as_ref();
        Some(
            u128::from(w[STREAM_WORDS * stream + 1])
                | u128::from(w[STREAM_WORDS * stream + 2]) << 64,
        )
    }

    /// Whether the migration ended (done or failed).
    pub fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Failed)
    }

    /// Events waiting for [`poll_event`](Self::poll_event).
    pub fn events_waiting(&self) -> usize {
        self.queued
    }

    /// The next thing to do, in order; `None` until more is handled.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        if self.queued == 0 {
            return None;
        }
        let event = self.events[self.head].take();
        self.head = (self.head + 1) % EVENT_QUEUE;
        self.queued -= 1;
        event
    }

    /// See [`Coordinator::handle_round_measured`](super::Coordinator::handle_round_measured).
    pub fn handle_round_measured(
        &mut self,
        stream: usize,
        round: StreamRound,
        lz4: bool,
        now_ns: u64,
    ) -> Result<(), CoordinatorError> {
        let live = self.phase == Phase::Live;
        let flags = self.admit(
            stream,
            |_| live,
            "a live round ended after the switchover was decided",
            MEASURED,
            "the end of a live round",
        )?;
        self.expect_round(stream, round.round)?;
        self.set_flags(stream, flags | MEASURED);
        let m = &mut self.round_measurement;
        m.pages_sent += round.pages_sent;
        m.wire_bytes += round.wire_bytes;
        m.dirty_pages += round.dirty_pages;
        self.round_codecs.add(&round.codecs);
        self.round_deferred += round.deferred_pages;
        self.round_lz4 = self.round_lz4.saturating_add(u8::from(lz4));
        self.measured += 1;
        if self.measured == self.streams {
            self.end_round(now_ns);
        }
        Ok(())
    }

    /// Whether the next [`handle_round_measured`](Self::handle_round_measured) ends
    /// the live round: every other stream has measured it. The moment to count the
    /// pages dirtied since the harvests ([`note_pending_pages`](Self::note_pending_pages)).
    pub fn round_ends_with_next_measurement(&self) -> bool {
        self.phase == Phase::Live && self.measured + 1 == self.streams
    }

    /// Pages dirtied since the streams harvested the round now ending, counted by
    /// the caller (after bringing in dirty logs kept outside the bitmap) just before
    /// the last stream's [`handle_round_measured`](Self::handle_round_measured): the
    /// scheduler predicts the downtime of pausing now with them
    /// ([`RoundMeasurement::pending_pages`]). A caller that does not count them
    /// leaves it at 0; the count is used by the next barrier only.
    pub fn note_pending_pages(&mut self, pages: u64) {
        self.round_measurement.pending_pages = pages;
    }

    /// The barrier: every stream measured the round.
    fn end_round(&mut self, now_ns: u64) {
        for i in 0..self.streams {
            let f = self.flags(i);
            self.set_flags(i, f & !MEASURED);
        }
        self.measured = 0;
        let mut m = self.round_measurement;
        m.now_ns = now_ns;
        self.round_measurement = RoundMeasurement {
            now_ns: 0,
            pages_sent: 0,
            wire_bytes: 0,
            dirty_pages: 0,
            pending_pages: 0,
        };
        self.live_pages += m.pages_sent;
        self.live_wire_bytes += m.wire_bytes;
        let outcome = self.scheduler.round_done(m);
        let summed = StreamsRound {
            outcome,
            codecs: core::mem::take(&mut self.round_codecs),
            deferred_pages: core::mem::take(&mut self.round_deferred),
            lz4_streams: core::mem::take(&mut self.round_lz4),
        };
        self.push(CoreEvent::RoundDone(summed));
        let decision = outcome.decision;
        match decision {
            Decision::Continue { throttle_percent } => {
                if throttle_percent != self.throttle_percent {
                    self.throttle_percent = throttle_percent;
                    self.push(CoreEvent::Throttle(throttle_percent));
                }
                self.push(CoreEvent::Decide(decision));
            }
            Decision::SwitchOver {
                predicted_downtime_ns,
                ..
            } => {
                self.fin.predicted_downtime_ns = predicted_downtime_ns;
                self.phase = Phase::Switching;
                self.push(CoreEvent::Decide(decision));
            }
            Decision::Fail(e) => {
                self.push(CoreEvent::Decide(decision));
                self.fail(CoordinatorError::Schedule(e));
            }
        }
    }

    /// See [`Coordinator::handle_pause_wanted`](super::Coordinator::handle_pause_wanted).
    pub fn handle_pause_wanted(&mut self, stream: usize) -> Result<(), CoordinatorError> {
        let switching = self.phase == Phase::Switching;
        let flags = self.admit(
            stream,
            |_| switching,
            "asked for the pause before the switchover was decided",
            PAUSE_WANTED,
            "the pause request",
        )?;
        self.set_flags(stream, flags | PAUSE_WANTED);
        self.pause_wanted += 1;
        if self.pause_wanted == self.streams {
            self.phase = Phase::Pausing;
            self.push(CoreEvent::PauseGuest {
                predicted_downtime_ns: self.fin.predicted_downtime_ns,
            });
        }
        Ok(())
    }

    /// See [`Coordinator::handle_guest_paused`](super::Coordinator::handle_guest_paused).
    pub fn handle_guest_paused(&mut self, now_ns: u64) -> Result<(), CoordinatorError> {
        if self.is_ended() {
            return Err(CoordinatorError::Ended);
        }
        self.check_room(0)?;
        if self.phase != Phase::Pausing {
            return Err(CoordinatorError::OutOfOrder {
                stream: 0,
                what: "the guest was paused before every stream asked for it",
            });
        }
        self.phase = Phase::Final;
        self.paused_at_ns = now_ns;
        self.push(CoreEvent::GuestPaused);
        Ok(())
    }

    /// See [`Coordinator::handle_complete`](super::Coordinator::handle_complete).
    pub fn handle_complete(
        &mut self,
        stream: usize,
        digest: u128,
        round: FinalRound,
    ) -> Result<(), CoordinatorError> {
        let paused = self.phase == Phase::Final;
        let flags = self.admit(
            stream,
            |_| paused,
            "completed before the guest was paused",
            COMPLETED,
            "its completion",
        )?;
        self.expect_round(stream, round.round)?;
        self.set_flags(stream, flags | COMPLETED);
        let w = self.words.as_mut();
        w[STREAM_WORDS * stream + 1] = digest as u64;
        w[STREAM_WORDS * stream + 2] = (digest >> 64) as u64;
        self.fin.round = round.round;
        self.fin.pages_sent += round.pages_sent;
        self.fin.wire_bytes += round.wire_bytes;
        self.fin.codecs.add(&round.codecs);
        self.fin.digest_pages_read += round.digest_pages_read;
        self.fin.digest_pages_folded += round.digest_pages_folded;
        self.completed += 1;
        if self.completed == self.streams {
            self.push(CoreEvent::FinalRound(self.fin));
            self.finish_if_verified();
        }
        Ok(())
    }

    /// See [`Coordinator::handle_verdict`](super::Coordinator::handle_verdict).
    pub fn handle_verdict(&mut self, stream: usize, ok: bool) -> Result<(), CoordinatorError> {
        let flags = self.admit(
            stream,
            |flags| flags & COMPLETED != 0,
            "a verdict before the stream completed",
            VERIFIED,
            "its verdict",
        )?;
        if !ok {
            self.fail(CoordinatorError::Refused { stream });
            return Ok(());
        }
        self.set_flags(stream, flags | VERIFIED);
        self.verified += 1;
        self.finish_if_verified();
        Ok(())
    }

    /// See [`Coordinator::handle_failure`](super::Coordinator::handle_failure).
    pub fn handle_failure(&mut self, stream: usize) -> Result<(), CoordinatorError> {
        self.stream_index(stream)?;
        match self.phase {
            Phase::Failed => Ok(()),
            Phase::Done => Err(CoordinatorError::Ended),
            _ => {
                self.check_room(stream)?;
                self.fail(CoordinatorError::StreamFailed { stream });
                Ok(())
            }
        }
    }

    fn finish_if_verified(&mut self) {
        if self.completed < self.streams || self.verified < self.streams {
            return;
        }
        self.phase = Phase::Done;
        let live_rounds = self.scheduler.rounds();
        self.push(CoreEvent::Done(CoreReport {
            live_rounds,
            rounds: live_rounds + 1,
            predicted_downtime_ns: self.fin.predicted_downtime_ns,
            paused_at_ns: self.paused_at_ns,
            wire_bytes: self.live_wire_bytes + self.fin.wire_bytes,
            pages_sent: self.live_pages + self.fin.pages_sent,
        }));
    }

    fn fail(&mut self, error: CoordinatorError) {
        self.phase = Phase::Failed;
        self.push(CoreEvent::Failed(error));
    }

    /// Queues `event`; the room was checked at the start of the call.
    fn push(&mut self, event: CoreEvent) {
        debug_assert!(self.queued < EVENT_QUEUE);
        let at = (self.head + self.queued) % EVENT_QUEUE;
        self.events[at] = Some(event);
        self.queued = (self.queued + 1).min(EVENT_QUEUE);
    }

    fn check_room(&self, stream: usize) -> Result<(), CoordinatorError> {
        if self.queued > EVENT_QUEUE - EVENTS_PER_CALL {
            return Err(CoordinatorError::OutOfOrder {
                stream,
                what: "events are waiting: poll_event until it gives none, then call again",
            });
        }
        Ok(())
    }

    /// Stream `stream`'s flags, for a call that is in order only when `in_order(flags)`
    /// holds (else [`CoordinatorError::OutOfOrder`] saying `out_of_order`) and may come
    /// once, recorded by flag `once` (else [`CoordinatorError::Twice`] naming `what`).
    fn admit(
        &self,
        stream: usize,
        in_order: impl FnOnce(u64) -> bool,
        out_of_order: &'static str,
        once: u64,
        what: &'static str,
    ) -> Result<u64, CoordinatorError> {
        let flags = self.stream(stream)?;
        if !in_order(flags) {
            return Err(CoordinatorError::OutOfOrder {
                stream,
                what: out_of_order,
            });
        }
        if flags & once != 0 {
            return Err(CoordinatorError::Twice { stream, what });
        }
        Ok(flags)
    }

    /// Whether `got` is the round the scheduler is in (its rounds so far plus one).
    fn expect_round(&self, stream: usize, got: u32) -> Result<(), CoordinatorError> {
        let expected = self.scheduler.rounds() + 1;
        if got != expected {
            return Err(CoordinatorError::WrongRound {
                stream,
                expected,
                got,
            });
        }
        Ok(())
    }

    fn flags(&self, stream: usize) -> u64 {
        self.words.as_ref()[STREAM_WORDS * stream]
    }

    fn set_flags(&mut self, stream: usize, flags: u64) {
        self.words.as_mut()[STREAM_WORDS * stream] = flags;
    }

    fn stream_index(&self, stream: usize) -> Result<usize, CoordinatorError> {
        if stream >= self.streams {
            return Err(CoordinatorError::StreamOutOfRange {
                stream,
                streams: self.streams,
            });
        }
        Ok(stream)
    }

    /// Stream `stream`'s flags, for a call that needs the migration running and room
    /// in the queue.
    fn stream(&self, stream: usize) -> Result<u64, CoordinatorError> {
        let i = self.stream_index(stream)?;
        if self.is_ended() {
            return Err(CoordinatorError::Ended);
        }
        self.check_room(stream)?;
        Ok(self.flags(i))
    }
}
