//! Every hash covers every byte of a page, at every page size the layout takes (512 B
//! to 64 KiB): `codec::base_hash`, `MemoryDigest::update`, `digest_memory`, the
//! `hash_pages` of every backend (`VecMemory`, `AtomicMemory`, `FreshMemory` itself
//! and its whole and per-stream views) and the zero-page short cut behind them.
//!
//! A page differing from another in one byte only (its last, its first, one past each
//! 4 KiB boundary...) must hash differently, and every hash must equal an XXH3-64
//! computed here with xxhash-rust's streaming hasher (a different code path than the
//! one-shot hash the crate calls), so a hash of the first 4 KiB only, or a zero-page
//! test or zero-page hash looking at part of the page, fails.

use precopy::codec::base_hash;
use precopy::memory::{
    digest_memory, AtomicMemory, FreshMemory, MemoryDigest, PageMemory, VecMemory,
};

/// 512 B to 64 KiB.
const PAGE_SIZES: [usize; 8] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
/// Two 512-page chunks: stream 0 of two owns pages 0..512, stream 1 owns 512..1024.
const TOTAL: u64 = 1024;
/// A page of each stream.
const PAGES: [u64; 2] = [3, 515];

/// XXH3-64 of `bytes`, fed in odd-sized pieces through the streaming hasher.
fn reference(bytes: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for piece in bytes.chunks(1000) {
        h.update(piece);
    }
    h.digest()
}

/// A page no other page equals.
fn pattern(page_size: usize, seed: u64) -> Vec<u8> {
    (0..page_size)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed * 7 + 1) as u8)
        .collect()
}

/// Byte offsets to change one at a time: the ends, the middle, and both sides of every
/// 512-byte boundary (so of every 4 KiB one).
fn offsets(page_size: usize) -> Vec<usize> {
    let mut v = vec![0, 1, page_size / 2, page_size - 2, page_size - 1];
    for b in (512..page_size).step_by(512) {
        v.extend([b - 1, b]);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// `page` with byte `at` changed.
fn flipped(page: &[u8], at: usize) -> Vec<u8> {
    let mut p = page.to_vec();
    p[at] ^= 0x5a;
    p
}

#[test]
fn base_hash_and_memory_digest_cover_every_byte() {
    for ps in PAGE_SIZES {
        for base in [vec![0u8; ps], pattern(ps, 1)] {
            assert_eq!(base_hash(&base), reference(&base), "{ps} B: base_hash");
            let mut d = MemoryDigest::new();
            d.update(&base);
            let whole = d.finish();
            let mut by_hash = MemoryDigest::new();
            by_hash.update_hash(reference(&base));
            assert_eq!(whole, by_hash.finish(), "{ps} B: MemoryDigest::update");
            for at in offsets(ps) {
                let other = flipped(&base, at);
                assert_ne!(
                    base_hash(&base),
                    base_hash(&other),
                    "{ps} B page: base_hash ignores byte {at}"
                );
                assert_eq!(base_hash(&other), reference(&other), "{ps} B: byte {at}");
                let mut d = MemoryDigest::new();
                d.update(&other);
                assert_ne!(
                    d.finish(),
                    whole,
                    "{ps} B page: MemoryDigest::update ignores byte {at}"
                );
            }
        }
    }
}

/// On each page of `owned`: the hash of the page untouched and written as zero (the
/// zero-page short cut), then of every one-byte change of a zero page and of a
/// patterned page, from `hash_pages` against the reference, and (when `m` reaches all
/// of memory, `whole`) `digest_memory` against the all-zero memory's.
fn check_backend<M: PageMemory + ?Sized>(
    name: &str,
    m: &mut M,
    ps: usize,
    owned: &[u64],
    whole: bool,
) {
    let mut scratch = vec![0u8; ps];
    let zero = vec![0u8; ps];
    let hash_of = |m: &M, page: u64| {
        let mut h = [0u64; 1];
        let mut scratch = vec![0u8; ps];
        m.hash_pages(page, &mut h, &mut scratch).unwrap();
        h[0]
    };
    for &page in owned {
        // A page never written, then written as zero: the zero-page short cut.
        assert_eq!(
            hash_of(m, page),
            reference(&zero),
            "{name}, {ps} B: hash of an untouched zero page"
        );
        m.write_page(page, &zero).unwrap();
        assert_eq!(
            hash_of(m, page),
            reference(&zero),
            "{name}, {ps} B: hash of a zero page"
        );
        let digest = |m: &M, scratch: &mut [u8]| whole.then(|| digest_memory(m, scratch).unwrap());
        let zero_digest = digest(m, &mut scratch);
        for base in [zero.clone(), pattern(ps, page)] {
            for at in offsets(ps) {
                let other = flipped(&base, at);
                m.write_page(page, &other).unwrap();
                assert_eq!(
                    hash_of(m, page),
                    reference(&other),
                    "{name}, {ps} B page {page}: hash_pages ignores byte {at} (or the \
                     zero-page short cut does)"
                );
                // The digest reads all of memory: only the first and last byte.
                let ends = at == 0 || at == ps - 1;
                assert!(
                    !(whole && ends) || digest(m, &mut scratch) != zero_digest,
                    "{name}, {ps} B page {page}: digest_memory ignores byte {at}"
                );
            }
        }
        m.write_page(page, &zero).unwrap();
        assert_eq!(digest(m, &mut scratch), zero_digest);
    }
}

#[test]
fn every_backend_hashes_every_byte_of_a_page() {
    for ps in PAGE_SIZES {
        check_backend(
            "VecMemory",
            &mut VecMemory::new(ps, TOTAL),
            ps,
            &PAGES,
            true,
        );
        check_backend(
            "AtomicMemory",
            &mut AtomicMemory::new(ps, TOTAL),
            ps,
            &PAGES,
            true,
        );

        let mut fresh = FreshMemory::new(ps, TOTAL).unwrap();
        check_backend("FreshMemory", &mut fresh, ps, &PAGES, true);
        let mut fresh = FreshMemory::new(ps, TOTAL).unwrap();
        check_backend("FreshMemory::whole", &mut fresh.whole(), ps, &PAGES, true);
        let mut fresh = FreshMemory::new(ps, TOTAL).unwrap();
        for (i, view) in fresh.views(2).iter_mut().enumerate() {
            check_backend("FreshMemory::views", view, ps, &PAGES[i..=i], false);
        }
    }
}
