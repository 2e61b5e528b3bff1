//! The source's kept page hashes ([`SourceEngine::sent_hashes`]) and the completion
//! digest folded from them ([`Verify::AfterResume`]): with every write marked they
//! equal the source's memory page for page and the destination agrees bit for bit;
//! with one write left unmarked (a lost write) the fold still matches the destination
//! (both saw the same pages) but a re-read of the source's memory differs on exactly
//! that page, which is what the runtime's check after the switchover catches. With
//! [`Verify::InDowntime`] the digest re-reads memory and the destination refuses.

use precopy::bitmap::AtomicDirtyBitmap;
use precopy::codec::base_hash;
use precopy::engine::{Applier, SourceConfig, SourceEngine, SourceEvent, Verify};
use precopy::layout::GuestLayout;
use precopy::layout::Shard;
use precopy::memory::{digest_stream, MemoryDigest};
use precopy::memory::{AtomicMemory, FreshMemory, PageMemory};
use precopy::schedule::{Decision, SwitchReason};

/// More polls than any migration of these small guests takes by orders of magnitude: a
/// loop past it is an engine that never completes, reported instead of hanging.
const MAX_POLLS: u64 = 1_000_000;

const PAGE: usize = 512;
/// Three chunks of 512 and a tail: two streams get unequal shares.
const PAGES: u64 = 3 * 512 + 77;

/// A page's content for `version` (0: a zero page).
fn content(page: u64, version: u64) -> Vec<u8> {
    if version == 0 {
        return vec![0; PAGE];
    }
    let mut v = vec![0u8; PAGE];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (page as u8) ^ (version as u8).wrapping_mul(31) ^ (i as u8) | 1;
    }
    v
}

/// A write by the guest: new content, then the mark (unless `mark` is false: the
/// write the dirty log missed).
fn write(
    memory: &AtomicMemory,
    bitmap: &AtomicDirtyBitmap<Box<[std::sync::atomic::AtomicU64]>>,
    page: u64,
    version: u64,
    mark: bool,
) {
    memory.store_page(page, &content(page, version)).unwrap();
    if mark {
        bitmap.mark(page).unwrap();
    }
}

/// What one stream's migration left behind.
struct Run {
    /// The digest in the completion frame.
    digest: u128,
    /// The engine's kept hashes.
    hashes: Vec<u64>,
    /// The digest of the source's memory, re-read after the completion.
    reread: u128,
    /// Pages of the stream whose kept hash differs from the source's memory.
    differing: Vec<u64>,
    /// The destination's verdict.
    dest: Result<u128, String>,
    /// Pages the digest read from memory.
    pages_read: u64,
}

/// Migrates stream `shard` of a guest through three live rounds and a final one,
/// with `verify`; `lose` (a page of the stream) is written without a mark after the
/// bulk round sent it.
fn migrate(shard: Shard, verify: Verify, lose: Option<u64>) -> Run {
    migrate_with_cache(shard, verify, lose, 64 << 10)
}

