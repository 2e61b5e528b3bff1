//! Model check of the bitmap's mark/harvest protocol with loom: every interleaving of a
//! writer and a harvester, and every value a relaxed load may return under the C11
//! model loom implements, run through the bitmap's real `mark`, `mark_range` and
//! harvest functions (their atomics and fences come from `bitmap::sync`, which is loom's
//! under `--cfg loom`).
//!
//! Run (stable, its own target directory so the normal build cache survives):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --no-default-features --test bitmap_loom
//! ```
//!
//! The property is the bitmap's contract: a write that completes before a harvest is in
//! that harvest or a later one, and the harvester's read of the page after the harvest
//! that takes it sees the write. Each test ends with the guest "paused" (threads
//! joined) and a last harvest, and asserts that the destination's copy of the page
//! holds the last value written. What each test catches if the code is wrong:
//!
//! - `hot_*`: the page is already marked when the writer writes it, so `mark` finds its
//!   bit set and skips the atomic write. Without the `SeqCst` fence on that path (or
//!   without the one at the end of a harvest) loom finds the store-buffering outcome:
//!   the writer's re-check reads the bit as still set while the harvester has cleared
//!   it and read the page before the write reached it; no later harvest brings the page.
//! - `fresh_*`: the page is clean, the writer's mark sets its bit while the harvester
//!   clears the word. A harvest that clears with a load and a store instead of one
//!   swap (or `fetch_and`) loses the bit in the interleaving where the mark lands
//!   between the two.
//!
//! loom's limits, and why they do not hide these bugs: loom models `SeqCst` fences
//! (since 0.5.2) as acquire-release fences joined in one total order, which is at
//! least as strong as C11's fence rules, so a pass here is only as strong as that
//! model; but the failures above need no `SeqCst` reasoning at all (they appear when a
//! fence is missing), and loom explores them exhaustively, in every run.
#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

use precopy::bitmap::{AtomicDirtyBitmap, KvmSlotTable};
use precopy::layout::GuestLayout;

const PAGE: u64 = 4096;
/// Nine words of bitmap: one cache line of words (harvested a line at a time) and one
/// word after it (the harvest's per-word tail path).
const PAGES: u64 = 9 * 64;
/// A page in the tail word.
const TAIL: u64 = 8 * 64 + 5;

type Bitmap = AtomicDirtyBitmap<&'static [AtomicU64]>;

/// How the writer marks its page.
#[derive(Clone, Copy, Debug)]
enum Mark {
    Page,
    Range,
    /// Two pages in one call, across the word boundary (63 and 64).
    RangeAcrossWords,
}

/// How the harvester takes dirty pages.
#[derive(Clone, Copy, Debug)]
enum Harvest {
    /// `harvest_words_into` over every word (cache-line path of `take_words`).
    Words,
    /// `harvest_range_with` over whole words (swap).
    WholeRange,
    /// `harvest_range_with` over part of a word (`fetch_and`).
    PartRange,
}

struct Setup {
    bitmap: Bitmap,
    /// Guest memory: one word per page is enough to tell versions apart.
    memory: Vec<AtomicU64>,
}

fn setup(already_dirty: &[u64]) -> Arc<Setup> {
    // The words live as long as the model run; loom creates fresh ones per execution.
    let words: &'static [AtomicU64] =
        Box::leak((0..PAGES / 64).map(|_| AtomicU64::new(0)).collect());
    let layout = GuestLayout::flat(PAGE, PAGES * PAGE).unwrap();
    let bitmap = Bitmap::from_words(layout, words).unwrap();
    for &p in already_dirty {
        bitmap.mark(p).unwrap();
    }
    Arc::new(Setup {
        bitmap,
        memory: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
    })
}

/// Takes the dirty pages among `pages` the way `how` says and copies each into `dest`.
fn harvest(s: &Setup, how: Harvest, pages: &[u64], dest: &mut [u64]) {
    let mut copy = |p: u64| dest[p as usize] = s.memory[p as usize].load(Ordering::Relaxed);
    match how {
        Harvest::Words => {
            let mut out = [0u64; (PAGES / 64) as usize];
            s.bitmap.harvest_words_into(0..out.len(), &mut out).unwrap();
            for &p in pages {
                if out[(p / 64) as usize] & (1 << (p % 64)) != 0 {
                    copy(p);
                }
            }
        }
        Harvest::WholeRange => {
            s.bitmap.harvest_range_with(0..PAGES, &mut copy).unwrap();
        }
        Harvest::PartRange => {
            // Pages 1..=63 of word 0 and 64..=65 of word 1: both partial masks.
            s.bitmap.harvest_range_with(1..66, &mut copy).unwrap();
        }
    }
}

