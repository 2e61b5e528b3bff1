//! `precopy bench codec`: every codec against memcpy of the same pages, in one run.
//!
//! Like with like: every case reads its input from memory much larger than the caches
//! and writes its output into the same 64 MiB destination region, page by page at each
//! page's place, that the memcpy baseline of the same case writes. Each line says what
//! the case reads and writes and which bytes its GB/s counts.

use std::time::{Duration, Instant};

use precopy::codec::Encoding;
use precopy::codec::{
    delta_apply, delta_encode, is_zero_page, lz4_decompress_page, lz4_max_output_len, Lz4Compressor,
};
use precopy::wire::{seal_page_frame, PAGE_PAYLOAD_OFFSET};

use precopy::workload::pages::{self as page_mix, PageKind, MIX_DESCRIPTION};

/// Options of `precopy bench codec`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object per case.
    #[arg(long)]
    json: bool,
    /// Pages per case (4 KiB each); the default, 64 MiB, is twice the L3 cache of
    /// the reference machine, so pages come from memory as in a real migration.
    #[arg(long, default_value_t = 16384)]
    pages: usize,
    /// Timed repetitions per case (the fastest is reported).
    #[arg(long, default_value_t = 7)]
    reps: usize,
}

const PAGE: usize = 4096;
const MIB: f64 = (1 << 20) as f64;

/// One case: our throughput and memcpy's on the same pages, and what the case moves.
struct Case {
    case: &'static str,
    gbps: f64,
    baseline_gbps: f64,
    moves: String,
}

impl Case {
    fn print(&self, json: bool) {
        if json {
            println!(
                "{{\"case\": \"{}\", \"gbps\": {:.3}, \"baseline\": \"memcpy\", \"baseline_gbps\": {:.3}, \"moves\": \"{}\"}}",
                self.case, self.gbps, self.baseline_gbps, self.moves
            );
        } else {
            println!(
                "{:<28} {:>8.2} GB/s   memcpy {:>8.2} GB/s   ratio {:>5.2}x   {}",
                self.case,
                self.gbps,
                self.baseline_gbps,
                self.gbps / self.baseline_gbps,
                self.moves
            );
        }
    }
}

fn gbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64().max(1e-12) / 1e9
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// The fastest of `reps` timed runs (after one untimed) of `f` over every page of
/// `src`, each run after `setup` has prepared the destination region `dst`.
fn best_of(
    reps: usize,
    src: &[u8],
    dst: &mut [u8],
    mut setup: impl FnMut(&mut [u8]),
    mut f: impl FnMut(usize, &[u8], &mut [u8]),
) -> Duration {
    // Invariant: reps.max(1) + 1 runs, one skipped, so min() has a value.
    (0..=reps.max(1))
        .map(|_| {
            setup(dst);
            let t = Instant::now();
            for (i, p) in src.chunks_exact(PAGE).enumerate() {
                f(i, std::hint::black_box(p), dst);
            }
            std::hint::black_box(&mut *dst);
            t.elapsed()
        })
        .skip(1)
        .min()
        .expect("at least one repetition")
}

/// memcpy of every page of `pages` to its place in `dst` (the copy a source makes of
/// a page before encoding it, or a destination makes of a raw page): the baseline
/// reads and writes `pages.len()` bytes and its GB/s counts them once.
fn memcpy_gbps(pages: &[u8], dst: &mut [u8], reps: usize) -> f64 {
    let t = best_of(
        reps,
        pages,
        dst,
        |_| (),
        |i, src, dst| dst[i * PAGE..][..PAGE].copy_from_slice(src),
    );
    gbps(pages.len(), t)
}

/// Times `f(i, page i of src, dst)` over all pages of `src`, counting `bytes` per run,
/// and pairs it with memcpy of `src` into the same destination region `dst`.
#[allow(clippy::too_many_arguments)]
fn case(
    case: &'static str,
    src: &[u8],
    dst: &mut [u8],
    bytes: usize,
    moves: String,
    reps: usize,
    setup: impl FnMut(&mut [u8]),
    f: impl FnMut(usize, &[u8], &mut [u8]),
) -> Case {
    let baseline_gbps = memcpy_gbps(src, dst, reps);
    let t = best_of(reps, src, dst, setup, f);
    Case {
        case,
        gbps: gbps(bytes, t),
        baseline_gbps,
        moves,
    }
}

/// A receive buffer: encoded pages back to back, as they arrive off a link.
struct Packed {
    data: Vec<u8>,
    /// Start of page `i`'s encoding; `at[i + 1]` is its end.
    at: Vec<usize>,
}

