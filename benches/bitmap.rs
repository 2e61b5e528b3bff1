//! Criterion benchmarks of the dirty bitmap, ours against rust-vmm vm-memory's
//! `AtomicBitmap` on the same guest size. `precopy bench bitmap` prints the same cases
//! as ratios in one run; this is the statistically careful version. Both bitmaps are
//! cleared (or set) alike before every timed batch, so fresh marks are timed against
//! fresh marks and hot marks against hot marks.

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicU64;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use precopy::bitmap::{AtomicDirtyBitmap, DirtyPages};
use precopy::layout::GuestLayout;
use vm_memory::bitmap::AtomicBitmap;

const GUEST: u64 = 64 << 30;
const PAGE: u64 = 4096;
const PAGES: u64 = GUEST / PAGE;

type Ours = AtomicDirtyBitmap<Box<[AtomicU64]>>;

fn random(n: usize, below: u64, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        })
        .collect()
}

fn bitmaps() -> (Ours, AtomicBitmap) {
    let ours = Ours::new(GuestLayout::flat(PAGE, GUEST).unwrap());
    let peer = AtomicBitmap::new(GUEST as usize, NonZeroUsize::new(PAGE as usize).unwrap());
    (ours, peer)
}

/// `n` distinct pages below `below` in a scattered order (an odd stride modulo a power
/// of two visits each page once), so every mark into a cleared bitmap is a fresh one.
fn distinct(n: usize, below: u64, seed: u64) -> Vec<u64> {
    let span = below.next_power_of_two();
    let stride = (random(1, u64::MAX, seed)[0] | 1) & (span - 1);
    (0..span)
        .map(|i| i.wrapping_mul(stride) & (span - 1))
        .filter(|&p| p < below)
        .take(n)
        .collect()
}

fn clear(ours: &Ours, peer: &AtomicBitmap) {
    ours.harvest_to_vec(&mut Vec::new());
    peer.reset();
}

/// Marking, in two cases that are never mixed: fresh (every bit clear before its mark,
/// both bitmaps cleared alike before each batch) and hot (every bit already set on both
/// sides, so ours takes its test-before-set skip path and the peer its atomic `or`).
fn marking(c: &mut Criterion) {
    let (ours, peer) = bitmaps();
    let pages = distinct(1 << 16, PAGES, 1);
    let mut g = c.benchmark_group("mark_fresh_1t");
    g.bench_function("ours", |b| {
        b.iter_batched(
            || clear(&ours, &peer),
            |()| pages.iter().for_each(|&p| ours.mark(p).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("vm-memory", |b| {
        b.iter_batched(
            || clear(&ours, &peer),
            |()| pages.iter().for_each(|&p| peer.set_bit(p as usize)),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let set = || {
        clear(&ours, &peer);
        for &p in &pages {
            ours.mark(p).unwrap();
            peer.set_bit(p as usize);
        }
    };
    let mut g = c.benchmark_group("mark_hot_1t");
    g.bench_function("ours", |b| {
        b.iter_batched(
            set,
            |()| pages.iter().for_each(|&p| ours.mark(p).unwrap()),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("vm-memory", |b| {
        b.iter_batched(
            set,
            |()| pages.iter().for_each(|&p| peer.set_bit(p as usize)),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let starts = random(1 << 14, PAGES - 16, 2);
    let mut g = c.benchmark_group("mark_range_64k");
    g.bench_function("ours", |b| {
        b.iter_batched(
            || clear(&ours, &peer),
            |()| {
                starts
                    .iter()
                    .for_each(|&p| ours.mark_range(p * PAGE, 65536).unwrap())
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("vm-memory", |b| {
        b.iter_batched(
            || clear(&ours, &peer),
            |()| {
                starts
                    .iter()
                    .for_each(|&p| peer.set_addr_range((p * PAGE) as usize, 65536))
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn harvesting(c: &mut Criterion) {
    for (name, one_in) in [("harvest_sparse", 100), ("harvest_dense", 2)] {
        let (ours, peer) = bitmaps();
        let dirty: Vec<u64> = random((PAGES / one_in) as usize, PAGES, 3);
        let mut list = Vec::with_capacity(dirty.len());
        let mut g = c.benchmark_group(name);
        g.sample_size(20);
        g.bench_function("ours", |b| {
            b.iter_batched(
                || dirty.iter().for_each(|&p| ours.mark(p).unwrap()),
                |()| {
                    list.clear();
                    black_box(ours.harvest_to_vec(&mut list));
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("vm-memory", |b| {
            b.iter_batched(
                || dirty.iter().for_each(|&p| peer.set_bit(p as usize)),
                |()| {
                    list.clear();
                    list.extend(DirtyPages::new(&peer.get_and_reset(), 0));
                    black_box(list.len());
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, marking, harvesting);
criterion_main!(benches);
