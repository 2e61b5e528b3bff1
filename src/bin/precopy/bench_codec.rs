//! `precopy bench codec`: every codec against memcpy of the same pages, in one run.

use std::time::Duration;

use precopy::codec::Encoding;
use precopy::codec::{
    delta_apply, delta_encode, is_zero_page, lz4_decompress_page, lz4_max_output_len, Lz4Compressor,
};
use precopy::wire::{seal_page_frame, PAGE_PAYLOAD_OFFSET};

use crate::report::best_of_with_setup;
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

/// One case: our throughput and memcpy's on the same pages.
struct Case {
    case: &'static str,
    gbps: f64,
    baseline_gbps: f64,
}

impl Case {
    fn print(&self, json: bool) {
        if json {
            println!(
                "{{\"case\": \"{}\", \"gbps\": {:.3}, \"baseline\": \"memcpy\", \"baseline_gbps\": {:.3}}}",
                self.case, self.gbps, self.baseline_gbps
            );
        } else {
            println!(
                "{:<28} {:>8.2} GB/s   memcpy {:>8.2} GB/s   ratio {:>5.2}x",
                self.case,
                self.gbps,
                self.baseline_gbps,
                self.gbps / self.baseline_gbps
            );
        }
    }
}

fn gbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64().max(1e-12) / 1e9
}

/// memcpy of every page of `pages` to a buffer of the same size (the copy a source
/// makes of a page before encoding it).
fn memcpy_gbps(pages: &[u8], reps: usize) -> f64 {
    let mut copy = vec![1u8; pages.len()];
    let t = best_of_with_setup(
        reps,
        || (),
        |()| {
            for (dst, src) in copy.chunks_exact_mut(PAGE).zip(pages.chunks_exact(PAGE)) {
                dst.copy_from_slice(std::hint::black_box(src));
            }
            std::hint::black_box(&mut copy);
        },
    );
    gbps(pages.len(), t)
}

/// Times `f` over all pages of `pages` and pairs it with memcpy of the same pages.
fn case(case: &'static str, pages: &[u8], reps: usize, mut f: impl FnMut(usize, &[u8])) -> Case {
    let baseline_gbps = memcpy_gbps(pages, reps);
    let t = best_of_with_setup(
        reps,
        || (),
        |()| {
            for (i, p) in pages.chunks_exact(PAGE).enumerate() {
                f(i, std::hint::black_box(p));
            }
        },
    );
    Case {
        case,
        gbps: gbps(pages.len(), t),
        baseline_gbps,
    }
}

/// LZ4 blocks of every page of `pages`, for the decompression cases.
fn compressed(pages: &[u8]) -> Vec<Vec<u8>> {
    let mut lz4 = Lz4Compressor::new();
    let mut out = vec![0u8; lz4_max_output_len(PAGE)];
    pages
        .chunks_exact(PAGE)
        .map(|p| {
            let n = lz4.compress(p, &mut out).expect("room");
            out[..n].to_vec()
        })
        .collect()
}

/// Deltas of `new` against `old`, page by page.
fn deltas(old: &[u8], new: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; PAGE + 8];
    old.chunks_exact(PAGE)
        .zip(new.chunks_exact(PAGE))
        .map(|(o, n)| {
            let len = delta_encode(o, n, &mut out).expect("pages").expect("fits");
            out[..len].to_vec()
        })
        .collect()
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.pages == 0 || args.pages > 1 << 20 {
        return Err(format!(
            "--pages {} is out of range (1..=1048576)",
            args.pages
        ));
    }
    let (n, reps) = (args.pages, args.reps);
    // Written, not just allocated: a fresh allocation maps every page to the kernel's
    // one shared zero page, which would be read from cache.
    let mut zero = std::hint::black_box(vec![1u8; n * PAGE]);
    zero.fill(0);
    let mix = page_mix::pages(n, PAGE, None, 1);
    let text = page_mix::pages(n, PAGE, Some(PageKind::Text), 2);
    let mostly_zero = page_mix::pages(n, PAGE, Some(PageKind::MostlyZero), 3);
    let old = page_mix::pages(n, PAGE, None, 4);
    let new5 = page_mix::edited(&old, PAGE, 5, 5);
    let new50 = page_mix::edited(&old, PAGE, 50, 6);
    let deltas5 = deltas(&old, &new5);

    let mut lz4 = Lz4Compressor::new();
    let mut out = vec![0u8; lz4_max_output_len(PAGE)];
    let mut frame = vec![0u8; PAGE_PAYLOAD_OFFSET + lz4_max_output_len(PAGE)];
    let mut page = vec![0u8; PAGE];
    let mut zeros = 0usize;
    let mut cases = vec![case("zero_check", &zero, reps, |_, p| {
        zeros += usize::from(is_zero_page(p));
    })];
    assert_eq!(zeros % n, 0, "zero pages not seen as zero");
    cases.push(case("lz4_compress", &mix, reps, |_, p| {
        std::hint::black_box(lz4.compress(p, &mut out).expect("room"));
    }));
    cases.push(case("lz4_flex_compress_direct", &mix, reps, |_, p| {
        std::hint::black_box(lz4_flex::block::compress_into(p, &mut out).expect("room"));
    }));
    // Our whole per-page path: LZ4 into the frame buffer, then the frame header and
    // CRC-32 written in front of it (no copy of the payload).
    cases.push(case("lz4_compress_framed", &mix, reps, |i, p| {
        let len = lz4
            .compress(p, &mut frame[PAGE_PAYLOAD_OFFSET..])
            .expect("room");
        let (encoding, len) = if len <= PAGE {
            (Encoding::Lz4, len)
        } else {
            frame[PAGE_PAYLOAD_OFFSET..][..PAGE].copy_from_slice(p);
            (Encoding::Raw, PAGE)
        };
        let sealed = seal_page_frame(&mut frame, PAGE, i as u64, encoding, 0, len);
        std::hint::black_box(sealed.expect("room"));
    }));
    for (name, pages) in [
        ("lz4_decompress", &mix),
        ("lz4_decompress_text", &text),
        ("lz4_decompress_mostly_zero", &mostly_zero),
    ] {
        let blocks = compressed(pages);
        cases.push(case(name, pages, reps, |i, _| {
            lz4_decompress_page(&blocks[i], &mut page).expect("own block");
        }));
    }
    for (name, new) in [("delta_encode_5pct", &new5), ("delta_encode_50pct", &new50)] {
        let mut out = vec![0u8; PAGE + 8];
        cases.push(case(name, new, reps, |i, p| {
            let o = &old[i * PAGE..(i + 1) * PAGE];
            std::hint::black_box(delta_encode(o, p, &mut out).expect("pages"));
        }));
    }
    // Decoding is idempotent (it writes the new bytes), so it runs in place on pages
    // that already hold the base, without resetting them between repetitions.
    let mut targets = old.clone();
    cases.push(case("delta_decode_5pct", &new5, reps, |i, _| {
        let t = &mut targets[i * PAGE..(i + 1) * PAGE];
        delta_apply(t, &deltas5[i]).expect("own delta");
    }));
    assert_eq!(targets, new5, "delta decode did not rebuild the pages");

    if !args.json {
        println!(
            "precopy bench codec: {n} pages of 4 KiB per case, best of {reps}, one core\n\
             page mix (lz4_compress, lz4_decompress, delta bases): {MIX_DESCRIPTION}\n\
             delta edits: runs of 8-64 bytes at random offsets covering 5% / 50% of each page"
        );
    }
    for c in &cases {
        c.print(args.json);
    }
    Ok(())
}
