//! Measurements the runtime feeds into the policy before a migration starts.

use std::time::Instant;
use std::vec;
use std::vec::Vec;

use crate::memory::MemoryDigest;
use crate::memory::PageMemory;

/// Estimated time, ns, for the end-to-end digest the final round computes over all of
/// `memory` with the guest paused: on the source, hashing every page read through
/// [`PageMemory::hash_pages`] (in parallel where the memory supports it); on the
/// destination, folding the page hashes it kept as it wrote them
/// ([`FreshMemory`](crate::memory::FreshMemory)).
/// Extrapolated from doing both for up to `sample_pages` pages now. This is part of
/// the downtime that is not the dirty pages: add it to the policy's
/// `non_memory_downtime_ns` so the prediction counts it.
pub fn digest_downtime_ns<M: PageMemory + ?Sized>(memory: &M, sample_pages: u64) -> u64 {
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
    // Source side.
    let Some(source_ns) = best(&mut || memory.hash_pages(0, &mut hashes, &mut scratch).is_ok())
    else {
        return 0;
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
        let small = digest_downtime_ns(&VecMemory::new(4096, 256), 256);
        let large = digest_downtime_ns(&VecMemory::new(4096, 256 * 64), 256);
        assert!(small > 0);
        assert!(large > 8 * small, "{small} ns vs {large} ns");
    }
}
