//! Fuzz target bodies and the stream builder they and the tests share.
//!
//! Each `fuzz/fuzz_targets/*.rs` is one call into a function here, and `tests/`
//! drives the same functions with proptest, so stable CI runs the fuzz logic on
//! bounded random inputs. Every function panics exactly when a property fails.
//! Not part of the public API.

mod migrate;
pub use migrate::{migrate_interleaved, MigrateOutcome, MIGRATE_PAGE_SIZE};

use alloc::vec;
use alloc::vec::Vec;

use crate::codec::{
    decode_page, delta_apply, delta_encode, is_zero_page, lz4_decompress_page, lz4_max_output_len,
    EncoderConfig, Encoding, Lz4Compressor, PageEncoder,
};
use crate::engine::{Applier, Progress};
use crate::layout::GuestLayout;
use crate::layout::Shard;
use crate::memory::digest_stream;
use crate::memory::{FreshMemory, PageMemory, VecMemory};
use crate::wire::{
    max_frame_len, Decoder, Event, Features, Frame, PageFramer, StreamHeader, WireError,
    MAX_HEADER_LEN,
};

/// The cases a property suite runs: `default`, or `PROPTEST_CASES` from the
/// environment when set (proptest's own variable, which a config built with
/// `with_cases` would otherwise override), so a sweep can run every suite at thousands
/// of cases: `PROPTEST_CASES=5000 cargo test --release`.
#[cfg(feature = "std")]
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Page size of the guest that [`apply_stream`] applies to.
pub const APPLY_PAGE_SIZE: usize = 1024;
/// Pages of the guest that [`apply_stream`] applies to.
pub const APPLY_PAGES: u64 = 32;

/// Builds valid streams from a source memory, as the engine will: header, rounds of
/// pages chosen by a [`PageEncoder`] (neighbouring zero pages merged into runs),
/// switchover, completion with the memory's digest.
#[derive(Debug)]
pub struct StreamBuilder {
    out: Vec<u8>,
    page_size: usize,
    encoder: PageEncoder,
    page: Vec<u8>,
    payload: Vec<u8>,
    round: u32,
    stream: Shard,
}

impl StreamBuilder {
    /// A stream for `layout`, with a delta cache of `cache_bytes`.
    pub fn new(layout: GuestLayout, cache_bytes: usize) -> Self {
        Self::for_stream(layout, cache_bytes, Shard::WHOLE)
    }

    /// Stream `stream` of a multi-stream migration of `layout`: its rounds must send
    /// only pages the stream owns, and its completion frame carries the digest of
    /// those pages.
    pub fn for_stream(layout: GuestLayout, cache_bytes: usize, stream: Shard) -> Self {
        let page_size = layout.page_size() as usize;
        let mut config = EncoderConfig::new(page_size);
        config.cache_bytes = cache_bytes;
        let encoder = PageEncoder::new(config).expect("valid page size");
        let header = StreamHeader {
            features: Features::ALL,
            session_id: *b"precopy-fuzzing!",
            layout,
            stream,
        };
        let mut out = vec![0; MAX_HEADER_LEN];
        let n = header.emit(&mut out).expect("header fits");
        out.truncate(n);
        StreamBuilder {
            out,
            page_size,
            payload: vec![0; encoder.max_payload_len()],
            encoder,
            page: vec![0; page_size],
            round: 0,
            stream,
        }
    }

    fn push(&mut self, frame: Frame<'_>) {
        let at = self.out.len();
        self.out.resize(at + frame.encoded_len(), 0);
        frame
            .emit(self.page_size, &mut self.out[at..])
            .expect("valid frame");
    }

    /// One round sending `pages` (ascending, in range) of `memory`.
    pub fn round(&mut self, memory: &impl PageMemory, pages: &[u64]) {
        let round = self.round;
        self.round += 1;
        self.push(Frame::RoundBegin {
            round,
            planned_pages: pages.len() as u64,
        });
        // The engine's framer: what the tests decode is framed as the engine frames it.
        let mut framer = PageFramer::new(self.page_size);
        let mut frames = vec![0u8; 2 * max_frame_len(self.page_size)];
        for &p in pages {
            memory.read_page(p, &mut self.page).expect("page in range");
            let sent = self
                .encoder
                .encode(p, &self.page, &mut self.payload)
                .expect("encodable page");
            let n = framer
                .page(
                    p,
                    sent.encoding,
                    sent.base_hash,
                    &self.payload[..sent.len],
                    &mut frames,
                )
                .expect("valid page frame");
            self.out.extend_from_slice(&frames[..n]);
        }
        let n = framer.flush(&mut frames).expect("valid zero run");
        self.out.extend_from_slice(&frames[..n]);
        self.push(Frame::RoundEnd {
            round,
            pages: pages.len() as u64,
        });
    }

