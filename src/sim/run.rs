//! The event loop: the real source engines, the core's coordinator (its scheduler
//! decides), the real codecs and the real destination appliers, stepped on a virtual
//! clock over the link and CPU models.

use std::boxed::Box;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::format;
use std::string::{String, ToString};
use std::sync::Arc;
use std::vec::Vec;

use crate::bitmap::AtomicDirtyBitmap;
use crate::codec::Encoding;
use crate::engine::{
    CompressionChoice, Coordinator, CoordinatorConfig, CoordinatorEvent, CoordinatorReport,
    FinalRound, SourceConfig, SourceEngine, SourceEvent, StreamRound,
};
use crate::layout::{GuestLayout, Shard};
use crate::memory::PageMemory;

use super::dest::DestWorker;
use super::guest::VirtualGuest;
use super::pages::{DestMemory, PageGen, SourceMemory};
use super::report::check;
use super::report::{SimObserver, SimReport};
use super::{SimConfig, SimError};

enum Note {
    Round(StreamRound, bool),
    PauseWanted,
    Complete(u128, FinalRound),
}

enum Item {
    /// Stream bytes, and whether they carry the completion frame.
    Bytes(Vec<u8>, bool),
    Note(Box<Note>),
}

enum Ev {
    Encode(usize),
    Produced(usize, Vec<u8>, Vec<Note>, u64, bool),
    Sent(usize, Vec<u8>, bool),
    Deliver(usize, Vec<u8>, bool),
    Verdict(usize, bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enc {
    Idle,
    Busy,
    Blocked,
    Waiting,
    Done,
}

type Engine<'b> = SourceEngine<'b, std::boxed::Box<[core::sync::atomic::AtomicU64]>>;

struct Stream<'b> {
    engine: Engine<'b>,
    choice: CompressionChoice,
    queue: VecDeque<Item>,
    buffers: usize,
    state: Enc,
    last_poll_end: u64,
    last_encoded: u64,
    pages: u64,
    dest: DestWorker,
    apply_error: Option<String>,
}

struct Sim<'b, 'o> {
    config: &'b SimConfig,
    now: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    slab: Vec<Option<Ev>>,
    free: Vec<usize>,
    streams: Vec<Stream<'b>>,
    coord: Coordinator,
    memory: SourceMemory,
    bitmap: &'b AtomicDirtyBitmap<std::boxed::Box<[core::sync::atomic::AtomicU64]>>,
    guest: VirtualGuest,
    link_busy: bool,
    rr: usize,
    report: SimReport,
    paused_at: Option<u64>,
    done: Option<CoordinatorReport>,
    failed: Option<String>,
    observer: &'o mut dyn SimObserver,
    share: f64,
    next_progress: u64,
}

/// Runs `config`'s migration to its end, telling `observer` as it goes.
pub fn simulate(config: &SimConfig, observer: &mut dyn SimObserver) -> Result<SimReport, SimError> {
    let layout = GuestLayout::flat(config.page_size, config.memory_bytes)
        .map_err(|e| SimError::Config(e.to_string()))?;
    let total = layout.total_pages();
    let page_size = config.page_size as usize;
    let n = usize::from(config.streams);
    if n == 0 {
        return Err(SimError::Config(
            "a migration needs at least one stream".into(),
        ));
    }
    config
        .policy
        .validate()
        .map_err(|e| SimError::Config(e.to_string()))?;
    let gen = Arc::new(PageGen::new(
        config.workload,
        config.content,
        total,
        page_size,
    ));
    let memory = SourceMemory::new(Arc::clone(&gen));
    let bitmap = AtomicDirtyBitmap::new(layout);

    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let source = SourceConfig {
            encoder: config.encoder(),
            verify: config.verify,
            stream: Shard::new(i as u8, n as u8).unwrap_or(Shard::WHOLE),
            ..SourceConfig::new(page_size)
        };
        let mut engine =
            SourceEngine::new(&bitmap, source, 0).map_err(|e| SimError::Engine(e.to_string()))?;
        let choice = CompressionChoice::new(config.compression);
        engine.set_lz4(choice.lz4());
        streams.push(Stream {
            pages: source.stream.pages(total),
            engine,
            choice,
            queue: VecDeque::new(),
            buffers: 0,
            state: Enc::Idle,
            last_poll_end: 0,
            last_encoded: 0,
            dest: DestWorker::spawn(i, DestMemory::new(Arc::clone(&gen)))?,
            apply_error: None,
        });
    }
    // The downtime's verification (each side folds its streams' page hashes; the
    // longest stream counts) is predicted, as the CLI's demo calibrates its own.
    let longest = streams.iter().map(|s| s.pages).max().unwrap_or(0);
    let mut policy = config.policy;
    policy.non_memory_downtime_ns +=
        (2.0 * config.cpu.fold_ns * longest as f64) as u64 + 2 * config.link.latency_ns;
    let coord = Coordinator::new(
        CoordinatorConfig {
            policy,
            total_pages: total,
            page_size: config.page_size,
            streams: n,
        },
        0,
    )
    .map_err(|e| SimError::Config(e.to_string()))?;
    let mut sim = Sim {
        config,
        now: 0,
        seq: 0,
        heap: BinaryHeap::new(),
        slab: Vec::new(),
        free: Vec::new(),
        share: config.cpu.share(n),
        streams,
        coord,
        memory,
        bitmap: &bitmap,
        guest: VirtualGuest::new(config.workload, total, config.page_size, config.writers),
        link_busy: false,
        rr: 0,
        report: SimReport {
            memory_bytes: layout.total_bytes(),
            predicted_downtime_ns: u64::MAX,
            ..SimReport::default()
        },
        paused_at: None,
        done: None,
        failed: None,
        observer,
        next_progress: 0,
    };
    for i in 0..n {
        sim.schedule(0, Ev::Encode(i));
    }
    sim.run()?;
    Ok(sim.finish())
}

