//! Measurements the runtime feeds into the policy before a migration starts.

use std::time::Instant;
use std::vec;

use crate::memory::PageMemory;
use crate::wire::MemoryDigest;

/// Estimated time, ns, for the end-to-end digest the final round computes over all of
/// `memory` (once on the source, once on the destination, both with the guest
/// paused), extrapolated from digesting up to `sample_pages` pages now. This is part
/// of the downtime that is not the dirty pages: add it to the policy's
/// `non_memory_downtime_ns` so the prediction counts it.
pub fn digest_downtime_ns<M: PageMemory + ?Sized>(memory: &M, sample_pages: u64) -> u64 {
    let total = memory.total_pages();
    let sample = sample_pages.clamp(1, total.max(1));
    let mut buf = vec![0u8; memory.page_size()];
    let mut digest = MemoryDigest::new();
    let start = Instant::now();
    for page in 0..sample.min(total) {
        if memory.read_page(page, &mut buf).is_err() {
            break;
        }
        digest.update(&buf);
    }
    core::hint::black_box(digest.finish());
    let per_page = start.elapsed().as_nanos() as f64 / sample as f64;
    // Both sides digest all of memory.
    (2.0 * per_page * total as f64) as u64
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
