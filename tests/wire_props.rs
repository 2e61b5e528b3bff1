//! Property tests of the stream format: split independence, corruption and truncation
//! detection, typed errors with locations, and the `wire_decode` fuzz body.

use precopy::engine::{Applier, Progress};
use precopy::fuzzing::{decode_in_pieces, wire_decode, StreamBuilder};
use precopy::layout::GuestLayout;
use precopy::layout::Shard;
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
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(64)))]

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
        stream: Shard::WHOLE,
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

// ---- multi-stream headers and page ownership (format 2) ----------------------------

/// Rewrites a header's trailing CRC-32 after a test changed its bytes.
fn reseal(header: &mut [u8]) {
    let n = header.len();
    let crc = crc32fast::hash(&header[..n - 4]);
    header[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// A header for stream `shard` of a flat guest of `pages` pages of `page_size` bytes.
fn shard_header(shard: Shard, page_size: u64, pages: u64) -> StreamHeader {
    StreamHeader {
        features: Features::ALL,
        session_id: [7; 16],
        layout: GuestLayout::flat(page_size, pages * page_size).unwrap(),
        stream: shard,
    }
}

/// The header's bytes; a format-2 header carries the stream at offsets 38 and 39.
fn header_bytes(h: &StreamHeader) -> Vec<u8> {
    let mut buf = vec![0u8; h.encoded_len()];
    assert_eq!(h.emit(&mut buf).unwrap(), buf.len());
    buf
}

/// How parsing the header alone and decoding it as a stream end.
fn parse_both_ways(bytes: &[u8]) -> Result<StreamHeader, WireErrorKind> {
    let parsed = StreamHeader::parse(bytes);
    let (events, end) = decode_in_pieces(bytes, [5, 30]);
    match &parsed {
        Ok(_) => {
            assert_eq!(events.len(), 1);
            // Only the completion is missing.
            assert_eq!(end.unwrap_err().kind, WireErrorKind::EndedBeforeCompletion);
        }
        Err(kind) => {
            assert!(events.is_empty());
            let err = end.unwrap_err();
            assert_eq!((err.kind, err.location), (*kind, Location::Header));
        }
    }
    parsed
}

#[test]
fn format_2_headers_carry_the_stream() {
    assert_eq!(FORMAT_VERSION, 2);
    for (index, count) in [(0, 1), (1, 2), (2, 3), (0, 255), (254, 255)] {
        let h = shard_header(Shard::new(index, count).unwrap(), 4096, 3000);
        let bytes = header_bytes(&h);
        assert_eq!(&bytes[8..10], &2u16.to_le_bytes());
        assert_eq!((bytes[38], bytes[39]), (index, count));
        assert_eq!(parse_both_ways(&bytes), Ok(h));
    }
}

#[test]
fn format_1_headers_are_the_whole_stream_with_zero_stream_bytes() {
    let h = shard_header(Shard::WHOLE, 4096, 3000);
    let mut v1 = header_bytes(&h);
    v1[8..10].copy_from_slice(&1u16.to_le_bytes());
    v1[38] = 0;
    v1[39] = 0;
    reseal(&mut v1);
    let parsed = parse_both_ways(&v1).unwrap();
    assert_eq!(parsed, h);
    assert_eq!(parsed.stream, Shard::WHOLE);
    // A format-1 stream still migrates: a whole stream whose pages all decode.
    let mut n = v1.len();
    v1.resize(n + 200, 0);
    for f in [
        Frame::RoundBegin {
            round: 0,
            planned_pages: 3000,
        },
        Frame::ZeroRun {
            first_page: 0,
            count: 3000,
        },
        Frame::RoundEnd {
            round: 0,
            pages: 3000,
        },
    ] {
        n += f.emit(4096, &mut v1[n..]).unwrap();
    }
    let (events, end) = decode_in_pieces(&v1[..n], [3, 17]);
    assert_eq!(events.len(), 4);
    assert_eq!(end.unwrap_err().kind, WireErrorKind::EndedBeforeCompletion);

    // Bytes 38 and 39 were reserved in format 1: anything but zero is refused, even
    // a valid format-2 stream description.
    let mut bad = header_bytes(&h);
    bad[8..10].copy_from_slice(&1u16.to_le_bytes());
    for (index, count) in [(0, 1), (1, 0), (1, 2), (0, 3), (255, 255)] {
        bad[38] = index;
        bad[39] = count;
        reseal(&mut bad);
        assert_eq!(
            parse_both_ways(&bad),
            Err(WireErrorKind::ReservedNotZero),
            "format 1 with stream bytes {index}/{count}"
        );
    }
}

#[test]
fn format_2_headers_with_an_impossible_stream_are_refused() {
    let mut bytes = header_bytes(&shard_header(Shard::new(0, 2).unwrap(), 4096, 3000));
    for (index, count) in [(0, 0), (1, 0), (2, 2), (3, 2), (255, 255), (200, 7)] {
        bytes[38] = index;
        bytes[39] = count;
        reseal(&mut bytes);
        let err = parse_both_ways(&bytes).unwrap_err();
        assert_eq!(err, WireErrorKind::BadStream { index, count });
        assert!(err
            .to_string()
            .contains(&format!("stream index {index} of {count}")));
    }
}

/// The header of `shard` over `pages` pages of `PAGE` bytes, then round 0 carrying
/// `frame` (and as many pages as it states); returns the stream bytes and the offset of
/// `frame` in them.
fn one_frame_stream(shard: Shard, pages: u64, frame: Frame<'_>) -> (Vec<u8>, usize) {
    let carried = match frame {
        Frame::ZeroRun { count, .. } => count,
        _ => 1,
    };
    let mut buf = header_bytes(&shard_header(shard, PAGE as u64, pages));
    let mut n = buf.len();
    buf.resize(n + 3 * 12 + 16 + PAGE + 100, 0);
    n += Frame::RoundBegin {
        round: 0,
        planned_pages: carried,
    }
    .emit(PAGE, &mut buf[n..])
    .unwrap();
    let at = n;
    n += frame.emit(PAGE, &mut buf[n..]).unwrap();
    n += Frame::RoundEnd {
        round: 0,
        pages: carried,
    }
    .emit(PAGE, &mut buf[n..])
    .unwrap();
    buf.truncate(n);
    (buf, at)
}

#[test]
fn pages_of_other_streams_are_refused_with_their_frame() {
    let shard = Shard::new(1, 3).unwrap(); // chunks 1, 4, 7, ...: pages 512..1024, 2048..2560
    let raw = [0x5au8; PAGE];
    let frames: Vec<(Frame<'_>, Option<u64>)> = vec![
        (
            Frame::Raw {
                page: 512,
                data: &raw,
            },
            None,
        ),
        (
            Frame::Raw {
                page: 1023,
                data: &raw,
            },
            None,
        ),
        (
            Frame::Raw {
                page: 2048,
                data: &raw,
            },
            None,
        ),
        (
            Frame::Lz4 {
                page: 2559,
                data: &[0x10, 0],
            },
            None,
        ),
        (
            Frame::ZeroRun {
                first_page: 512,
                count: 512,
            },
            None,
        ),
        (
            Frame::ZeroRun {
                first_page: 2100,
                count: 460,
            },
            None,
        ),
        (
            Frame::Raw {
                page: 0,
                data: &raw,
            },
            Some(0),
        ),
        (
            Frame::Raw {
                page: 511,
                data: &raw,
            },
            Some(511),
        ),
        (
            Frame::Raw {
                page: 1024,
                data: &raw,
            },
            Some(1024),
        ),
        (
            Frame::Delta {
                page: 1600,
                base_hash: 1,
                data: &[],
            },
            Some(1600),
        ),
        (
            Frame::Lz4 {
                page: 2560,
                data: &[0x10, 0],
            },
            Some(2560),
        ),
        // A zero run that starts on another stream: its first page.
        (
            Frame::ZeroRun {
                first_page: 500,
                count: 20,
            },
            Some(500),
        ),
        // A zero run that starts in an owned chunk and leaves it: the first page past.
        (
            Frame::ZeroRun {
                first_page: 1000,
                count: 30,
            },
            Some(1024),
        ),
        (
            Frame::ZeroRun {
                first_page: 512,
                count: 513,
            },
            Some(1024),
        ),
        (
            Frame::ZeroRun {
                first_page: 2047,
                count: 2,
            },
            Some(2047),
        ),
    ];
    for (frame, refused) in frames {
        let (stream, at) = one_frame_stream(shard, 3000, frame);
        let (events, end) = decode_in_pieces(&stream, [7, 300, 1]);
        let err = end.unwrap_err();
        match refused {
            None => {
                assert_eq!(events.len(), 4, "{frame:?}");
                assert_eq!(err.kind, WireErrorKind::EndedBeforeCompletion, "{frame:?}");
            }
            Some(page) => {
                assert_eq!(events.len(), 2, "{frame:?}");
                assert_eq!(
                    err.kind,
                    WireErrorKind::PageOnOtherStream {
                        page,
                        index: 1,
                        count: 3
                    },
                    "{frame:?}"
                );
                assert_eq!(
                    err.location,
                    Location::Frame {
                        number: 1,
                        offset: at as u64
                    }
                );
                let msg = err.to_string();
                assert!(
                    msg.starts_with(&format!("frame 1 (byte {at}): page {page} belongs to another stream than this one (1 of 3)")),
                    "{msg}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(256)))]

    /// The decoder accepts exactly the pages `Shard::owns` gives the stream: page frames
    /// of single pages, and zero runs whose every page the stream owns.
    #[test]
    fn the_decoder_accepts_exactly_the_streams_pages(
        count in 1u8..=6,
        index_seed in any::<u8>(),
        total in 1u64..4000,
        page_seed in any::<u64>(),
        run in 1u64..1100,
    ) {
        let index = index_seed % count;
        let shard = Shard::new(index, count).unwrap();
        let page = page_seed % total;
        // The rule, independently of `Shard`: 512-page chunks dealt round-robin.
        let owned = |p: u64| (p / 512) % u64::from(count) == u64::from(index);
        prop_assert_eq!(shard.owns(page), owned(page));

        let raw = [1u8; PAGE];
        let (stream, _) = one_frame_stream(shard, total, Frame::Raw { page, data: &raw });
        let (_, end) = decode_in_pieces(&stream, std::iter::empty());
        let kind = end.unwrap_err().kind;
        if owned(page) {
            prop_assert_eq!(kind, WireErrorKind::EndedBeforeCompletion);
        } else {
            prop_assert_eq!(kind, WireErrorKind::PageOnOtherStream { page, index, count });
        }

        let run = run.min(total - page);
        let (stream, _) =
            one_frame_stream(shard, total, Frame::ZeroRun { first_page: page, count: run });
        let (_, end) = decode_in_pieces(&stream, std::iter::empty());
        let kind = end.unwrap_err().kind;
        match (page..page + run).find(|&p| !owned(p)) {
            None => prop_assert_eq!(kind, WireErrorKind::EndedBeforeCompletion),
            Some(first) => prop_assert_eq!(
                kind,
                WireErrorKind::PageOnOtherStream { page: first, index, count }
            ),
        }
    }
}

/// A complete stream for stream `index` of `count` over the `apply_stream` fuzz guest
/// (32 pages of 1 KiB: all in chunk 0), sending the stream's pages of `memory`.
fn fuzz_guest_stream(index: u8, count: u8, memory: &VecMemory) -> Vec<u8> {
    use precopy::fuzzing::{APPLY_PAGES, APPLY_PAGE_SIZE};
    let shard = Shard::new(index, count).unwrap();
    let layout =
        GuestLayout::flat(APPLY_PAGE_SIZE as u64, APPLY_PAGES * APPLY_PAGE_SIZE as u64).unwrap();
    let mut s = StreamBuilder::for_stream(layout, 1 << 16, shard);
    let pages: Vec<u64> = (0..APPLY_PAGES).filter(|&p| shard.owns(p)).collect();
    s.round(memory, &pages);
    s.switchover(0);
    s.round(memory, &[]);
    s.complete(memory)
}

#[test]
fn the_apply_fuzz_body_checks_a_streams_digest_over_its_own_pages() {
    use precopy::fuzzing::{apply_stream, APPLY_PAGES, APPLY_PAGE_SIZE};
    // Stream 1 of 2 of the 32-page fuzz guest carries no page: its digest is that of
    // no pages, not of the guest's (zero) memory. Stream 0 of 2 carries every page.
    let mut memory = VecMemory::new(APPLY_PAGE_SIZE, APPLY_PAGES);
    memory.as_bytes_mut()[3000] = 9;
    for (index, count) in [(1, 2), (0, 2), (2, 3), (0, 1)] {
        let bytes = fuzz_guest_stream(index, count, &memory);
        let mut applier = Applier::with_memory(VecMemory::new(APPLY_PAGE_SIZE, APPLY_PAGES));
        assert_eq!(
            applier.feed(&bytes),
            Ok(Progress::Complete),
            "{index} of {count}"
        );
        let expect = if index == 0 {
            memory.clone()
        } else {
            VecMemory::new(APPLY_PAGE_SIZE, APPLY_PAGES)
        };
        assert_eq!(applier.into_memory(), expect, "{index} of {count}");
        apply_stream(&bytes);
    }
}

#[test]
fn built_streams_of_every_shard_rebuild_a_guest_on_shared_memory() {
    use precopy::memory::AtomicMemory;
    // 1300 pages of 512 bytes: three chunks, the last one partial.
    let pages = 1300u64;
    let mut source = VecMemory::new(PAGE, pages);
    for (i, b) in source.as_bytes_mut().iter_mut().enumerate() {
        *b = if (i / PAGE) % 5 == 0 {
            0
        } else {
            (i * 31 / 7) as u8
        };
    }
    let layout = GuestLayout::flat(PAGE as u64, pages * PAGE as u64).unwrap();
    for count in 1..=4u8 {
        let dest = AtomicMemory::new(PAGE, pages);
        let mut digests = Vec::new();
        for index in 0..count {
            let shard = Shard::new(index, count).unwrap();
            let mut s = StreamBuilder::for_stream(layout, 1 << 16, shard);
            let owned: Vec<u64> = (0..pages).filter(|&p| shard.owns(p)).collect();
            assert_eq!(owned.len() as u64, shard.pages(pages));
            s.round(&source, &owned);
            s.switchover(0);
            s.round(&source, &[]);
            let bytes = s.complete(&source);
            let mut applier = Applier::with_memory(&dest);
            assert_eq!(applier.feed(&bytes), Ok(Progress::Complete));
            let mut scratch = vec![0u8; PAGE];
            let digest = precopy::memory::digest_stream(&source, shard, &mut scratch).unwrap();
            assert_eq!(applier.digest(), Some(digest));
            digests.push(digest);
        }
        let mut got = vec![0u8; PAGE];
        for p in 0..pages {
            dest.read_page(p, &mut got).unwrap();
            assert_eq!(
                &got[..],
                &source.as_bytes()[p as usize * PAGE..][..PAGE],
                "page {p}"
            );
        }
        digests.dedup();
        assert_eq!(
            digests.len(),
            usize::from(count),
            "{count} streams, distinct digests"
        );
    }
}

#[test]
fn a_format_1_stream_from_an_older_source_still_migrates() {
    for seed in 1..6 {
        let (mem, mut stream) = source_and_stream(seed);
        // The header as format 1 wrote it: version 1, bytes 38 and 39 reserved (zero).
        let header_len = 40 + 16 + 4;
        assert_eq!((stream[38], stream[39]), (0, 1));
        stream[8..10].copy_from_slice(&1u16.to_le_bytes());
        stream[39] = 0;
        reseal(&mut stream[..header_len]);
        assert_eq!(apply(&stream).unwrap(), mem, "seed {seed}");
        // Left with a format-2 stream byte, it is refused before any page is written.
        stream[39] = 1;
        reseal(&mut stream[..header_len]);
        let err = apply(&stream).unwrap_err();
        assert!(err.contains("reserved field is not zero"), "{err}");
    }
}
