//! The destination applier: deltas only onto their base, completion only on a
//! matching digest, layout checks, and the `apply_stream` fuzz body.

use precopy::codec::{base_hash, delta_encode};
use precopy::engine::{Applier, ApplyError, Progress};
use precopy::fuzzing::{
    apply_stream, apply_stream_completes, reference_digest, StreamBuilder, APPLY_PAGES,
    APPLY_PAGE_SIZE,
};
use precopy::layout::GuestLayout;
use precopy::layout::Shard;
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

/// One step of a structured input for the apply fuzz body.
#[derive(Clone, Debug)]
enum Op {
    /// Page `.0` gets new content from `.1` and `.2`, sent raw, as LZ4 or (a sparse
    /// edit of what the page holds) as a delta, by `.3`.
    Page(u64, u8, u16, u8),
    /// A zero run from page `.0`, `.1` pages.
    Zero(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..APPLY_PAGES, any::<u8>(), any::<u16>(), 0u8..3)
            .prop_map(|(p, fill, at, how)| Op::Page(p, fill, at, how)),
        1 => (0..APPLY_PAGES, 1u64..8).prop_map(|(p, n)| Op::Zero(p, n.min(APPLY_PAGES - p))),
    ]
}

/// Rounds of operations; the last one follows the switchover.
fn rounds() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 0..12), 1..5)
}

fn push(out: &mut Vec<u8>, frame: Frame<'_>) {
    let at = out.len();
    out.resize(at + frame.encoded_len(), 0);
    frame.emit(APPLY_PAGE_SIZE, &mut out[at..]).unwrap();
}

/// A valid stream over the apply fuzz guest carrying `rounds`, built frame by frame
/// (not by the engine's encoder), and the memory it must leave: a model kept here by
/// plain byte copies. Its completion frame carries the model's digest, computed from
/// the format's definition.
fn structured_stream(rounds: &[Vec<Op>]) -> (Vec<u8>, Vec<u8>) {
    let ps = APPLY_PAGE_SIZE;
    let mut model = vec![0u8; APPLY_PAGES as usize * ps];
    let mut out = vec![0u8; precopy::wire::MAX_HEADER_LEN];
    let n = header(APPLY_PAGES).emit(&mut out).unwrap();
    out.truncate(n);
    let mut lz4 = vec![0u8; precopy::codec::lz4_max_output_len(ps)];
    let mut delta = vec![0u8; ps];
    for (r, ops) in rounds.iter().enumerate() {
        let round = r as u32;
        if r + 1 == rounds.len() {
            push(&mut out, Frame::Switchover { remaining_pages: 0 });
        }
        push(
            &mut out,
            Frame::RoundBegin {
                round,
                planned_pages: ops.len() as u64,
            },
        );
        let mut carried = 0;
        for op in ops {
            match *op {
                Op::Page(page, fill, at, how) => {
                    let slot = &mut model[page as usize * ps..][..ps];
                    let old = slot.to_vec();
                    let at = usize::from(at) % ps;
                    let mut new = if how == 2 {
                        old.clone()
                    } else {
                        vec![fill; ps]
                    };
                    new[at] ^= fill | 1;
                    slot.copy_from_slice(&new);
                    let delta_len = match how {
                        2 => delta_encode(&old, &new, &mut delta).unwrap(),
                        _ => None,
                    };
                    let frame = match (how, delta_len) {
                        (1, _) => {
                            let n = precopy::codec::Lz4Compressor::new()
                                .compress(&new, &mut lz4)
                                .unwrap();
                            Frame::Lz4 {
                                page,
                                data: &lz4[..n],
                            }
                        }
                        (_, Some(n)) => Frame::Delta {
                            page,
                            base_hash: xxhash_rust::xxh3::xxh3_64(&old),
                            data: &delta[..n],
                        },
                        _ => Frame::Raw { page, data: &new },
                    };
                    push(&mut out, frame);
                    carried += 1;
                }
                Op::Zero(first_page, count) => {
                    model[first_page as usize * ps..][..count as usize * ps].fill(0);
                    push(&mut out, Frame::ZeroRun { first_page, count });
                    carried += count;
                }
            }
        }
        push(
            &mut out,
            Frame::RoundEnd {
                round,
                pages: carried,
            },
        );
    }
    push(
        &mut out,
        Frame::Complete {
            total_pages: APPLY_PAGES,
            digest: reference_digest(&model, ps, Shard::WHOLE),
        },
    );
    (out, model)
}

/// A frame with arbitrary fields, owning its data.
#[derive(Clone, Debug)]
enum AnyFrame {
    Zero(u64, u64),
    Raw(u64, Vec<u8>),
    Lz4(u64, Vec<u8>),
    Delta(u64, u64, Vec<u8>),
    Begin(u32, u64),
    End(u32, u64),
    Switchover(u64),
    Complete(u64, u128),
}

