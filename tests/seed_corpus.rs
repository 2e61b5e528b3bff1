//! The fuzz seed corpus in fuzz/corpus/: generated here, so it stays valid as the
//! format evolves. `PRECOPY_WRITE_CORPUS=1 cargo test --test seed_corpus` rewrites it;
//! a plain run checks the committed files are exactly what this generates and that
//! each valid stream migrates a guest completely.

use std::path::PathBuf;

use precopy::engine::{Applier, Progress};
use precopy::fuzzing::{StreamBuilder, APPLY_PAGES, APPLY_PAGE_SIZE};
use precopy::layout::GuestLayout;
use precopy::layout::Shard;
use precopy::memory::{PageMemory, VecMemory};
use precopy::wire::DeviceState;

/// A valid stream over the fuzz guest: `kinds` picks each page's content.
fn stream(kinds: &[u8], edits: &[(usize, u8)]) -> (VecMemory, Vec<u8>) {
    let ps = APPLY_PAGE_SIZE;
    let layout = GuestLayout::flat(ps as u64, APPLY_PAGES * ps as u64).unwrap();
    let mut mem = VecMemory::new(ps, APPLY_PAGES);
    let mut x = 0x9e37_79b9u32;
    for p in 0..APPLY_PAGES as usize {
        let page = &mut mem.as_bytes_mut()[p * ps..(p + 1) * ps];
        match kinds[p % kinds.len()] {
            0 => {}
            1 => page
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = b"guest text, "[i % 12]),
            _ => page.iter_mut().for_each(|b| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }),
        }
    }
    let mut s = StreamBuilder::new(layout, 1 << 16);
    s.round(&mem, &(0..APPLY_PAGES).collect::<Vec<_>>());
    let mut dirty: Vec<u64> = edits.iter().map(|&(at, _)| (at / ps) as u64).collect();
    for &(at, v) in edits {
        mem.as_bytes_mut()[at] ^= v;
    }
    dirty.sort_unstable();
    dirty.dedup();
    s.round(&mem, &dirty);
    s.switchover(0);
    s.round(&mem, &[]);
    (mem.clone(), s.complete(&mem))
}

/// Stream 1 of a two-stream migration of the fuzz guest (format 2's stream bytes set):
/// the guest is one chunk, which stream 0 carries, so this stream's rounds are empty
/// and its digest is that of no pages.
fn second_of_two_streams() -> (VecMemory, Vec<u8>) {
    let ps = APPLY_PAGE_SIZE;
    let layout = GuestLayout::flat(ps as u64, APPLY_PAGES * ps as u64).unwrap();
    let mem = VecMemory::new(ps, APPLY_PAGES);
    let mut s = StreamBuilder::for_stream(layout, 1 << 16, Shard::new(1, 2).unwrap());
    s.round(&mem, &[]);
    s.switchover(0);
    s.round(&mem, &[]);
    (mem.clone(), s.complete(&mem))
}

/// A stream that carries device state after its final round (a vCPU's registers and
/// an empty item), as a KVM migration's stream 0 does.
fn with_device_state() -> (VecMemory, Vec<u8>) {
    let ps = APPLY_PAGE_SIZE;
    let layout = GuestLayout::flat(ps as u64, APPLY_PAGES * ps as u64).unwrap();
    let mut mem = VecMemory::new(ps, APPLY_PAGES);
    mem.as_bytes_mut()[3 * ps..3 * ps + 12].copy_from_slice(b"guest text, ");
    let mut s = StreamBuilder::new(layout, 1 << 16);
    s.round(&mem, &(0..APPLY_PAGES).collect::<Vec<_>>());
    s.switchover(0);
    s.round(&mem, &[]);
    let regs: Vec<u8> = (0..64u8).collect();
    s.device_state(DeviceState {
        id: 0x100,
        version: 1,
        data: &regs,
    });
    s.device_state(DeviceState {
        id: 7,
        version: 2,
        data: &[],
    });
    (mem.clone(), s.complete(&mem))
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let streams = [
        ("all_zero", stream(&[0], &[(5, 1)])),
        (
            "text_and_zero",
            stream(&[0, 1, 0, 0], &[(1024 + 3, 7), (1024 + 900, 2)]),
        ),
        (
            "mixed_with_deltas",
            stream(
                &[0, 0, 0, 0, 0, 0, 0, 2, 1, 0],
                &[(7 * 1024 + 10, 0xff), (8 * 1024 + 1, 1)],
            ),
        ),
    ];
    let streams = streams.into_iter().chain([
        ("second_of_two_streams", second_of_two_streams()),
        ("with_device_state", with_device_state()),
    ]);
    for (name, (_, bytes)) in streams {
        out.push(("wire_decode", name, bytes.clone()));
        out.push(("apply_stream", name, bytes));
    }
    // codec_roundtrip: shape byte (page size, fill mode), fill bytes, then edits.
    out.push((
        "codec_roundtrip",
        "text_pattern",
        b"\x10the quick brown fox \x05\x00A\x00\x02B".to_vec(),
    ));
    out.push(("codec_roundtrip", "zero_page", vec![0x03]));
    let mut noisy = vec![0x01];
    noisy.extend((0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    out.push(("codec_roundtrip", "random_with_edits", noisy));
    out
}

#[test]
fn seed_corpus_is_current_and_valid() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("PRECOPY_WRITE_CORPUS").is_some();
    let mut total = 0;
    for (target, name, bytes) in seeds() {
        let path = root.join(target).join(name);
        total += bytes.len();
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run PRECOPY_WRITE_CORPUS=1 cargo test --test seed_corpus",
                path.display()
            )
        });
        assert_eq!(
            committed,
            bytes,
            "{} is stale; regenerate it",
            path.display()
        );
        if target == "apply_stream" {
            let mut applier = Applier::with_memory(VecMemory::new(APPLY_PAGE_SIZE, APPLY_PAGES));
            assert_eq!(applier.feed(&bytes), Ok(Progress::Complete), "{name}");
            let items = applier.device_state().unwrap().count();
            assert_eq!(items, if name == "with_device_state" { 2 } else { 0 });
            assert!(precopy::fuzzing::apply_stream_completes(&bytes), "{name}");
            assert!(applier.memory().total_pages() == APPLY_PAGES);
        }
        precopy::fuzzing::wire_decode(&bytes);
    }
    assert!(
        total < 16 * 1024,
        "seed corpus grew to {total} bytes; keep it a few KB"
    );
}

#[test]
fn seed_streams_migrate_their_source() {
    let (source, bytes) = stream(&[0, 0, 0, 0, 0, 0, 0, 2, 1, 0], &[(7 * 1024 + 10, 0xff)]);
    let mut applier = Applier::with_memory(VecMemory::new(APPLY_PAGE_SIZE, APPLY_PAGES));
    assert_eq!(applier.feed(&bytes), Ok(Progress::Complete));
    assert_eq!(applier.stats().delta_pages, 1);
    assert_eq!(applier.into_memory(), source);
}