/// [`migrate`] with a delta cache of `cache_bytes` (0: none, so the engine hashes
/// pages itself instead of taking the hash the cache computed).
fn migrate_with_cache(shard: Shard, verify: Verify, lose: Option<u64>, cache_bytes: usize) -> Run {
    let layout = GuestLayout::flat(PAGE as u64, PAGES * PAGE as u64).unwrap();
    let memory = AtomicMemory::new(PAGE, PAGES);
    let bitmap = AtomicDirtyBitmap::new(layout);
    // Before: every third page holds data, the rest is zero.
    for p in (0..PAGES).filter(|p| p % 3 == 0) {
        write(&memory, &bitmap, p, 1, true);
    }
    let config = SourceConfig {
        encoder: precopy::codec::EncoderConfig {
            cache_bytes,
            ..precopy::codec::EncoderConfig::new(PAGE)
        },
        stream: shard,
        verify,
        ..SourceConfig::new(PAGE)
    };
    let mut engine = SourceEngine::new(&bitmap, config, 0).unwrap();
    let mut stream = Vec::new();
    let mut buf = vec![0u8; engine.min_buffer_len() + 4 * PAGE];
    let mut live_rounds = 0;
    let mut polls = 0u64;
    let (digest, pages_read) = loop {
        polls += 1;
        assert!(
            polls <= MAX_POLLS,
            "the source did not finish in {MAX_POLLS} polls"
        );
        let len = engine.poll_transmit(&memory, 0, &mut buf).unwrap();
        stream.extend_from_slice(&buf[..len]);
        let mut done = None;
        while let Some(event) = engine.poll_event() {
            match event {
                SourceEvent::RoundMeasured(_) => {
                    live_rounds += 1;
                    if live_rounds == 1 {
                        if let Some(p) = lose {
                            // Sent in the bulk round; now changed behind the log's back.
                            write(&memory, &bitmap, p, 7, false);
                        }
                    }
                    // Between rounds: data pages become zero (sent in zero runs), zero
                    // pages get data, data changes; and a run of pages zeroed together.
                    for p in (0..PAGES).filter(|p| p % 5 == live_rounds) {
                        let version = if p % 3 == 0 { 0 } else { live_rounds + 1 };
                        write(&memory, &bitmap, p, version, true);
                    }
                    let decision = if live_rounds < 3 {
                        Decision::Continue {
                            throttle_percent: 0,
                        }
                    } else {
                        Decision::SwitchOver {
                            predicted_downtime_ns: 0,
                            reason: SwitchReason::DowntimeMet,
                        }
                    };
                    engine.decide(decision).unwrap();
                }
                SourceEvent::PauseGuest { .. } => {
                    // Last writes before the pause: a zero run at the start of memory.
                    for p in 0..40 {
                        write(&memory, &bitmap, p, 0, true);
                    }
                    engine.guest_paused(0).unwrap();
                }
                SourceEvent::Complete { digest, round } => {
                    done = Some((digest, round.digest_pages_read))
                }
                SourceEvent::SyncDirtyLog { .. } => unreachable!("no sync asked for"),
                SourceEvent::DeviceState => unreachable!("no device state announced"),
            }
        }
        if let Some(done) = done {
            break done;
        }
    };
    assert!(engine.is_complete());
    let hashes = engine.take_sent_hashes().unwrap();
    let mut scratch = vec![0u8; PAGE];
    let reread = digest_stream(&memory, shard, &mut scratch).unwrap();
    let mut differing = Vec::new();
    for p in (0..PAGES).filter(|&p| shard.owns(p)) {
        memory.read_page(p, &mut scratch).unwrap();
        if base_hash(&scratch) != hashes[shard.local_index(p) as usize] {
            differing.push(p);
        }
    }
    // The destination: fresh memory that keeps the hashes of the pages it writes.
    let mut dest_memory = FreshMemory::new(PAGE, PAGES).unwrap();
    let dest = {
        let view = dest_memory
            .views(shard.count())
            .into_iter()
            .nth(usize::from(shard.index()))
            .unwrap();
        let mut applier = Applier::with_memory(view);
        match applier.feed(&stream).and_then(|_| applier.finish()) {
            Ok(()) => applier.digest().ok_or_else(|| "no digest".to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    Run {
        digest,
        hashes,
        reread,
        differing,
        dest,
        pages_read,
    }
}

fn shards() -> [Shard; 3] {
    [
        Shard::WHOLE,
        Shard::new(0, 2).unwrap(),
        Shard::new(1, 2).unwrap(),
    ]
}

#[test]
fn kept_hashes_fold_to_the_digest_of_memory_when_no_write_is_lost() {
    for (shard, cache) in shards().into_iter().flat_map(|s| [(s, 64 << 10), (s, 0)]) {
        let run = migrate_with_cache(shard, Verify::AfterResume, None, cache);
        assert_eq!(run.hashes.len() as u64, shard.pages(PAGES));
        assert_eq!(run.differing, Vec::<u64>::new(), "{shard:?}");
        assert_eq!(run.digest, run.reread, "{shard:?}: fold vs re-read");
        let mut fold = MemoryDigest::new();
        run.hashes.iter().for_each(|&h| fold.update_hash(h));
        assert_eq!(run.digest, fold.finish(), "{shard:?}: one hash at a time");
        assert_eq!(
            run.dest,
            Ok(run.digest),
            "{shard:?}: the destination agrees"
        );
        assert_eq!(run.pages_read, 0, "the fold reads no memory");
    }
}

#[test]
fn a_lost_write_passes_the_fold_and_is_caught_by_the_reread() {
    for shard in shards() {
        let lost = (0..PAGES)
            .filter(|&p| shard.owns(p) && p % 5 == 0 && p >= 40)
            .nth(3)
            .unwrap();
        let run = migrate(shard, Verify::AfterResume, Some(lost));
        // Both sides folded what was sent: the destination verifies...
        assert_eq!(run.dest, Ok(run.digest), "{shard:?}");
        // ...and only the source's memory tells.
        assert_ne!(run.digest, run.reread, "{shard:?}");
        assert_eq!(run.differing, vec![lost], "{shard:?}");
    }
}

#[test]
fn in_downtime_mode_rereads_memory_and_the_destination_refuses_a_lost_write() {
    let shard = Shard::new(1, 2).unwrap();
    let clean = migrate(shard, Verify::InDowntime, None);
    assert_eq!(clean.pages_read, shard.pages(PAGES));
    assert_eq!(clean.dest, Ok(clean.digest));
    assert_eq!(clean.digest, clean.reread);
    let lost = (0..PAGES)
        .find(|&p| shard.owns(p) && p % 5 == 0 && p >= 40)
        .unwrap();
    let run = migrate(shard, Verify::InDowntime, Some(lost));
    assert_eq!(run.digest, run.reread, "the digest is of memory");
    let err = run.dest.unwrap_err();
    assert!(err.contains("digest"), "{err}");
}

#[test]
fn folding_hashes_in_blocks_equals_one_at_a_time() {
    let hashes: Vec<u64> = (0..5000u64).map(|i| i.wrapping_mul(0x9e37_79b9)).collect();
    for n in [0, 1, 511, 512, 513, 5000] {
        let mut a = MemoryDigest::new();
        hashes[..n].iter().for_each(|&h| a.update_hash(h));
        let mut b = MemoryDigest::new();
        b.update_hashes(&hashes[..n]);
        assert_eq!(a.finish(), b.finish(), "{n} hashes");
    }
}