    /// A device-state frame (after the final round, before completion).
    pub fn device_state(&mut self, item: crate::wire::DeviceState<'_>) {
        self.push(Frame::DeviceState(item));
    }

    /// The switchover frame.
    pub fn switchover(&mut self, remaining_pages: u64) {
        self.push(Frame::Switchover { remaining_pages });
    }

    /// The completion frame with the digest of the stream's pages of `memory`;
    /// returns the stream.
    pub fn complete(mut self, memory: &impl PageMemory) -> Vec<u8> {
        let digest = digest_stream(memory, self.stream, &mut self.page).expect("readable memory");
        self.push(Frame::Complete {
            total_pages: memory.total_pages(),
            digest,
        });
        self.out
    }

    /// The encoder (for its statistics).
    pub fn encoder(&self) -> &PageEncoder {
        &self.encoder
    }
}

/// A decoded event reduced to plain values (page data by XXH3-128), to compare runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventPrint {
    /// The header.
    Header(alloc::boxed::Box<StreamHeader>),
    /// A frame: kind byte, its number fields, a hash of its page data.
    Frame(u8, u64, u64, u128),
}

/// The fingerprint of an event.
pub fn event_print(event: &Event<'_>) -> EventPrint {
    let h = xxhash_rust::xxh3::xxh3_128;
    match *event {
        Event::Header(header) => EventPrint::Header(alloc::boxed::Box::new(*header)),
        Event::Frame(f) => {
            let k = f.kind() as u8;
            match f {
                Frame::ZeroRun { first_page, count } => EventPrint::Frame(k, first_page, count, 0),
                Frame::Raw { page, data } | Frame::Lz4 { page, data } => {
                    EventPrint::Frame(k, page, 0, h(data))
                }
                Frame::Delta {
                    page,
                    base_hash,
                    data,
                } => EventPrint::Frame(k, page, base_hash, h(data)),
                Frame::RoundBegin {
                    round,
                    planned_pages: n,
                }
                | Frame::RoundEnd { round, pages: n } => EventPrint::Frame(k, round.into(), n, 0),
                Frame::Switchover { remaining_pages } => {
                    EventPrint::Frame(k, remaining_pages, 0, 0)
                }
                Frame::Complete {
                    total_pages,
                    digest,
                } => EventPrint::Frame(k, total_pages, 0, digest),
                Frame::DeviceState(d) => {
                    EventPrint::Frame(k, d.id.into(), d.version.into(), h(d.data))
                }
            }
        }
    }
}

/// Decodes `stream` fed in the pieces `cuts` gives (each cut a piece length; 0 is
/// skipped and the rest goes in one piece); returns the events and how it ended.
pub fn decode_in_pieces(
    stream: &[u8],
    cuts: impl IntoIterator<Item = usize>,
) -> (Vec<EventPrint>, Result<(), WireError>) {
    let mut decoder = Decoder::with_max_page_size(crate::layout::MAX_PAGE_SIZE);
    let mut events = Vec::new();
    let mut rest = stream;
    let mut cuts = cuts.into_iter();
    while !rest.is_empty() {
        let n = cuts.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (mut piece, tail) = rest.split_at(n);
        rest = tail;
        loop {
            match decoder.next(&mut piece) {
                Ok(Some(event)) => events.push(event_print(&event)),
                Ok(None) => break,
                Err(e) => return (events, Err(e)),
            }
        }
        assert!(piece.is_empty(), "decoder returned None with input left");
    }
    (events, decoder.finish())
}

/// Small piece lengths drawn from `seed` (an LCG): reproducible, cheap splits.
fn cuts_from(seed: u64) -> impl Iterator<Item = usize> {
    let mut x = seed | 1;
    core::iter::from_fn(move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        Some(1 + ((x >> 33) % 97) as usize)
    })
}

