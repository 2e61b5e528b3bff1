//! Fuzz target `migrate_interleaved`: the real source engine and the real destination
//! applier, with the guest's writes, the engine's polls, the delivery of the stream in
//! pieces, the passing of time and link failures interleaved as the input says.

use alloc::vec;
use alloc::vec::Vec;

use crate::bitmap::AtomicDirtyBitmap;
use crate::engine::SourceConfig;
use crate::engine::{
    put_back_undelivered, Applier, Migration, MigrationEvent, OwnedDeviceState, Progress,
};
use crate::layout::GuestLayout;
use crate::memory::{FreshMemory, PageMemory, VecMemory};
use crate::schedule::{OnLimit, Policy};

/// Page size of the guests [`migrate_interleaved`] migrates (the smallest: more pages
/// per input byte).
pub const MIGRATE_PAGE_SIZE: usize = 512;

/// Reads the input a byte at a time; past its end, every byte is 0.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a [`migrate_interleaved`] run ended, for tests that want to see that the
/// inputs reach every path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MigrateOutcome {
    /// Live rounds the migration's scheduler saw.
    pub rounds: u32,
    /// Guest writes made.
    pub writes: u64,
    /// The link failed and the migration was abandoned (then checked for lost marks).
    pub failed: bool,
    /// The destination verified the stream (then checked page by page).
    pub completed: bool,
}

