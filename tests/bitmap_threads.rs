//! Real threads: writers write guest memory and mark pages while harvesters take dirty
//! pages (whole-bitmap harvests and parallel chunk harvests) and copy what they took
//! to a destination. Afterwards no mark is lost and the destination equals the source:
//! the ordering contract of the bitmap, tested with real concurrency.
//!
//! The check is per write, not per set of pages (a lost mark on a page marked again
//! later leaves the sets equal): every write carries a sequence number, stored into the
//! page before the mark; once the mark returns the writer publishes the number as
//! completed. Before each harvest the harvester reads the completed numbers; after the
//! harvest and its copies, the destination's copy of every page must hold at least the
//! completed number (pages are partitioned between writers, so numbers only grow per
//! page). That is the contract itself: a write that completed before a harvest is in
//! that harvest or an earlier one, and the copy after it sees the write.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use precopy::bitmap::{AtomicDirtyBitmap, DirtyPages};
use precopy::layout::GuestLayout;

/// Enough pages that a cold page is rewritten only every few milliseconds: a lost mark
/// stays visible (no later mark of the page covers it) across many harvests.
const PAGES: u64 = 1 << 16;
const WRITERS: u64 = 3;
const WRITES_PER_WRITER: u64 = 200_000;

/// Guest memory: one `AtomicU64` per page is enough to see a lost write (relaxed
/// accesses keep the races well-defined in Rust).
struct Memory(Vec<AtomicU64>);

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn no_write_is_lost_under_concurrent_harvests() {
    // Two regions with a hole, so dense page numbers differ from guest frame numbers.
    let ps = 4096;
    let layout = GuestLayout::new(ps, &[(0, 3000 * ps), (1 << 30, (PAGES - 3000) * ps)]).unwrap();
    let bitmap = AtomicDirtyBitmap::new(layout);
    let source = Memory((0..PAGES).map(|_| AtomicU64::new(0)).collect());
    let dest: Vec<AtomicU64> = (0..PAGES).map(|_| AtomicU64::new(0)).collect();
    let done = AtomicBool::new(false);
    let harvested = std::sync::Mutex::new(vec![false; PAGES as usize]);
    // Per page: the sequence number of the latest write whose mark has returned.
    let completed: Vec<AtomicU64> = (0..PAGES).map(|_| AtomicU64::new(0)).collect();

    // Copies page `p` from source to destination, as a migration round would.
    let copy = |p: u64| {
        let v = source.0[p as usize].load(Ordering::Relaxed);
        dest[p as usize].store(v, Ordering::Relaxed);
    };

    let marked: Vec<BTreeSet<u64>> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (bitmap, source, completed) = (&bitmap, &source, &completed);
                s.spawn(move || {
                    let mut rng = t + 1;
                    let mut mine = BTreeSet::new();
                    for i in 0..WRITES_PER_WRITER {
                        let r = splitmix(&mut rng);
                        // Half the writes go to 16 hot pages, so marks often find their
                        // bit already set (the skip path and its fence). Writer `t` owns
                        // the pages `p % WRITERS == t` (its hot pages share words with
                        // the other writers').
                        let slot = if r & 1 == 0 {
                            r % 16
                        } else {
                            (r >> 8) % (PAGES / WRITERS)
                        };
                        let page = slot * WRITERS + t;
                        // The sequence number: grows per page (one writer per page).
                        let value = ((t + 1) << 48) | (i + 1);
                        source.0[page as usize].store(value, Ordering::Relaxed);
                        if r & 2 == 0 {
                            bitmap.mark(page).unwrap();
                        } else {
                            // Same page through the range API, by guest address.
                            let addr = layout.addr_of(page).unwrap() + (r >> 40) % 4096;
                            bitmap.mark_range(addr, 1).unwrap();
                        }
                        completed[page as usize].store(value, Ordering::Release);
                        mine.insert(page);
                    }
                    mine
                })
            })
            .collect();

        // Harvester: alternate whole harvests with two-thread chunk harvests.
        let harvester = s.spawn(|| {
            let mut round = 0u64;
            let mut before = vec![0u64; PAGES as usize];
            while !done.load(Ordering::Acquire) {
                // Writes completed before this harvest starts.
                for (b, c) in before.iter_mut().zip(&completed) {
                    *b = c.load(Ordering::Acquire);
                }
                let mut taken = Vec::new();
                if round % 2 == 0 {
                    bitmap.harvest_to_vec(&mut taken);
                } else {
                    let words = bitmap.words().len();
                    let mid = words / 2;
                    let (mut a, mut b) = (vec![0; mid], vec![0; words - mid]);
                    std::thread::scope(|s2| {
                        s2.spawn(|| bitmap.harvest_words_into(0..mid, &mut a).unwrap());
                        bitmap.harvest_words_into(mid..words, &mut b).unwrap();
                    });
                    taken.extend(DirtyPages::new(&a, 0));
                    taken.extend(DirtyPages::new(&b, mid as u64 * 64));
                }
                taken.iter().for_each(|&p| copy(p));
                for (p, &b) in before.iter().enumerate() {
                    let d = dest[p].load(Ordering::Relaxed);
                    assert!(
                        d >= b,
                        "page {p}: after harvest {round} the destination holds write \
                         {d:#x}, but write {b:#x} completed before that harvest began \
                         (a lost mark)"
                    );
                }
                let mut h = harvested.lock().unwrap();
                taken.iter().for_each(|&p| h[p as usize] = true);
                round += 1;
            }
            round
        });

        let marked: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Release);
        let rounds = harvester.join().unwrap();
        assert!(rounds > 0, "the harvester never ran");
        marked
    });

    // The guest is paused: the last harvest takes whatever is left.
    let mut last = Vec::new();
    bitmap.harvest_to_vec(&mut last);
    last.iter().for_each(|&p| copy(p));
    let mut harvested_pages = harvested.into_inner().unwrap();
    last.iter()
        .for_each(|&p| harvested_pages[p as usize] = true);
    let harvested: BTreeSet<u64> = (0..PAGES)
        .filter(|&p| harvested_pages[p as usize])
        .collect();

    let all_marked: BTreeSet<u64> = marked.into_iter().flatten().collect();
    assert_eq!(harvested, all_marked, "a harvest lost or invented a mark");
    for (p, (d, s)) in dest.iter().zip(&source.0).enumerate() {
        assert_eq!(
            d.load(Ordering::Relaxed),
            s.load(Ordering::Relaxed),
            "page {p}: destination missed a write"
        );
    }
    assert_eq!(bitmap.dirty_pages(), 0);
}
