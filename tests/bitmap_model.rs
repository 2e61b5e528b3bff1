//! Property tests of the dirty bitmap against a model: for any sequence of marks, range
//! marks, harvests (whole, word ranges, unaligned page ranges) and restores, the union of
//! everything harvested plus what is still set equals exactly the set of pages marked.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

use precopy::bitmap::{words_for_pages, AtomicDirtyBitmap, BitmapError};
use precopy::layout::{GuestLayout, LayoutError};
use proptest::prelude::*;

/// One operation on the bitmap; numbers are reduced modulo the layout's size.
#[derive(Clone, Debug)]
enum Op {
    Mark(u64),
    MarkRange { addr: u64, len: u64 },
    HarvestAll,
    HarvestWords { start: usize, len: usize },
    HarvestPages { start: u64, len: u64 },
    HarvestAndRestore,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u64>().prop_map(Op::Mark),
        3 => (any::<u64>(), 0u64..(1 << 20)).prop_map(|(addr, len)| Op::MarkRange { addr, len }),
        1 => Just(Op::HarvestAll),
        1 => (any::<usize>(), 0usize..8).prop_map(|(start, len)| Op::HarvestWords { start, len }),
        1 => (any::<u64>(), 0u64..300).prop_map(|(start, len)| Op::HarvestPages { start, len }),
        1 => Just(Op::HarvestAndRestore),
    ]
}

/// Layouts with holes, odd region sizes (not multiples of 64 pages) and several page
/// sizes, built from (gap, pages) pairs; up to 11 regions, so both region lookups
/// (a scan up to 8 regions, a binary search above) are exercised.
fn layout() -> impl Strategy<Value = GuestLayout> {
    (
        prop_oneof![Just(512u64), Just(4096), Just(64 << 10)],
        prop::collection::vec((0u64..5, 1u64..200), 1..12),
    )
        .prop_map(|(page_size, parts)| {
            let mut addr = 0;
            let mut ranges = Vec::new();
            for (gap, pages) in parts {
                addr += gap * page_size;
                ranges.push((addr, pages * page_size));
                addr += pages * page_size;
            }
            GuestLayout::new(page_size, &ranges).unwrap()
        })
}

/// Pages of `layout` touched by `[addr, addr + len)`, computed the slow way.
fn model_range(layout: &GuestLayout, addr: u64, len: u64) -> (BTreeSet<u64>, bool) {
    let mut pages = BTreeSet::new();
    let mut untracked = false;
    if len == 0 {
        return (pages, false);
    }
    let ps = layout.page_size();
    let mut a = addr - addr % ps;
    let last = addr + len - 1;
    while a <= last {
        // The first and last byte of the range decide partial pages.
        let probe = a.max(addr);
        match layout.page_of(probe) {
            Ok(p) => {
                pages.insert(p);
            }
            Err(_) => untracked = true,
        }
        a += ps;
    }
    (pages, untracked)
}

