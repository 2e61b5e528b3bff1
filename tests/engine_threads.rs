//! Stress: real writer threads dirty real memory and mark the bitmap while the source
//! engine runs rounds and the destination applies the stream; at switchover the
//! writers park (a paused VM), and at completion the destination equals the source.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use precopy::bitmap::AtomicDirtyBitmap;
use precopy::engine::{
    Applier, MemoryTransport, Migration, MigrationEvent, Progress, SourceConfig, Transport,
};
use precopy::layout::GuestLayout;
use precopy::memory::{AtomicMemory, PageMemory, VecMemory};
use precopy::schedule::{OnLimit, Policy};

const PAGE: usize = 4096;
const PAGES: u64 = 1024;
const WRITERS: usize = 2;

#[test]
fn writers_running_during_rounds_lose_nothing() {
    let layout = GuestLayout::flat(PAGE as u64, PAGES * PAGE as u64).unwrap();
    let memory = AtomicMemory::new(PAGE, PAGES);
    let bitmap = AtomicDirtyBitmap::new(layout);
    let pause = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    let parked = AtomicUsize::new(0);
    let writes = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(60);

    /// Sets `stop` when dropped, so a failing assertion releases the writers instead
    /// of leaving the scope waiting for them forever.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    let dest = std::thread::scope(|s| {
        let _stop_writers = StopOnDrop(&stop);
        for t in 0..WRITERS {
            let (memory, bitmap, pause, stop, parked, writes) =
                (&memory, &bitmap, &pause, &stop, &parked, &writes);
            s.spawn(move || {
                let mut x = t as u64 + 1;
                while !stop.load(Ordering::Acquire) {
                    if pause.load(Ordering::Acquire) {
                        // A paused vCPU: no writes until the migration is over.
                        parked.fetch_add(1, Ordering::AcqRel);
                        while !stop.load(Ordering::Acquire) {
                            std::thread::yield_now();
                        }
                        return;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // A working set of 256 hot pages and the occasional cold one.
                    let page = if x % 8 == 0 { x % PAGES } else { x % 256 };
                    memory
                        .store_word(page, (x >> 20) as usize % (PAGE / 8), x)
                        .unwrap();
                    bitmap.mark(page).unwrap();
                    writes.fetch_add(1, Ordering::Relaxed);
                    if x % 64 == 0 {
                        std::thread::yield_now();
                    }
                }
            });
        }

        let policy = Policy {
            downtime_limit_ns: 5_000_000,
            non_memory_downtime_ns: 1_000_000,
            max_rounds: 15,
            on_limit: OnLimit::SwitchOver,
            ..Policy::default()
        };
        let start = Instant::now();
        let now = || start.elapsed().as_nanos() as u64;
        let mut source = Migration::new(&bitmap, SourceConfig::new(PAGE), policy, now()).unwrap();
        let mut applier = Applier::with_memory(VecMemory::new(PAGE, PAGES));
        let mut link = MemoryTransport::new(1500);
        let mut out = vec![0u8; source.min_buffer_len() * 4];
        let mut inbox = vec![0u8; 64 << 10];
        let mut done = false;
        while !done {
            assert!(
                Instant::now() < deadline,
                "migration did not finish in time"
            );
            let len = source.poll_transmit(&memory, now(), &mut out).unwrap();
            link.send(&out[..len]).unwrap();
            while let Some(event) = source.poll_event() {
                match event {
                    MigrationEvent::PauseGuest { .. } => {
                        pause.store(true, Ordering::Release);
                        while parked.load(Ordering::Acquire) < WRITERS {
                            assert!(Instant::now() < deadline, "writers did not park");
                            std::thread::yield_now();
                        }
                        source.guest_paused(now()).unwrap();
                    }
                    MigrationEvent::Complete { .. } => done = true,
                    _ => {}
                }
            }
            // The destination drains the link in MTU-sized pieces.
            loop {
                let n = link.recv(&mut inbox).unwrap();
                if n == 0 {
                    break;
                }
                let progress = applier.feed(&inbox[..n]).unwrap();
                assert!(
                    progress != Progress::Complete || done,
                    "complete before the source"
                );
            }
        }
        assert_eq!(applier.finish(), Ok(()));
        stop.store(true, Ordering::Release);
        applier.into_memory()
    });

    assert!(writes.load(Ordering::Relaxed) > 0, "the writers never ran");
    let mut page = vec![0u8; PAGE];
    for p in 0..PAGES {
        memory.read_page(p, &mut page).unwrap();
        assert_eq!(
            &dest.as_bytes()[p as usize * PAGE..][..PAGE],
            page.as_slice(),
            "page {p} differs"
        );
    }
}
