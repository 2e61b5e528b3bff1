//! One conformance test, one generic function, run over every [`PageMemory`] backend:
//! `VecMemory`, `&mut VecMemory`, `AtomicMemory`, `&AtomicMemory`, `StreamMemory`
//! (whole and per-stream views of a `VecMemory`), `FreshMemory` (itself, its whole view
//! and its per-stream views, which know their zero pages and keep hashes), the runtime's
//! `ParallelHash`, and `VmMemory` over a vm-memory `GuestMemoryMmap` with a hole (and
//! `&VmMemory`), at 4 KiB and 64 KiB pages.
//!
//! Where the backend's bytes can be reached without the trait (a `Vec`, the fresh
//! memory's bytes, the guest's mapping), they are compared with what the trait said,
//! so a backend whose reads or kept hashes lie about its memory is caught.

use precopy::codec::base_hash;
use precopy::memory::{AtomicMemory, FreshMemory, MemoryError, PageMemory, VecMemory};
use precopy::runtime::ParallelHash;

/// Pages of every memory: more than two 512-page chunks, so two streams each own some.
const TOTAL: u64 = 1100;
const PAGE_SIZES: [usize; 2] = [4096, 64 << 10];

/// The pages a backend (or a stream's view) is exercised on: `a` and `a + 1` (both its
/// own), `b` (its own), and `foreign`, a page in range that it must refuse as another
/// stream's.
#[derive(Clone, Copy, Debug)]
struct Pages {
    a: u64,
    b: u64,
    foreign: Option<u64>,
}

/// All of memory: `a + 1` is the first page after the vm-memory guest's hole.
const WHOLE: Pages = Pages {
    a: 599,
    b: TOTAL - 1,
    foreign: None,
};

/// Stream `i` of two (streams own 512-page chunks in turn).
fn stream_pages(i: usize) -> Pages {
    match i {
        0 => Pages {
            a: 10,
            b: TOTAL - 1,
            foreign: Some(600),
        },
        _ => Pages {
            a: 599,
            b: 1023,
            foreign: Some(5),
        },
    }
}

/// A page of `page_size` bytes, all zero but for `fill` at `at`.
fn page_with(page_size: usize, at: std::ops::Range<usize>, fill: u8) -> Vec<u8> {
    let mut page = vec![0u8; page_size];
    page[at].fill(fill);
    page
}

/// A page no other page equals.
fn pattern(page_size: usize, seed: u64) -> Vec<u8> {
    (0..page_size)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(seed * 7 + 1) as u8)
        .collect()
}