/// Runs `ops` against `bitmap` and the model; returns (marked, harvested + still set).
fn run<W: std::ops::Deref<Target = [AtomicU64]>>(
    bitmap: &AtomicDirtyBitmap<W>,
    ops: &[Op],
) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let layout = *bitmap.layout();
    let total = layout.total_pages();
    let words = words_for_pages(total);
    let mut marked = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let take = |list: &mut dyn Iterator<Item = u64>, seen: &mut BTreeSet<u64>| {
        for p in list {
            assert!(p < total, "harvested page {p} past the end ({total})");
            seen.insert(p);
        }
    };
    for op in ops {
        match *op {
            Op::Mark(p) => {
                let p = p % (total + 2);
                match bitmap.mark(p) {
                    Ok(()) => {
                        marked.insert(p);
                    }
                    Err(e) => {
                        assert!(p >= total);
                        assert_eq!(e, BitmapError::PageOutOfRange { page: p, total });
                    }
                }
            }
            Op::MarkRange { addr, len } => {
                // Addresses around the layout, including holes and past the end.
                let span = layout.regions().last().map_or(0, |r| {
                    r.guest_addr + r.pages * layout.page_size() + layout.page_size()
                });
                let addr = addr % span;
                let (pages, untracked) = model_range(&layout, addr, len);
                let res = bitmap.mark_range(addr, len);
                assert_eq!(res.is_err(), untracked, "range {addr:#x}+{len:#x}: {res:?}");
                marked.extend(pages);
            }
            Op::HarvestAll => {
                let set = bitmap.harvest();
                take(&mut set.pages(), &mut seen);
                // Runs describe exactly the same pages.
                let from_runs: Vec<u64> = set.runs().flat_map(|(s, n)| s..s + n).collect();
                assert_eq!(from_runs, set.pages().collect::<Vec<_>>());
            }
            Op::HarvestWords { start, len } => {
                let start = start % (words + 1);
                let end = (start + len).min(words);
                let mut out = vec![0u64; end - start];
                let n = bitmap.harvest_words_into(start..end, &mut out).unwrap();
                let pages = precopy::bitmap::DirtyPages::new(&out, start as u64 * 64);
                assert_eq!(pages.clone().count() as u64, n);
                take(&mut pages.into_iter(), &mut seen);
            }
            Op::HarvestPages { start, len } => {
                let start = start % (total + 1);
                let end = (start + len).min(total);
                let mut got = Vec::new();
                let n = bitmap
                    .harvest_range_with(start..end, |p| got.push(p))
                    .unwrap();
                assert_eq!(n, got.len() as u64);
                assert!(got.iter().all(|p| (start..end).contains(p)));
                assert!(got.windows(2).all(|w| w[0] < w[1]), "ascending");
                take(&mut got.into_iter(), &mut seen);
            }
            Op::HarvestAndRestore => {
                // A round that could not be sent puts its pages back: nothing is lost.
                let set = bitmap.harvest();
                bitmap.restore(&set).unwrap();
            }
        }
    }
    let mut rest = Vec::new();
    bitmap.harvest_to_vec(&mut rest);
    take(&mut rest.into_iter(), &mut seen);
    assert_eq!(bitmap.dirty_pages(), 0);
    (marked, seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(256)))]

    #[test]
    fn harvests_return_exactly_the_marked_pages(layout in layout(), ops in prop::collection::vec(op(), 0..60)) {
        let owned = AtomicDirtyBitmap::new(layout);
        let (marked, seen) = run(&owned, &ops);
        prop_assert_eq!(&marked, &seen);

        // The same sequence over caller-provided words behaves identically.
        let storage: Vec<AtomicU64> = (0..words_for_pages(layout.total_pages())).map(|_| AtomicU64::new(u64::MAX)).collect();
        let borrowed = AtomicDirtyBitmap::from_words(layout, &storage).unwrap();
        let (marked2, seen2) = run(&borrowed, &ops);
        prop_assert_eq!(marked2, seen2);
    }
}

#[test]
fn boundaries_first_last_page_words_regions_and_holes() {
    // Regions of 100 and 37 pages with a 3-page hole; 4 KiB pages.
    let ps = 4096;
    let layout = GuestLayout::new(ps, &[(0, 100 * ps), (103 * ps, 37 * ps)]).unwrap();
    let bm = AtomicDirtyBitmap::new(layout);
    assert_eq!(bm.total_pages(), 137);

    bm.mark(0).unwrap();
    bm.mark(136).unwrap();
    assert_eq!(
        bm.mark(137),
        Err(BitmapError::PageOutOfRange {
            page: 137,
            total: 137
        })
    );
    assert_eq!(bm.harvest().pages().collect::<Vec<_>>(), [0, 136]);

    // One byte on each side of a word boundary (pages 63 and 64).
    bm.mark_range(64 * ps - 1, 2).unwrap();
    assert_eq!(bm.harvest().pages().collect::<Vec<_>>(), [63, 64]);

    // Zero length marks nothing, even in a hole.
    bm.mark_range(101 * ps, 0).unwrap();
    assert_eq!(bm.dirty_pages(), 0);

    // Across the hole (guest pages 100..103): both sides are marked, the hole is
    // reported. Guest page 103 is dense page 100.
    assert_eq!(
        bm.mark_range(99 * ps, 5 * ps),
        Err(BitmapError::AddressOutOfRange { addr: 100 * ps })
    );
    assert_eq!(bm.harvest().pages().collect::<Vec<_>>(), [99, 100]);

    // Past the end of the last region.
    assert_eq!(
        bm.mark_range(139 * ps, 2 * ps),
        Err(BitmapError::AddressOutOfRange { addr: 140 * ps })
    );
    assert_eq!(bm.harvest().pages().collect::<Vec<_>>(), [136]);

    // A range ending at the very top of the address space does not overflow.
    assert!(bm.mark_range(u64::MAX - 10, 11).is_err());
    assert!(bm.mark_range(u64::MAX, u64::MAX).is_err());
    assert_eq!(bm.dirty_pages(), 0);

    // Whole words at once: 64 KiB at page 64 is pages 64..80.
    bm.mark_range(64 * ps, 64 << 10).unwrap();
    assert_eq!(bm.harvest().runs().collect::<Vec<_>>(), [(64, 16)]);

    // An empty page range marks nothing (not the whole word).
    bm.mark_page_range(70..70).unwrap();
    assert_eq!(bm.dirty_pages(), 0);

    // Sub-range harvests leave neighbours alone.
    bm.mark_page_range(0..137).unwrap();
    let mut got = Vec::new();
    bm.harvest_range_with(60..70, |p| got.push(p)).unwrap();
    assert_eq!(got, (60..70).collect::<Vec<_>>());
    assert_eq!(bm.dirty_pages(), 127);
    assert!(bm.is_dirty(59) && !bm.is_dirty(60) && bm.is_dirty(70));
    assert!(bm.harvest_range_with(0..138, |_| ()).is_err());
    assert!(bm.mark_page_range(130..138).is_err());
}