/// Fuzz target `migrate_interleaved`: a guest of 1 to 256 pages of
/// [`MIGRATE_PAGE_SIZE`] migrates through the real [`SourceEngine`](crate::engine::SourceEngine) and its
/// 1-stream coordinator ([`Migration`]; delta cache of 0 to 64 pages, deferral of
/// redirtied pages on or off, a dirty-log sync before each harvest or not, 1 to 128
/// pages walked per poll, a round limit after which it switches over, a fewest-rounds
/// rule and a downtime limit from the input) to a real [`Applier`] over fresh
/// destination memory, while the input interleaves: guest writes (write memory, then
/// mark the page: the bitmap's contract; with the sync, some writes go to a simulated
/// KVM dirty log instead, taken and ORed into the bitmap when the engine asks) of
/// zero pages, whole new pages and one-word changes (deltas); polls with buffers of
/// varied size; delivery of the pending stream in pieces of any size; time passing;
/// and a link failure.
///
/// Panics exactly when a property fails:
/// - a completed migration leaves the destination's memory equal to the source's,
///   byte for byte, with both sides' digests equal;
/// - after a link failure (undelivered buffers put back with
///   [`put_back_undelivered`], the engine aborted) every page where the destination
///   differs from the source is marked dirty: no write is lost;
/// - no call returns an error on a well-behaved run.
pub fn migrate_interleaved(data: &[u8]) -> MigrateOutcome {
    let mut input = Input(data);
    let pages = 1 + u64::from(input.byte());
    let layout = GuestLayout::flat(MIGRATE_PAGE_SIZE as u64, pages * MIGRATE_PAGE_SIZE as u64)
        .expect("valid layout");
    let bitmap = AtomicDirtyBitmap::new(layout);
    let mut source = VecMemory::new(MIGRATE_PAGE_SIZE, pages);
    let mut outcome = MigrateOutcome::default();
    // Memory the guest wrote before the migration.
    for _ in 0..input.byte() % 32 {
        guest_write(&mut input, &mut source, &bitmap, None, &mut outcome);
    }
    let mut config = SourceConfig::new(MIGRATE_PAGE_SIZE);
    config.encoder.cache_bytes = usize::from(input.byte() % 65) * MIGRATE_PAGE_SIZE;
    let flags = input.byte();
    config.defer_redirtied = flags & 1 == 1;
    config.sync_before_harvest = flags & 2 == 2;
    config.max_pages_per_poll = 1 << ((flags >> 2) & 7);
    config.device_state = flags & 0x20 == 0x20;
    let max_rounds = 2 + u32::from(input.byte() % 40);
    let policy = Policy {
        downtime_limit_ns: 1_000_000 * (1 + u64::from(input.byte())),
        non_memory_downtime_ns: 0,
        // Up to every round: long migrations whatever the rates measured.
        min_rounds: 1 + u32::from(input.byte()) % max_rounds,
        max_rounds,
        on_limit: OnLimit::SwitchOver,
        ..Policy::default()
    };
    let mut now = 1_000_000u64;
    let mut migration = Migration::new(&bitmap, config, policy, now).expect("valid configuration");
    let min_buf = migration.min_buffer_len();
    // The production destination: fresh memory that knows its zero pages and keeps
    // the hash of every page it writes.
    let mut destination = FreshMemory::new(MIGRATE_PAGE_SIZE, pages).expect("small guest");
    let mut applier = Applier::with_memory(destination.whole());
    // Poll outputs not yet wholly delivered, oldest first, and how much of the first
    // was delivered.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut delivered_of_first = 0usize;
    // With the sync: pages written but logged only in the (simulated) KVM dirty log.
    let mut kvm_log = config.sync_before_harvest.then(Vec::new);
    let mut state = State::default();
    let mut steps = 0u32;
    let failed = loop {
        steps += 1;
        assert!(steps < 1_000_000, "the migration does not end");
        // Past the input: poll and deliver until done.
        let op = if input.is_empty() {
            if state.source_digest.is_some() {
                break false;
            }
            1
        } else {
            input.byte() % 8
        };
        match op {
            0 | 5 if !state.paused => guest_write(
                &mut input,
                &mut source,
                &bitmap,
                kvm_log.as_mut(),
                &mut outcome,
            ),
            1 | 6 if state.pause_pending => {
                // The VMM took a while to stop the vCPUs: the guest wrote meanwhile.
                now += 1_000;
                state.pause_pending = false;
                state.paused = true;
                migration.guest_paused(now).expect("pause when asked");
                state.take_events(&mut migration, now, &mut outcome);
            }
            1 | 6 if state.device_pending => {
                // The paused guest's device state: up to a page of bytes named by the
                // input, framed straight into a buffer sent like a poll's.
                let len = usize::from(input.byte()) * MIGRATE_PAGE_SIZE / 255;
                let (id, version, salt) = (input.byte(), input.byte(), input.byte());
                let item = OwnedDeviceState {
                    id: u32::from(id),
                    version: u16::from(version),
                    data: (0..len).map(|i| i as u8 ^ salt).collect(),
                };
                let mut buf = vec![0u8; item.item().frame_len()];
                let n = migration
                    .send_device_state(&[item.item()], &mut buf)
                    .expect("device state when asked");
                assert_eq!(n, buf.len(), "one frame of the item's length");
                pending.push(buf);
                state.device_pending = false;
                state.device_sent = Some(item);
                state.take_events(&mut migration, now, &mut outcome);
            }
            1 | 6 if state.sync_pending => {
                // The VMM's sync: take the KVM log (clearing it there), then OR it
                // into the bitmap; the harvest follows.
                if let Some(log) = kvm_log.as_mut() {
                    for page in log.drain(..) {
                        bitmap.mark(page).expect("in range");
                    }
                }
                now += 1_000;
                state.sync_pending = false;
                migration.dirty_log_synced(now).expect("synced when asked");
                state.take_events(&mut migration, now, &mut outcome);
            }
            1 | 6 if state.source_digest.is_none() => {
                let extra = usize::from(input.byte()) * 64;
                let mut buf = vec![0u8; min_buf + extra];
                now += 1_000;
                let len = migration
                    .poll_transmit(&source, now, &mut buf)
                    .expect("the engine fails on a well-behaved run");
                buf.truncate(len);
                if len > 0 {
                    pending.push(buf);
                }
                state.take_events(&mut migration, now, &mut outcome);
            }
            2 | 7 => {
                let mut budget = usize::from(input.byte()) * 97 + 1;
                if input.is_empty() {
                    budget = usize::MAX;
                }
                deliver(&mut pending, &mut delivered_of_first, budget, &mut applier);
            }
            3 => now += u64::from(input.byte()) * 250_000,
            4 if state.source_digest.is_none() && input.byte() < 16 => break true,
            _ => {}
        }
    };
    if failed {
        // The link died: what was not wholly handed over goes back into the bitmap.
        for buf in &pending {
            put_back_undelivered(&bitmap, buf).expect("engine output parses");
        }
        migration.abort();
        drop(applier);
        // The bytes memory holds, not what the destination's bookkeeping says.
        let logged = kvm_log.unwrap_or_default();
        let (a, b) = (source.as_bytes(), destination.as_bytes());
        for page in 0..pages {
            let r = page as usize * MIGRATE_PAGE_SIZE..(page as usize + 1) * MIGRATE_PAGE_SIZE;
            assert!(
                a[r.clone()] == b[r] || bitmap.is_dirty(page) || logged.contains(&page),
                "page {page} differs at the destination but is not marked: a lost write"
            );
        }
        outcome.failed = true;
        return outcome;
    }
    let source_digest = state.source_digest;
    deliver(
        &mut pending,
        &mut delivered_of_first,
        usize::MAX,
        &mut applier,
    );
    assert!(applier.is_complete(), "all bytes delivered, not complete");
    assert_eq!(applier.finish(), Ok(()));
    let received: Vec<OwnedDeviceState> = applier
        .device_state()
        .expect("verified: the device state is given out")
        .map(|d| OwnedDeviceState::from_item(&d))
        .collect();
    assert_eq!(
        received,
        state.device_sent.take().into_iter().collect::<Vec<_>>(),
        "the device state received differs from the one sent"
    );
    assert_eq!(applier.digest(), source_digest, "digests differ");
    drop(applier);
    assert!(
        destination.as_bytes() == source.as_bytes(),
        "destination memory differs from the source's"
    );
    migration.handle_verdict(true).expect("verified");
    assert!(
        matches!(migration.poll_event(), Some(MigrationEvent::Done(_))),
        "a verified migration is done"
    );
    outcome.completed = true;
    outcome
}