/// Runs the contract against `m`; returns what pages `a`, `a + 1` and `b` must now
/// hold, for the caller to compare with the backend's bytes.
fn conformance<M: PageMemory>(name: &str, m: &mut M, page_size: usize, p: Pages) -> [Vec<u8>; 3] {
    let at = |what: &str| format!("{name}, {page_size} B pages: {what}");
    assert_eq!(m.page_size(), page_size, "{}", at("page size"));
    assert_eq!(m.total_pages(), TOTAL, "{}", at("total pages"));
    let mut buf = vec![0u8; page_size];
    let mut scratch = vec![0u8; page_size];

    // Never written: zero.
    m.read_page(p.b, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0), "{}", at("fresh page not zero"));

    // Round trip.
    for (page, seed) in [(p.a, 1), (p.a + 1, 2), (p.b, 3)] {
        let data = pattern(page_size, seed);
        m.write_page(page, &data).unwrap();
        buf.fill(0xee);
        m.read_page(page, &mut buf).unwrap();
        assert!(buf == data, "{}", at(&format!("page {page} reads back")));
    }

    // `hash_pages` equals hashing what reads return, for a run of pages and one page.
    let check_hashes = |m: &M, first: u64, n: usize, scratch: &mut [u8]| {
        let mut hashes = vec![0u64; n];
        m.hash_pages(first, &mut hashes, scratch).unwrap();
        let mut page = vec![0u8; page_size];
        for (i, &h) in hashes.iter().enumerate() {
            m.read_page(first + i as u64, &mut page).unwrap();
            assert_eq!(
                h,
                base_hash(&page),
                "{}",
                at(&format!("hash of page {}", first + i as u64))
            );
        }
    };
    check_hashes(m, p.a, 2, &mut scratch);
    check_hashes(m, p.b, 1, &mut scratch);

    // `zero_pages` makes every byte zero, wherever the stale bytes are.
    let stale = [
        0..1,
        page_size - 8..page_size,
        page_size / 2 + 3..page_size / 2 + 4,
        0..page_size,
    ];
    for range in stale {
        let data = page_with(page_size, range.clone(), 0x5a);
        m.write_page(p.a, &data).unwrap();
        m.zero_pages(p.a, 1).unwrap();
        m.read_page(p.a, &mut buf).unwrap();
        assert!(
            buf.iter().all(|&x| x == 0),
            "{}",
            at(&format!("stale bytes {range:?} survive zero_pages"))
        );
        check_hashes(m, p.a, 2, &mut scratch);
    }
    // Zeroing a zero page and a range of one page keeps them zero; the neighbour is kept.
    m.zero_pages(p.a, 1).unwrap();
    m.read_page(p.a + 1, &mut buf).unwrap();
    assert!(
        buf == pattern(page_size, 2),
        "{}",
        at("zero_pages reached past its range")
    );
    // Written again after being zeroed: no longer zero.
    m.write_page(p.a, &page_with(page_size, page_size - 1..page_size, 9))
        .unwrap();
    m.zero_pages(p.a, 1).unwrap();

    // Out of range and wrong lengths are typed errors.
    let out = MemoryError::PageOutOfRange {
        page: TOTAL,
        total: TOTAL,
    };
    assert_eq!(
        m.read_page(TOTAL, &mut buf),
        Err(out),
        "{}",
        at("read past the end")
    );
    assert_eq!(
        m.write_page(TOTAL, &buf),
        Err(out),
        "{}",
        at("write past the end")
    );
    assert!(
        m.read_page(u64::MAX, &mut buf).is_err(),
        "{}",
        at("read at u64::MAX")
    );
    assert!(
        matches!(
            m.zero_pages(TOTAL, 1),
            Err(MemoryError::PageOutOfRange { .. })
        ),
        "{}",
        at("zero past the end")
    );
    assert!(
        m.zero_pages(u64::MAX, 2).is_err(),
        "{}",
        at("zero wrapping")
    );
    assert!(
        m.hash_pages(TOTAL - 1, &mut [0; 2], &mut scratch).is_err(),
        "{}",
        at("hash past the end")
    );
    let short = MemoryError::BadBufferLength {
        len: page_size - 1,
        page_size,
    };
    assert_eq!(
        m.read_page(p.a, &mut buf[1..]),
        Err(short),
        "{}",
        at("short read")
    );
    assert_eq!(
        m.write_page(p.a, &buf[1..]),
        Err(short),
        "{}",
        at("short write")
    );
    let long = vec![1u8; page_size + 1];
    assert!(
        matches!(
            m.write_page(p.a, &long),
            Err(MemoryError::BadBufferLength { .. })
        ),
        "{}",
        at("long write")
    );
    if let Some(f) = p.foreign {
        assert_eq!(
            m.write_page(f, &buf),
            Err(MemoryError::OtherStream { page: f }),
            "{}",
            at("another stream's page")
        );
        assert!(
            m.read_page(f, &mut buf).is_err(),
            "{}",
            at("another stream's read")
        );
    }
    // The failed writes changed nothing.
    m.read_page(p.a, &mut buf).unwrap();
    assert!(
        buf.iter().all(|&x| x == 0),
        "{}",
        at("a refused write wrote")
    );
    [
        vec![0; page_size],
        pattern(page_size, 2),
        pattern(page_size, 3),
    ]
}

/// Compares the pages `conformance` left with `bytes`, the backend's memory.
fn check_bytes(name: &str, bytes: &[u8], page_size: usize, p: Pages, want: &[Vec<u8>; 3]) {
    for (page, want) in [p.a, p.a + 1, p.b].into_iter().zip(want) {
        let at = page as usize * page_size;
        assert!(
            &bytes[at..at + page_size] == want.as_slice(),
            "{name}, {page_size} B pages: memory's page {page} differs from what it reported"
        );
    }
}

#[test]
fn vec_memory() {
    for ps in PAGE_SIZES {
        let mut m = VecMemory::new(ps, TOTAL);
        let want = conformance("VecMemory", &mut m, ps, WHOLE);
        check_bytes("VecMemory", m.as_bytes(), ps, WHOLE, &want);
        let mut m = VecMemory::new(ps, TOTAL);
        let want = conformance("&mut VecMemory", &mut &mut m, ps, WHOLE);
        check_bytes("&mut VecMemory", m.as_bytes(), ps, WHOLE, &want);
    }
}

#[test]
fn stream_memory_whole_and_per_stream() {
    for ps in PAGE_SIZES {
        let mut m = VecMemory::new(ps, TOTAL);
        let want = conformance("VecMemory::whole", &mut m.whole(), ps, WHOLE);
        check_bytes("VecMemory::whole", m.as_bytes(), ps, WHOLE, &want);
        let mut m = VecMemory::new(ps, TOTAL);
        let mut wants = Vec::new();
        for (i, view) in m.streams(2).iter_mut().enumerate() {
            wants.push(conformance("VecMemory::streams", view, ps, stream_pages(i)));
        }
        for (i, want) in wants.iter().enumerate() {
            check_bytes(
                "VecMemory::streams",
                m.as_bytes(),
                ps,
                stream_pages(i),
                want,
            );
        }
    }
}

