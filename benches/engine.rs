//! Engine and scheduler cost.
//!
//! - `engine_round/per_page`: one iterative round of the source engine over N dirty
//!   pages, read from a memory whose reads cost nothing and whose pages are all zero
//!   (the cheapest codec: a 512-byte zero check), divided by N.
//! - `engine_round/codec_only`: the same N zero checks alone. The difference between
//!   the two is the engine's own cost per dirty page (target: under 20 ns).
//! - `engine_storage/{zero,delta}_{owned,caller}`: one iterative round of a bare
//!   `SourceEngine` (decided by hand, no coordinator) over N dirty pages, its state
//!   allocated by `SourceEngine::new` (`owned`) or carved out of caller words by
//!   `SourceEngine::over` (`caller`), per page: zero pages (read as a 512-byte fill),
//!   or pages that changed by one byte since the last round (delta-encoded against
//!   the cache, so the cache over words is on the path). Then the same rounds with
//!   the two engines alternating, fastest of 60 each, printed as
//!   `engine_storage/... A/B`: the comparison that holds on a loaded machine.
//!   Target: caller within 5% of owned.
//! - `scheduler/round_done`: one scheduler step.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use precopy::bitmap::AtomicDirtyBitmap;
use precopy::codec::is_zero_page;
use precopy::codec::{EncoderConfig, SLOT_OVERHEAD};
use precopy::engine::{
    source_storage_words, Migration, MigrationEvent, SourceConfig, SourceEngine, SourceEvent,
};
use precopy::layout::GuestLayout;
use precopy::memory::{MemoryError, PageMemory};
use precopy::schedule::{Decision, Policy, RoundMeasurement, Scheduler};

const PAGE: usize = 512;
const PAGES: u64 = 1 << 16;

/// Guest memory of zero pages whose reads copy nothing (the buffer stays zero).
struct FreeZeroMemory;

impl PageMemory for FreeZeroMemory {
    fn page_size(&self) -> usize {
        PAGE
    }
    fn total_pages(&self) -> u64 {
        PAGES
    }
    fn read_page(&self, _: u64, _: &mut [u8]) -> Result<(), MemoryError> {
        Ok(())
    }
    fn write_page(&mut self, _: u64, _: &[u8]) -> Result<(), MemoryError> {
        Ok(())
    }
}

fn engine_round(c: &mut Criterion) {
    let layout = GuestLayout::flat(PAGE as u64, PAGES * PAGE as u64).unwrap();
    let bitmap = AtomicDirtyBitmap::new(layout);
    let policy = Policy {
        downtime_limit_ns: 1,
        non_memory_downtime_ns: 0,
        max_rounds: u32::MAX,
        max_bytes_ratio: None,
        throttle: None,
        ..Policy::default()
    };
    let config = SourceConfig {
        defer_redirtied: false,
        // A round per call: the benchmark times whole rounds.
        max_pages_per_poll: u64::MAX,
        ..SourceConfig::new(PAGE)
    };
    let mut source = Migration::new(&bitmap, config, policy, 0).unwrap();
    let mut out = vec![0u8; 1 << 22];
    let mut now = 0;
    // Polls until the round in progress is done.
    let mut finish_round = move |source: &mut Migration<'_, _>| loop {
        now += 1_000;
        source
            .poll_transmit(&FreeZeroMemory, now, &mut out)
            .unwrap();
        if matches!(source.poll_event(), Some(MigrationEvent::RoundDone(_))) {
            break;
        }
    };
    // Run the bulk round once.
    bitmap.mark_page_range(0..PAGES).unwrap();
    finish_round(&mut source);
    let mut g = c.benchmark_group("engine_round");
    g.throughput(Throughput::Elements(PAGES));
    g.bench_function("per_page", |b| {
        b.iter_batched(
            || bitmap.mark_page_range(0..PAGES).unwrap(),
            |()| finish_round(&mut source),
            BatchSize::PerIteration,
        )
    });
    let zero = vec![0u8; PAGE];
    g.bench_function("codec_only", |b| {
        b.iter(|| {
            for _ in 0..PAGES {
                black_box(is_zero_page(black_box(&zero)));
            }
        })
    });
    g.finish();
}

