//! A synthetic guest: real memory, real writer threads that write real bytes and mark
//! the dirty bitmap at a set rate, pausable like a VM's vCPUs and throttleable; the
//! runtime drives it through [`Guest`](crate::engine::Guest).

use std::boxed::Box;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::{Workload, WorkloadError, WriteStream};
use crate::bitmap::AtomicDirtyBitmap;
use crate::engine::Guest;
use crate::layout::GuestLayout;
use crate::memory::AtomicMemory;

/// An owned, shareable dirty bitmap.
pub type SharedBitmap = Arc<AtomicDirtyBitmap<Box<[AtomicU64]>>>;

#[derive(Debug, Default)]
struct Control {
    pause: AtomicBool,
    stop: AtomicBool,
    parked: AtomicUsize,
    throttle: AtomicU8,
    writes: AtomicU64,
    /// Wakes writers sleeping between ticks or parked (pause, resume, stop), and
    /// the pauser waiting for them to park: no thread polls while the guest is
    /// paused, so the migration's threads have the CPUs during the downtime.
    lock: Mutex<()>,
    wake: Condvar,
}

impl Control {
    /// Wakes every thread waiting on `wake` (after a flag changed).
    fn notify(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.wake.notify_all();
    }

    /// Waits on `wake` while `cond` holds, at most `timeout`.
    fn wait_while(&self, timeout: Duration, cond: impl Fn() -> bool) {
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .wake
            .wait_timeout_while(guard, timeout, |_| cond())
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// A guest of real memory and writer threads; see the module docs.
#[derive(Debug)]
pub struct SyntheticGuest {
    memory: Arc<AtomicMemory>,
    bitmap: SharedBitmap,
    workload: Workload,
    control: Arc<Control>,
    writers: Vec<JoinHandle<()>>,
}

impl SyntheticGuest {
    /// A guest of `layout`'s size. Memory starts as a booted guest's would: the
    /// continuous workload's working set and all of a hotspot guest hold data, the
    /// rest is zero; a fill guest's every page holds data (written in parallel).
    pub fn new(layout: GuestLayout, workload: Workload) -> Self {
        let page_size = layout.page_size() as usize;
        let memory = Arc::new(AtomicMemory::new(page_size, layout.total_pages()));
        super::huge_pages::advise_huge_pages(memory.as_ptr(), memory.byte_len());
        let bitmap = Arc::new(AtomicDirtyBitmap::new(layout));
        let (pages, page_size) = (layout.total_pages(), layout.page_size());
        {
            use rayon::prelude::*;
            // Ranges of 256 pages: a task of 1 MiB of 4 KiB pages.
            (0..pages.div_ceil(256)).into_par_iter().for_each(|chunk| {
                for page in chunk * 256..((chunk + 1) * 256).min(pages) {
                    if workload.holds_data(page, pages, page_size) {
                        write_page_content(&memory, page);
                    }
                }
            });
        }
        SyntheticGuest {
            memory,
            bitmap,
            workload,
            control: Arc::new(Control::default()),
            writers: Vec::new(),
        }
    }

    /// Guest memory.
    pub fn memory(&self) -> &Arc<AtomicMemory> {
        &self.memory
    }

    /// The dirty bitmap the writers mark.
    pub fn bitmap(&self) -> &SharedBitmap {
        &self.bitmap
    }

    /// Page writes so far.
    pub fn writes(&self) -> u64 {
        self.control.writes.load(Ordering::Relaxed)
    }

    /// A test hook: changes page `page` (its first word) without marking it dirty,
    /// the write a broken dirty log would miss. A migration that already sent the
    /// page never sends the new content: the destination ends with a stale copy, and
    /// only a check of the source's memory against what was sent can tell.
    pub fn write_unmarked(&self, page: u64) -> Result<(), WorkloadError> {
        let mut buf = std::vec![0u8; memory_words(&self.memory) * 8];
        crate::memory::PageMemory::read_page(&*self.memory, page, &mut buf)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(&buf[..8]);
        let changed = !u64::from_le_bytes(word);
        Ok(self.memory.store_word(page, 0, changed)?)
    }

    /// Starts `threads` writer threads (the vCPUs).
    pub fn start(&mut self, threads: usize) {
        let threads = threads.max(1);
        for t in 0..threads {
            let (memory, bitmap, control) = (
                Arc::clone(&self.memory),
                Arc::clone(&self.bitmap),
                Arc::clone(&self.control),
            );
            let workload = self.workload;
            // A writer the OS refuses to start is a guest with fewer vCPUs.
            if let Ok(handle) = std::thread::Builder::new()
                .name(std::format!("guest-vcpu{t}"))
                .spawn(move || writer(&memory, &bitmap, &control, workload, t, threads))
            {
                self.writers.push(handle);
            }
        }
    }

    /// Pauses the writers and waits until every one has stopped writing (a paused VM).
    pub fn pause(&self) {
        let c = &self.control;
        c.pause.store(true, Ordering::Release);
        c.notify();
        while c.parked.load(Ordering::Acquire) < self.writers.len() {
            c.wait_while(Duration::from_millis(1), || {
                c.parked.load(Ordering::Acquire) < self.writers.len()
            });
        }
    }

    /// Lets paused writers run again (a migration that failed: the guest goes on).
    pub fn resume(&self) {
        let c = &self.control;
        c.pause.store(false, Ordering::Release);
        c.notify();
        while c.parked.load(Ordering::Acquire) > 0 {
            c.wait_while(Duration::from_millis(1), || {
                c.parked.load(Ordering::Acquire) > 0
            });
        }
    }

    /// Applies the scheduler's throttling advice: writers slow down by `percent`.
    pub fn set_throttle(&self, percent: u8) {
        self.control
            .throttle
            .store(percent.min(99), Ordering::Relaxed);
    }

    /// Stops and joins the writers.
    pub fn stop(&mut self) {
        self.control.stop.store(true, Ordering::Release);
        self.control.notify();
        for w in self.writers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The runtime drives the synthetic guest like a VM: its writers pause, resume and
/// throttle; every write marks the bitmap directly, so there is no dirty log to pull.
impl Guest for SyntheticGuest {
    type Memory = AtomicMemory;
    type Words = Box<[AtomicU64]>;
    type Error = core::convert::Infallible;

    fn memory(&self) -> &AtomicMemory {
        &self.memory
    }

    fn bitmap(&self) -> &AtomicDirtyBitmap<Box<[AtomicU64]>> {
        &self.bitmap
    }

    fn pause(&self) -> Result<(), core::convert::Infallible> {
        SyntheticGuest::pause(self);
        Ok(())
    }

    fn resume(&self) {
        SyntheticGuest::resume(self);
    }

    fn throttle(&self, percent: u8) {
        self.set_throttle(percent);
    }
}

impl Drop for SyntheticGuest {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes page `page`'s content before the migration ([`super::pages::demo_word`]).
fn write_page_content(memory: &AtomicMemory, page: u64) {
    for w in 0..memory_words(memory) {
        let _ = memory.store_word(page, w, super::pages::demo_word(page, w));
    }
}

fn memory_words(memory: &AtomicMemory) -> usize {
    crate::memory::PageMemory::page_size(memory) / 8
}

fn writer(
    memory: &AtomicMemory,
    bitmap: &AtomicDirtyBitmap<Box<[AtomicU64]>>,
    control: &Control,
    workload: Workload,
    index: usize,
    threads: usize,
) {
    let words = memory_words(memory) as u64;
    let page_size = words * 8;
    let mut stream = WriteStream::new(workload, bitmap.total_pages(), page_size, index, threads);
    let per_thread = workload.rate() as f64 / threads as f64;
    let tick = Duration::from_millis(1);
    let mut deadline = Instant::now();
    let mut carry = 0.0f64;
    let mut version = 1u64;
    while !control.stop.load(Ordering::Acquire) {
        if control.pause.load(Ordering::Acquire) {
            control.parked.fetch_add(1, Ordering::AcqRel);
            control.notify();
            let paused =
                || control.pause.load(Ordering::Acquire) && !control.stop.load(Ordering::Acquire);
            // Asleep until resumed or stopped (the timeout only bounds a missed wake).
            while paused() {
                control.wait_while(Duration::from_millis(100), paused);
            }
            control.parked.fetch_sub(1, Ordering::AcqRel);
            control.notify();
            deadline = Instant::now();
            continue;
        }
        let throttle = f64::from(control.throttle.load(Ordering::Relaxed));
        carry += per_thread * (100.0 - throttle) / 100.0 / 1000.0;
        let quota = carry as u64;
        carry -= quota as f64;
        for n in 0..quota {
            // A high rate's quota must not hold off a stop.
            if n % 4096 == 4095 && control.stop.load(Ordering::Acquire) {
                break;
            }
            let Some(page) = stream.next_page() else {
                break;
            };
            // A real write: a word of the page changes, then the page is marked.
            version += 1;
            let _ = memory.store_word(page, stream.word(words) as usize, version ^ page);
            let _ = bitmap.mark(page);
            control.writes.fetch_add(1, Ordering::Relaxed);
        }
        deadline += tick;
        let now = Instant::now();
        if deadline > now {
            // Until the next tick, or a pause or stop.
            control.wait_while(deadline - now, || {
                !control.pause.load(Ordering::Acquire) && !control.stop.load(Ordering::Acquire)
            });
        } else if now - deadline > 10 * tick {
            deadline = now; // fell behind (a slow machine): don't burst to catch up
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_guest_starts_with_every_page_written() {
        use crate::memory::PageMemory;
        let layout = GuestLayout::flat(4096, 1100 * 4096).unwrap();
        let guest = SyntheticGuest::new(layout, "fill".parse().unwrap());
        let mut page = [0u8; 4096];
        for p in 0..1100 {
            guest.memory().read_page(p, &mut page).unwrap();
            assert!(!crate::codec::is_zero_page(&page), "page {p} is zero");
        }
        assert_eq!(guest.bitmap().dirty_pages(), 0, "prefill marks nothing");
        // The hook changes a page and marks nothing.
        let before = page;
        guest.write_unmarked(1099).unwrap();
        guest.memory().read_page(1099, &mut page).unwrap();
        assert_ne!(page, before);
        assert_eq!(guest.bitmap().dirty_pages(), 0);
        assert!(guest.write_unmarked(1100).is_err());
    }

    #[test]
    fn writers_write_mark_pause_and_resume() {
        let layout = GuestLayout::flat(4096, 64 * 4096).unwrap();
        let mut guest = SyntheticGuest::new(layout, "idle:rate=20k".parse().unwrap());
        guest.start(2);
        // Bounds that hold on a loaded machine; the test times nothing.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while guest.writes() < 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "the started guest made {} writes in 30 s, not 10",
                guest.writes()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        guest.pause();
        let (writes, dirty) = (guest.writes(), guest.bitmap().dirty_pages());
        assert!(dirty > 0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(guest.writes(), writes, "a paused guest wrote");
        guest.resume();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while guest.writes() == writes {
            assert!(
                std::time::Instant::now() < deadline,
                "the resumed guest made no write in 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        guest.stop();
    }
}
