//! Property tests of the stream format: split independence, corruption and truncation
//! detection, typed errors with locations, and the `wire_decode` fuzz body.

use precopy::bitmap::GuestLayout;
use precopy::engine::{Applier, Progress};
use precopy::fuzzing::{decode_in_pieces, wire_decode, StreamBuilder};
use precopy::memory::{PageMemory, VecMemory};
use precopy::wire::{
    Features, Frame, Location, StreamHeader, WireError, WireErrorKind, FORMAT_VERSION,
};
use proptest::prelude::*;

const PAGE: usize = 512;
const PAGES: u64 = 8;

/// A source memory with zero, text-like and random pages, and a stream of three
/// rounds (bulk, an iterative round with edits, the final round) that migrates it.
fn source_and_stream(seed: u64) -> (VecMemory, Vec<u8>) {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut mem = VecMemory::new(PAGE, PAGES);
    for p in 0..PAGES {
        let mut page = vec![0u8; PAGE];
        match next() % 3 {
            0 => {}
            1 => page
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = b"page text "[i % 10]),
            _ => page.iter_mut().for_each(|b| *b = next() as u8),
        }
        mem.write_page(p, &page).unwrap();
    }
    let layout = GuestLayout::flat(PAGE as u64, PAGES * PAGE as u64).unwrap();
    let mut stream = StreamBuilder::new(layout, 1 << 16);
    stream.round(&mem, &(0..PAGES).collect::<Vec<_>>());
    let dirty: Vec<u64> = (0..PAGES).filter(|_| next() % 2 == 0).collect();
    for &p in &dirty {
        let at = (next() as usize) % PAGE;
        mem.as_bytes_mut()[p as usize * PAGE + at] ^= 0x41;
    }
    stream.round(&mem, &dirty);
    stream.switchover(1);
    mem.as_bytes_mut()[PAGE * 3] ^= 1;
    stream.round(&mem, &[3]);
    let bytes = stream.complete(&mem);
    (mem, bytes)
}

/// Applies `stream` in one piece; Ok only when the applier reports completion and
/// the stream ended cleanly.
fn apply(stream: &[u8]) -> Result<VecMemory, String> {
    let mut applier = Applier::with_memory(VecMemory::new(PAGE, PAGES));
    match applier.feed(stream) {
        Ok(Progress::Complete) => {}
        Ok(Progress::InProgress) => {}
        Err(e) => return Err(e.to_string()),
    }
    applier.finish().map_err(|e| e.to_string())?;
    Ok(applier.into_memory())
}

#[test]
fn valid_streams_rebuild_the_source() {
    for seed in 1..20 {
        let (mem, stream) = source_and_stream(seed);
        assert_eq!(apply(&stream).unwrap(), mem, "seed {seed}");
    }
}

#[test]
fn every_single_bit_flip_is_an_error() {
    let (_, stream) = source_and_stream(7);
    assert!(stream.len() < 6000, "keep this exhaustive test small");
    for bit in 0..stream.len() * 8 {
        let mut bad = stream.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(apply(&bad).is_err(), "bit {bit} flipped went unnoticed");
    }
}

