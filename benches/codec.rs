//! Criterion benchmarks of the page codecs, each beside memcpy of the same pages.
//! `precopy bench codec` runs the same cases without criterion, with ratios.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use precopy::codec::{
    delta_apply, delta_encode, is_zero_page, lz4_decompress_page, lz4_max_output_len, Lz4Compressor,
};

use precopy::workload::pages as page_mix;

const PAGE: usize = 4096;
/// 2 MiB of pages: cache-resident, so this measures the codecs themselves; `precopy
/// bench codec` uses 64 MiB, from memory, and reports ratios to memcpy.
const PAGES: usize = 512;

fn codecs(c: &mut Criterion) {
    let mix = page_mix::pages(PAGES, PAGE, None, 1);
    let mut zero = black_box(vec![1u8; PAGES * PAGE]);
    zero.fill(0); // written, so not the kernel's shared zero page
    let new5 = page_mix::edited(&mix, PAGE, 5, 5);
    let new50 = page_mix::edited(&mix, PAGE, 50, 6);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes((PAGES * PAGE) as u64));
    let mut out = vec![0u8; lz4_max_output_len(PAGE)];

    g.bench_function("memcpy", |b| {
        b.iter(|| {
            for p in mix.chunks_exact(PAGE) {
                out[..PAGE].copy_from_slice(black_box(p));
                black_box(&mut out);
            }
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
            for p in mix.chunks_exact(PAGE) {
                black_box(lz4.compress(black_box(p), &mut out).unwrap());
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
    let mut page = vec![0u8; PAGE];
    g.bench_function("lz4_decompress", |b| {
        b.iter(|| {
            for block in &blocks {
                lz4_decompress_page(black_box(block), &mut page).unwrap();
            }
        })
    });
    for (name, new) in [("delta_encode_5pct", &new5), ("delta_encode_50pct", &new50)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for (o, n) in mix.chunks_exact(PAGE).zip(new.chunks_exact(PAGE)) {
                    black_box(delta_encode(o, black_box(n), &mut out).unwrap());
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
    let mut targets = mix.clone();
    g.bench_function("delta_decode_5pct", |b| {
        b.iter(|| {
            for (t, d) in targets.chunks_exact_mut(PAGE).zip(&deltas) {
                delta_apply(t, black_box(d)).unwrap();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