/// Where the migration stands, from its events.
#[derive(Default)]
struct State {
    pause_pending: bool,
    paused: bool,
    sync_pending: bool,
    device_pending: bool,
    device_sent: Option<OwnedDeviceState>,
    source_digest: Option<u128>,
}

impl State {
    /// Carries out what the migration asks, in order.
    fn take_events<W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>>(
        &mut self,
        migration: &mut Migration<'_, W>,
        _now: u64,
        outcome: &mut MigrateOutcome,
    ) {
        while let Some(event) = migration.poll_event() {
            match event {
                MigrationEvent::RoundDone(_) => outcome.rounds += 1,
                MigrationEvent::SyncDirtyLog { .. } => self.sync_pending = true,
                MigrationEvent::PauseGuest { .. } => self.pause_pending = true,
                MigrationEvent::DeviceState => self.device_pending = true,
                MigrationEvent::Complete { digest, .. } => self.source_digest = Some(digest),
                MigrationEvent::Throttle(_) | MigrationEvent::Done(_) => {}
            }
        }
    }
}

/// One guest write chosen by the input: memory first, then the mark (in the bitmap,
/// or, when the input says so and there is one, in the KVM log).
fn guest_write<W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>>(
    input: &mut Input<'_>,
    memory: &mut VecMemory,
    bitmap: &AtomicDirtyBitmap<W>,
    kvm_log: Option<&mut Vec<u64>>,
    outcome: &mut MigrateOutcome,
) {
    let pages = memory.total_pages();
    // Half the writes go to a hot set of four pages, and contents come from a small
    // alphabet: a page often returns to a version sent before (a delta base that must
    // still be right) after being zero or different in between.
    let pick = input.byte();
    let page = if pick & 1 == 0 {
        u64::from(pick >> 1) % pages.min(4)
    } else {
        u64::from(pick >> 1) % pages
    };
    let kind = input.byte();
    let value = input.byte() % 4;
    let start = page as usize * MIGRATE_PAGE_SIZE;
    let bytes = &mut memory.as_bytes_mut()[start..start + MIGRATE_PAGE_SIZE];
    match kind % 4 {
        0 => bytes.fill(0),
        1 => bytes
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i as u8).wrapping_mul(value | 1) ^ kind),
        // One word changes: a delta against the last version sent.
        _ => {
            let at = usize::from(kind) * 8 % MIGRATE_PAGE_SIZE;
            bytes[at..at + 8].copy_from_slice(&u64::from(value).wrapping_add(1).to_le_bytes());
        }
    }
    match kvm_log {
        Some(log) if kind & 4 == 4 => log.push(page),
        _ => bitmap.mark(page).expect("in range"),
    }
    outcome.writes += 1;
}

/// Feeds up to `budget` pending bytes to the destination.
fn deliver<M: PageMemory>(
    pending: &mut Vec<Vec<u8>>,
    delivered_of_first: &mut usize,
    mut budget: usize,
    applier: &mut crate::engine::OwnedApplier<M>,
) {
    while budget > 0 && !pending.is_empty() {
        let first = &pending[0];
        let n = (first.len() - *delivered_of_first).min(budget);
        let progress = applier
            .feed(&first[*delivered_of_first..*delivered_of_first + n])
            .expect("the destination refuses the engine's stream");
        budget -= n;
        *delivered_of_first += n;
        if *delivered_of_first == first.len() {
            pending.remove(0);
            *delivered_of_first = 0;
        }
        if progress == Progress::Complete {
            assert!(pending.is_empty(), "complete with bytes still to come");
        }
    }
}
