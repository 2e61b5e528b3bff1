//! A synthetic guest: real memory, real writer threads that write real bytes and mark
//! the dirty bitmap at a set rate, pausable like a VM's vCPUs and throttleable; the
//! runtime drives it through [`Guest`](crate::engine::Guest).

use std::boxed::Box;
use std::format;
use std::str::FromStr;
use std::string::String;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::{Rng, WorkloadError};
use crate::bitmap::AtomicDirtyBitmap;
use crate::engine::Guest;
use crate::layout::GuestLayout;
use crate::memory::AtomicMemory;

/// An owned, shareable dirty bitmap.
pub type SharedBitmap = Arc<AtomicDirtyBitmap<Box<[AtomicU64]>>>;

/// How the guest writes its memory. Parsed from `NAME[:key=value,...]`; rates are in
/// pages per second and accept `k`/`m` suffixes, sizes in bytes accept `K`/`M`/`G`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Mostly zero memory and a trickle of writes to random pages
    /// (`idle:rate=100`).
    Idle {
        /// Pages written per second.
        rate: u64,
    },
    /// Every page written once, in order, then nothing (`once:rate=250k`): data loaded
    /// into memory and then only read.
    Once {
        /// Pages written per second.
        rate: u64,
    },
    /// A dirtying loop over a working set at the start of memory
    /// (`continuous:rate=50k,set=256M`).
    Continuous {
        /// Pages written per second.
        rate: u64,
        /// Working set, bytes.
        set: u64,
    },
    /// Every page of memory filled with non-zero data before the migration starts,
    /// then a dirtying loop like [`Continuous`](Self::Continuous)
    /// (`fill:rate=50k,set=256M`): a fully written guest, nothing for zero-page
    /// elision to skip, so whatever costs per page of memory shows.
    Fill {
        /// Pages written per second.
        rate: u64,
        /// Working set of the writes, bytes.
        set: u64,
    },
    /// Zipf-skewed writes over all memory (`hotspot:rate=50k,skew=1.1`).
    Hotspot {
        /// Pages written per second.
        rate: u64,
        /// Zipf exponent (larger: hotter hot pages).
        skew: f64,
    },
}

impl Workload {
    /// Pages written per second.
    pub fn rate(&self) -> u64 {
        match *self {
            Workload::Idle { rate }
            | Workload::Once { rate }
            | Workload::Continuous { rate, .. }
            | Workload::Fill { rate, .. }
            | Workload::Hotspot { rate, .. } => rate,
        }
    }
}

fn parse_scaled(value: &str, key: &str, units: &[(char, u64)]) -> Result<u64, String> {
    let (digits, scale) = match value.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let scale = units
                .iter()
                .find(|(u, _)| *u == c)
                .map(|(_, s)| *s)
                .ok_or_else(|| format!("{key}={value}: unknown suffix '{c}'"))?;
            (&value[..value.len() - 1], scale)
        }
        _ => (value, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{key}={value}: not a number"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{key}={value}: too large"))
}

/// The highest `rate` a workload takes, page writes per second (all writers).
pub const MAX_RATE: u64 = 100_000_000;

impl FromStr for Workload {
    type Err = WorkloadError;

