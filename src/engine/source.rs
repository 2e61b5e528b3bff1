//! The source engine: dirty set and guest memory in, stream bytes out.

use core::ops::Deref;
use core::sync::atomic::AtomicU64;

use super::EngineError;
use crate::bitmap::{AtomicDirtyBitmap, DirtySet};
use crate::codec::{CodecStats, NoClock, PageEncoder};
use crate::layout::{words_as_bytes_mut, OwnedWords};
use crate::layout::{Shard, SHARD_CHUNK_PAGES};
use crate::memory::MemoryDigest;
use crate::memory::PageMemory;
use crate::schedule::Decision;
use crate::wire::header::header_len;
use crate::wire::{max_frame_len, DeviceState, Features, Frame, PageFramer, StreamHeader};

mod storage;
mod types;

pub use storage::source_storage_words;
pub use types::{
    FinalRound, SourceConfig, SourceEvent, StreamRound, Verify, DEFAULT_MAX_PAGES_PER_POLL,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Header,
    /// Sending round `round` (1: the bulk round); `fin` for the final round with the
    /// guest paused.
    Round {
        round: u32,
        fin: bool,
    },
    /// Round `round` ended (or, `fin`, the guest was paused before final round
    /// `round`): the harvest waits for [`SourceEngine::dirty_log_synced`].
    AwaitSync {
        round: u32,
        fin: bool,
    },
    /// Live round `round` ended; the caller decides what follows.
    AwaitDecision {
        round: u32,
    },
    /// The switchover was decided after live round `round`.
    AwaitPause {
        round: u32,
    },
    /// The final round `round` is out; the caller's device state is awaited.
    AwaitDeviceState {
        round: u32,
    },
    /// The final round `round` is out; the next poll makes the digest.
    Digest {
        round: u32,
    },
    Done,
    Failed,
}

/// Pre-copy migration of one stream, source side. Sans-IO, quinn-proto style: the
/// caller passes the time and a buffer to [`poll_transmit`](Self::poll_transmit)
/// (bytes only), sends the bytes on any transport, and takes what happened from
/// [`poll_event`](Self::poll_event) (each event asks for a call back:
/// [`decide`](Self::decide), [`guest_paused`](Self::guest_paused),
/// [`dirty_log_synced`](Self::dirty_log_synced)).
///
/// The engine has no scheduler: at the end of each live round it reports
/// [`SourceEvent::RoundMeasured`] and waits for the decision of the migration's one
/// scheduler, the [`Coordinator`](super::Coordinator)'s. A single-stream migration is
/// a 1-stream coordinator: [`Migration`](super::Migration) pairs the two.
///
/// The bulk round (round 1) sends every page (zero pages as runs, at almost no cost;
/// runs a memory knows are zero, see [`PageMemory::known_zero_pages`], without reading
/// them); each later round sends the pages harvested dirty at the end of the previous
/// one, read through [`PageMemory`] into a private buffer after the harvest (the
/// bitmap's ordering contract). After switchover the guest is paused, the last dirty
/// pages and a digest are sent.
///
/// **Storage.** The engine keeps its state (the round's dirty set, the kept hashes,
/// its page buffers and the delta cache) in `u64` words held by `S`:
/// [`new`](SourceEngine::new) allocates them ([`OwnedWords`], feature `alloc`),
/// [`over`](SourceEngine::over) carves them out of caller words, sized by
/// [`source_storage_words`] (no allocator: a C host, a kernel module). Both run the
/// same code.
#[derive(Debug)]
pub struct SourceEngine<'b, W: Deref<Target = [AtomicU64]>, S = OwnedWords> {
    bitmap: &'b AtomicDirtyBitmap<W>,
    config: SourceConfig,
    encoder: PageEncoder<NoClock, S>,
    phase: Phase,
    /// The event not yet taken by [`poll_event`](Self::poll_event). The engine
    /// produces nothing more after an event until the caller answers it, so one
    /// slot is enough.
    event: Option<SourceEvent>,
    /// Pages of the current iterative or final round (unused in the bulk round).
    set: DirtySet<S>,
    /// Next page to consider in the current round.
    cursor: u64,
    /// A run of zero pages not yet emitted: (first, count).
    /// Frames the pages, merging neighbouring zero pages into runs.
    framer: PageFramer,
    /// One page (the private copy encoded), as words.
    page_buf: S,
    /// At least LZ4's worst case for a page, as words.
    payload_buf: S,
    round_pages: u64,
    round_planned: u64,
    round_wire_bytes: u64,
    round_deferred: u64,
    round_codecs_start: CodecStats,
    /// The switchover and final round-begin frames are still to be emitted.
    announce_final: bool,
    /// The current round's begin frame is still to be emitted (after `decide`).
    announce_round: bool,
    /// The prediction of the switchover decision.
    predicted_downtime_ns: u64,
    /// XXH3-64 of a zero page.
    zero_hash: u64,
    /// Per page of the stream (by [`Shard::local_index`]): XXH3-64 of the version
    /// last sent.
    sent_hashes: S,
}