#[test]
fn every_truncation_is_an_error() {
    let (_, stream) = source_and_stream(8);
    for len in 0..stream.len() {
        let err = apply(&stream[..len]).expect_err("truncated stream accepted");
        assert!(
            err.contains("ends") || err.contains("cut"),
            "truncation at {len}: {err}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_split_decodes_to_the_same_frames(
        seed in 1..1000u64,
        cuts in proptest::collection::vec(0..600usize, 0..40),
    ) {
        let (_, stream) = source_and_stream(seed);
        let whole = decode_in_pieces(&stream, std::iter::empty());
        prop_assert_eq!(&whole.1, &Ok(()));
        prop_assert!(whole.0.len() > 6);
        let split = decode_in_pieces(&stream, cuts);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn corruption_never_yields_different_memory(
        seed in 1..1000u64,
        at in any::<prop::sample::Index>(),
        xor in 1..=255u8,
        cut in any::<prop::sample::Index>(),
    ) {
        let (mem, stream) = source_and_stream(seed);
        let mut bad = stream.clone();
        bad[at.index(stream.len())] ^= xor;
        prop_assert!(apply(&bad).is_err());
        let truncated = &stream[..cut.index(stream.len())];
        prop_assert!(apply(truncated).is_err());
        prop_assert_eq!(apply(&stream).unwrap(), mem);
    }

    #[test]
    fn wire_fuzz_body_holds_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        wire_decode(&data);
    }

    #[test]
    fn wire_fuzz_body_holds_on_mutated_streams(
        seed in 1..1000u64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let (_, mut stream) = source_and_stream(seed);
        for (at, v) in edits {
            let i = at.index(stream.len());
            stream[i] = v;
        }
        wire_decode(&stream);
    }
}

fn header() -> StreamHeader {
    StreamHeader {
        features: Features::ALL,
        session_id: [1; 16],
        layout: GuestLayout::new(4096, &[(0, 1 << 20), (1 << 32, 1 << 20)]).unwrap(),
        stream: precopy::wire::Shard::WHOLE,
    }
}

#[test]
fn header_roundtrips_and_newer_versions_are_refused() {
    let h = header();
    let mut buf = vec![0u8; 2000];
    let n = h.emit(&mut buf).unwrap();
    assert_eq!(n, 40 + 2 * 16 + 4);
    assert_eq!(StreamHeader::parse(&buf[..n]), Ok(h));
    buf[8..10].copy_from_slice(&9u16.to_le_bytes());
    let (_, end) = decode_in_pieces(&buf[..n], std::iter::empty());
    let err = end.unwrap_err();
    assert_eq!(err.kind, WireErrorKind::NewerVersion { version: 9 });
    assert_eq!(err.location, Location::Header);
    assert!(
        err.to_string().contains(&format!(
            "stream format version 9 is newer than this precopy supports ({FORMAT_VERSION})"
        )),
        "{err}"
    );
}

#[test]
fn errors_name_the_frame_and_byte_offset() {
    let h = header();
    let mut buf = vec![0u8; 4000];
    let mut n = h.emit(&mut buf).unwrap();
    let header_len = n;
    n += Frame::RoundBegin {
        round: 0,
        planned_pages: 1,
    }
    .emit(4096, &mut buf[n..])
    .unwrap();
    let second = n;
    n += Frame::ZeroRun {
        first_page: 0,
        count: 1,
    }
    .emit(4096, &mut buf[n..])
    .unwrap();
    buf[second + 12] ^= 0x10; // body of frame 1
    let (events, end) = decode_in_pieces(&buf[..n], std::iter::empty());
    assert_eq!(events.len(), 2);
    let err: WireError = end.unwrap_err();
    assert_eq!(
        err.location,
        Location::Frame {
            number: 1,
            offset: second as u64
        }
    );
    assert!(matches!(err.kind, WireErrorKind::ChecksumMismatch { .. }));
    assert!(err
        .to_string()
        .starts_with(&format!("frame 1 (byte {second}): checksum mismatch")));
    assert!(header_len < second);
}

#[test]
fn stream_rules_are_enforced() {
    let h = header();
    let total = h.layout.total_pages();
    let cases: Vec<(Vec<Frame<'static>>, WireErrorKind)> = vec![
        (
            vec![Frame::ZeroRun {
                first_page: 0,
                count: 1,
            }],
            WireErrorKind::PageOutsideRound,
        ),
        (
            vec![
                Frame::RoundBegin {
                    round: 0,
                    planned_pages: 1,
                },
                Frame::ZeroRun {
                    first_page: total - 1,
                    count: 2,
                },
            ],
            WireErrorKind::BadZeroRun {
                first: total - 1,
                count: 2,
                total,
            },
        ),
        (
            vec![Frame::RoundBegin {
                round: 1,
                planned_pages: 0,
            }],
            WireErrorKind::UnexpectedRound {
                expected: 0,
                found: 1,
            },
        ),
        (
            vec![
                Frame::RoundBegin {
                    round: 0,
                    planned_pages: 1,
                },
                Frame::ZeroRun {
                    first_page: 0,
                    count: 3,
                },
                Frame::RoundEnd { round: 0, pages: 2 },
            ],
            WireErrorKind::RoundCountMismatch {
                round: 0,
                stated: 2,
                carried: 3,
            },
        ),
        (
            vec![Frame::Complete {
                total_pages: total,
                digest: 0,
            }],
            WireErrorKind::CompleteBeforeSwitchover,
        ),
        (
            vec![
                Frame::Switchover { remaining_pages: 0 },
                Frame::Switchover { remaining_pages: 0 },
            ],
            WireErrorKind::DuplicateSwitchover,
        ),
        (
            vec![
                Frame::Switchover { remaining_pages: 0 },
                Frame::Complete {
                    total_pages: 5,
                    digest: 0,
                },
            ],
            WireErrorKind::TotalPagesMismatch {
                stated: 5,
                layout: total,
            },
        ),
        (
            vec![
                Frame::Switchover { remaining_pages: 0 },
                Frame::Complete {
                    total_pages: total,
                    digest: 0,
                },
                Frame::Switchover { remaining_pages: 0 },
            ],
            WireErrorKind::TrailingData,
        ),
    ];
    for (frames, expected) in cases {
        let mut buf = vec![0u8; 8000];
        let mut n = h.emit(&mut buf).unwrap();
        for f in &frames {
            n += f.emit(4096, &mut buf[n..]).unwrap();
        }
        let (_, end) = decode_in_pieces(&buf[..n], std::iter::empty());
        assert_eq!(end.unwrap_err().kind, expected, "{frames:?}");
    }
    // A header without LZ4 makes an LZ4 frame an error.
    let mut h2 = h;
    h2.features = Features::DELTA;
    let mut buf = vec![0u8; 8000];
    let mut n = h2.emit(&mut buf).unwrap();
    n += Frame::RoundBegin {
        round: 0,
        planned_pages: 1,
    }
    .emit(4096, &mut buf[n..])
    .unwrap();
    n += Frame::Lz4 {
        page: 0,
        data: &[0x10, 0],
    }
    .emit(4096, &mut buf[n..])
    .unwrap();
    let (_, end) = decode_in_pieces(&buf[..n], std::iter::empty());
    assert_eq!(
        end.unwrap_err().kind,
        WireErrorKind::FeatureNotAnnounced { feature: "LZ4" }
    );
}

#[test]
fn small_decoder_buffers_are_refused_before_any_frame() {
    let h = header();
    let mut buf = vec![0u8; 200];
    let n = h.emit(&mut buf).unwrap();
    let mut decoder = precopy::wire::Decoder::new(vec![0u8; 1100]);
    let mut input = &buf[..n];
    let err = decoder.next(&mut input).unwrap_err();
    assert!(matches!(
        err.kind,
        WireErrorKind::BufferTooSmall { capacity: 1100, .. }
    ));
}

#[test]
fn a_decoder_without_room_for_a_header_errors_instead_of_panicking() {
    for len in [0, 11, 1000] {
        let mut decoder = precopy::wire::Decoder::new(vec![0u8; len]);
        let mut input: &[u8] = b"PREC";
        let err = decoder.next(&mut input).unwrap_err();
        assert!(
            matches!(err.kind, WireErrorKind::BufferTooSmall { .. }),
            "{len}: {err}"
        );
    }
}