    fn from_str(spec: &str) -> Result<Self, WorkloadError> {
        let err = |problem: String| WorkloadError::Spec {
            spec: spec.into(),
            problem,
        };
        let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
        let mut rate = None;
        let mut set = None;
        let mut skew = None;
        for kv in args.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| err(format!("'{kv}' is not key=value")))?;
            let rates = [('k', 1_000), ('m', 1_000_000)];
            if args
                .split(',')
                .filter(|o| o.split('=').next() == Some(k))
                .count()
                > 1
            {
                return Err(err(format!("'{k}' is given more than once")));
            }
            let sizes = [('K', 1 << 10), ('M', 1 << 20), ('G', 1 << 30)];
            match k {
                "rate" => {
                    let r = parse_scaled(v, k, &rates).map_err(err)?;
                    if r > MAX_RATE {
                        return Err(err(format!(
                            "rate={v}: at most {MAX_RATE} page writes per second (100m)"
                        )));
                    }
                    rate = Some(r);
                }
                "set" => set = Some(parse_scaled(v, k, &sizes).map_err(err)?),
                "skew" => {
                    let s: f64 = v
                        .parse()
                        .map_err(|_| err(format!("skew={v}: not a number")))?;
                    if !(s.is_finite() && s > 0.0) {
                        return Err(err(format!("skew={v}: must be above 0")));
                    }
                    skew = Some(s);
                }
                _ => return Err(err(format!("unknown key '{k}' (rate, set, skew)"))),
            }
        }
        let allowed = |keys: &[&str]| -> Result<(), WorkloadError> {
            for (k, given) in [("set", set.is_some()), ("skew", skew.is_some())] {
                if given && !keys.contains(&k) {
                    return Err(err(format!("'{k}' does not apply to {name}")));
                }
            }
            Ok(())
        };
        let w = match name {
            "idle" => {
                allowed(&[])?;
                Workload::Idle {
                    rate: rate.unwrap_or(100),
                }
            }
            "once" => {
                allowed(&[])?;
                Workload::Once {
                    rate: rate.unwrap_or(250_000),
                }
            }
            "continuous" => {
                allowed(&["set"])?;
                Workload::Continuous {
                    rate: rate.unwrap_or(50_000),
                    set: set.unwrap_or(256 << 20),
                }
            }
            "fill" => {
                allowed(&["set"])?;
                Workload::Fill {
                    rate: rate.unwrap_or(50_000),
                    set: set.unwrap_or(256 << 20),
                }
            }
            "hotspot" => {
                allowed(&["skew"])?;
                Workload::Hotspot {
                    rate: rate.unwrap_or(50_000),
                    skew: skew.unwrap_or(1.1),
                }
            }
            _ => {
                return Err(err(format!(
                    "unknown workload '{name}' (idle, once, continuous, fill, hotspot)"
                )))
            }
        };
        Ok(w)
    }
}

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
        let prefill = match workload {
            Workload::Continuous { set, .. } => set / layout.page_size(),
            Workload::Hotspot { .. } | Workload::Fill { .. } => layout.total_pages(),
            Workload::Idle { .. } | Workload::Once { .. } => 0,
        }
        .min(layout.total_pages());
        {
            use rayon::prelude::*;
            // Ranges of 256 pages: a task of 1 MiB of 4 KiB pages.
            (0..prefill.div_ceil(256))
                .into_par_iter()
                .for_each(|chunk| {
                    for page in chunk * 256..((chunk + 1) * 256).min(prefill) {
                        write_page_content(&memory, page, page);
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

/// Writes page `page`'s content for version `version`: a header word, then text-like
/// and counter words (compressible, but not trivially), so every write changes bytes.
fn write_page_content(memory: &AtomicMemory, page: u64, version: u64) {
    let words = memory_words(memory);
    for w in 0..words {
        let v = match w % 8 {
            0 => version.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ page,
            1..=4 => u64::from_le_bytes(*b"precopy "),
            _ => (w as u64) << 32 | (version & 0xffff),
        };
        let _ = memory.store_word(page, w, v);
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
    let pages = bitmap.total_pages();
    let words = memory_words(memory) as u64;
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d ^ (index as u64 + 1));
    let mut next = |bound: u64| rng.below(bound);
    // Once: this thread's share of pages in order; continuous: its share of the set.
    let (mut cursor, span) = match workload {
        Workload::Continuous { set, .. } | Workload::Fill { set, .. } => {
            (index as u64, (set / (words * 8)).clamp(1, pages))
        }
        _ => (index as u64, pages),
    };
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
            let page = match workload {
                Workload::Idle { .. } => next(pages),
                Workload::Once { .. } => {
                    if cursor >= pages {
                        break;
                    }
                    let p = cursor;
                    cursor += threads as u64;
                    p
                }
                Workload::Continuous { .. } | Workload::Fill { .. } => {
                    let p = cursor % span;
                    cursor += threads as u64;
                    p
                }
                Workload::Hotspot { skew, .. } => zipf(pages, skew, next(1 << 53)),
            };
            // A real write: a word of the page changes, then the page is marked.
            version += 1;
            let _ = memory.store_word(page, next(words) as usize, version ^ page);
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

/// A page drawn with probability proportional to `rank^-skew` (rank 1 = page 0), by
/// inverting the continuous approximation of the Zipf distribution; `u53` is a
/// uniform 53-bit integer.
fn zipf(pages: u64, skew: f64, u53: u64) -> u64 {
    let u = u53 as f64 / (1u64 << 53) as f64;
    // Ranks are drawn from [1, pages + 1) and floored, so every page can come up.
    let n = pages as f64 + 1.0;
    let rank = if (skew - 1.0).abs() < 1e-9 {
        n.powf(u)
    } else {
        let e = 1.0 - skew;
        ((n.powf(e) - 1.0) * u + 1.0).powf(1.0 / e)
    };
    (rank as u64).saturating_sub(1).min(pages - 1)
}

impl core::fmt::Display for Workload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Workload::Idle { rate } => write!(f, "idle:rate={rate}"),
            Workload::Once { rate } => write!(f, "once:rate={rate}"),
            Workload::Continuous { rate, set } => write!(f, "continuous:rate={rate},set={set}"),
            Workload::Fill { rate, set } => write!(f, "fill:rate={rate},set={set}"),
            Workload::Hotspot { rate, skew } => write!(f, "hotspot:rate={rate},skew={skew}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn workload_specs_parse_and_errors_name_the_problem() {
        assert_eq!(
            "continuous:rate=20k,set=64M".parse::<Workload>().unwrap(),
            Workload::Continuous {
                rate: 20_000,
                set: 64 << 20
            }
        );
        assert_eq!(
            "idle".parse::<Workload>().unwrap(),
            Workload::Idle { rate: 100 }
        );
        let e = |s: &str| s.parse::<Workload>().unwrap_err().to_string();
        assert_eq!(
            "fill:rate=10k".parse::<Workload>().unwrap(),
            Workload::Fill {
                rate: 10_000,
                set: 256 << 20
            }
        );
        assert!(e("busy").contains("unknown workload 'busy'"));
        assert!(e("busy").contains("fill"), "{}", e("busy"));
        assert!(e("fill:skew=2").contains("'skew' does not apply to fill"));
        assert!(e("idle:set=1M").contains("'set' does not apply to idle"));
        assert!(e("once:rate=fast").contains("rate=fast"));
        assert!(e("once:rate=1.5").contains("rate=1.5: not a number"));
        assert!(e("hotspot:skew=-1").contains("must be above 0"));
        assert!(e("continuous:rate").contains("is not key=value"));
        assert!(e("continuous:rate=1x").contains("unknown suffix"));
    }

    #[test]
    fn zipf_stays_in_range_and_prefers_low_pages() {
        let low = (0..1000u64)
            .map(|i| zipf(1 << 20, 1.1, i * (1 << 43)))
            .filter(|&p| p < 1024)
            .count();
        assert!(low > 500, "{low}");
        assert_eq!(zipf(10, 1.0, (1 << 53) - 1), 9);
        assert_eq!(zipf(10, 2.0, 0), 0);
    }

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