/// Guest memory of zero pages whose reads write the zeros (the engine's page buffer
/// holds a page of another memory before).
struct ZeroMemory;

impl PageMemory for ZeroMemory {
    fn page_size(&self) -> usize {
        PAGE
    }
    fn total_pages(&self) -> u64 {
        PAGES
    }
    fn read_page(&self, _: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        buf.fill(0);
        Ok(())
    }
    fn write_page(&mut self, _: u64, _: &[u8]) -> Result<(), MemoryError> {
        Ok(())
    }
}

/// Guest memory whose every page is a pattern with one byte that changes each round
/// (`bump`): after the bulk round every page is sent as a 3-byte delta.
struct OneByteMemory {
    round: Cell<u8>,
}

impl PageMemory for OneByteMemory {
    fn page_size(&self) -> usize {
        PAGE
    }
    fn total_pages(&self) -> u64 {
        PAGES
    }
    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        buf.fill(page as u8 | 1);
        buf[(page % PAGE as u64) as usize] = self.round.get();
        Ok(())
    }
    fn write_page(&mut self, _: u64, _: &[u8]) -> Result<(), MemoryError> {
        Ok(())
    }
}

type Bitmap = AtomicDirtyBitmap<Box<[AtomicU64]>>;

/// Polls `engine` until its round in progress ends, then decides "continue".
fn run_round<S: AsRef<[u64]> + AsMut<[u64]>, M: PageMemory>(
    engine: &mut SourceEngine<'_, Box<[AtomicU64]>, S>,
    memory: &M,
    out: &mut [u8],
) {
    loop {
        engine.poll_transmit(memory, 0, out).unwrap();
        if let Some(SourceEvent::RoundMeasured(_)) = engine.poll_event() {
            engine
                .decide(Decision::Continue {
                    throttle_percent: 0,
                })
                .unwrap();
            return;
        }
    }
}

