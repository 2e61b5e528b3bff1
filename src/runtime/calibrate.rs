//! Measurements the runtime feeds into the policy before a migration starts.

use std::time::Instant;
use std::vec;
use std::vec::Vec;

use crate::engine::Verify;
use crate::memory::MemoryDigest;
use crate::memory::PageMemory;

/// Estimated time, ns, for the end-to-end check that runs with the guest paused, after
/// the final round's pages, in mode `verify`:
///
/// - [`Verify::AfterResume`]: the source folds the page hashes it kept as it sent
///   ([`MemoryDigest::update_hashes`]), the destination folds those it kept as it
///   wrote ([`FreshMemory`](crate::memory::FreshMemory));
///   no memory is read. The source's re-read of its memory runs after the
///   destination resumed and is not counted.
/// - [`Verify::InDowntime`]: the source hashes every page read through
///   [`PageMemory::hash_pages`] (in parallel where the memory supports it), then the
///   destination folds.
///
/// Extrapolated from doing that for up to `sample_pages` pages now. This is part of
/// the downtime that is not the dirty pages: add it to the policy's
/// `non_memory_downtime_ns` so the prediction counts it.
pub fn digest_downtime_ns<M: PageMemory + ?Sized>(
    memory: &M,
    sample_pages: u64,
    verify: Verify,
) -> u64 {
    let total = memory.total_pages();
    let page_size = memory.page_size();
    let sample = sample_pages.clamp(1, total.max(1)).min(total);
    if sample == 0 {
        return 0;
    }
    let mut scratch = vec![0u8; page_size];
    let mut hashes = vec![0u64; sample as usize];
    // Best of three: the first pass also starts the thread pool and maps pages.
    let best = |f: &mut dyn FnMut() -> bool| -> Option<f64> {
        (0..3)
            .map(|_| {
                let start = Instant::now();
                f().then(|| start.elapsed().as_nanos() as f64)
            })
            .collect::<Option<Vec<f64>>>()
            .map(|t| t.into_iter().fold(f64::MAX, f64::min))
    };
    // Source side: a re-read, or a fold of the kept hashes.
    let source_ns = match verify {
        Verify::InDowntime => {
            match best(&mut || memory.hash_pages(0, &mut hashes, &mut scratch).is_ok()) {
                Some(ns) => ns,
                None => return 0,
            }
        }
        Verify::AfterResume => best(&mut || {
            let mut digest = MemoryDigest::new();
            digest.update_hashes(&hashes);
            std::hint::black_box(digest.finish());
            true
        })
        .unwrap_or(0.0),
    };
    // Destination side: folding kept hashes.
    let destination_ns = best(&mut || {
        let mut digest = MemoryDigest::new();
        hashes.iter().for_each(|&h| digest.update_hash(h));
        std::hint::black_box(digest.finish());
        true
    })
    .unwrap_or(0.0);
    ((source_ns + destination_ns) * total as f64 / sample as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::VecMemory;

    #[test]
    fn grows_with_memory_size() {
        let full =
            |pages| digest_downtime_ns(&VecMemory::new(4096, pages), 256, Verify::InDowntime);
        // The estimate is the sample's time times 64 for the large memory; one sample
        // slowed by a busy machine can hide that, so measure again (until a deadline
        // that holds on a loaded machine) until the large estimate clears 8x the small.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut tries = Vec::new();
        loop {
            let (small, large) = (full(256), full(256 * 64));
            assert!(small > 0);
            if large > 8 * small {
                break;
            }
            tries.push((small, large));
            assert!(
                std::time::Instant::now() < deadline,
                "for 30 s the estimate for 64x the memory stayed under 8x the small one \
                 (small ns, large ns): {tries:?}"
            );
        }
    }
}
