//! Property tests of every codec: roundtrips on generated page pairs, and the
//! `codec_roundtrip` fuzz body on arbitrary bytes.

use precopy::codec::{delta_encode, CodecError, EncoderConfig, Encoding, PageEncoder};
use precopy::fuzzing::{check_codecs, check_stream, codec_roundtrip};
use precopy::layout::{MAX_PAGE_SIZE, MIN_PAGE_SIZE};
use proptest::prelude::*;

const PAGE: usize = 4096;

/// Pages of the shapes a guest has: random, text-like, all zero, sparse.
fn page() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), PAGE),
        "[a-z ,.\n]{64}".prop_map(|s| s.into_bytes().into_iter().cycle().take(PAGE).collect()),
        Just(vec![0u8; PAGE]),
        proptest::collection::vec((0..PAGE, any::<u8>()), 0..16).prop_map(|edits| {
            let mut p = vec![0u8; PAGE];
            for (at, v) in edits {
                p[at] = v;
            }
            p
        }),
    ]
}

/// A page and a new version of it: sparse edits, a changed run, or unrelated bytes.
fn page_pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    page().prop_flat_map(|old| {
        let edited = proptest::collection::vec((0..PAGE, any::<u8>()), 1..200).prop_map({
            let old = old.clone();
            move |edits| {
                let mut new = old.clone();
                for (at, v) in edits {
                    new[at] = v;
                }
                new
            }
        });
        let run = (0..PAGE, 1..512usize, any::<u8>()).prop_map({
            let old = old.clone();
            move |(at, len, v)| {
                let mut new = old.clone();
                let end = (at + len).min(PAGE);
                new[at..end]
                    .iter_mut()
                    .for_each(|b| *b = b.wrapping_add(v | 1));
                new
            }
        });
        (Just(old), prop_oneof![edited, run, page()])
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(96)))]

    #[test]
    fn every_codec_roundtrips((old, new) in page_pair()) {
        check_codecs(&old, &new);
    }

    #[test]
    fn one_byte_changed_at_the_first_or_last_offset(old in page(), last in any::<bool>(), v in 1..=255u8) {
        let mut new = old.clone();
        let at = if last { PAGE - 1 } else { 0 };
        new[at] ^= v;
        check_codecs(&old, &new);
        let mut out = [0u8; 16];
        let n = delta_encode(&old, &new, &mut out).unwrap().unwrap();
        prop_assert!(n <= 5, "a one-byte change costs {n} bytes");
    }

    #[test]
    fn codec_fuzz_body_holds_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        codec_roundtrip(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(24)))]

    #[test]
    fn pairs_survive_the_wire_and_the_applier((old, new) in page_pair()) {
        check_stream(PAGE, &old, &new);
    }
}

#[test]
fn chooser_picks_each_codec_and_counts_it() {
    let mut enc = PageEncoder::new(EncoderConfig::new(PAGE)).unwrap();
    let mut out = vec![0u8; enc.max_payload_len()];
    let text: Vec<u8> = b"the quick brown fox "
        .iter()
        .cycle()
        .take(PAGE)
        .copied()
        .collect();
    let mut random = vec![0u8; PAGE];
    let mut x = 1u64;
    for b in &mut random {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        *b = (x >> 56) as u8;
    }
    let choose = |enc: &mut PageEncoder, page: u64, data: &[u8], out: &mut [u8]| {
        enc.encode(page, data, out).unwrap().encoding
    };
    assert_eq!(choose(&mut enc, 0, &[0; PAGE], &mut out), Encoding::Zero);
    assert_eq!(choose(&mut enc, 1, &text, &mut out), Encoding::Lz4);
    assert_eq!(choose(&mut enc, 2, &random, &mut out), Encoding::Raw);
    random[7] ^= 0xff;
    assert_eq!(choose(&mut enc, 2, &random, &mut out), Encoding::Delta);
    // Page 2 sent as zero: its base must go, so the next version is not a delta
    // against the stale random bytes.
    assert_eq!(choose(&mut enc, 2, &[0; PAGE], &mut out), Encoding::Zero);
    assert_eq!(choose(&mut enc, 2, &random, &mut out), Encoding::Raw);
    let stats = enc.stats();
    for (e, pages) in [
        (Encoding::Zero, 2),
        (Encoding::Lz4, 1),
        (Encoding::Raw, 2),
        (Encoding::Delta, 1),
    ] {
        assert_eq!(stats.get(e).pages, pages, "{e:?}");
    }
    assert_eq!(stats.get(Encoding::Raw).bytes_out, 2 * PAGE as u64);
    assert_eq!(stats.pages(), 6);
    let cache = enc.cache_stats();
    assert_eq!((cache.hits, cache.drops), (1, 1));
}

#[test]
fn clock_hook_times_each_codec() {
    let mut t = 0u64;
    let clock = move || {
        t += 10;
        t
    };
    let mut enc = PageEncoder::with_clock(EncoderConfig::new(PAGE), clock).unwrap();
    let mut out = vec![0u8; enc.max_payload_len()];
    enc.encode(0, &[1; PAGE], &mut out).unwrap();
    assert_eq!(enc.stats().get(Encoding::Zero).ns, 10);
    assert_eq!(enc.stats().get(Encoding::Lz4).ns, 10);
    assert_eq!(enc.stats().get(Encoding::Lz4).attempts, 1);
}

