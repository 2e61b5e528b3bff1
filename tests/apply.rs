//! The destination applier: deltas only onto their base, completion only on a
//! matching digest, layout checks, and the `apply_stream` fuzz body.

use precopy::codec::{base_hash, delta_encode};
use precopy::engine::{Applier, ApplyError, Progress};
use precopy::fuzzing::{apply_stream, StreamBuilder, APPLY_PAGES, APPLY_PAGE_SIZE};
use precopy::layout::GuestLayout;
use precopy::memory::digest_memory;
use precopy::memory::{PageMemory, VecMemory};
use precopy::wire::{Features, Frame, StreamHeader};
use proptest::prelude::*;

const PAGE: usize = 1024;

fn header(pages: u64) -> StreamHeader {
    StreamHeader {
        features: Features::ALL,
        session_id: [2; 16],
        layout: GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap(),
        stream: precopy::layout::Shard::WHOLE,
    }
}

/// A stream of `frames` after a header for `pages` pages.
fn stream(pages: u64, frames: &[Frame<'_>]) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = header(pages).emit(&mut buf).unwrap();
    for f in frames {
        n += f.emit(PAGE, &mut buf[n..]).unwrap();
    }
    buf.truncate(n);
    buf
}

#[test]
fn a_delta_against_another_base_is_refused_and_writes_nothing() {
    let base = vec![1u8; PAGE];
    let mut new = base.clone();
    new[5] = 9;
    let mut delta = vec![0u8; PAGE];
    let n = delta_encode(&base, &new, &mut delta).unwrap().unwrap();
    let frames = [
        Frame::RoundBegin {
            round: 0,
            planned_pages: 1,
        },
        Frame::Delta {
            page: 0,
            base_hash: base_hash(&base),
            data: &delta[..n],
        },
    ];
    // The destination holds zeros for page 0, not `base`.
    let mut applier = Applier::with_memory(VecMemory::new(PAGE, 2));
    let err = applier.feed(&stream(2, &frames)).unwrap_err();
    assert_eq!(
        err,
        ApplyError::BaseMismatch {
            frame: 1,
            page: 0,
            expected: base_hash(&base),
            found: base_hash(&[0; PAGE]),
        }
    );
    assert!(err.to_string().contains("source and destination disagree"));
    assert!(applier.memory().as_bytes().iter().all(|&b| b == 0));
    // The error is final.
    assert_eq!(applier.feed(&[]).unwrap_err(), err);
    // With the right base in place the same frames apply.
    let mut mem = VecMemory::new(PAGE, 2);
    mem.write_page(0, &base).unwrap();
    let mut applier = Applier::with_memory(mem);
    assert_eq!(applier.feed(&stream(2, &frames)), Ok(Progress::InProgress));
    assert_eq!(&applier.memory().as_bytes()[..PAGE], &new[..]);
}

#[test]
fn corrupt_page_payloads_are_refused_and_write_nothing() {
    let mut mem = VecMemory::new(PAGE, 2);
    mem.write_page(1, &[3; PAGE]).unwrap();
    let before = mem.clone();
    let bad_delta = [0u8, 0]; // an empty changed run
    let cases = [
        Frame::Lz4 {
            page: 1,
            data: &[0xff, 1, 2],
        },
        Frame::Lz4 {
            page: 1,
            data: &[0x10, 7],
        }, // one byte, not a page
        Frame::Delta {
            page: 1,
            base_hash: base_hash(&[3; PAGE]),
            data: &bad_delta,
        },
    ];
    for frame in cases {
        let mut applier = Applier::with_memory(before.clone());
        let err = applier
            .feed(&stream(
                2,
                &[
                    Frame::RoundBegin {
                        round: 0,
                        planned_pages: 1,
                    },
                    frame,
                ],
            ))
            .unwrap_err();
        assert!(
            matches!(
                err,
                ApplyError::Codec {
                    frame: 1,
                    page: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(applier.memory(), &before, "{frame:?} wrote garbage");
    }
}

#[test]
fn completion_needs_the_digest_of_the_memory() {
    let mut source = VecMemory::new(PAGE, 4);
    source.write_page(2, &[7; PAGE]).unwrap();
    let digest = digest_memory(&source, &mut [0; PAGE]).unwrap();
    let frames = |digest| {
        stream(
            4,
            &[
                Frame::RoundBegin {
                    round: 0,
                    planned_pages: 1,
                },
                Frame::Raw {
                    page: 2,
                    data: &[7; PAGE],
                },
                Frame::RoundEnd { round: 0, pages: 1 },
                Frame::Switchover { remaining_pages: 0 },
                Frame::Complete {
                    total_pages: 4,
                    digest,
                },
            ],
        )
    };
    let mut applier = Applier::with_memory(VecMemory::new(PAGE, 4));
    assert_eq!(applier.feed(&frames(digest)), Ok(Progress::Complete));
    assert_eq!(applier.finish(), Ok(()));
    assert_eq!(applier.into_memory(), source);

    let mut applier = Applier::with_memory(VecMemory::new(PAGE, 4));
    let err = applier.feed(&frames(digest ^ 1)).unwrap_err();
    assert_eq!(
        err,
        ApplyError::DigestMismatch {
            expected: digest ^ 1,
            computed: digest
        }
    );
    assert!(!applier.is_complete());
    assert!(applier.finish().is_err());
}

#[test]
fn a_guest_of_another_shape_is_refused() {
    let mut applier = Applier::with_memory(VecMemory::new(PAGE, 3));
    let err = applier.feed(&stream(4, &[])).unwrap_err();
    assert!(matches!(
        err,
        ApplyError::LayoutMismatch {
            stream_pages: 4,
            memory_pages: 3,
            ..
        }
    ));
    assert!(err
        .to_string()
        .contains("size the destination guest like the source"));
}

#[test]
fn caller_buffers_work_without_alloc_helpers() {
    let mut frame_buf = [0u8; 2200];
    let mut page_buf = [0u8; PAGE];
    let mut applier = Applier::new(
        VecMemory::new(PAGE, 2),
        &mut frame_buf[..],
        &mut page_buf[..],
    )
    .unwrap();
    let s = stream(
        2,
        &[Frame::RoundBegin {
            round: 0,
            planned_pages: 0,
        }],
    );
    for piece in s.chunks(3) {
        assert_eq!(applier.feed(piece), Ok(Progress::InProgress));
    }
    assert!(matches!(
        Applier::new(VecMemory::new(PAGE, 2), vec![0u8; 2200], vec![0u8; 10]),
        Err(ApplyError::PageBufferTooSmall {
            len: 10,
            page_size: PAGE
        })
    ));
}

fn fuzz_layout_stream(seed: u8) -> Vec<u8> {
    let layout =
        GuestLayout::flat(APPLY_PAGE_SIZE as u64, APPLY_PAGES * APPLY_PAGE_SIZE as u64).unwrap();
    let mut mem = VecMemory::new(APPLY_PAGE_SIZE, APPLY_PAGES);
    for (i, b) in mem.as_bytes_mut().iter_mut().enumerate() {
        if (i / APPLY_PAGE_SIZE) % 3 == 1 {
            *b = (i as u8).wrapping_mul(seed);
        }
    }
    let mut s = StreamBuilder::new(layout, 1 << 16);
    s.round(&mem, &(0..APPLY_PAGES).collect::<Vec<_>>());
    mem.as_bytes_mut()[APPLY_PAGE_SIZE + 5] ^= seed | 1;
    s.switchover(1);
    s.round(&mem, &[1]);
    s.complete(&mem)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn apply_fuzz_body_holds_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        apply_stream(&data);
    }

    #[test]
    fn apply_fuzz_body_holds_on_mutated_streams(
        seed in any::<u8>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let mut s = fuzz_layout_stream(seed);
        for (at, v) in edits {
            let i = at.index(s.len());
            s[i] = v;
        }
        apply_stream(&s);
    }
}

#[test]
fn a_page_written_then_zeroed_comes_out_zero_on_the_fresh_destination() {
    // Round 1 sends data (non-zero only in its last 8 bytes, or everywhere), later
    // rounds send zero pages over it: the production destination (fresh memory that
    // knows its zero pages) must clear the bytes, not only its knowledge of them;
    // `check_stream` compares the destination's bytes with the source's.
    for page_size in [4096usize, 64 << 10] {
        let zero = vec![0u8; page_size];
        let mut tail = vec![0u8; page_size];
        tail[page_size - 8..].fill(0xa5);
        let full: Vec<u8> = (0..page_size).map(|i| i as u8 | 1).collect();
        for old in [&tail, &full] {
            precopy::fuzzing::check_stream(page_size, old, &zero);
        }
    }
}
