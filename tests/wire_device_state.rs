//! Device-state frames (kind 9): round trip, the decoder's bounds and stream rules,
//! and the applier giving the state out only once the stream verified.

use precopy::engine::{Applier, ApplyError, DeviceStateBuf, DeviceStates, Progress};
use precopy::layout::{GuestLayout, Shard};
use precopy::memory::{digest_memory, VecMemory};
use precopy::wire::{
    Decoder, DeviceState, Event, Features, Frame, FrameKind, StreamHeader, WireErrorKind,
    DEVICE_STATE_FIXED_LEN, FRAME_HEADER_LEN,
};

const PAGE: usize = 512;
const PAGES: u64 = 4;

fn header(features: Features) -> StreamHeader {
    StreamHeader {
        features,
        session_id: [9; 16],
        layout: GuestLayout::flat(PAGE as u64, PAGES * PAGE as u64).unwrap(),
        stream: Shard::WHOLE,
    }
}

const VCPU: DeviceState<'static> = DeviceState {
    id: 0x100,
    version: 1,
    data: &[0x5a; 300],
};
const EMPTY: DeviceState<'static> = DeviceState {
    id: 7,
    version: 65535,
    data: &[],
};

/// A whole stream of zero memory: one round, switchover, an empty final round,
/// `device` (each item a device-state frame), completion.
fn stream(features: Features, device: &[DeviceState<'_>]) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = header(features).emit(&mut buf).unwrap();
    let digest = digest_memory(&VecMemory::new(PAGE, PAGES), &mut vec![0; PAGE]).unwrap();
    let mut frames = vec![
        Frame::RoundBegin {
            round: 0,
            planned_pages: PAGES,
        },
        Frame::ZeroRun {
            first_page: 0,
            count: PAGES,
        },
        Frame::RoundEnd {
            round: 0,
            pages: PAGES,
        },
        Frame::Switchover { remaining_pages: 0 },
        Frame::RoundBegin {
            round: 1,
            planned_pages: 0,
        },
        Frame::RoundEnd { round: 1, pages: 0 },
    ];
    frames.extend(device.iter().map(|d| Frame::DeviceState(*d)));
    frames.push(Frame::Complete {
        total_pages: PAGES,
        digest,
    });
    for f in frames {
        n += f.emit(PAGE, &mut buf[n..]).unwrap();
    }
    buf.truncate(n);
    buf
}

/// Decodes `bytes` whole: the device-state items, or the first error.
fn decode(bytes: &[u8]) -> Result<Vec<(u32, u16, usize)>, WireErrorKind> {
    let mut decoder = Decoder::with_max_page_size(PAGE);
    let mut input = bytes;
    let mut items = Vec::new();
    while let Some(event) = decoder.next(&mut input).map_err(|e| e.kind)? {
        if let Event::Frame(Frame::DeviceState(d)) = event {
            items.push((d.id, d.version, d.data.len()));
        }
    }
    decoder.finish().map_err(|e| e.kind)?;
    Ok(items)
}

#[test]
fn a_device_state_frame_round_trips_with_its_length() {
    for item in [VCPU, EMPTY] {
        let frame = Frame::DeviceState(item);
        let mut buf = vec![0u8; 1024];
        let n = frame.emit(PAGE, &mut buf).unwrap();
        assert_eq!(n, item.frame_len());
        assert_eq!(
            n,
            FRAME_HEADER_LEN + DEVICE_STATE_FIXED_LEN + item.data.len()
        );
        assert_eq!(buf[0], FrameKind::DeviceState as u8);
        assert_eq!(Frame::parse(&buf[..n], PAGE), Ok(frame));
    }
}

#[test]
fn a_device_state_longer_than_a_page_is_refused_both_ways() {
    let big = [1u8; PAGE + 1];
    let frame = Frame::DeviceState(DeviceState {
        id: 1,
        version: 1,
        data: &big,
    });
    let mut buf = vec![0u8; 2048];
    assert!(matches!(
        frame.emit(PAGE, &mut buf),
        Err(WireErrorKind::BadFrameLength { kind: 9, .. })
    ));
    // A length field beyond the bound is refused from the frame header alone, before
    // any byte of the body is gathered or anything sized from it.
    let mut forged = vec![0u8; FRAME_HEADER_LEN];
    forged[0] = 9;
    forged[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bytes = stream(Features::ALL, &[]);
    let at = bytes.len() - (FRAME_HEADER_LEN + 24);
    bytes.splice(at..at, forged);
    assert!(matches!(
        decode(&bytes),
        Err(WireErrorKind::BadFrameLength {
            kind: 9,
            len: 0xffff_ffff,
            ..
        })
    ));
}

#[test]
fn truncated_corrupt_and_reserved_device_state_are_typed_errors() {
    let mut buf = vec![0u8; 1024];
    let n = Frame::DeviceState(VCPU).emit(PAGE, &mut buf).unwrap();
    // Truncated, at every length short of the whole frame.
    for cut in [0, 5, FRAME_HEADER_LEN, FRAME_HEADER_LEN + 7, n - 1] {
        assert!(
            matches!(
                Frame::parse(&buf[..cut], PAGE),
                Err(WireErrorKind::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    // A flipped bit in the state.
    let mut bad = buf[..n].to_vec();
    bad[n - 3] ^= 0x10;
    assert!(matches!(
        Frame::parse(&bad, PAGE),
        Err(WireErrorKind::ChecksumMismatch { .. })
    ));
    // A body shorter than id, version and reserved.
    let mut short = buf[..FRAME_HEADER_LEN + 4].to_vec();
    short[4..8].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(
        Frame::parse(&short, PAGE),
        Err(WireErrorKind::BadFrameLength { len: 4, .. })
    ));
    // The reserved u16 not zero (checksum made to match, as a writer would).
    let mut reserved = buf[..n].to_vec();
    reserved[FRAME_HEADER_LEN + 6] = 1;
    let crc = crc32fast::hash(&[&reserved[..8], &reserved[FRAME_HEADER_LEN..]].concat());
    reserved[8..12].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        Frame::parse(&reserved, PAGE),
        Err(WireErrorKind::ReservedNotZero)
    );
    // A whole stream cut inside the device-state frame.
    let whole = stream(Features::ALL, &[VCPU]);
    let cut = whole.len() - (FRAME_HEADER_LEN + 24) - 10;
    assert!(matches!(
        decode(&whole[..cut]),
        Err(WireErrorKind::Truncated { .. })
    ));
}

#[test]
fn the_decoder_takes_device_state_only_announced_and_after_the_switchover() {
    assert_eq!(
        decode(&stream(Features::ALL, &[VCPU, EMPTY])),
        Ok(vec![(0x100, 1, 300), (7, 65535, 0)])
    );
    // Not announced in the header.
    assert_eq!(
        decode(&stream(Features::CODECS, &[VCPU])),
        Err(WireErrorKind::FeatureNotAnnounced {
            feature: "device state"
        })
    );
    // Before the switchover, outside a round: refused.
    let mut buf = vec![0u8; 4096];
    let mut n = header(Features::ALL).emit(&mut buf).unwrap();
    n += Frame::DeviceState(VCPU).emit(PAGE, &mut buf[n..]).unwrap();
    assert_eq!(
        decode(&buf[..n]),
        Err(WireErrorKind::DeviceStateBeforeSwitchover)
    );
    // Inside a round: refused.
    let mut n = header(Features::ALL).emit(&mut buf).unwrap();
    for f in [
        Frame::RoundBegin {
            round: 0,
            planned_pages: 0,
        },
        Frame::DeviceState(VCPU),
    ] {
        n += f.emit(PAGE, &mut buf[n..]).unwrap();
    }
    assert_eq!(
        decode(&buf[..n]),
        Err(WireErrorKind::RoundNotEnded { round: 0 })
    );
}

#[test]
fn an_older_reader_refuses_device_state_at_the_header() {
    // What a reader that knows only LZ4 and delta does with the header's feature bits:
    // the unknown bit is refused before any frame (here, by the feature check this
    // precopy applies to bits it does not know).
    let mut buf = vec![0u8; 1024];
    let n = header(Features(Features::ALL.0 | 8))
        .emit(&mut buf)
        .unwrap();
    let err = StreamHeader::parse(&buf[..n]).unwrap_err();
    assert_eq!(err, WireErrorKind::UnknownFeatures { bits: 8 });
    // An unknown frame kind is an error, never skipped.
    let mut bytes = stream(Features::ALL, &[VCPU]);
    let at = bytes.len() - (FRAME_HEADER_LEN + 24) - VCPU.frame_len();
    bytes[at] = 10;
    assert_eq!(
        decode(&bytes),
        Err(WireErrorKind::UnknownFrameKind { kind: 10 })
    );
    assert!(WireErrorKind::UnknownFrameKind { kind: 10 }
        .to_string()
        .contains("newer precopy"));
}

fn collect(states: Option<DeviceStates<'_>>) -> Option<Vec<DeviceState<'_>>> {
    states.map(Iterator::collect)
}

#[test]
fn the_applier_gives_device_state_out_only_once_verified() {
    let bytes = stream(Features::ALL, &[VCPU, EMPTY]);
    let mut applier = Applier::with_memory(VecMemory::new(PAGE, PAGES));
    // Everything but the completion frame: received, not given out.
    let before = bytes.len() - (FRAME_HEADER_LEN + 24);
    assert_eq!(applier.feed(&bytes[..before]), Ok(Progress::InProgress));
    assert!(applier.device_state().is_none());
    assert_eq!(applier.feed(&bytes[before..]), Ok(Progress::Complete));
    assert_eq!(collect(applier.device_state()), Some(vec![VCPU, EMPTY]));

    // The same over a caller buffer (no allocator): fits exactly, or is refused.
    let need = 10 + VCPU.data.len() + 10;
    let applier = Applier::new(VecMemory::new(PAGE, PAGES), vec![0; 4096], vec![0; PAGE])
        .unwrap()
        .with_device_store(DeviceStateBuf::new(vec![0u8; need]));
    let mut fits = applier;
    assert_eq!(fits.feed(&bytes), Ok(Progress::Complete));
    assert_eq!(collect(fits.device_state()), Some(vec![VCPU, EMPTY]));
    let mut small = Applier::new(VecMemory::new(PAGE, PAGES), vec![0; 4096], vec![0; PAGE])
        .unwrap()
        .with_device_store(DeviceStateBuf::new(vec![0u8; need - 1]));
    assert!(matches!(
        small.feed(&bytes),
        Err(ApplyError::DeviceStateTooLarge {
            capacity, ..
        }) if capacity == need - 1
    ));
    // An applier without a store refuses a stream carrying device state, saying why.
    let mut none = Applier::new(VecMemory::new(PAGE, PAGES), vec![0; 4096], vec![0; PAGE]).unwrap();
    let err = none.feed(&bytes).unwrap_err();
    assert!(matches!(
        err,
        ApplyError::DeviceStateTooLarge { capacity: 0, .. }
    ));
    assert!(err.to_string().contains("keeps none"), "{err}");
}

#[test]
fn device_state_of_a_stream_whose_digest_differs_is_never_given_out() {
    let mut bytes = stream(Features::ALL, &[VCPU]);
    // The destination's memory is not zero: the digest cannot match.
    let mut memory = VecMemory::new(PAGE, PAGES);
    precopy::memory::PageMemory::write_page(&mut memory, 1, &[3; PAGE]).unwrap();
    // Drop the zero run so page 1 keeps its bytes: round 0 then carries 0 pages.
    let run = FRAME_HEADER_LEN + 16;
    let begin = header(Features::ALL).encoded_len() + FRAME_HEADER_LEN + 12;
    bytes.drain(begin..begin + run);
    let end = begin;
    let mut fixed = vec![0u8; 64];
    let n = Frame::RoundEnd { round: 0, pages: 0 }
        .emit(PAGE, &mut fixed)
        .unwrap();
    bytes.splice(end..end + n, fixed[..n].iter().copied());
    let mut b = vec![0u8; 64];
    let m = Frame::RoundBegin {
        round: 0,
        planned_pages: PAGES,
    }
    .emit(PAGE, &mut b)
    .unwrap();
    assert_eq!(&bytes[end - m..end], &b[..m]);
    let mut applier = Applier::with_memory(memory);
    assert!(matches!(
        applier.feed(&bytes),
        Err(ApplyError::DigestMismatch { .. })
    ));
    assert!(applier.device_state().is_none());
}

#[test]
fn a_single_stream_destination_hands_the_device_state_over() {
    // The runtime's one-stream destination (a file here): the device state comes
    // with the verified memory.
    let bytes = stream(Features::ALL, &[VCPU, EMPTY]);
    let limits = precopy::runtime::Limits {
        max_memory: PAGES * PAGE as u64,
        expect: None,
    };
    let received = precopy::runtime::receive(&mut &bytes[..], None, &limits).unwrap();
    let items: Vec<_> = received.device_state.iter().map(|d| d.item()).collect();
    assert_eq!(items, [VCPU, EMPTY]);
}
