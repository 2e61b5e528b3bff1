//! `precopy bench bitmap`: our AtomicDirtyBitmap against vm-memory's AtomicBitmap, on
//! the same guest size, in the same run.

use std::cell::RefCell;
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicU64;

use precopy::bitmap::{AtomicDirtyBitmap, DirtyPages};
use precopy::layout::GuestLayout;
use vm_memory::bitmap::AtomicBitmap;

use crate::report::{best_of_with_setup, CaseResult};
use precopy::workload::Rng;

/// Options of `precopy bench bitmap`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object per case.
    #[arg(long)]
    json: bool,
    /// Guest memory size in GiB for every case (1 to what this host's memory holds
    /// the bitmaps of).
    #[arg(long, default_value_t = 64)]
    guest_gib: u64,
    /// Timed repetitions per case (the fastest is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

const PAGE: u64 = 4096;
const MARKS: usize = 1 << 22;
const RANGE_MARKS: usize = 1 << 18;

type Ours = AtomicDirtyBitmap<Box<[AtomicU64]>>;

pub fn run(args: &Args) -> Result<(), String> {
    // The two bitmaps take a bit per 4 KiB page each: keep them within a quarter of
    // this host's memory (a 1 PiB guest's would need 64 GiB).
    let max_gib = crate::options::host_memory()
        .map_or(1 << 20, |host| (host / 4 * 16384) >> 30)
        .clamp(1, 1 << 20);
    if args.guest_gib == 0 || args.guest_gib > max_gib {
        return Err(format!(
            "--guest-gib {} is out of range (1 to {max_gib} on this host: the bitmaps \
             of a larger guest do not fit its memory)",
            args.guest_gib
        ));
    }
    if args.reps == 0 || args.reps > 1000 {
        return Err(format!("--reps {} is out of range (1 to 1000)", args.reps));
    }
    let bytes = args.guest_gib << 30;
    let layout = GuestLayout::flat(PAGE, bytes).map_err(|e| e.to_string())?;
    let pages = layout.total_pages();
    let ours = Ours::new(layout);
    // Invariant: PAGE is the constant 4096.
    let page_size = NonZeroUsize::new(PAGE as usize).expect("non-zero");
    let peer = AtomicBitmap::new(bytes as usize, page_size);
    let reps = args.reps;

    let mut rng = Rng::new(0x5eed);
    let random_pages: Vec<u64> = (0..MARKS).map(|_| rng.below(pages)).collect();
    // Distinct pages in random order (an odd stride modulo a power of two visits each
    // page once): every mark of a cleared bitmap is a fresh one.
    let stride = (rng.next_u64() | 1) & (pages.next_power_of_two() - 1);
    let fresh_pages: Vec<u64> = (0..pages.next_power_of_two())
        .map(|i| i.wrapping_mul(stride) & (pages.next_power_of_two() - 1))
        .filter(|&p| p < pages)
        .take(MARKS)
        .collect();
    // Two vCPUs dirtying the same 256 hot pages (4 words in one cache line).
    let hot_pages: Vec<u64> = (0..MARKS).map(|_| 4096 + rng.below(256)).collect();
    let range_starts: Vec<u64> = (0..RANGE_MARKS)
        .map(|_| rng.below(pages - 16) * PAGE)
        .collect();

    let clear_ours = || {
        ours.harvest_to_vec(&mut Vec::new());
    };
    let clear_peer = || peer.reset();
    // Hot: every page about to be marked is already marked, on both sides.
    let set_ours = |list: &[u64]| {
        clear_ours();
        list.iter().for_each(|&p| {
            let _ = ours.mark(p);
        });
    };
    let set_peer = |list: &[u64]| {
        clear_peer();
        list.iter().for_each(|&p| peer.set_bit(p as usize));
    };
    let cases = [
        CaseResult {
            case: "mark_fresh_1t",
            ours: best_of_with_setup(reps, clear_ours, |()| {
                for &p in &fresh_pages {
                    let _ = ours.mark(p);
                }
            }),
            peer: "vm-memory",
            peer_time: best_of_with_setup(reps, clear_peer, |()| {
                for &p in &fresh_pages {
                    peer.set_bit(p as usize);
                }
            }),
        },
        CaseResult {
            case: "mark_set_1t",
            ours: best_of_with_setup(
                reps,
                || set_ours(&fresh_pages),
                |()| {
                    for &p in &fresh_pages {
                        let _ = ours.mark(p);
                    }
                },
            ),
            peer: "vm-memory",
            peer_time: best_of_with_setup(
                reps,
                || set_peer(&fresh_pages),
                |()| {
                    for &p in &fresh_pages {
                        peer.set_bit(p as usize);
                    }
                },
            ),
        },
        CaseResult {
            case: "mark_page_1t",
            ours: best_of_with_setup(reps, clear_ours, |()| {
                for &p in &random_pages {
                    let _ = ours.mark(p);
                }
            }),
            peer: "vm-memory",
            peer_time: best_of_with_setup(reps, clear_peer, |()| {
                for &p in &random_pages {
                    peer.set_bit(p as usize);
                }
            }),
        },
        CaseResult {
            case: "mark_page_2t",
            ours: best_of_with_setup(reps, clear_ours, |()| {
                two_threads(&random_pages, |p| {
                    let _ = ours.mark(p);
                })
            }),
            peer: "vm-memory",
            peer_time: best_of_with_setup(reps, clear_peer, |()| {
                two_threads(&random_pages, |p| peer.set_bit(p as usize))
            }),
        },
        CaseResult {
            case: "mark_range_64k",
            ours: best_of_with_setup(reps, clear_ours, |()| {
                for &a in &range_starts {
                    let _ = ours.mark_range(a, 65536);
                }
            }),
            peer: "vm-memory",
            peer_time: best_of_with_setup(reps, clear_peer, |()| {
                for &a in &range_starts {
                    peer.set_addr_range(a as usize, 65536);
                }
            }),
        },
        CaseResult {
            case: "mark_hot_2t",
            ours: best_of_with_setup(
                reps,
                || set_ours(&hot_pages),
                |()| {
                    two_threads(&hot_pages, |p| {
                        let _ = ours.mark(p);
                    })
                },
            ),
            peer: "vm-memory",
            peer_time: best_of_with_setup(
                reps,
                || set_peer(&hot_pages),
                |()| two_threads(&hot_pages, |p| peer.set_bit(p as usize)),
            ),
        },
        harvest_case("harvest_sparse", &ours, &peer, pages, 100, reps),
        harvest_case("harvest_dense", &ours, &peer, pages, 2, reps),
    ];
    if !args.json {
        println!(
            "precopy bench bitmap: {} GiB guest, {} pages of 4 KiB, best of {reps}",
            args.guest_gib, pages
        );
        println!(
            "  every case clears (or pre-sets) both bitmaps alike before each timed run:\n  \
             mark_fresh_1t  {} distinct pages, each bit clear before its mark\n  \
             mark_set_1t    the same pages, each bit already set (the skip path)\n  \
             mark_page_*    {} random pages from clear (about 1 in 9 repeats)\n  \
             mark_range_64k {} 64 KiB ranges from clear\n  \
             mark_hot_2t    two threads, {} marks of 256 hot pages, all already set\n  \
             harvest_*      take every dirty page (1 in 100, 1 in 2) into a list",
            fresh_pages.len(),
            MARKS,
            RANGE_MARKS,
            MARKS
        );
    }
    for c in &cases {
        c.print(args.json);
    }
    Ok(())
}

