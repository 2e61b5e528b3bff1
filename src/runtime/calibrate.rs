//! Measurements the runtime feeds into the policy before a migration starts.

use std::time::Instant;
use std::vec;

use crate::memory::PageMemory;
use crate::wire::MemoryDigest;

/// Estimated time, ns, for the end-to-end digest the final round computes over all of
/// `memory` (once on the source, reading guest memory through [`PageMemory`], once on
/// the destination, over its plain memory; both with the guest paused), extrapolated
/// from digesting up to `sample_pages` pages now both ways. This is part of the
/// downtime that is not the dirty pages: add it to the policy's
/// `non_memory_downtime_ns` so the prediction counts it.
pub fn digest_downtime_ns<M: PageMemory + ?Sized>(memory: &M, sample_pages: u64) -> u64 {
    let total = memory.total_pages();
    let page_size = memory.page_size();
    let sample = sample_pages.clamp(1, total.max(1)).min(total);
    if sample == 0 {
        return 0;
    }
    // Source side, as the engine does it: read each page into one buffer, hash it.
    let mut buf = vec![0u8; page_size];
    let start = Instant::now();
    let mut digest = MemoryDigest::new();
    for page in 0..sample {
        if memory.read_page(page, &mut buf).is_err() {
            break;
        }
        digest.update(&buf);
    }
    core::hint::black_box(digest.finish());
    let source_ns = start.elapsed().as_nanos() as f64;
    // Destination side: hash pages that are already plain (and mapped) memory.
    let mut copy = vec![0u8; page_size * sample as usize];
    for (page, chunk) in (0..sample).zip(copy.chunks_exact_mut(page_size)) {
        let _ = memory.read_page(page, chunk);
    }
    let start = Instant::now();
    let mut digest = MemoryDigest::new();
    for chunk in copy.chunks_exact(page_size) {
        digest.update(chunk);
    }
    core::hint::black_box(digest.finish());
    let destination_ns = start.elapsed().as_nanos() as f64;
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