/// The fastest of `rounds` rounds of each engine, the two alternating round by round
/// (`before` runs before each pair).
fn fastest_rounds<S1, S2, M>(
    rounds: usize,
    a: (&mut SourceEngine<'_, Box<[AtomicU64]>, S1>, &Bitmap),
    b: (&mut SourceEngine<'_, Box<[AtomicU64]>, S2>, &Bitmap),
    memory: &M,
    before: &dyn Fn(),
    out: &mut [u8],
) -> (Duration, Duration)
where
    S1: AsRef<[u64]> + AsMut<[u64]>,
    S2: AsRef<[u64]> + AsMut<[u64]>,
    M: PageMemory,
{
    let (mut best_a, mut best_b) = (Duration::MAX, Duration::MAX);
    for i in 0..rounds {
        before();
        // Each goes first every other round: neither always finds the other's data in
        // the CPU caches.
        for second in [false, true] {
            if (i % 2 == 0) == second {
                a.1.mark_page_range(0..PAGES).unwrap();
                let t = Instant::now();
                run_round(a.0, memory, out);
                best_a = best_a.min(t.elapsed());
            } else {
                b.1.mark_page_range(0..PAGES).unwrap();
                let t = Instant::now();
                run_round(b.0, memory, out);
                best_b = best_b.min(t.elapsed());
            }
        }
    }
    (best_a, best_b)
}

fn engine_storage(c: &mut Criterion) {
    let layout = GuestLayout::flat(PAGE as u64, PAGES * PAGE as u64).unwrap();
    let config = SourceConfig {
        defer_redirtied: false,
        max_pages_per_poll: u64::MAX,
        encoder: EncoderConfig {
            // Every page of the guest fits: deltas on every later round.
            cache_bytes: PAGES as usize * (PAGE + SLOT_OVERHEAD),
            ..EncoderConfig::new(PAGE)
        },
        ..SourceConfig::new(PAGE)
    };
    let mut out = vec![0u8; 1 << 22];
    let zero = ZeroMemory;
    let delta = OneByteMemory {
        round: Cell::new(0),
    };
    // The two engines side by side, each over its own bitmap; only where their state
    // lives differs.
    let (owned_bitmap, caller_bitmap): (Bitmap, Bitmap) = (
        AtomicDirtyBitmap::new(layout),
        AtomicDirtyBitmap::new(layout),
    );
    let mut words = vec![0u64; source_storage_words(&layout, &config).unwrap()];
    let mut owned = SourceEngine::new(&owned_bitmap, config, 0).unwrap();
    let mut caller = SourceEngine::over(&caller_bitmap, config, &mut words[..], 0).unwrap();
    for bitmap in [&owned_bitmap, &caller_bitmap] {
        bitmap.mark_page_range(0..PAGES).unwrap();
    }
    run_round(&mut owned, &delta, &mut out);
    run_round(&mut caller, &delta, &mut out);

    // Criterion's view, owned and caller benched one after the other per memory.
    let mut g = c.benchmark_group("engine_storage");
    g.throughput(Throughput::Elements(PAGES));
    g.sample_size(20);
    macro_rules! bench {
        ($name:expr, $engine:expr, $bitmap:expr, $memory:expr, $bump:expr) => {
            g.bench_function($name, |b| {
                b.iter_batched(
                    || {
                        if $bump {
                            delta.round.set(delta.round.get().wrapping_add(1));
                        }
                        $bitmap.mark_page_range(0..PAGES).unwrap()
                    },
                    |()| run_round($engine, $memory, &mut out),
                    BatchSize::PerIteration,
                )
            });
        };
    }
    bench!("zero_owned", &mut owned, owned_bitmap, &zero, false);
    bench!("zero_caller", &mut caller, caller_bitmap, &zero, false);
    bench!("delta_owned", &mut owned, owned_bitmap, &delta, true);
    bench!("delta_caller", &mut caller, caller_bitmap, &delta, true);
    g.finish();

    // A load-robust comparison on a shared machine: rounds of the two engines
    // alternate, and each keeps its fastest round.
    const ROUNDS: usize = 60;
    let per_page = |d: Duration| d.as_nanos() as f64 / PAGES as f64;
    for (name, bump) in [("zero", false), ("delta", true)] {
        let bump_round = || {
            if bump {
                delta.round.set(delta.round.get().wrapping_add(1));
            }
        };
        let (best_owned, best_caller) = if bump {
            fastest_rounds(
                ROUNDS,
                (&mut owned, &owned_bitmap),
                (&mut caller, &caller_bitmap),
                &delta,
                &bump_round,
                &mut out,
            )
        } else {
            fastest_rounds(
                ROUNDS,
                (&mut owned, &owned_bitmap),
                (&mut caller, &caller_bitmap),
                &zero,
                &bump_round,
                &mut out,
            )
        };
        let (o, c) = (per_page(best_owned), per_page(best_caller));
        println!(
            "engine_storage/{name} A/B (fastest of {ROUNDS} alternating rounds): owned \
             {o:.1} ns/page, caller storage {c:.1} ns/page ({:+.1}%)",
            (c / o - 1.0) * 100.0
        );
    }
}

fn scheduler_step(c: &mut Criterion) {
    let mut s = Scheduler::new(
        Policy {
            max_rounds: u32::MAX,
            max_bytes_ratio: None,
            ..Policy::default()
        },
        1 << 20,
        4096,
        0,
    )
    .unwrap();
    let mut now = 0u64;
    c.bench_function("scheduler/round_done", |b| {
        b.iter(|| {
            now += 100_000_000;
            black_box(s.round_done(RoundMeasurement {
                now_ns: now,
                pages_sent: 100_000,
                wire_bytes: 100_000 * 4096,
                dirty_pages: black_box(100_000),
                pending_pages: 0,
            }))
        })
    });
}

criterion_group!(benches, engine_round, engine_storage, scheduler_step);
criterion_main!(benches);
