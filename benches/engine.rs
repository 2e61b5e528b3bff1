//! Engine and scheduler cost.
//!
//! - `engine_round/per_page`: one iterative round of the source engine over N dirty
//!   pages, read from a memory whose reads cost nothing and whose pages are all zero
//!   (the cheapest codec: a 512-byte zero check), divided by N.
//! - `engine_round/codec_only`: the same N zero checks alone. The difference between
//!   the two is the engine's own cost per dirty page (target: under 20 ns).
//! - `scheduler/round_done`: one scheduler step.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use precopy::bitmap::AtomicDirtyBitmap;
use precopy::codec::is_zero_page;
use precopy::engine::{Migration, MigrationEvent, SourceConfig};
use precopy::layout::GuestLayout;
use precopy::memory::{MemoryError, PageMemory};
use precopy::schedule::{Policy, RoundMeasurement, Scheduler};

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
            }))
        })
    });
}

criterion_group!(benches, engine_round, scheduler_step);
criterion_main!(benches);
