//! The guest in virtual time: the workload's writers ([`WriteStream`], the demo's)
//! write at its rate, slowed by the scheduler's throttle advice exactly as the demo's
//! writer threads are (`rate x (100 - percent) / 100`), stopped by the pause.

use std::vec::Vec;

use crate::bitmap::AtomicDirtyBitmap;
use crate::workload::{Workload, WriteStream};

use super::pages::SourceMemory;

/// The virtual guest's writers.
#[derive(Debug)]
pub struct VirtualGuest {
    writers: Vec<WriteStream>,
    rate: u64,
    throttle: u8,
    paused: bool,
    /// Virtual time the writes were made up to, ns.
    now_ns: u64,
    /// Writes owed but not yet made (a fraction of one).
    carry: f64,
    next_writer: usize,
    /// Page writes so far.
    pub writes: u64,
}

impl VirtualGuest {
    /// `threads` writers of `workload` over `total_pages` pages of `page_size`.
    pub fn new(workload: Workload, total_pages: u64, page_size: u64, threads: usize) -> Self {
        let threads = threads.max(1);
        VirtualGuest {
            writers: (0..threads)
                .map(|i| WriteStream::new(workload, total_pages, page_size, i, threads))
                .collect(),
            rate: workload.rate(),
            throttle: 0,
            paused: false,
            now_ns: 0,
            carry: 0.0,
            next_writer: 0,
            writes: 0,
        }
    }

    /// Makes the writes due up to `now_ns`: each bumps a page's version, then marks
    /// it dirty (the order of a real write).
    pub fn advance<W>(
        &mut self,
        now_ns: u64,
        memory: &mut SourceMemory,
        bitmap: &AtomicDirtyBitmap<W>,
    ) where
        W: core::ops::Deref<Target = [core::sync::atomic::AtomicU64]>,
    {
        if now_ns <= self.now_ns {
            return;
        }
        let dt = (now_ns - self.now_ns) as f64 / 1e9;
        self.now_ns = now_ns;
        if self.paused {
            return;
        }
        self.carry += self.rate as f64 * f64::from(100 - self.throttle.min(99)) / 100.0 * dt;
        let due = self.carry as u64;
        self.carry -= due as f64;
        let n = self.writers.len();
        let mut idle_writers = 0;
        let mut made = 0;
        while made < due && idle_writers < n {
            let w = self.next_writer;
            self.next_writer = (w + 1) % n;
            match self.writers[w].next_page() {
                Some(page) => {
                    memory.write(page);
                    let _ = bitmap.mark(page);
                    made += 1;
                    idle_writers = 0;
                }
                None => idle_writers += 1,
            }
        }
        self.writes += made;
    }

    /// The scheduler's throttle advice, percent of the vCPUs' time.
    pub fn throttle(&mut self, percent: u8) {
        self.throttle = percent.min(99);
    }

    /// The throttle in force.
    pub fn throttle_percent(&self) -> u8 {
        self.throttle
    }

    /// Pauses the writers (the caller advanced them to the pause first).
    pub fn pause(&mut self) {
        self.paused = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::GuestLayout;
    use crate::sim::pages::PageGen;
    use std::sync::Arc;

    #[test]
    fn throttling_slows_the_virtual_writers() {
        let w: Workload = "continuous:rate=100k,set=1M".parse().unwrap();
        let gen = Arc::new(PageGen::new(w, crate::sim::Content::Demo, 1024, 4096));
        let mut mem = SourceMemory::new(gen);
        let bitmap = AtomicDirtyBitmap::new(GuestLayout::flat(4096, 1024 * 4096).unwrap());
        let mut g = VirtualGuest::new(w, 1024, 4096, 2);
        g.advance(1_000_000_000, &mut mem, &bitmap);
        assert_eq!(g.writes, 100_000);
        assert_eq!(bitmap.dirty_pages(), 256);
        g.throttle(60);
        g.advance(2_000_000_000, &mut mem, &bitmap);
        assert_eq!(g.writes, 140_000, "60% throttle: 40k writes in a second");
        g.pause();
        g.advance(3_000_000_000, &mut mem, &bitmap);
        assert_eq!(g.writes, 140_000);
    }
}