impl Sim<'_, '_> {
    fn schedule(&mut self, at: u64, ev: Ev) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s] = Some(ev);
                s
            }
            None => {
                self.slab.push(Some(ev));
                self.slab.len() - 1
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at.max(self.now), self.seq, slot)));
    }

    fn run(&mut self) -> Result<(), SimError> {
        while let Some(Reverse((t, _, slot))) = self.heap.pop() {
            let Some(ev) = self.slab[slot].take() else {
                continue;
            };
            self.free.push(slot);
            self.now = t;
            if self.now > self.config.max_virtual_ns {
                self.failed = Some(format!(
                    "the simulated migration had not ended after {} s of virtual time",
                    self.config.max_virtual_ns / 1_000_000_000
                ));
            }
            if self.done.is_some() || self.failed.is_some() {
                break;
            }
            match ev {
                Ev::Encode(i) => self.encode(i)?,
                Ev::Produced(i, bytes, notes, encoded, last) => {
                    self.produced(i, bytes, notes, encoded, last)
                }
                Ev::Sent(i, bytes, last) => {
                    let at = self.now + self.config.link.latency_ns;
                    self.schedule(at, Ev::Deliver(i, bytes, last));
                    self.streams[i].buffers -= 1;
                    if self.streams[i].state == Enc::Blocked {
                        self.streams[i].state = Enc::Idle;
                        self.schedule(self.now, Ev::Encode(i));
                    }
                    self.link_busy = false;
                    self.rr = (i + 1) % self.streams.len();
                    self.drain_notes(i);
                    self.start_link();
                }
                Ev::Deliver(i, bytes, last) => self.deliver(i, bytes, last),
                Ev::Verdict(i, ok) => {
                    let r = self.coord.handle_verdict(i, ok);
                    self.handled(r);
                }
            }
            if self.now >= self.next_progress {
                self.next_progress = self.now + 100_000_000;
                let (sent, planned) = self
                    .streams
                    .iter()
                    .map(|s| s.engine.round_progress())
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                self.observer.progress(self.now, sent, planned);
            }
        }
        if self.done.is_none() && self.failed.is_none() {
            return Err(SimError::Stalled {
                at_ns: self.now,
                round: self.coord.round(),
            });
        }
        Ok(())
    }

    fn encode(&mut self, i: usize) -> Result<(), SimError> {
        let s = &mut self.streams[i];
        if matches!(s.state, Enc::Waiting | Enc::Done | Enc::Busy) {
            return Ok(());
        }
        if s.buffers > self.config.link.queue_buffers {
            s.state = Enc::Blocked;
            return Ok(());
        }
        self.guest.advance(self.now, &mut self.memory, self.bitmap);
        let s = &mut self.streams[i];
        let before = *s.engine.codec_stats();
        let len = s.engine.min_buffer_len().max(self.config.buffer_bytes);
        let mut buf = s.dest.spare().unwrap_or_default();
        buf.resize(len, 0);
        let n = match s.engine.poll_transmit(&self.memory, self.now, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                self.failed = Some(format!("stream {i}: {e}"));
                return Ok(());
            }
        };
        buf.truncate(n);
        let stats = s.engine.codec_stats().since(&before);
        let mut cost = self.config.cpu.poll_cost(&stats) * self.share;
        let mut notes = Vec::new();
        let mut waiting = false;
        let mut last = false;
        while let Some(event) = s.engine.poll_event() {
            match event {
                SourceEvent::RoundMeasured(r) => {
                    notes.push(Note::Round(r, s.engine.lz4_enabled()));
                    waiting = true;
                }
                SourceEvent::SyncDirtyLog { .. } => {
                    if let Err(e) = s.engine.dirty_log_synced(self.now) {
                        self.failed = Some(format!("stream {i}: {e}"));
                        return Ok(());
                    }
                }
                SourceEvent::PauseGuest { .. } => {
                    notes.push(Note::PauseWanted);
                    waiting = true;
                }
                SourceEvent::DeviceState => {
                    // The simulated guest has no device state: its engines never
                    // announce any.
                    self.failed = Some(format!("stream {i}: device state asked for"));
                    return Ok(());
                }
                SourceEvent::Complete { digest, round } => {
                    // The digest folds every page's kept hash (or re-reads them).
                    cost += self.config.cpu.fold_ns * s.pages as f64
                        + round.digest_pages_read as f64 * self.config.cpu.zero_ns;
                    notes.push(Note::Complete(digest, round));
                    waiting = true;
                    last = true;
                }
            }
        }
        let all = s.engine.codec_stats();
        let encoded = all.pages() - all.get(Encoding::Zero).pages;
        s.state = if waiting { Enc::Waiting } else { Enc::Busy };
        if s.engine.is_complete() {
            s.state = Enc::Done;
        }
        let at = self.now + cost as u64;
        self.schedule(at, Ev::Produced(i, buf, notes, encoded, last));
        Ok(())
    }

    fn produced(&mut self, i: usize, bytes: Vec<u8>, notes: Vec<Note>, encoded: u64, last: bool) {
        let now = self.now;
        let s = &mut self.streams[i];
        let len = bytes.len() as u64;
        let lz4 = s.choice.observe(
            encoded - s.last_encoded,
            len,
            now.saturating_sub(s.last_poll_end),
        );
        s.engine.set_lz4(lz4);
        s.last_encoded = encoded;
        s.last_poll_end = now;
        self.report.wire_bytes += len;
        if len > 0 {
            s.buffers += 1;
            s.queue.push_back(Item::Bytes(bytes, last));
        }
        s.queue
            .extend(notes.into_iter().map(|n| Item::Note(Box::new(n))));
        if s.state == Enc::Busy {
            s.state = Enc::Idle;
            self.schedule(now, Ev::Encode(i));
        }
        self.drain_notes(i);
        self.start_link();
    }

    /// Handles the notes at the head of stream `i`'s queue: the bytes before them
    /// are on the wire (as the runtime's sender forwards them).
    fn drain_notes(&mut self, i: usize) {
        while let Some(Item::Note(_)) = self.streams[i].queue.front() {
            let Some(Item::Note(note)) = self.streams[i].queue.pop_front() else {
                break;
            };
            let r = match *note {
                Note::Round(r, lz4) => {
                    if self.coord.round_ends_with_next_measurement() {
                        // The barrier, as the runtime's: the pages written since the
                        // streams harvested count in the prediction.
                        self.guest.advance(self.now, &mut self.memory, self.bitmap);
                        self.coord.note_pending_pages(self.bitmap.dirty_pages());
                    }
                    self.coord.handle_round_measured(i, r, lz4, self.now)
                }
                Note::PauseWanted => self.coord.handle_pause_wanted(i),
                Note::Complete(digest, f) => self.coord.handle_complete(
                    i,
                    digest,
                    FinalRound {
                        predicted_downtime_ns: 0,
                        ..f
                    },
                ),
            };
            self.handled(r);
        }
    }

    /// Starts the link on the next stream (round robin) with bytes queued.
    fn start_link(&mut self) {
        if self.link_busy {
            return;
        }
        let n = self.streams.len();
        for k in 0..n {
            let j = (self.rr + k) % n;
            if let Some(Item::Bytes(..)) = self.streams[j].queue.front() {
                let Some(Item::Bytes(bytes, last)) = self.streams[j].queue.pop_front() else {
                    continue;
                };
                let ns = self.config.link.send_ns(bytes.len() as u64);
                self.report.line_bytes += (u128::from(ns)
                    * u128::from(self.config.link.bytes_per_sec)
                    / 1_000_000_000) as u64;
                self.link_busy = true;
                self.schedule(self.now + ns, Ev::Sent(j, bytes, last));
                return;
            }
        }
    }

    fn deliver(&mut self, i: usize, bytes: Vec<u8>, last: bool) {
        let s = &mut self.streams[i];
        let latency = self.config.link.latency_ns;
        match s.dest.deliver(bytes, last) {
            None => {}
            Some(Ok(())) => {
                let fold = (self.config.cpu.fold_ns * s.pages as f64) as u64;
                self.schedule(self.now + fold + latency, Ev::Verdict(i, true));
            }
            Some(Err(e)) => {
                s.apply_error = Some(e);
                self.schedule(self.now + latency, Ev::Verdict(i, false));
            }
        }
    }

    /// After a `handle_*` call: carries out what the coordinator says.
    fn handled(&mut self, r: Result<(), crate::engine::CoordinatorError>) {
        if let Err(e) = r {
            self.failed = Some(e.to_string());
            return;
        }
        while let Some(event) = self.coord.poll_event() {
            match event {
                CoordinatorEvent::RoundDone(sum) => {
                    self.observer.round_done(&sum);
                    self.report.rows.push(sum);
                    if self.config.lost_write && self.report.rows.len() == 1 {
                        // Test hook: the last page changes, never marked.
                        let last = self.memory.total_pages() - 1;
                        self.memory.write(last);
                    }
                }
                CoordinatorEvent::Throttle(p) => {
                    self.guest.advance(self.now, &mut self.memory, self.bitmap);
                    self.guest.throttle(p);
                    if p > 0 && self.report.throttle_round.is_none() {
                        self.report.throttle_round = Some(self.coord.round());
                    }
                }
                CoordinatorEvent::Decide(d) => {
                    for i in 0..self.streams.len() {
                        if let Err(e) = self.streams[i].engine.decide(d) {
                            self.failed.get_or_insert(format!("stream {i}: {e}"));
                        }
                        self.wake(i);
                    }
                }
                CoordinatorEvent::PauseGuest {
                    predicted_downtime_ns,
                } => {
                    self.report.predicted_downtime_ns = predicted_downtime_ns;
                    self.guest.advance(self.now, &mut self.memory, self.bitmap);
                    self.guest.pause();
                    self.paused_at = Some(self.now);
                    if let Err(e) = self.coord.handle_guest_paused(self.now) {
                        self.failed = Some(e.to_string());
                    }
                }
                CoordinatorEvent::GuestPaused => {
                    for i in 0..self.streams.len() {
                        if let Err(e) = self.streams[i].engine.guest_paused(self.now) {
                            self.failed.get_or_insert(format!("stream {i}: {e}"));
                        }
                        self.wake(i);
                    }
                }
                CoordinatorEvent::FinalRound(f) => {
                    self.observer.final_round(&f);
                    self.report.final_round = Some(f);
                    self.report.digests = self.coord.digests();
                }
                CoordinatorEvent::Done(report) => self.done = Some(report),
                CoordinatorEvent::Failed(e) => {
                    let cause = self.streams.iter().find_map(|s| s.apply_error.clone());
                    self.failed
                        .get_or_insert(cause.unwrap_or_else(|| e.to_string()));
                }
            }
        }
    }

    fn wake(&mut self, i: usize) {
        let s = &mut self.streams[i];
        if s.state == Enc::Waiting {
            s.state = Enc::Idle;
            // The wait for the other streams is no poll's time.
            s.last_poll_end = self.now;
            self.schedule(self.now, Ev::Encode(i));
        }
    }

    fn finish(mut self) -> SimReport {
        let mut r = core::mem::take(&mut self.report);
        r.total_ns = self.now;
        r.writes = self.guest.writes;
        r.downtime_ns = self.paused_at.map(|p| self.now - p);
        if let Some(d) = &self.done {
            r.rounds = d.rounds;
            r.wire_bytes = d.wire_bytes;
        } else {
            r.rounds = r.final_round.map_or(0, |f| f.round);
        }
        r.error = self.failed.take();
        let streams = core::mem::take(&mut self.streams);
        let dests: Option<Vec<DestMemory>> = streams.into_iter().map(|s| s.dest.finish()).collect();
        match dests {
            Some(dests) if r.error.is_none() => r.check = check(&self.memory, &dests),
            Some(_) => {}
            None => {
                r.error
                    .get_or_insert_with(|| "a destination thread panicked".into());
            }
        }
        r
    }
}
