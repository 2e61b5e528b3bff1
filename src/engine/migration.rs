//! A single-stream migration: one [`SourceEngine`] and a 1-stream [`Coordinator`],
//! the decisions routed between them inside, so a caller sees one sans-IO object with
//! the engine's shape (`poll_transmit` for bytes, `poll_event` for what to do).

use alloc::collections::VecDeque;
use core::ops::Deref;
use core::sync::atomic::AtomicU64;

use super::{
    Coordinator, CoordinatorConfig, CoordinatorError, CoordinatorEvent, CoordinatorReport,
    EngineError, FinalRound, SourceConfig, SourceEngine, SourceEvent, StreamsRound,
};
use crate::bitmap::AtomicDirtyBitmap;
use crate::layout::Shard;
use crate::memory::PageMemory;
use crate::schedule::{DowntimeReport, Policy};

/// What the caller of a [`Migration`] must do or may show, from
/// [`Migration::poll_event`], in order.
#[derive(Clone, Debug, PartialEq)]
pub enum MigrationEvent {
    /// A live round ended and was decided (the next one is under way, or the pause
    /// follows): the scheduler's view, for the per-round table.
    RoundDone(StreamsRound),
    /// Throttle the vCPUs by this percent of their time (0: stop throttling). Given
    /// when the advice changes.
    Throttle(u8),
    /// With [`SourceConfig::sync_before_harvest`]: bring outside dirty sources into
    /// the bitmap, then call [`Migration::dirty_log_synced`] (see
    /// [`SourceEvent::SyncDirtyLog`] for the order).
    SyncDirtyLog {
        /// The harvest after the pause; else the end of a live round.
        paused: bool,
    },
    /// With [`SourceConfig::device_state`]: the guest is paused and the final round's
    /// pages are out; call [`Migration::send_device_state`] with its device state.
    DeviceState,
    /// Pause the guest, then call [`Migration::guest_paused`].
    PauseGuest {
        /// The downtime the scheduler expects, ns.
        predicted_downtime_ns: u64,
    },
    /// The completion frame is in the bytes polled: once the destination verified
    /// them, call [`Migration::handle_verdict`]. The poll that produced this made the
    /// digest and nothing else (time it to see the verification inside the downtime).
    Complete {
        /// Digest of the source's memory (the destination must match it).
        digest: u128,
        /// The final round, with the scheduler's prediction.
        round: FinalRound,
    },
    /// The destination verified the stream: the migration is done.
    Done(CoordinatorReport),
}

/// A single-stream pre-copy migration, source side, sans-IO: a [`SourceEngine`] over
/// every page ([`Shard::WHOLE`]) and the 1-stream [`Coordinator`] whose scheduler
/// decides after each live round. Decisions are routed inside; the caller sends the
/// bytes, pauses the guest and reports the destination's verdict.
///
/// ```
/// use precopy::bitmap::AtomicDirtyBitmap;
/// use precopy::engine::{Applier, Migration, MigrationEvent, SourceConfig};
/// use precopy::layout::GuestLayout;
/// use precopy::memory::VecMemory;
/// use precopy::schedule::Policy;
///
/// let layout = GuestLayout::flat(4096, 64 * 4096).unwrap();
/// let bitmap = AtomicDirtyBitmap::new(layout);
/// let memory = VecMemory::new(4096, 64);
/// let mut migration =
///     Migration::new(&bitmap, SourceConfig::new(4096), Policy::default(), 0).unwrap();
/// let mut dest = Applier::with_memory(VecMemory::new(4096, 64));
/// let mut buf = vec![0u8; migration.min_buffer_len()];
/// let (mut now, mut report) = (0, None);
/// while report.is_none() {
///     now += 1_000_000;
///     let n = migration.poll_transmit(&memory, now, &mut buf).unwrap();
///     dest.feed(&buf[..n]).unwrap();
///     while let Some(event) = migration.poll_event() {
///         match event {
///             MigrationEvent::PauseGuest { .. } => migration.guest_paused(now).unwrap(),
///             MigrationEvent::Complete { .. } => {
///                 dest.finish().unwrap();
///                 migration.handle_verdict(true).unwrap();
///             }
///             MigrationEvent::Done(r) => report = Some(r),
///             _ => {}
///         }
///     }
/// }
/// assert_eq!(report.unwrap().live_rounds, 1); // the bulk round, then the final one
/// ```
#[derive(Debug)]
pub struct Migration<'b, W: Deref<Target = [AtomicU64]>> {
    engine: SourceEngine<'b, W>,
    coordinator: Coordinator,
    events: VecDeque<MigrationEvent>,
    digest: Option<u128>,
}

