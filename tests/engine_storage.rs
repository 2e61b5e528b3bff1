//! The engines over caller storage: a multi-stream migration through
//! `SourceEngine::over` and `CoordinatorCore::over` (no allocation in the engines)
//! sends exactly the bytes the allocating engines send, the destination verifies it,
//! and storage that is missing or one word short is a typed error.

use std::boxed::Box;
use std::sync::atomic::AtomicU64;

use precopy::bitmap::AtomicDirtyBitmap;
use precopy::codec::{EncoderConfig, SLOT_OVERHEAD};
use precopy::engine::{
    coordinator_storage_words, source_storage_words, storage_needs, Applier, CoordinatorConfig,
    CoordinatorCore, CoordinatorError, CoreEvent, EngineError, Progress, SourceConfig,
    SourceEngine, SourceEvent,
};
use precopy::layout::{GuestLayout, Shard};
use precopy::memory::{PageMemory, VecMemory};
use precopy::schedule::{OnLimit, Policy};
use precopy::wire::DeviceState;

const PAGE: usize = 4096;
const PAGES: u64 = 3000;
const STREAMS: u8 = 3;
const MAX_POLLS: u32 = 100_000;

type Bitmap = AtomicDirtyBitmap<Box<[AtomicU64]>>;

fn policy() -> Policy {
    Policy {
        downtime_limit_ns: 1,
        non_memory_downtime_ns: 0,
        min_rounds: 3,
        max_rounds: 3,
        on_limit: OnLimit::SwitchOver,
        ..Policy::default()
    }
}

fn config(stream: u8) -> SourceConfig {
    SourceConfig {
        encoder: EncoderConfig {
            cache_bytes: 64 * (PAGE + SLOT_OVERHEAD),
            ..EncoderConfig::new(PAGE)
        },
        stream: Shard::new(stream, STREAMS).unwrap(),
        // Stream 0 carries the guest's device state.
        device_state: stream == 0,
        ..SourceConfig::new(PAGE)
    }
}

/// The device state the paused guest hands over (a vCPU's registers, say).
const VCPU_STATE: DeviceState<'static> = DeviceState {
    id: 3,
    version: 1,
    data: &[0xa5; 40],
};

/// A guest with varied pages: zero, repetitive and incompressible ones.
fn guest() -> VecMemory {
    let mut memory = VecMemory::new(PAGE, PAGES);
    let mut x = 0x9e37_79b9u32;
    for page in 0..PAGES {
        let mut data = vec![0u8; PAGE];
        match page % 4 {
            0 => {}
            1 => data
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = (i % 13) as u8),
            _ => data.iter_mut().for_each(|b| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8
            }),
        }
        memory.write_page(page, &data).unwrap();
    }
    memory
}