/// One writer writes version 1 of `pages` and marks them; one harvester harvests
/// concurrently; then the guest pauses and a last harvest runs. Every page's copy at
/// the destination must be version 1.
fn check(already_dirty: &'static [u64], pages: &'static [u64], mark: Mark, how: Harvest) {
    loom::model(move || {
        let s = setup(already_dirty);
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                for &p in pages {
                    s.memory[p as usize].store(1, Ordering::Relaxed);
                }
                match mark {
                    Mark::Page => pages.iter().for_each(|&p| s.bitmap.mark(p).unwrap()),
                    Mark::Range => pages
                        .iter()
                        .for_each(|&p| s.bitmap.mark_range(p * PAGE + 100, 1).unwrap()),
                    Mark::RangeAcrossWords => {
                        assert_eq!(pages, [63, 64]);
                        s.bitmap.mark_range(63 * PAGE + 8, PAGE).unwrap();
                    }
                }
            })
        };
        let harvester = {
            let s = s.clone();
            thread::spawn(move || {
                let mut dest = [0u64; PAGES as usize];
                harvest(&s, how, pages, &mut dest);
                dest
            })
        };
        writer.join().unwrap();
        let mut dest = harvester.join().unwrap();
        // Guest paused: the last harvest takes what is left.
        harvest(&s, Harvest::WholeRange, pages, &mut dest);
        for &p in pages {
            assert_eq!(
                dest[p as usize], 1,
                "page {p}: the destination kept a stale copy ({mark:?}, {how:?}); \
                 a write was lost between mark and harvest"
            );
        }
    });
}

#[test]
fn hot_mark_racing_a_word_harvest() {
    check(&[5], &[5], Mark::Page, Harvest::Words);
}

#[test]
fn hot_mark_racing_a_whole_range_harvest() {
    check(&[5], &[5], Mark::Page, Harvest::WholeRange);
}

#[test]
fn hot_mark_racing_a_partial_range_harvest() {
    check(&[5], &[5], Mark::Page, Harvest::PartRange);
}

#[test]
fn hot_mark_range_racing_a_word_harvest() {
    check(&[5], &[5], Mark::Range, Harvest::Words);
}

#[test]
fn hot_mark_range_across_words_racing_a_harvest() {
    check(&[63, 64], &[63, 64], Mark::RangeAcrossWords, Harvest::Words);
}

#[test]
fn fresh_mark_racing_a_word_harvest() {
    // Page 6 is dirty so the harvester's word is not zero and it clears it.
    check(&[6], &[5], Mark::Page, Harvest::Words);
}

#[test]
fn fresh_mark_racing_a_whole_range_harvest() {
    check(&[6], &[5], Mark::Page, Harvest::WholeRange);
}

#[test]
fn fresh_mark_racing_a_partial_range_harvest() {
    check(&[6], &[5], Mark::Page, Harvest::PartRange);
}

#[test]
fn hot_mark_in_the_tail_word_racing_a_word_harvest() {
    check(&[TAIL], &[TAIL], Mark::Page, Harvest::Words);
}

#[test]
fn fresh_mark_in_the_tail_word_racing_a_word_harvest() {
    check(&[TAIL + 1], &[TAIL], Mark::Page, Harvest::Words);
}

#[test]
fn fresh_mark_range_racing_a_word_harvest() {
    check(&[6], &[5], Mark::Range, Harvest::Words);
}

/// The KVM dirty-log import ORs words through the same test-before-set path.
#[test]
fn hot_kvm_import_racing_a_harvest() {
    loom::model(|| {
        let s = setup(&[5]);
        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                let mut slots = KvmSlotTable::new(*s.bitmap.layout());
                slots.insert(0, 0, PAGES).unwrap();
                s.memory[5].store(1, Ordering::Relaxed);
                s.bitmap
                    .import_kvm_dirty_log(&slots, 0, &[1 << 5, 0])
                    .unwrap();
            })
        };
        let harvester = {
            let s = s.clone();
            thread::spawn(move || {
                let mut dest = [0u64; PAGES as usize];
                harvest(&s, Harvest::Words, &[5], &mut dest);
                dest
            })
        };
        writer.join().unwrap();
        let mut dest = harvester.join().unwrap();
        harvest(&s, Harvest::WholeRange, &[5], &mut dest);
        assert_eq!(dest[5], 1, "page 5: a write imported from KVM was lost");
    });
}