impl Packed {
    fn new(blocks: impl Iterator<Item = Vec<u8>>) -> Self {
        let (mut data, mut at) = (Vec::new(), vec![0]);
        for b in blocks {
            data.extend_from_slice(&b);
            at.push(data.len());
        }
        Packed { data, at }
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.data[self.at[i]..self.at[i + 1]]
    }
}

/// LZ4 blocks of every page of `pages`, for the decompression cases.
fn compressed(pages: &[u8]) -> Packed {
    let mut lz4 = Lz4Compressor::new();
    let mut out = vec![0u8; lz4_max_output_len(PAGE)];
    Packed::new(pages.chunks_exact(PAGE).map(|p| {
        // Invariant: the benchmark's own pages and buffers, sized for the worst case.
        let n = lz4.compress(p, &mut out).expect("room");
        out[..n].to_vec()
    }))
}

/// Deltas of `new` against `old`, page by page.
fn deltas(old: &[u8], new: &[u8]) -> Packed {
    let mut out = vec![0u8; PAGE + 8];
    Packed::new(
        old.chunks_exact(PAGE)
            .zip(new.chunks_exact(PAGE))
            .map(|(o, n)| {
                // Invariant: the benchmark's own pages and buffers, sized for the worst case.
                let len = delta_encode(o, n, &mut out).expect("pages").expect("fits");
                out[..len].to_vec()
            }),
    )
}