fn any_frame() -> impl Strategy<Value = AnyFrame> {
    let page = 0..APPLY_PAGES + 2;
    let round = 0u32..4;
    prop_oneof![
        (page.clone(), 0u64..40).prop_map(|(p, n)| AnyFrame::Zero(p, n)),
        (page.clone(), any::<u8>(), any::<bool>()).prop_map(|(p, b, full)| {
            AnyFrame::Raw(
                p,
                vec![
                    b;
                    if full {
                        APPLY_PAGE_SIZE
                    } else {
                        usize::from(b)
                    }
                ],
            )
        }),
        (page.clone(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(p, d)| AnyFrame::Lz4(p, d)),
        (
            page,
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..32)
        )
            .prop_map(|(p, zero_base, d)| {
                // Half of them name the base every fresh page has.
                let base = if zero_base {
                    base_hash(&[0; APPLY_PAGE_SIZE])
                } else {
                    7
                };
                AnyFrame::Delta(p, base, d)
            }),
        (round.clone(), 0u64..40).prop_map(|(r, n)| AnyFrame::Begin(r, n)),
        (round, 0u64..8).prop_map(|(r, n)| AnyFrame::End(r, n)),
        any::<u64>().prop_map(AnyFrame::Switchover),
        (prop_oneof![Just(APPLY_PAGES), any::<u64>()], any::<u128>())
            .prop_map(|(t, d)| AnyFrame::Complete(t, d)),
    ]
}

/// A valid header, then `frames` (those a frame cannot carry are left out): inputs
/// that get past the magic and the checksums into the applier's own checks.
fn header_and_frames(frames: &[AnyFrame]) -> Vec<u8> {
    let mut out = vec![0u8; precopy::wire::MAX_HEADER_LEN];
    let n = header(APPLY_PAGES).emit(&mut out).unwrap();
    out.truncate(n);
    for f in frames {
        let frame = match f {
            AnyFrame::Zero(p, n) => Frame::ZeroRun {
                first_page: *p,
                count: *n,
            },
            AnyFrame::Raw(page, data) => Frame::Raw { page: *page, data },
            AnyFrame::Lz4(page, data) => Frame::Lz4 { page: *page, data },
            AnyFrame::Delta(page, base_hash, data) => Frame::Delta {
                page: *page,
                base_hash: *base_hash,
                data,
            },
            AnyFrame::Begin(round, planned_pages) => Frame::RoundBegin {
                round: *round,
                planned_pages: *planned_pages,
            },
            AnyFrame::End(round, pages) => Frame::RoundEnd {
                round: *round,
                pages: *pages,
            },
            AnyFrame::Switchover(remaining_pages) => Frame::Switchover {
                remaining_pages: *remaining_pages,
            },
            AnyFrame::Complete(total_pages, digest) => Frame::Complete {
                total_pages: *total_pages,
                digest: *digest,
            },
        };
        let at = out.len();
        out.resize(at + frame.encoded_len(), 0);
        match frame.emit(APPLY_PAGE_SIZE, &mut out[at..]) {
            Ok(n) => out.truncate(at + n),
            Err(_) => out.truncate(at),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(128)))]

    /// Valid streams built frame by frame complete in the fuzz body (so its checks
    /// of a completed stream run), and leave exactly the model's memory.
    #[test]
    fn apply_fuzz_body_completes_structured_streams(rounds in rounds()) {
        let (stream, model) = structured_stream(&rounds);
        prop_assert!(apply_stream_completes(&stream), "a valid stream did not complete");
        let mut applier = Applier::with_memory(VecMemory::new(APPLY_PAGE_SIZE, APPLY_PAGES));
        prop_assert_eq!(applier.feed(&stream), Ok(Progress::Complete));
        prop_assert!(applier.memory().as_bytes() == model.as_slice());
    }

    /// The same streams with bytes changed, frames cut short or dropped.
    #[test]
    fn apply_fuzz_body_holds_on_mutated_structured_streams(
        rounds in rounds(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (mut stream, _) = structured_stream(&rounds);
        for (at, v) in edits {
            let i = at.index(stream.len());
            stream[i] = v;
        }
        if truncate {
            stream.truncate(cut.index(stream.len()));
        }
        apply_stream(&stream);
    }

    /// Arbitrary frames after a valid header: past the magic and the checksums.
    #[test]
    fn apply_fuzz_body_holds_on_arbitrary_frames(
        frames in prop::collection::vec(any_frame(), 0..24),
    ) {
        apply_stream(&header_and_frames(&frames));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(64)))]

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