/// Fuzz target `wire_decode`: arbitrary bytes into the decoder. The decoder must not
/// panic, and feeding the bytes in small pieces must give exactly the events and the
/// error (with its location) of feeding them at once.
pub fn wire_decode(data: &[u8]) {
    let whole = decode_in_pieces(data, core::iter::empty());
    let seed = data.iter().take(16).fold(data.len() as u64, |a, &b| {
        a.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let split = decode_in_pieces(data, cuts_from(seed));
    assert_eq!(whole, split, "decoding depends on how the stream is split");
}

/// Fuzz target `codec_roundtrip`: two pages from arbitrary bytes (the second a sparse
/// edit of the first); every codec must give back exactly the page it was given, and
/// a two-round stream of them must rebuild the memory at a destination.
pub fn codec_roundtrip(data: &[u8]) {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let page_size = 512usize << (shape % 4);
    let (fill, edits) = rest.split_at(rest.len() / 2);
    let mut old = vec![0u8; page_size];
    if shape & 0x10 != 0 && !fill.is_empty() {
        // A repeated pattern (compressible); else the bytes as they are, zero-padded.
        for (dst, src) in old.iter_mut().zip(fill.iter().cycle()) {
            *dst = *src;
        }
    } else {
        let n = fill.len().min(page_size);
        old[..n].copy_from_slice(&fill[..n]);
    }
    let mut new = old.clone();
    for e in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % page_size;
        new[at] = e[2];
    }
    check_codecs(&old, &new);
    check_stream(page_size, &old, &new);
    // The bytes as an LZ4 block: refused or decoded, never a panic; a page our
    // decoder accepts, lz4_flex's safe decoder decodes the same.
    let mut ours = vec![0u8; page_size];
    if lz4_decompress_page(rest, &mut ours).is_ok() {
        let mut theirs = vec![0u8; page_size];
        let n = lz4_flex::block::decompress_into(rest, &mut theirs).ok();
        assert_eq!(n, Some(page_size), "lz4_flex refuses a block we decoded");
        assert_eq!(ours, theirs, "LZ4 decoders disagree");
    }
}

/// Every codec on one page pair (same length, a supported page size).
pub fn check_codecs(old: &[u8], new: &[u8]) {
    let page_size = new.len();
    for page in [old, new] {
        assert_eq!(is_zero_page(page), page.iter().all(|&b| b == 0));
        let mut out = vec![0u8; lz4_max_output_len(page_size)];
        let n = Lz4Compressor::new().compress(page, &mut out).expect("room");
        let mut back = vec![0xa5u8; page_size];
        lz4_decompress_page(&out[..n], &mut back).expect("own LZ4 decodes");
        assert_eq!(back, page, "LZ4 roundtrip");
    }
    // A page plus two varints always suffices: every unchanged gap but the first is at
    // least 8 bytes, more than the two run lengths that follow it.
    let mut full = vec![0u8; page_size + 6];
    let n = delta_encode(old, new, &mut full)
        .expect("equal lengths")
        .expect("a delta never exceeds a page and 6 bytes");
    let mut back = old.to_vec();
    delta_apply(&mut back, &full[..n]).expect("own delta applies");
    assert_eq!(back, new, "delta roundtrip");
    // Giving up early is exact: a budget fits iff the full encoding fits it.
    for limit in [0, n / 2, n.saturating_sub(1), n] {
        let mut out = vec![0u8; limit];
        match delta_encode(old, new, &mut out).expect("equal lengths") {
            Some(m) => assert_eq!(&out[..m], &full[..n], "limited delta differs"),
            None => assert!(n > limit, "gave up on a delta of {n} within {limit}"),
        }
    }
    // The chooser: old then new of one page; decoding each gives it back.
    let mut config = EncoderConfig::new(page_size);
    config.cache_bytes = 4 * page_size + 4 * crate::codec::SLOT_OVERHEAD;
    let mut enc = PageEncoder::new(config).expect("page size");
    let mut out = vec![0u8; enc.max_payload_len()];
    let mut dest = vec![0x5au8; page_size];
    for page in [old, new] {
        let sent = enc.encode(9, page, &mut out).expect("encodable");
        if sent.encoding == Encoding::Delta {
            assert_eq!(sent.base_hash, crate::codec::base_hash(&dest), "stale base");
        }
        decode_page(sent.encoding, &out[..sent.len], &mut dest).expect("own payload");
        assert_eq!(dest, page, "{:?} roundtrip", sent.encoding);
    }
}

/// A three-round stream of the pair through the wire and the destination applier.
pub fn check_stream(page_size: usize, old: &[u8], new: &[u8]) {
    let pages = 4u64;
    let layout = GuestLayout::flat(page_size as u64, pages * page_size as u64).expect("layout");
    let mut source = VecMemory::new(page_size, pages);
    for p in 0..pages {
        source.write_page(p, old).expect("page");
    }
    let mut stream = StreamBuilder::new(layout, 4 * (page_size + crate::codec::SLOT_OVERHEAD));
    stream.round(&source, &[0, 1, 2, 3]);
    source.write_page(1, new).expect("page");
    source.write_page(3, new).expect("page");
    stream.round(&source, &[1, 3]);
    stream.switchover(0);
    source.write_page(2, new).expect("page");
    stream.round(&source, &[2]);
    let bytes = stream.complete(&source);
    // The production destination: fresh memory, digests from kept hashes.
    let mut dest = FreshMemory::new(page_size, pages).expect("a small guest");
    let mut applier = Applier::with_memory(dest.whole());
    assert_eq!(applier.feed(&bytes), Ok(Progress::Complete));
    applier.finish().expect("complete stream");
    drop(applier);
    assert!(
        dest.as_bytes() == source.as_bytes(),
        "destination differs from source"
    );
}

/// Fuzz target `apply_stream`: arbitrary bytes into the destination applier over a
/// fixed 32 KiB guest ([`APPLY_PAGES`] pages of [`APPLY_PAGE_SIZE`]), in two pieces.
/// No panic, no write out of bounds (the memory checks), nothing allocated from the
/// input; completion is reported only with a matching digest. See
/// [`apply_stream_completes`] for what a completed stream is checked against.
pub fn apply_stream(data: &[u8]) {
    let _ = apply_stream_completes(data);
}

/// The body of [`apply_stream`]; returns whether the applier reported the stream
/// complete, so tests can tell that their structured inputs got that far. The
/// destination is the production one ([`FreshMemory`]: zero pages known, digests
/// folded from the hashes kept as pages were written). A completed stream's digest is
/// checked against the bytes the memory holds, computed here without the digest code
/// the applier uses (one XXH3-64 per page straight over the memory's bytes, the
/// format's XXH3-128 over their concatenation), so kept hashes that lie, stale bytes
/// behind a kept hash, or a digest function both sides get wrong are all caught.
pub fn apply_stream_completes(data: &[u8]) -> bool {
    let mut memory = FreshMemory::new(APPLY_PAGE_SIZE, APPLY_PAGES).expect("a small guest");
    let mut applier = Applier::with_memory(memory.whole());
    let cut = data.first().map_or(0, |&b| usize::from(b) * 37) % (data.len() + 1);
    let mut progress = Ok(Progress::InProgress);
    for piece in [&data[..cut], &data[cut..]] {
        progress = applier.feed(piece);
        if progress.is_err() {
            break;
        }
    }
    if progress != Ok(Progress::Complete) {
        assert!(!applier.is_complete(), "complete after an error");
        return false;
    }
    assert!(applier.is_complete());
    assert_eq!(applier.finish(), Ok(()), "complete but finish fails");
    let device: Vec<EventPrint> = applier
        .device_state()
        .expect("complete: the device state is given out")
        .map(|d| event_print(&Event::Frame(Frame::DeviceState(d))))
        .collect();
    // An independent decode must agree that the stream is whole.
    let (events, end) = decode_in_pieces(data, core::iter::empty());
    let sent: Vec<EventPrint> = events
        .iter()
        .filter(|e| matches!(e, EventPrint::Frame(9, ..)))
        .cloned()
        .collect();
    assert_eq!(
        device, sent,
        "the applier's device state differs from the frames"
    );
    assert_eq!(
        end,
        Ok(()),
        "applier completed a stream the decoder rejects"
    );
    let Some(EventPrint::Frame(8, _, _, digest)) = events.last() else {
        panic!("complete without a completion frame last");
    };
    let Some(EventPrint::Header(header)) = events.first() else {
        panic!("complete without a header first");
    };
    drop(applier);
    let computed = reference_digest(memory.as_bytes(), APPLY_PAGE_SIZE, header.stream);
    assert_eq!(*digest, computed, "completed with memory that differs");
    true
}

/// The stream digest of the format, computed from its definition alone: XXH3-128 over
/// the little-endian XXH3-64 of each of `stream`'s pages of `bytes` (pages of
/// `page_size`), in page order. Shares no code with [`crate::memory::MemoryDigest`],
/// the codec's page hash or the memories' page reads.
pub fn reference_digest(bytes: &[u8], page_size: usize, stream: Shard) -> u128 {
    let mut hashes = Vec::new();
    for (page, data) in bytes.chunks_exact(page_size).enumerate() {
        if stream == Shard::WHOLE || stream.owns(page as u64) {
            hashes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(data).to_le_bytes());
        }
    }
    xxhash_rust::xxh3::xxh3_128(&hashes)
}