/// A coordinator's refusal of what its own engine reported: a bug, not input.
fn misuse(e: CoordinatorError) -> EngineError {
    match e {
        CoordinatorError::Schedule(e) => EngineError::Schedule(e),
        _ => EngineError::OutOfOrder {
            what: "the migration's coordinator refused its engine's report",
        },
    }
}

impl<'b, W: Deref<Target = [AtomicU64]>> Migration<'b, W> {
    /// Starts a migration of the memory tracked by `bitmap` at `now_ns`, deciding by
    /// `policy`. `config.stream` must be [`Shard::WHOLE`] (a migration over several
    /// streams runs a [`Coordinator`] over several engines).
    pub fn new(
        bitmap: &'b AtomicDirtyBitmap<W>,
        config: SourceConfig,
        policy: Policy,
        now_ns: u64,
    ) -> Result<Self, EngineError> {
        if config.stream != Shard::WHOLE {
            return Err(EngineError::InvalidConfig {
                what: "a single-stream migration sends every page: its stream must be \
                       Shard::WHOLE",
            });
        }
        let layout = bitmap.layout();
        let coordinator = Coordinator::new(
            CoordinatorConfig {
                policy,
                total_pages: layout.total_pages(),
                page_size: layout.page_size(),
                streams: 1,
            },
            now_ns,
        )
        .map_err(misuse)?;
        Ok(Migration {
            engine: SourceEngine::new(bitmap, config, now_ns)?,
            coordinator,
            events: VecDeque::with_capacity(4),
            digest: None,
        })
    }