/// LEB128, as the delta format writes its run lengths.
fn varint(data: &[u8], at: &mut usize) -> usize {
    let (mut v, mut shift) = (0usize, 0);
    loop {
        let b = data[*at];
        *at += 1;
        v |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// Bytes a delta writes into its page: the sum of its changed runs.
fn delta_written(delta: &[u8]) -> usize {
    let (mut at, mut written) = (0, 0);
    while at < delta.len() {
        let _unchanged = varint(delta, &mut at);
        let len = varint(delta, &mut at);
        at += len;
        written += len;
    }
    written
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.pages == 0 || args.pages > 1 << 20 {
        return Err(format!(
            "--pages {} is out of range (1..=1048576)",
            args.pages
        ));
    }
    let (n, reps) = (args.pages, args.reps);
    let size = n * PAGE;
    let all = mib(size);
    // Written, not just allocated: a fresh allocation maps every page to the kernel's
    // one shared zero page, which would be read from cache.
    let mut zero = std::hint::black_box(vec![1u8; size]);
    zero.fill(0);
    // The destination region of every case and of its memcpy baseline: page `i` of a
    // case's output goes to `dst[i * PAGE..]`. Slack at the end for an encoding that
    // runs past its page's place (an incompressible block, a frame header).
    let slack = PAGE_PAYLOAD_OFFSET + lz4_max_output_len(PAGE);
    let mut dst = std::hint::black_box(vec![1u8; size + slack]);
    let mix = page_mix::pages(n, PAGE, None, 1);
    let text = page_mix::pages(n, PAGE, Some(PageKind::Text), 2);
    let mostly_zero = page_mix::pages(n, PAGE, Some(PageKind::MostlyZero), 3);
    let old = page_mix::pages(n, PAGE, None, 4);
    let new5 = page_mix::edited(&old, PAGE, 5, 5);
    let new50 = page_mix::edited(&old, PAGE, 50, 6);
    let deltas5 = deltas(&old, &new5);

    let mut lz4 = Lz4Compressor::new();
    let out_max = lz4_max_output_len(PAGE);
    let mut zeros = 0usize;
    let mut cases = vec![case(
        "zero_check",
        &zero,
        &mut dst,
        size,
        format!("reads {all} of zero pages, writes nothing; counts {all}"),
        reps,
        |_| (),
        |_, p, _| zeros += usize::from(is_zero_page(p)),
    )];
    assert_eq!(zeros % n, 0, "zero pages not seen as zero");
    let mix_blocks = compressed(&mix);
    let lz4_moves = format!(
        "reads {all} of pages, writes {} of blocks, each at its page's place in {all}; counts {all}",
        mib(mix_blocks.data.len())
    );
    cases.push(case(
        "lz4_compress",
        &mix,
        &mut dst,
        size,
        lz4_moves.clone(),
        reps,
        |_| (),
        |i, p, dst| {
            let out = &mut dst[i * PAGE..][..out_max];
            // Invariant: the benchmark's own pages and buffers, sized for the worst case.
            std::hint::black_box(lz4.compress(p, out).expect("room"));
        },
    ));
    cases.push(case(
        "lz4_flex_compress_direct",
        &mix,
        &mut dst,
        size,
        lz4_moves,
        reps,
        |_| (),
        |i, p, dst| {
            let out = &mut dst[i * PAGE..][..out_max];
            // Invariant: the benchmark's own pages and buffers, sized for the worst case.
            std::hint::black_box(lz4_flex::block::compress_into(p, out).expect("room"));
        },
    ));
    // Our whole per-page path: LZ4 into the frame's payload, then the frame header and
    // CRC-32 written in front of it (no copy of the payload).
    cases.push(case(
        "lz4_compress_framed",
        &mix,
        &mut dst,
        size,
        format!(
            "reads {all} of pages, writes frames (about {}) at each page's place in {all}; counts {all}",
            mib(mix_blocks.data.len() + n * PAGE_PAYLOAD_OFFSET)
        ),
        reps,
        |_| (),
        |i, p, dst| {
            let frame = &mut dst[i * PAGE..][..slack];
            // Invariant: the benchmark's own pages and buffers, sized for the worst case.
            let len = lz4
                .compress(p, &mut frame[PAGE_PAYLOAD_OFFSET..])
                .expect("room");
            let (encoding, len) = if len <= PAGE {
                (Encoding::Lz4, len)
            } else {
                frame[PAGE_PAYLOAD_OFFSET..][..PAGE].copy_from_slice(p);
                (Encoding::Raw, PAGE)
            };
            let sealed = seal_page_frame(frame, PAGE, i as u64, encoding, 0, len);
            // Invariant: the benchmark's own pages and buffers, sized for the worst case.
            std::hint::black_box(sealed.expect("room"));
        },
    ));
    for (name, pages) in [
        ("lz4_decompress", &mix),
        ("lz4_decompress_text", &text),
        ("lz4_decompress_mostly_zero", &mostly_zero),
    ] {
        let blocks = compressed(pages);
        cases.push(case(
            name,
            pages,
            &mut dst,
            size,
            format!(
                "reads {} of blocks, writes {all} page by page; counts {all}",
                mib(blocks.data.len())
            ),
            reps,
            |_| (),
            |i, _, dst| {
                let page = &mut dst[i * PAGE..][..PAGE];
                // Invariant: the benchmark's own pages and buffers, sized for the worst case.
                lz4_decompress_page(blocks.get(i), page).expect("own block");
            },
        ));
        assert!(dst[..size] == pages[..], "{name} did not rebuild the pages");
    }
    for (name, new) in [("delta_encode_5pct", &new5), ("delta_encode_50pct", &new50)] {
        let encoded = deltas(&old, new);
        cases.push(case(
            name,
            new,
            &mut dst,
            size,
            format!(
                "reads {all} of pages and {all} of bases, writes {} of deltas at each page's place; counts {all}",
                mib(encoded.data.len())
            ),
            reps,
            |_| (),
            |i, p, dst| {
                let o = &old[i * PAGE..][..PAGE];
                let out = &mut dst[i * PAGE..][..PAGE + 8];
                // Invariant: the benchmark's own pages and buffers, sized for the worst case.
                std::hint::black_box(delta_encode(o, p, out).expect("pages"));
            },
        ));
    }
    // Decoding writes only the changed runs, in place, into pages that hold the base
    // (reset before every run, as is the baseline's region by its previous run): its
    // GB/s counts the bytes it writes, as memcpy's counts the bytes it copies.
    let written: usize = (0..n).map(|i| delta_written(deltas5.get(i))).sum();
    cases.push(case(
        "delta_decode_5pct",
        &new5,
        &mut dst,
        written,
        format!(
            "reads {} of deltas, writes {} ({:.1}% of {all}) in place; counts {}",
            mib(deltas5.data.len()),
            mib(written),
            100.0 * written as f64 / size as f64,
            mib(written)
        ),
        reps,
        |dst| dst[..size].copy_from_slice(&old),
        |i, _, dst| {
            let t = &mut dst[i * PAGE..][..PAGE];
            // Invariant: the benchmark's own pages and buffers, sized for the worst case.
            delta_apply(t, deltas5.get(i)).expect("own delta");
        },
    ));
    assert!(
        dst[..size] == new5[..],
        "delta decode did not rebuild the pages"
    );

    if !args.json {
        println!(
            "precopy bench codec: {n} pages of 4 KiB per case, best of {reps}, one core\n\
             page mix (lz4_compress, lz4_decompress, delta bases): {MIX_DESCRIPTION}\n\
             delta edits: runs of 8-64 bytes at random offsets covering 5% / 50% of each page\n\
             every case and its memcpy baseline write into the same {all} destination region,\n\
             page i at page i's place; memcpy copies the case's {all} of pages there"
        );
    }
    for c in &cases {
        c.print(args.json);
    }
    Ok(())
}