#[test]
fn bad_inputs_are_typed_errors() {
    assert_eq!(
        PageEncoder::new(EncoderConfig::new(3000)).unwrap_err(),
        CodecError::BadPageSize { page_size: 3000 }
    );
    for ok in [MIN_PAGE_SIZE, MAX_PAGE_SIZE] {
        assert!(PageEncoder::new(EncoderConfig::new(ok)).is_ok());
    }
    let mut enc = PageEncoder::new(EncoderConfig::new(PAGE)).unwrap();
    let err = enc.encode(0, &[0; PAGE], &mut [0; 100]).unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
    assert!(matches!(
        enc.encode(0, &[0; 100], &mut vec![0; PAGE * 2]),
        Err(CodecError::BadPageLength { len: 100, .. })
    ));
}

/// A page version: zero, a small edit of the previous version, or fresh bytes.
#[derive(Clone, Debug)]
enum Version {
    Zero,
    Edit(usize, u8),
    Fresh(u8),
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        1 => Just(Version::Zero),
        4 => (0..PAGE, 1..=255u8).prop_map(|(at, v)| Version::Edit(at, v)),
        1 => any::<u8>().prop_map(Version::Fresh),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(64)))]

    /// Delta base agreement under eviction: the source sends versions of 6 pages
    /// through a 2-page cache; every delta names exactly the bytes the destination
    /// holds, and the destination always ends equal to the source.
    #[test]
    fn deltas_are_always_made_against_what_the_destination_holds(
        sends in proptest::collection::vec((0..6usize, version()), 1..60),
    ) {
        let mut config = EncoderConfig::new(PAGE);
        config.cache_bytes = 2 * (PAGE + precopy::codec::SLOT_OVERHEAD);
        let mut enc = PageEncoder::new(config).unwrap();
        let mut out = vec![0u8; enc.max_payload_len()];
        let mut source = vec![vec![0u8; PAGE]; 6];
        let mut dest = vec![vec![0u8; PAGE]; 6];
        for (p, v) in sends {
            match v {
                Version::Zero => source[p].fill(0),
                Version::Edit(at, x) => source[p][at] ^= x,
                Version::Fresh(seed) => {
                    let mut x = u32::from(seed) | 1;
                    for b in source[p].iter_mut() {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        *b = x as u8;
                    }
                }
            }
            let sent = enc.encode(p as u64, &source[p], &mut out).unwrap();
            if sent.encoding == Encoding::Delta {
                prop_assert_eq!(sent.base_hash, precopy::codec::base_hash(&dest[p]));
            }
            precopy::codec::decode_page(sent.encoding, &out[..sent.len], &mut dest[p]).unwrap();
            prop_assert_eq!(&dest[p], &source[p]);
        }
        let cache = enc.cache_stats();
        prop_assert!(cache.hits + cache.misses >= enc.stats().get(Encoding::Delta).pages);
    }
}

/// An operation on a page cache.
#[derive(Clone, Debug)]
enum CacheOp {
    Store(u64, u8),
    Drop(u64),
    Lookup(u64),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(64)))]

    /// The cache against a model: whatever it returns for a page is the last version
    /// stored for it (never another page's bytes, never a dropped version), and it never
    /// holds more than its capacity.
    #[test]
    fn page_cache_returns_only_the_last_version_stored(
        ops in proptest::collection::vec(
            prop_oneof![
                4 => (0..40u64, any::<u8>()).prop_map(|(p, v)| CacheOp::Store(p, v)),
                1 => (0..40u64).prop_map(CacheOp::Drop),
                3 => (0..40u64).prop_map(CacheOp::Lookup),
            ],
            1..300,
        ),
        slots in 1..12usize,
    ) {
        use precopy::codec::{PageCache, SLOT_OVERHEAD};
        const P: usize = 512;
        let mut cache = PageCache::new(P, slots * (P + SLOT_OVERHEAD)).unwrap();
        prop_assert_eq!(cache.capacity(), slots);
        let mut model: std::collections::HashMap<u64, u8> = Default::default();
        for op in ops {
            match op {
                CacheOp::Store(p, v) => {
                    cache.store(p, &[v; P]);
                    model.insert(p, v);
                    prop_assert!(cache.contains(p), "page {} just stored is missing", p);
                }
                CacheOp::Drop(p) => {
                    cache.drop_page(p);
                    model.remove(&p);
                    prop_assert!(!cache.contains(p));
                }
                CacheOp::Lookup(p) => {
                    if let Some(base) = cache.lookup(p) {
                        let v = model.get(&p).copied();
                        prop_assert_eq!(Some(base.bytes[0]), v);
                        prop_assert!(base.bytes.iter().all(|&b| Some(b) == v));
                        prop_assert_eq!(base.hash, precopy::codec::base_hash(base.bytes));
                    }
                }
            }
            prop_assert!(cache.len() <= cache.capacity());
            let held = (0..40u64).filter(|&p| cache.contains(p)).count();
            prop_assert_eq!(held, cache.len());
        }
    }
}