#[test]
fn fresh_memory_and_its_tracked_views() {
    for ps in PAGE_SIZES {
        let mut m = FreshMemory::new(ps, TOTAL).unwrap();
        let want = conformance("FreshMemory", &mut m, ps, WHOLE);
        check_bytes("FreshMemory", m.as_bytes(), ps, WHOLE, &want);

        let mut m = FreshMemory::new(ps, TOTAL).unwrap();
        let mut view = m.whole();
        assert!(view.is_tracked());
        let want = conformance("FreshMemory::whole", &mut view, ps, WHOLE);
        check_bytes("FreshMemory::whole", m.as_bytes(), ps, WHOLE, &want);

        let mut m = FreshMemory::new(ps, TOTAL).unwrap();
        let mut wants = Vec::new();
        for (i, view) in m.views(2).iter_mut().enumerate() {
            assert!(view.is_tracked());
            wants.push(conformance("FreshMemory::views", view, ps, stream_pages(i)));
        }
        for (i, want) in wants.iter().enumerate() {
            check_bytes(
                "FreshMemory::views",
                m.as_bytes(),
                ps,
                stream_pages(i),
                want,
            );
        }
        // What the views kept is what the memory holds: the fresh memory's digest equals
        // the digest of a plain copy of its bytes.
        let mut plain = VecMemory::new(ps, TOTAL);
        plain.as_bytes_mut().copy_from_slice(m.as_bytes());
        let mut scratch = vec![0u8; ps];
        assert_eq!(
            precopy::memory::digest_memory(&m, &mut scratch).unwrap(),
            precopy::memory::digest_memory(&plain, &mut scratch).unwrap()
        );
    }
}

#[test]
fn atomic_memory_owned_and_shared() {
    for ps in PAGE_SIZES {
        let mut m = AtomicMemory::new(ps, TOTAL);
        conformance("AtomicMemory", &mut m, ps, WHOLE);
        let m = AtomicMemory::new(ps, TOTAL);
        let want = conformance("&AtomicMemory", &mut &m, ps, WHOLE);
        // Another reference reads what this one wrote.
        let mut buf = vec![0u8; ps];
        for (page, want) in [WHOLE.a, WHOLE.a + 1, WHOLE.b].into_iter().zip(&want) {
            m.read_page(page, &mut buf).unwrap();
            assert!(&buf == want, "&AtomicMemory page {page}");
        }
    }
}

#[test]
fn parallel_hash() {
    for ps in PAGE_SIZES {
        let mut m = VecMemory::new(ps, TOTAL);
        let want = conformance("ParallelHash", &mut ParallelHash(&mut m), ps, WHOLE);
        check_bytes("ParallelHash", m.as_bytes(), ps, WHOLE, &want);
    }
}

#[cfg(feature = "vm-memory")]
#[test]
fn vm_memory_guest_with_a_hole() {
    use precopy::memory::VmMemory;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    for (ps, name) in PAGE_SIZES
        .into_iter()
        .flat_map(|ps| [(ps, "VmMemory"), (ps, "&VmMemory")])
    {
        // 600 pages at 0, a hole, 500 pages at 4 GiB.
        let high = 4u64 << 30;
        let guest = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 600 * ps),
            (GuestAddress(high), 500 * ps),
        ])
        .unwrap();
        let guest_bytes = |page: u64| {
            let mut bytes = vec![0u8; ps];
            let addr = if page < 600 {
                page * ps as u64
            } else {
                high + (page - 600) * ps as u64
            };
            guest.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
            bytes
        };
        let mut m = VmMemory::new(&guest, ps as u64).unwrap();
        assert_eq!(
            m.layout(),
            precopy::layout::GuestLayout::new(
                ps as u64,
                &[(0, 600 * ps as u64), (high, 500 * ps as u64)]
            )
            .unwrap()
        );
        let want = if name == "VmMemory" {
            conformance(name, &mut m, ps, WHOLE)
        } else {
            conformance(name, &mut &m, ps, WHOLE)
        };
        for (page, want) in [WHOLE.a, WHOLE.a + 1, WHOLE.b].into_iter().zip(&want) {
            assert!(
                &guest_bytes(page) == want,
                "{name}, {ps} B pages: guest page {page} differs"
            );
        }
    }
}

#[test]
fn kept_hashes_over_plain_memory_and_stream_views() {
    use precopy::layout::Shard;
    use precopy::memory::KeptHashes;
    for ps in PAGE_SIZES {
        let mut m = VecMemory::new(ps, TOTAL);
        let mut kept = KeptHashes::new(&mut m, Shard::WHOLE);
        let want = conformance("KeptHashes<&mut VecMemory>", &mut kept, ps, WHOLE);
        assert!(
            kept.kept_pages() > 0,
            "writes and zero runs keep their hashes"
        );
        drop(kept);
        check_bytes("KeptHashes<&mut VecMemory>", m.as_bytes(), ps, WHOLE, &want);

        let mut m = VecMemory::new(ps, TOTAL);
        let mut wants = Vec::new();
        for (i, view) in m.streams(2).into_iter().enumerate() {
            let shard = Shard::new(i as u8, 2).unwrap();
            let mut kept = KeptHashes::new(view, shard);
            wants.push(conformance(
                "KeptHashes<view>",
                &mut kept,
                ps,
                stream_pages(i),
            ));
        }
        for (i, want) in wants.iter().enumerate() {
            check_bytes("KeptHashes<view>", m.as_bytes(), ps, stream_pages(i), want);
        }
    }
}