/// The stream's round frames count from 0: round `round` (1: the bulk round) is
/// frame round `round - 1`.
fn wire_round(round: u32) -> u32 {
    round.saturating_sub(1)
}

impl<'b, W: Deref<Target = [AtomicU64]>, S: AsRef<[u64]> + AsMut<[u64]>> SourceEngine<'b, W, S> {
    /// The configuration the engine runs with.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// Per page of this engine's stream, in page order (index with
    /// [`Shard::local_index`]): the XXH3-64 ([`crate::codec::base_hash`]) of the
    /// version last sent, as the engine read it into its private copy and encoded it
    /// (zero pages included). Once [complete](Self::is_complete) the destination holds
    /// exactly these pages, so the source's memory, still paused, should hash the same
    /// page for page: a page that does not was written without being marked dirty (a
    /// lost write). With [`Verify::AfterResume`] the completion digest is the fold of
    /// these.
    pub fn sent_hashes(&self) -> &[u64] {
        self.sent_hashes.as_ref()
    }

    /// The smallest buffer [`poll_transmit`](Self::poll_transmit) accepts.
    pub fn min_buffer_len(&self) -> usize {
        header_len(self.bitmap.layout().regions().len()) + 2 * max_frame_len(self.page_size())
    }

    /// Turns LZ4 on or off from the next page on (see
    /// [`PageEncoder::set_lz4`](crate::codec::PageEncoder::set_lz4)): the runtime
    /// compresses when the link is the bottleneck and not when the encoder is.
    pub fn set_lz4(&mut self, enabled: bool) {
        self.encoder.set_lz4(enabled);
    }

    /// Whether LZ4 is on.
    pub fn lz4_enabled(&self) -> bool {
        self.encoder.lz4_enabled()
    }

    /// Codec statistics over the whole migration so far.
    pub fn codec_stats(&self) -> &CodecStats {
        self.encoder.stats()
    }

    /// Progress of the round being sent: `(pages sent, pages planned)` (the bulk round
    /// plans every page; a page deferred to the next round counts as neither).
    pub fn round_progress(&self) -> (u64, u64) {
        (self.round_pages, self.round_planned)
    }