/// Runs the migration of `memory` with `engines` and `coordinator` (one engine per
/// stream), a guest writing a few bytes of a few pages between polls until it is paused;
/// returns each stream's bytes once every destination stream verified them.
fn migrate<S, C>(
    memory: &mut VecMemory,
    bitmap: &Bitmap,
    engines: &mut [SourceEngine<'_, Box<[AtomicU64]>, S>],
    coordinator: &mut CoordinatorCore<C>,
) -> Vec<Vec<u8>>
where
    S: AsRef<[u64]> + AsMut<[u64]>,
    C: AsRef<[u64]> + AsMut<[u64]>,
{
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); engines.len()];
    let mut buf = vec![0u8; 64 * 1024];
    let (mut now, mut paused, mut tick) = (0u64, false, 0u64);
    for _ in 0..MAX_POLLS {
        now += 1_000_000;
        if !paused {
            // Rewrite one byte of a few pages: deltas in the later rounds.
            for k in 0..3 {
                tick += 1;
                let page = (tick * 7 + k * 101) % PAGES;
                let mut data = vec![0u8; PAGE];
                memory.read_page(page, &mut data).unwrap();
                data[(tick % PAGE as u64) as usize] ^= 0x5a;
                memory.write_page(page, &data).unwrap();
                bitmap.mark(page).unwrap();
            }
        }
        for (i, engine) in engines.iter_mut().enumerate() {
            let len = engine.poll_transmit(&*memory, now, &mut buf).unwrap();
            out[i].extend_from_slice(&buf[..len]);
            while let Some(event) = engine.poll_event() {
                match event {
                    SourceEvent::RoundMeasured(r) => coordinator
                        .handle_round_measured(i, r, engine.lz4_enabled(), now)
                        .unwrap(),
                    SourceEvent::PauseGuest { .. } => coordinator.handle_pause_wanted(i).unwrap(),
                    SourceEvent::SyncDirtyLog { .. } => engine.dirty_log_synced(now).unwrap(),
                    SourceEvent::DeviceState => {
                        assert_eq!(i, 0, "only stream 0 carries device state");
                        // Framed into a buffer on the stack: no allocation.
                        let mut frame = [0u8; 64];
                        let n = engine.send_device_state(&[VCPU_STATE], &mut frame).unwrap();
                        out[i].extend_from_slice(&frame[..n]);
                    }
                    SourceEvent::Complete { digest, round } => {
                        coordinator.handle_complete(i, digest, round).unwrap()
                    }
                }
            }
        }
        while let Some(event) = coordinator.poll_event() {
            match event {
                CoreEvent::Decide(d) => engines.iter_mut().for_each(|e| e.decide(d).unwrap()),
                CoreEvent::PauseGuest { .. } => {
                    paused = true;
                    coordinator.handle_guest_paused(now).unwrap();
                }
                CoreEvent::GuestPaused => engines
                    .iter_mut()
                    .for_each(|e| e.guest_paused(now).unwrap()),
                CoreEvent::FinalRound(_) => {
                    for (i, bytes) in out.iter().enumerate() {
                        let mut dest = Applier::with_memory(VecMemory::new(PAGE, PAGES));
                        // Delivered in pieces of odd sizes.
                        let mut progress = Progress::InProgress;
                        for piece in bytes.chunks(1000 + 7 * i) {
                            progress = dest.feed(piece).unwrap();
                        }
                        assert_eq!(progress, Progress::Complete, "stream {i}");
                        let device: Vec<_> = dest.device_state().unwrap().collect();
                        let expected: &[DeviceState<'_>] = if i == 0 { &[VCPU_STATE] } else { &[] };
                        assert_eq!(device, expected, "stream {i}'s device state");
                        let shard = Shard::new(i as u8, engines.len() as u8).unwrap();
                        let (mut a, mut b) = (vec![0u8; PAGE], vec![0u8; PAGE]);
                        for range in shard.ranges(PAGES) {
                            for page in range {
                                memory.read_page(page, &mut a).unwrap();
                                dest.memory().read_page(page, &mut b).unwrap();
                                assert!(a == b, "stream {i}: page {page} differs");
                            }
                        }
                        coordinator.handle_verdict(i, true).unwrap();
                    }
                }
                CoreEvent::Done(report) => {
                    assert_eq!(report.live_rounds, 3);
                    for i in 0..engines.len() {
                        assert!(coordinator.digest(i).is_some());
                    }
                    return out;
                }
                CoreEvent::Failed(e) => panic!("the migration failed: {e}"),
                CoreEvent::RoundDone(_) | CoreEvent::Throttle(_) => {}
            }
        }
    }
    panic!("the migration did not complete in {MAX_POLLS} polls");
}

fn coordinator_config() -> CoordinatorConfig {
    CoordinatorConfig {
        policy: policy(),
        total_pages: PAGES,
        page_size: PAGE as u64,
        streams: usize::from(STREAMS),
    }
}

#[test]
fn caller_storage_sends_the_bytes_the_allocating_engines_send() {
    let layout = GuestLayout::flat(PAGE as u64, PAGES * PAGE as u64).unwrap();

    let mut memory = guest();
    let bitmap = Bitmap::new(layout);
    let mut engines: Vec<_> = (0..STREAMS)
        .map(|i| SourceEngine::new(&bitmap, config(i), 0).unwrap())
        .collect();
    let mut words = vec![0u64; coordinator_storage_words(usize::from(STREAMS))];
    let mut coordinator = CoordinatorCore::over(coordinator_config(), 0, &mut words[..]).unwrap();
    let owned = migrate(&mut memory, &bitmap, &mut engines, &mut coordinator);
    drop(engines);

    let mut memory = guest();
    let bitmap = Bitmap::new(layout);
    let needs = storage_needs(&layout, 64 * (PAGE + SLOT_OVERHEAD), usize::from(STREAMS)).unwrap();
    let mut storage: Vec<Vec<u64>> = (0..usize::from(STREAMS))
        .map(|i| {
            let words = source_storage_words(&layout, &config(i as u8)).unwrap();
            assert_eq!(words * 8, needs.source_bytes[i], "the sizing helper agrees");
            vec![0xdead_beef_u64; words]
        })
        .collect();
    let mut engines: Vec<_> = storage
        .iter_mut()
        .enumerate()
        .map(|(i, words)| SourceEngine::over(&bitmap, config(i as u8), &mut words[..], 0).unwrap())
        .collect();
    let mut words = vec![u64::MAX; coordinator_storage_words(usize::from(STREAMS))];
    let mut coordinator = CoordinatorCore::over(coordinator_config(), 0, &mut words[..]).unwrap();
    let caller = migrate(&mut memory, &bitmap, &mut engines, &mut coordinator);

    assert_eq!(owned.len(), caller.len());
    for (i, (a, b)) in owned.iter().zip(&caller).enumerate() {
        assert!(a.len() > PAGE, "stream {i} carries pages");
        assert!(
            a == b,
            "stream {i}: the caller-storage engine sent other bytes"
        );
    }
}