#[test]
fn page_sizes_and_layout_errors() {
    // The largest page size: 64 KiB.
    let big = 64 << 10;
    let layout = GuestLayout::new(big, &[(0, 1 << 30), (4 << 30, 1 << 30)]).unwrap();
    assert_eq!(layout.total_pages(), 32768);
    let bm = AtomicDirtyBitmap::new(layout);
    bm.mark_range((4 << 30) + big - 1, 2).unwrap();
    assert_eq!(bm.harvest().pages().collect::<Vec<_>>(), [16384, 16385]);
    assert_eq!(layout.addr_of(16385).unwrap(), (4 << 30) + big);
    assert!(layout.addr_of(32768).is_err());

    // One rule for page sizes: a power of two from 512 B to 64 KiB. 2 MiB huge pages
    // are refused with the way out in the message.
    for bad in [0, 256, 3000, 128 << 10, 2 << 20] {
        assert_eq!(
            GuestLayout::new(bad, &[(0, 4 << 20)]),
            Err(LayoutError::BadPageSize { page_size: bad }),
            "{bad}"
        );
    }
    let huge = GuestLayout::new(2 << 20, &[(0, 4 << 20)])
        .unwrap_err()
        .to_string();
    assert!(huge.contains("in 4096-byte pages"), "{huge}");
    assert!(GuestLayout::new(4096, &[(0, 4095)]).is_err());
    assert!(GuestLayout::new(4096, &[(1, 4096)]).is_err());
    assert!(GuestLayout::new(4096, &[(0, 0)]).is_err());
    assert!(GuestLayout::new(4096, &[(u64::MAX - 4095, 8192)]).is_err());
    assert_eq!(
        GuestLayout::new(4096, &[(8192, 8192), (0, 12288)]),
        Err(LayoutError::OverlappingRegions {
            first: 0,
            second: 8192
        })
    );
    let many: Vec<(u64, u64)> = (0..65).map(|i| (i * 8192, 4096)).collect();
    assert!(matches!(
        GuestLayout::new(4096, &many),
        Err(LayoutError::TooManyRegions { count: 65 })
    ));
    // Unsorted input is sorted; holes take no page numbers.
    let l = GuestLayout::new(4096, &[(1 << 20, 4096), (0, 8192)]).unwrap();
    assert_eq!(l.page_of(1 << 20).unwrap(), 2);

    let small: Vec<AtomicU64> = (0..511).map(|_| AtomicU64::new(0)).collect();
    assert_eq!(
        AtomicDirtyBitmap::from_words(layout, &small).unwrap_err(),
        BitmapError::StorageTooSmall {
            needed: 512,
            provided: 511
        }
    );
}

#[test]
fn restore_refuses_bits_past_the_end_and_errors_read_well() {
    let bm = AtomicDirtyBitmap::new(GuestLayout::flat(4096, 70 * 4096).unwrap());
    assert!(bm.restore_words(1, &[1 << 6]).is_err());
    assert!(bm.restore_words(2, &[1]).is_err());
    bm.restore_words(1, &[1 << 5]).unwrap();
    assert_eq!(bm.harvest().pages().collect::<Vec<_>>(), [69]);
    let e = BitmapError::AddressOutOfRange { addr: 0xa0000 };
    assert_eq!(
        e.to_string(),
        "guest address 0xa0000 is not in any memory region"
    );
}
