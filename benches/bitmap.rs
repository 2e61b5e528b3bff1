//! Criterion benchmarks of the dirty bitmap, ours against rust-vmm vm-memory's
//! `AtomicBitmap` on the same guest size. `precopy bench bitmap` prints the same cases
//! as ratios in one run; this is the statistically careful version.

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

fn marking(c: &mut Criterion) {
    let (ours, peer) = bitmaps();
    let pages = random(1 << 16, PAGES, 1);
    let mut g = c.benchmark_group("mark_page_1t");
    g.bench_function("ours", |b| {
        b.iter(|| pages.iter().for_each(|&p| ours.mark(p).unwrap()))
    });
    g.bench_function("vm-memory", |b| {
        b.iter(|| pages.iter().for_each(|&p| peer.set_bit(p as usize)))
    });
    g.finish();

    let starts = random(1 << 14, PAGES - 16, 2);
    let mut g = c.benchmark_group("mark_range_64k");
    g.bench_function("ours", |b| {
        b.iter(|| {
            starts
                .iter()
                .for_each(|&p| ours.mark_range(p * PAGE, 65536).unwrap())
        })
    });
    g.bench_function("vm-memory", |b| {
        b.iter(|| {
            starts
                .iter()
                .for_each(|&p| peer.set_addr_range((p * PAGE) as usize, 65536))
        })
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