    /// Whether the completion frame has been produced.
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Done
    }

    fn page_size(&self) -> usize {
        self.bitmap.layout().page_size() as usize
    }

    /// Fills `out` with stream bytes (whole frames only) and returns how many;
    /// what happened is taken from [`poll_event`](Self::poll_event), which the caller
    /// checks after every call. A poll returns when the buffer is full, after
    /// [`SourceConfig::max_pages_per_poll`] pages, or when an event needs an answer
    /// (then 0 bytes until it is answered; 0 bytes alone do not mean that: a poll
    /// over zero or deferred pages produces none). Guest memory is only read. An
    /// [`EngineError`] ends the migration: the source keeps running, and pages
    /// harvested but not sent go back into the bitmap.
    pub fn poll_transmit<M: PageMemory + ?Sized>(
        &mut self,
        memory: &M,
        now_ns: u64,
        out: &mut [u8],
    ) -> Result<usize, EngineError> {
        let needed = self.min_buffer_len();
        if out.len() < needed {
            return Err(EngineError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        }
        // Times come from the coordinator; the engine measures nothing itself.
        let _ = now_ns;
        let result = self.fill(memory, out);
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// What happened since the last call, if anything (at most one event is pending:
    /// the engine waits for the answer to each).
    pub fn poll_event(&mut self) -> Option<SourceEvent> {
        self.event.take()
    }

    /// Tells the engine the guest is paused (after [`SourceEvent::PauseGuest`]), at
    /// `now_ns`: the final harvest happens here, or, with
    /// [`SourceConfig::sync_before_harvest`], after the
    /// [`SourceEvent::SyncDirtyLog`] this queues is answered.
    pub fn guest_paused(&mut self, now_ns: u64) -> Result<(), EngineError> {
        let Phase::AwaitPause { round } = self.phase else {
            return Err(EngineError::OutOfOrder {
                what: "guest_paused called before the engine asked for a pause",
            });
        };
        // The final round's duration is measured by the caller, who paused the guest.
        let _ = now_ns;
        if self.config.sync_before_harvest {
            self.phase = Phase::AwaitSync {
                round: round + 1,
                fin: true,
            };
            self.event = Some(SourceEvent::SyncDirtyLog { paused: true });
            return Ok(());
        }
        self.final_harvest(round + 1)
    }

    /// After [`SourceEvent::SyncDirtyLog`]: the caller brought every outside dirty
    /// source into the bitmap (see the event for the order), at `now_ns`. The harvest
    /// happens here: after a live round [`SourceEvent::RoundMeasured`] follows, after
    /// the pause the final round starts. Called at any other time it is an
    /// [`EngineError::OutOfOrder`] and changes nothing.
    pub fn dirty_log_synced(&mut self, now_ns: u64) -> Result<(), EngineError> {
        let _ = now_ns;
        let Phase::AwaitSync { round, fin } = self.phase else {
            return Err(EngineError::OutOfOrder {
                what: "dirty_log_synced called while no harvest awaits a sync",
            });
        };
        let result = if fin {
            self.final_harvest(round)
        } else {
            self.harvest_and_measure(round)
        };
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// After [`SourceEvent::RoundMeasured`]: what follows the round, decided by the
    /// coordinator's scheduler over all streams. `Continue` starts the next live
    /// round, `SwitchOver` queues [`SourceEvent::PauseGuest`], `Fail` ends the
    /// migration (pages harvested but not sent go back into the bitmap) and returns
    /// the error.
    pub fn decide(&mut self, decision: Decision) -> Result<(), EngineError> {
        let Phase::AwaitDecision { round } = self.phase else {
            return Err(EngineError::OutOfOrder {
                what: "decide called while no round awaits a decision",
            });
        };
        match decision {
            Decision::Continue { .. } => {
                self.start_round(round + 1, false);
                self.announce_round = true;
            }
            Decision::SwitchOver {
                predicted_downtime_ns,
                ..
            } => {
                self.predicted_downtime_ns = predicted_downtime_ns;
                self.phase = Phase::AwaitPause { round };
                self.event = Some(SourceEvent::PauseGuest {
                    predicted_downtime_ns,
                });
            }
            Decision::Fail(e) => {
                self.fail();
                return Err(EngineError::Schedule(e));
            }
        }
        Ok(())
    }

    /// After [`SourceEvent::DeviceState`]: writes one device-state frame per item of
    /// `items` (the paused guest's state, read by the caller; none is allowed) into
    /// `out`, and returns the bytes written, which the caller sends after every byte
    /// polled so far and before the next poll's (that poll makes the digest and the
    /// completion frame). `out` needs the sum of the items'
    /// [`frame_len`](DeviceState::frame_len); an item longer than a page is an
    /// [`EngineError::Emit`] (split it into several items). Nothing is kept: the
    /// caller's bytes are framed at once, with no allocation. On error nothing was
    /// written and the engine still waits.
    pub fn send_device_state(
        &mut self,
        items: &[DeviceState<'_>],
        out: &mut [u8],
    ) -> Result<usize, EngineError> {
        let Phase::AwaitDeviceState { round } = self.phase else {
            return Err(EngineError::OutOfOrder {
                what: "send_device_state called before the engine asked for device state",
            });
        };
        let needed: usize = items.iter().map(DeviceState::frame_len).sum();
        if out.len() < needed {
            return Err(EngineError::BufferTooSmall {
                needed,
                got: out.len(),
            });
        }
        let page_size = self.page_size();
        let (_, max_body) = crate::wire::FrameKind::DeviceState.body_len_range(page_size);
        if let Some(item) = items
            .iter()
            .find(|i| i.frame_len() - crate::wire::FRAME_HEADER_LEN > max_body)
        {
            return Err(EngineError::Emit(
                crate::wire::WireErrorKind::BadFrameLength {
                    kind: crate::wire::FrameKind::DeviceState as u8,
                    len: (item.frame_len() - crate::wire::FRAME_HEADER_LEN) as u64,
                    min: crate::wire::DEVICE_STATE_FIXED_LEN as u64,
                    max: max_body as u64,
                },
            ));
        }
        let mut len = 0;
        for item in items {
            len += Frame::DeviceState(*item)
                .emit(page_size, &mut out[len..])
                .map_err(EngineError::Emit)?;
        }
        // Part of the final round's bytes (the downtime's).
        self.round_wire_bytes += len as u64;
        self.phase = Phase::Digest { round };
        Ok(len)
    }

    /// Abandons the migration (a transport error, an operator's cancel): pages
    /// harvested but not sent go back into the bitmap (in the bulk round, every page
    /// it did not reach), so a later attempt or another consumer loses nothing. Pages
    /// in bytes already returned but not delivered are the caller's to put back
    /// ([`put_back_undelivered`](super::put_back_undelivered)). Guest memory was
    /// never written.
    pub fn abort(mut self) {
        self.fail();
    }

    fn fail(&mut self) {
        if matches!(self.phase, Phase::Failed | Phase::Done) {
            return;
        }
        self.event = None;
        // A run of zero pages counted as sent but not yet in any bytes returned.
        if let Some((first, count)) = self.framer.take_pending_zero_run() {
            let _ = self
                .bitmap
                .mark_page_range(first..first.saturating_add(count));
        }
        if let Phase::Round {
            round: 1,
            fin: false,
        }
        | Phase::Header = self.phase
        {
            // The bulk round sends every page, so the engine took every mark out of
            // the bitmap when it started: the pages it did not reach are unsent.
            let (stream, total) = (self.config.stream, self.bitmap.total_pages());
            for pages in stream.ranges(total) {
                let from = pages.start.max(self.cursor);
                if from < pages.end {
                    let _ = self.bitmap.mark_page_range(from..pages.end);
                }
            }
            self.phase = Phase::Failed;
            return;
        }
        // Pages of this round not sent yet: the set from the cursor on (after a
        // harvest, the cursor is 0: the whole set).
        let words = self.set.words();
        let first = (self.cursor / 64) as usize;
        if let Some(&w) = words.get(first) {
            let head = w & (!0u64 << (self.cursor % 64));
            let _ = self.bitmap.restore_words(first, &[head]);
            let _ = self.bitmap.restore_words(first + 1, &words[first + 1..]);
        }
        self.phase = Phase::Failed;
    }

    fn fill<M: PageMemory + ?Sized>(
        &mut self,
        memory: &M,
        out: &mut [u8],
    ) -> Result<usize, EngineError> {
        let mut len = 0;
        let mut walked = 0u64;
        let total = self.bitmap.total_pages();
        loop {
            match self.phase {
                Phase::Header => {
                    let features = if self.config.device_state {
                        Features::CODECS | Features::DEVICE_STATE
                    } else {
                        Features::CODECS
                    };
                    let header = StreamHeader {
                        features,
                        session_id: self.config.session_id,
                        layout: *self.bitmap.layout(),
                        stream: self.config.stream,
                    };
                    let written = header.emit(&mut out[len..]).map_err(EngineError::Emit)?;
                    len += written;
                    self.start_round(1, false);
                    // The header belongs to the bulk round's bytes.
                    self.round_wire_bytes += written as u64;
                    len += self.emit(
                        Frame::RoundBegin {
                            round: wire_round(1),
                            planned_pages: self.round_planned,
                        },
                        &mut out[len..],
                    )?;
                }
                Phase::Round { round, fin } => {
                    let room = out.len() - len;
                    if room < 2 * max_frame_len(self.page_size())
                        || walked >= self.config.max_pages_per_poll
                    {
                        return Ok(len);
                    }
                    if self.announce_round {
                        self.announce_round = false;
                        len += self.emit(
                            Frame::RoundBegin {
                                round: wire_round(round),
                                planned_pages: self.set.count(),
                            },
                            &mut out[len..],
                        )?;
                    }
                    if self.announce_final {
                        self.announce_final = false;
                        let remaining_pages = self.set.count();
                        len += self.emit(Frame::Switchover { remaining_pages }, &mut out[len..])?;
                        len += self.emit(
                            Frame::RoundBegin {
                                round: wire_round(round),
                                planned_pages: remaining_pages,
                            },
                            &mut out[len..],
                        )?;
                    }
                    walked += 1;
                    if round == 1 && !fin {
                        let Some(page) = self.config.stream.next_owned(self.cursor, total) else {
                            len += self.end_round(round, fin, &mut out[len..])?;
                            continue;
                        };
                        // The stream's pages from `page` on that are contiguous: to
                        // the end of memory for one stream, else of the chunk.
                        let run_end = if self.config.stream == Shard::WHOLE {
                            total
                        } else {
                            ((page / SHARD_CHUNK_PAGES + 1) * SHARD_CHUNK_PAGES).min(total)
                        };
                        let known = memory
                            .known_zero_pages(page, run_end - page)
                            .min(run_end - page);
                        if known > 0 {
                            len += self.skip_zero_run(page, known, &mut out[len..])?;
                        } else {
                            len += self.send_page(memory, page, &mut out[len..])?;
                        }
                        continue;
                    }
                    let Some(page) = next_set_bit(self.set.words(), self.cursor) else {
                        len += self.end_round(round, fin, &mut out[len..])?;
                        continue;
                    };
                    if !fin && self.config.defer_redirtied && self.bitmap.is_dirty(page) {
                        // Dirtied again since its harvest: the next harvest has it.
                        self.cursor = page + 1;
                        self.round_deferred += 1;
                        continue;
                    }
                    len += self.send_page(memory, page, &mut out[len..])?;
                }
                Phase::Digest { round } => {
                    // Only the digest in this poll: a caller timing it sees what the
                    // verification costs with the guest paused.
                    if len > 0 {
                        return Ok(len);
                    }
                    return self.complete(memory, round, out);
                }
                Phase::AwaitSync { .. }
                | Phase::AwaitDeviceState { .. }
                | Phase::AwaitDecision { .. }
                | Phase::AwaitPause { .. }
                | Phase::Done => return Ok(len),
                Phase::Failed => {
                    return Err(EngineError::OutOfOrder {
                        what: "the migration already failed",
                    })
                }
            }
        }
    }

    fn start_round(&mut self, round: u32, fin: bool) {
        self.phase = Phase::Round { round, fin };
        self.cursor = 0;
        self.round_pages = 0;
        self.round_planned = if round == 1 && !fin {
            self.config.stream.pages(self.bitmap.total_pages())
        } else {
            self.set.count()
        };
        self.round_wire_bytes = 0;
        self.round_deferred = 0;
        self.round_codecs_start = *self.encoder.stats();
    }

    /// Bulk round: pages `page..page + count`, known zero by memory without reading
    /// them, join the pending zero run.
    fn skip_zero_run(
        &mut self,
        page: u64,
        count: u64,
        out: &mut [u8],
    ) -> Result<usize, EngineError> {
        let from = self.config.stream.local_index(page) as usize;
        let hashes = self
            .sent_hashes
            .as_mut()
            .get_mut(from..from + count as usize)
            .ok_or(EngineError::OutOfOrder {
                what: "a page outside this engine's stream",
            })?;
        // What the destination will hold: zero pages (a write of the kept hashes at
        // memset speed, no page read).
        hashes.fill(self.zero_hash);
        // Sent as zero: no delta base stays (in the bulk round, every page's first
        // visit, there is none yet; the call costs no more than the pages cached).
        self.encoder.zero_run(page, count);
        self.cursor = page + count;
        self.round_pages += count;
        let len = self
            .framer
            .zero_pages(page, count, out)
            .map_err(EngineError::Emit)?;
        self.round_wire_bytes += len as u64;
        Ok(len)
    }

    /// Reads, encodes and emits page `page`; returns the bytes written.
    fn send_page<M: PageMemory + ?Sized>(
        &mut self,
        memory: &M,
        page: u64,
        out: &mut [u8],
    ) -> Result<usize, EngineError> {
        let page_size = self.page_size();
        let page_buf = &mut words_as_bytes_mut(self.page_buf.as_mut())[..page_size];
        memory.read_page(page, page_buf)?;
        let payload_buf = words_as_bytes_mut(self.payload_buf.as_mut());
        let encoded = self.encoder.encode(page, page_buf, payload_buf)?;
        // What the destination will hold for this page: the private copy just encoded.
        let hash = match (encoded.encoding, encoded.page_hash) {
            (crate::codec::Encoding::Zero, _) => self.zero_hash,
            // Hashed already, to store it as the next delta base.
            (_, Some(hash)) => hash,
            (_, None) => crate::codec::base_hash(page_buf),
        };
        let slot = self
            .sent_hashes
            .as_mut()
            .get_mut(self.config.stream.local_index(page) as usize)
            .ok_or(EngineError::OutOfOrder {
                what: "a page outside this engine's stream",
            })?;
        *slot = hash;
        // Sent (or about to be, in these bytes): no longer pending for this round.
        self.cursor = page + 1;
        self.round_pages += 1;
        let len = self
            .framer
            .page(
                page,
                encoded.encoding,
                encoded.base_hash,
                &payload_buf[..encoded.len],
                out,
            )
            .map_err(EngineError::Emit)?;
        self.round_wire_bytes += len as u64;
        Ok(len)
    }

    fn flush_zero_run(&mut self, out: &mut [u8]) -> Result<usize, EngineError> {
        let len = self.framer.flush(out).map_err(EngineError::Emit)?;
        self.round_wire_bytes += len as u64;
        Ok(len)
    }

    fn emit(&mut self, frame: Frame<'_>, out: &mut [u8]) -> Result<usize, EngineError> {
        let written = frame
            .emit(self.page_size(), out)
            .map_err(EngineError::Emit)?;
        self.round_wire_bytes += written as u64;
        Ok(written)
    }

    /// Closes round `round`: emits its end, then (a live round) harvests, at once or
    /// after the caller's sync.
    fn end_round(&mut self, round: u32, fin: bool, out: &mut [u8]) -> Result<usize, EngineError> {
        let mut len = self.flush_zero_run(out)?;
        len += self.emit(
            Frame::RoundEnd {
                round: wire_round(round),
                pages: self.round_pages,
            },
            &mut out[len..],
        )?;
        if fin {
            if self.config.device_state {
                self.phase = Phase::AwaitDeviceState { round };
                self.event = Some(SourceEvent::DeviceState);
                return Ok(len);
            }
            // Every dirty page is out; the next poll makes the digest alone, so that
            // a caller timing it sees what verification costs.
            self.phase = Phase::Digest { round };
            return Ok(len);
        }
        if self.config.sync_before_harvest {
            self.phase = Phase::AwaitSync { round, fin: false };
            self.event = Some(SourceEvent::SyncDirtyLog { paused: false });
            return Ok(len);
        }
        self.harvest_and_measure(round)?;
        Ok(len)
    }

    /// The end of live round `round`: harvests and reports the round.
    fn harvest_and_measure(&mut self, round: u32) -> Result<(), EngineError> {
        self.set.clear();
        // The whole new set is pending: a failure from here on restores all of it.
        self.cursor = 0;
        self.phase = Phase::AwaitDecision { round };
        harvest_stream(self.bitmap, self.config.stream, &mut self.set)?;
        self.event = Some(SourceEvent::RoundMeasured(StreamRound {
            round,
            pages_sent: self.round_pages,
            wire_bytes: self.round_wire_bytes,
            dirty_pages: self.set.count(),
            codecs: self.encoder.stats().since(&self.round_codecs_start),
            deferred_pages: self.round_deferred,
        }));
        Ok(())
    }

    /// The harvest with the guest paused: final round `round` starts.
    fn final_harvest(&mut self, round: u32) -> Result<(), EngineError> {
        harvest_stream(self.bitmap, self.config.stream, &mut self.set)?;
        self.start_round(round, true);
        self.announce_final = true;
        Ok(())
    }

    /// Makes the stream's digest (with the guest paused, after the final round) and
    /// emits the completion frame.
    fn complete<M: PageMemory + ?Sized>(
        &mut self,
        memory: &M,
        round: u32,
        out: &mut [u8],
    ) -> Result<usize, EngineError> {
        let page_size = self.page_size();
        let stream_pages = self.sent_hashes.as_ref().len() as u64;
        let (digest, digest_pages_read) = match self.config.verify {
            Verify::AfterResume => {
                let mut digest = MemoryDigest::new();
                digest.update_hashes(self.sent_hashes.as_ref());
                (digest.finish(), 0)
            }
            Verify::InDowntime => (
                crate::memory::digest_stream(
                    memory,
                    self.config.stream,
                    &mut words_as_bytes_mut(self.page_buf.as_mut())[..page_size],
                )?,
                stream_pages,
            ),
        };
        let codecs = self.encoder.stats().since(&self.round_codecs_start);
        let len = self.emit(
            Frame::Complete {
                total_pages: self.bitmap.total_pages(),
                digest,
            },
            out,
        )?;
        self.phase = Phase::Done;
        self.event = Some(SourceEvent::Complete {
            digest,
            round: FinalRound {
                round,
                pages_sent: self.round_pages,
                wire_bytes: self.round_wire_bytes,
                codecs,
                predicted_downtime_ns: self.predicted_downtime_ns,
                digest_pages_read,
                digest_pages_folded: stream_pages,
            },
        });
        Ok(len)
    }
}

/// Fetch-and-clear of `stream`'s pages of `bitmap`, ORed into `set`.
fn harvest_stream<W: Deref<Target = [AtomicU64]>, S: AsRef<[u64]> + AsMut<[u64]>>(
    bitmap: &AtomicDirtyBitmap<W>,
    stream: Shard,
    set: &mut DirtySet<S>,
) -> Result<u64, EngineError> {
    if stream == Shard::WHOLE {
        return Ok(bitmap.harvest_into(set)?);
    }
    let mut taken = 0;
    let mut buf = [0u64; (SHARD_CHUNK_PAGES / 64) as usize];
    for pages in stream.ranges(bitmap.total_pages()) {
        // Chunks start on a word; the last one may end inside one.
        let words = (pages.start / 64) as usize..pages.end.div_ceil(64) as usize;
        let chunk = &mut buf[..words.len()];
        taken += bitmap.harvest_words_into(words.clone(), chunk)?;
        for (dst, src) in set.words_mut()[words].iter_mut().zip(chunk.iter()) {
            *dst |= *src;
        }
    }
    Ok(taken)
}

/// The first set bit at or after `from` in `words`.
fn next_set_bit(words: &[u64], from: u64) -> Option<u64> {
    let mut word = (from / 64) as usize;
    let mut bits = words.get(word)? & (!0u64 << (from % 64));
    loop {
        if bits != 0 {
            return Some(word as u64 * 64 + u64::from(bits.trailing_zeros()));
        }
        word += 1;
        bits = *words.get(word)?;
    }
}