#[test]
fn missing_or_short_storage_is_a_typed_error() {
    let layout = GuestLayout::flat(PAGE as u64, PAGES * PAGE as u64).unwrap();
    let bitmap = Bitmap::new(layout);
    let needed = source_storage_words(&layout, &config(0)).unwrap();
    let mut words = vec![0u64; needed];
    let short = SourceEngine::over(&bitmap, config(0), &mut words[..needed - 1], 0);
    let Err(EngineError::StorageTooSmall {
        needed_bytes,
        got_bytes,
    }) = short
    else {
        panic!("one word short was accepted");
    };
    assert_eq!((needed_bytes, got_bytes), (needed * 8, needed * 8 - 8));
    let none = SourceEngine::over(&bitmap, config(0), &mut [][..], 0).unwrap_err();
    assert!(
        none.to_string().starts_with("no engine storage given"),
        "{none}"
    );
    // A page size other than the layout's is refused before the storage is looked at.
    let other = SourceConfig::new(8192);
    assert!(matches!(
        SourceEngine::over(&bitmap, other, &mut words[..], 0),
        Err(EngineError::PageSizeMismatch { .. })
    ));
    assert!(SourceEngine::over(&bitmap, config(0), &mut words[..], 0).is_ok());

    let mut few = [0u64; 2];
    assert_eq!(
        CoordinatorCore::over(coordinator_config(), 0, &mut few[..]).unwrap_err(),
        CoordinatorError::StorageTooSmall {
            needed_bytes: 72,
            got_bytes: 16
        }
    );
    assert!(storage_needs(&layout, 0, 0).is_err());
    assert!(storage_needs(&layout, 0, 256).is_err());
}

/// The core's queue of events is fixed: a call made while too many events wait is
/// refused and changes nothing; after polling, the same call goes through.
#[test]
fn the_core_refuses_calls_while_its_queue_is_full() {
    let config = CoordinatorConfig {
        streams: 1,
        ..coordinator_config()
    };
    let mut words = [0u64; 3];
    let mut core = CoordinatorCore::over(config, 0, &mut words[..]).unwrap();
    let round = |r| precopy::engine::StreamRound {
        round: r,
        pages_sent: 10,
        wire_bytes: 10 * PAGE as u64,
        dirty_pages: 100,
        codecs: Default::default(),
        deferred_pages: 0,
    };
    let mut r = 1;
    loop {
        let waiting = core.events_waiting();
        let result = core.handle_round_measured(0, round(r), false, r as u64 * 1_000_000);
        if waiting > 4 {
            assert!(
                matches!(result, Err(CoordinatorError::OutOfOrder { .. })),
                "{result:?}"
            );
            assert_eq!(
                core.events_waiting(),
                waiting,
                "a refused call queues nothing"
            );
            break;
        }
        result.unwrap();
        assert!(core.events_waiting() > waiting);
        r += 1;
        assert!(r < 10, "the queue never filled");
    }
    let mut decided = 0;
    while let Some(event) = core.poll_event() {
        decided += u32::from(matches!(event, CoreEvent::Decide(_)));
    }
    assert_eq!(decided, r - 1, "one decision per round measured");
    // The refused call changed nothing: it goes through now.
    core.handle_round_measured(0, round(r), false, r as u64 * 1_000_000)
        .unwrap();
    assert!(matches!(core.poll_event(), Some(CoreEvent::RoundDone(_))));
}