    /// The engine (codec statistics, round progress, kept hashes).
    pub fn engine(&self) -> &SourceEngine<'b, W> {
        &self.engine
    }

    /// The coordinator (its scheduler: policy, rounds so far, last prediction).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The smallest buffer [`poll_transmit`](Self::poll_transmit) accepts.
    pub fn min_buffer_len(&self) -> usize {
        self.engine.min_buffer_len()
    }

    /// Turns LZ4 on or off from the next page on.
    pub fn set_lz4(&mut self, enabled: bool) {
        self.engine.set_lz4(enabled);
    }

    /// Whether the completion frame has been produced.
    pub fn is_complete(&self) -> bool {
        self.engine.is_complete()
    }

    /// Fills `out` with stream bytes and returns how many (see
    /// [`SourceEngine::poll_transmit`]); check [`poll_event`](Self::poll_event) after
    /// every call. A scheduler that gives up is an [`EngineError::Schedule`] (pages
    /// harvested but not sent are back in the bitmap).
    pub fn poll_transmit<M: PageMemory + ?Sized>(
        &mut self,
        memory: &M,
        now_ns: u64,
        out: &mut [u8],
    ) -> Result<usize, EngineError> {
        let n = self.engine.poll_transmit(memory, now_ns, out)?;
        self.route(now_ns)?;
        Ok(n)
    }

    /// What to do next, in order; `None` until more happens.
    pub fn poll_event(&mut self) -> Option<MigrationEvent> {
        self.events.pop_front()
    }

    /// The guest is paused (after [`MigrationEvent::PauseGuest`]), at `now_ns`.
    pub fn guest_paused(&mut self, now_ns: u64) -> Result<(), EngineError> {
        self.coordinator
            .handle_guest_paused(now_ns)
            .map_err(|_| EngineError::OutOfOrder {
                what: "guest_paused called before the migration asked for a pause",
            })?;
        self.route(now_ns)
    }

    /// The paused guest's device state (after [`MigrationEvent::DeviceState`]): its
    /// frames into `out` (see [`SourceEngine::send_device_state`]); returns the bytes
    /// written, to send before the next poll's.
    pub fn send_device_state(
        &mut self,
        items: &[crate::wire::DeviceState<'_>],
        out: &mut [u8],
    ) -> Result<usize, EngineError> {
        self.engine.send_device_state(items, out)
    }

    /// Outside dirty sources are in the bitmap (after
    /// [`MigrationEvent::SyncDirtyLog`]), at `now_ns`: the harvest happens here.
    pub fn dirty_log_synced(&mut self, now_ns: u64) -> Result<(), EngineError> {
        self.engine.dirty_log_synced(now_ns)?;
        self.route(now_ns)
    }

    /// The destination verified the stream (`verified`) or refused it, after
    /// [`MigrationEvent::Complete`]. Verified: [`MigrationEvent::Done`] follows;
    /// refused: [`CoordinatorError::Refused`].
    pub fn handle_verdict(&mut self, verified: bool) -> Result<(), CoordinatorError> {
        self.coordinator.handle_verdict(0, verified)?;
        while let Some(event) = self.coordinator.poll_event() {
            match event {
                CoordinatorEvent::Done(report) => {
                    self.events.push_back(MigrationEvent::Done(report))
                }
                CoordinatorEvent::Failed(e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Predicted against real downtime, once the destination confirmed (see
    /// [`Coordinator::downtime_report`]).
    pub fn downtime_report(&self, real_downtime_ns: u64) -> DowntimeReport {
        self.coordinator.downtime_report(real_downtime_ns)
    }

    /// Abandons the migration (see [`SourceEngine::abort`]): pages harvested but not
    /// sent go back into the bitmap; those in bytes returned but not delivered are
    /// the caller's to put back ([`put_back_undelivered`](super::put_back_undelivered)).
    pub fn abort(self) {
        self.engine.abort();
    }

    /// Carries the engine's events to the coordinator and its decisions back, until
    /// neither has more; what the caller must see is queued.
    fn route(&mut self, now_ns: u64) -> Result<(), EngineError> {
        loop {
            let mut moved = false;
            while let Some(event) = self.engine.poll_event() {
                moved = true;
                let c = &mut self.coordinator;
                match event {
                    SourceEvent::RoundMeasured(round) => {
                        let lz4 = self.engine.lz4_enabled();
                        c.handle_round_measured(0, round, lz4, now_ns)
                            .map_err(misuse)?;
                    }
                    SourceEvent::SyncDirtyLog { paused } => {
                        self.events
                            .push_back(MigrationEvent::SyncDirtyLog { paused });
                    }
                    SourceEvent::DeviceState => self.events.push_back(MigrationEvent::DeviceState),
                    SourceEvent::PauseGuest { .. } => c.handle_pause_wanted(0).map_err(misuse)?,
                    SourceEvent::Complete { digest, round } => {
                        self.digest = Some(digest);
                        c.handle_complete(0, digest, round).map_err(misuse)?;
                    }
                }
            }
            while let Some(event) = self.coordinator.poll_event() {
                moved = true;
                match event {
                    CoordinatorEvent::RoundDone(r) => {
                        self.events.push_back(MigrationEvent::RoundDone(r))
                    }
                    CoordinatorEvent::Throttle(p) => {
                        self.events.push_back(MigrationEvent::Throttle(p))
                    }
                    CoordinatorEvent::Decide(decision) => self.engine.decide(decision)?,
                    CoordinatorEvent::PauseGuest {
                        predicted_downtime_ns,
                    } => self.events.push_back(MigrationEvent::PauseGuest {
                        predicted_downtime_ns,
                    }),
                    CoordinatorEvent::GuestPaused => self.engine.guest_paused(now_ns)?,
                    CoordinatorEvent::FinalRound(round) => {
                        self.events.push_back(MigrationEvent::Complete {
                            digest: self.digest.unwrap_or(0),
                            round,
                        })
                    }
                    CoordinatorEvent::Done(report) => {
                        self.events.push_back(MigrationEvent::Done(report))
                    }
                    CoordinatorEvent::Failed(e) => return Err(misuse(e)),
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }
}
