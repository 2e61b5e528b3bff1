//! Criterion benchmarks of the page codecs, each beside memcpy of the same pages.
//! `precopy bench codec` runs the same cases without criterion, with ratios.
//!
//! Like with like: memcpy and every codec write into a destination region as large as
//! the pages, page `i`'s output at page `i`'s place, and each throughput counts the
//! pages handled, except `delta_decode_5pct`, which counts the bytes it writes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use precopy::codec::{
    delta_apply, delta_encode, is_zero_page, lz4_decompress_page, lz4_max_output_len, Lz4Compressor,
};

use precopy::workload::pages as page_mix;

const PAGE: usize = 4096;
/// 2 MiB of pages: cache-resident, so this measures the codecs themselves; `precopy
/// bench codec` uses 64 MiB, from memory, and reports ratios to memcpy.
const PAGES: usize = 512;

/// Bytes a delta writes into its page: the sum of its changed runs (the format is
/// pairs of LEB128 lengths, unchanged then changed, each changed run's bytes after).
fn delta_written(delta: &[u8]) -> usize {
    let varint = |at: &mut usize| {
        let (mut v, mut shift) = (0usize, 0);
        loop {
            let b = delta[*at];
            *at += 1;
            v |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    };
    let (mut at, mut written) = (0, 0);
    while at < delta.len() {
        let _unchanged = varint(&mut at);
        let len = varint(&mut at);
        at += len;
        written += len;
    }
    written
}

fn codecs(c: &mut Criterion) {
    let mix = page_mix::pages(PAGES, PAGE, None, 1);
    let mut zero = black_box(vec![1u8; PAGES * PAGE]);
    zero.fill(0); // written, so not the kernel's shared zero page
    let new5 = page_mix::edited(&mix, PAGE, 5, 5);
    let new50 = page_mix::edited(&mix, PAGE, 50, 6);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes((PAGES * PAGE) as u64));
    let mut out = vec![0u8; lz4_max_output_len(PAGE)];
    // The destination region of every case: page `i`'s output at `dst[i * PAGE..]`,
    // with room at the end for an incompressible last block.
    let out_max = lz4_max_output_len(PAGE);
    let mut dst = vec![1u8; PAGES * PAGE + out_max];

    g.bench_function("memcpy", |b| {
        b.iter(|| {
            for (i, p) in mix.chunks_exact(PAGE).enumerate() {
                dst[i * PAGE..][..PAGE].copy_from_slice(black_box(p));
            }
            black_box(&mut dst);
        })
    });
    g.bench_function("zero_check", |b| {
        b.iter(|| {
            zero.chunks_exact(PAGE)
                .filter(|p| is_zero_page(black_box(p)))
                .count()
        })
    });
    let mut lz4 = Lz4Compressor::new();
    g.bench_function("lz4_compress", |b| {
        b.iter(|| {
            for (i, p) in mix.chunks_exact(PAGE).enumerate() {
                let out = &mut dst[i * PAGE..][..out_max];
                black_box(lz4.compress(black_box(p), out).unwrap());
            }
        })
    });
    let blocks: Vec<Vec<u8>> = mix
        .chunks_exact(PAGE)
        .map(|p| {
            let n = lz4.compress(p, &mut out).unwrap();
            out[..n].to_vec()
        })
        .collect();
    g.bench_function("lz4_decompress", |b| {
        b.iter(|| {
            for (page, block) in dst.chunks_exact_mut(PAGE).zip(&blocks) {
                lz4_decompress_page(black_box(block), page).unwrap();
            }
        })
    });
    for (name, new) in [("delta_encode_5pct", &new5), ("delta_encode_50pct", &new50)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let pairs = mix.chunks_exact(PAGE).zip(new.chunks_exact(PAGE));
                for (i, (o, n)) in pairs.enumerate() {
                    let out = &mut dst[i * PAGE..][..PAGE + 8];
                    black_box(delta_encode(o, black_box(n), out).unwrap());
                }
            })
        });
    }
    let deltas: Vec<Vec<u8>> = mix
        .chunks_exact(PAGE)
        .zip(new5.chunks_exact(PAGE))
        .map(|(o, n)| {
            let len = delta_encode(o, n, &mut out).unwrap().unwrap();
            out[..len].to_vec()
        })
        .collect();
    // Decoding writes only the changed runs, into pages that hold the base (reset
    // before every run, untimed): its throughput counts the bytes it writes.
    let written: usize = deltas.iter().map(|d| delta_written(d)).sum();
    g.throughput(Throughput::Bytes(written as u64));
    g.bench_function("delta_decode_5pct", |b| {
        b.iter_batched_ref(
            || mix.clone(),
            |targets| {
                for (t, d) in targets.chunks_exact_mut(PAGE).zip(&deltas) {
                    delta_apply(t, black_box(d)).unwrap();
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
