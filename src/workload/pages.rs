//! Page contents for the codec benchmarks (shared by `precopy bench codec` and
//! `benches/codec.rs`): text-like, structured, mostly-zero and random pages, and edits
//! of them. Deterministic: the same seed gives the same pages.

use std::vec;
use std::vec::Vec;

use super::Rng;

/// Word `w` of page `page` of a demo guest's memory before the migration (every
/// page that holds data; the simulator's default content too): a header word, then
/// text-like and counter words, compressible but not trivially (LZ4 about 15:1).
pub fn demo_word(page: u64, w: usize) -> u64 {
    match w % 8 {
        0 => page.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ page,
        1..=4 => u64::from_le_bytes(*b"precopy "),
        _ => (w as u64) << 32 | (page & 0xffff),
    }
}

/// Fills `out` (whole 8-byte words) with page `page`'s [`demo_word`]s.
pub fn demo_page(page: u64, out: &mut [u8]) {
    for (w, word) in out.chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&demo_word(page, w).to_le_bytes());
    }
}

/// Kinds of page in the realistic mix ([`mix_kind`], [`pages`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    /// Words from a small vocabulary: page cache of text files, logs.
    Text,
    /// Arrays of small integers and pointers sharing their high bits: heap objects.
    Structured,
    /// A zero page with a few non-zero words: a touched but mostly unused page.
    MostlyZero,
    /// Random bytes: encrypted or already-compressed data.
    Random,
}

/// What the realistic mix is made of, for the benchmark's text output.
pub const MIX_DESCRIPTION: &str = "40% text-like, 25% structured binary (small integers, \
pointers), 20% mostly-zero (a few non-zero words), 15% random";

/// Fills `page` with content of `kind`.
pub fn fill(page: &mut [u8], kind: PageKind, rng: &mut Rng) {
    const WORDS: [&str; 16] = [
        "the ",
        "guest ",
        "memory ",
        "page ",
        "of ",
        "kernel ",
        "a ",
        "to ",
        "and ",
        "migration ",
        "log: ",
        "error ",
        "in ",
        "0x7f3a ",
        "\n",
        "user ",
    ];
    match kind {
        PageKind::Text => {
            let mut at = 0;
            while at < page.len() {
                let w = WORDS[rng.index(WORDS.len())].as_bytes();
                let n = w.len().min(page.len() - at);
                page[at..at + n].copy_from_slice(&w[..n]);
                at += n;
            }
        }
        PageKind::Structured => {
            let base = 0x7f3a_0000_0000u64 + ((rng.next_u64() & 0xffff) << 12);
            for (i, w) in page.chunks_exact_mut(8).enumerate() {
                let v = match i % 4 {
                    0 => base + (rng.next_u64() & 0xfff8),
                    1 => rng.next_u64() & 0xff,
                    2 => i as u64,
                    _ => 0,
                };
                w.copy_from_slice(&v.to_le_bytes());
            }
        }
        PageKind::MostlyZero => {
            page.fill(0);
            for _ in 0..4 {
                let at = rng.index(page.len() / 8) * 8;
                page[at..at + 8].copy_from_slice(&rng.next_u64().to_le_bytes());
            }
        }
        PageKind::Random => page
            .chunks_exact_mut(8)
            .for_each(|w| w.copy_from_slice(&rng.next_u64().to_le_bytes())),
    }
}

/// The kind of page `i` in the realistic mix (see [`MIX_DESCRIPTION`]).
pub fn mix_kind(i: usize) -> PageKind {
    match i % 20 {
        0..=7 => PageKind::Text,
        8..=12 => PageKind::Structured,
        13..=16 => PageKind::MostlyZero,
        _ => PageKind::Random,
    }
}

/// `pages` pages of `page_size` bytes, all of `kind` or (None) the realistic mix.
pub fn pages(pages: usize, page_size: usize, kind: Option<PageKind>, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = vec![0u8; pages * page_size];
    for (i, page) in out.chunks_exact_mut(page_size).enumerate() {
        fill(page, kind.unwrap_or_else(|| mix_kind(i)), &mut rng);
    }
    out
}

/// A copy of `old` with about `percent`% of each page's bytes changed, in runs of 8 to
/// 64 bytes at random offsets (how guests dirty pages: fields, small structs, lines).
pub fn edited(old: &[u8], page_size: usize, percent: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut new = old.to_vec();
    for page in new.chunks_exact_mut(page_size) {
        let mut changed = 0;
        while changed * 100 < page_size * percent {
            let len = 8 + rng.index(57);
            let at = rng.index(page_size - len);
            page[at..at + len]
                .iter_mut()
                .for_each(|b| *b = b.wrapping_add(0x3b));
            changed += len;
        }
    }
    new
}