/// Harvest of a guest with one page in `one_in` dirty, into a list of dirty pages.
/// Both sides write into a reused, pre-faulted list (as a migration thread reuses its
/// buffer across rounds), so the kernel's page faults are not what is measured. The
/// peer turns its words into pages with the same word-at-a-time iterator we use.
fn harvest_case(
    case: &'static str,
    ours: &Ours,
    peer: &AtomicBitmap,
    pages: u64,
    one_in: u64,
    reps: usize,
) -> CaseResult {
    let mut rng = Rng::new(one_in);
    let dirty: Vec<u64> = (0..pages).filter(|_| rng.below(one_in) == 0).collect();
    let list = RefCell::new(vec![0u64; dirty.len()]);
    let ours_time = best_of_with_setup(
        reps,
        || {
            ours.harvest_to_vec(&mut Vec::new());
            dirty.iter().for_each(|&p| {
                let _ = ours.mark(p);
            });
            list.borrow_mut().clear();
        },
        |()| {
            let mut list = list.borrow_mut();
            ours.harvest_to_vec(&mut list);
            assert_eq!(list.len(), dirty.len(), "harvest lost pages");
        },
    );
    let peer_time = best_of_with_setup(
        reps,
        || {
            peer.reset();
            dirty.iter().for_each(|&p| peer.set_bit(p as usize));
            list.borrow_mut().clear();
        },
        |()| {
            let mut list = list.borrow_mut();
            let words = peer.get_and_reset();
            list.extend(DirtyPages::new(&words, 0));
            assert_eq!(list.len(), dirty.len(), "peer harvest lost pages");
        },
    );
    CaseResult {
        case,
        ours: ours_time,
        peer: "vm-memory",
        peer_time,
    }
}

/// Runs `f` over the two halves of `items` on two threads.
fn two_threads(items: &[u64], f: impl Fn(u64) + Sync) {
    let (a, b) = items.split_at(items.len() / 2);
    std::thread::scope(|s| {
        s.spawn(|| a.iter().for_each(|&p| f(p)));
        b.iter().for_each(|&p| f(p));
    });
}
