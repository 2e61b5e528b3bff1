//! Where a source engine keeps its state: words it allocates (`new`) or the caller's
//! (`over`), and how many it needs.

use core::ops::Deref;
use core::sync::atomic::AtomicU64;

use super::{harvest_stream, Phase, SourceConfig, SourceEngine};
use crate::bitmap::{words_for_pages, AtomicDirtyBitmap, DirtySet};
use crate::codec::{lz4_max_output_len, NoClock, PageCache, PageEncoder};
use crate::engine::EngineError;
use crate::layout::GuestLayout;
#[cfg(feature = "alloc")]
use crate::layout::OwnedWords;
use crate::wire::PageFramer;

/// The parts of a [`SourceEngine`]'s storage, in the order [`SourceEngine::over`]
/// carves them out of caller words: (dirty set, kept hashes, page buffer, payload
/// buffer, delta cache), in words.
fn storage_parts(layout: &GuestLayout, config: &SourceConfig) -> Result<[usize; 5], EngineError> {
    let page_size = layout.page_size() as usize;
    if config.encoder.page_size != page_size {
        return Err(EngineError::PageSizeMismatch {
            expected: page_size,
            got: config.encoder.page_size,
        });
    }
    let cache = PageCache::storage_words(page_size, config.encoder.cache_bytes)?;
    Ok([
        words_for_pages(layout.total_pages()),
        config.stream.pages(layout.total_pages()) as usize,
        page_size / 8,
        lz4_max_output_len(page_size).div_ceil(8),
        cache,
    ])
}

/// Words of storage a [`SourceEngine`] over `layout` with `config` needs (for
/// [`SourceEngine::over`]): the dirty set (a bit per page of the layout), a kept hash
/// per page of the stream, two page buffers and the delta cache of
/// `config.encoder.cache_bytes`. Times 8 for bytes.
pub fn source_storage_words(
    layout: &GuestLayout,
    config: &SourceConfig,
) -> Result<usize, EngineError> {
    let parts = storage_parts(layout, config)?;
    parts
        .iter()
        .try_fold(0usize, |sum, &p| sum.checked_add(p))
        .ok_or(EngineError::InvalidConfig {
            what: "the engine's storage would exceed the address space",
        })
}

#[cfg(feature = "alloc")]
impl<'b, W: Deref<Target = [AtomicU64]>> SourceEngine<'b, W, OwnedWords> {
    /// Starts a migration of the memory tracked by `bitmap`, at `now_ns`, with its
    /// storage allocated here. Marks made before now are taken out of the bitmap: the
    /// bulk round sends every page anyway.
    pub fn new(
        bitmap: &'b AtomicDirtyBitmap<W>,
        config: SourceConfig,
        now_ns: u64,
    ) -> Result<Self, EngineError> {
        let layout = *bitmap.layout();
        let [_, hashes, page, payload, _] = storage_parts(&layout, &config)?;
        check_config(&config)?;
        let encoder = PageEncoder::new(config.encoder)?;
        Self::build(
            bitmap,
            config,
            now_ns,
            encoder,
            DirtySet::new(layout.total_pages()),
            [
                OwnedWords::zeroed(hashes),
                OwnedWords::zeroed(page),
                OwnedWords::zeroed(payload),
            ],
        )
    }

    /// Takes the kept hashes out (see [`sent_hashes`](Self::sent_hashes)) once the
    /// migration is complete, for a check of the source's memory that outlives the
    /// engine; `None` before the completion frame was produced.
    pub fn take_sent_hashes(&mut self) -> Option<alloc::vec::Vec<u64>> {
        self.is_complete().then(|| {
            // Moved out, not copied: this runs in the downtime, and a copy of 8 bytes
            // a page is an allocation the size of the kept hashes (2 MiB a GiB).
            core::mem::replace(&mut self.sent_hashes, OwnedWords::zeroed(0)).into_vec()
        })
    }
}

impl<'b, 's, W: Deref<Target = [AtomicU64]>> SourceEngine<'b, W, &'s mut [u64]> {
    /// Starts a migration as [`new`](SourceEngine::new) does, with every byte of its
    /// state in `storage` (no allocation): at least [`source_storage_words`] of the
    /// bitmap's layout and `config` words, else [`EngineError::StorageTooSmall`]
    /// (none at all is the same error). Extra words are left alone.
    pub fn over(
        bitmap: &'b AtomicDirtyBitmap<W>,
        config: SourceConfig,
        mut storage: &'s mut [u64],
        now_ns: u64,
    ) -> Result<Self, EngineError> {
        let layout = *bitmap.layout();
        let parts = storage_parts(&layout, &config)?;
        let needed = source_storage_words(&layout, &config)?;
        if storage.len() < needed {
            return Err(EngineError::StorageTooSmall {
                needed_bytes: needed.saturating_mul(8),
                got_bytes: storage.len().saturating_mul(8),
            });
        }
        check_config(&config)?;
        let too_small = EngineError::StorageTooSmall {
            needed_bytes: needed.saturating_mul(8),
            got_bytes: storage.len().saturating_mul(8),
        };
        let mut take = |len| take_words(&mut storage, len).ok_or(too_small);
        let set = DirtySet::over(take(parts[0])?, layout.total_pages())?;
        let hashes = take(parts[1])?;
        let page = take(parts[2])?;
        let payload = take(parts[3])?;
        let encoder = PageEncoder::over(config.encoder, NoClock, take(parts[4])?)?;
        Self::build(
            bitmap,
            config,
            now_ns,
            encoder,
            set,
            [hashes, page, payload],
        )
    }
}

/// Splits the first `len` words off `storage` (the rest stays in it), or `None` when it
/// holds fewer.
fn take_words<'s>(storage: &mut &'s mut [u64], len: usize) -> Option<&'s mut [u64]> {
    if storage.len() < len {
        return None;
    }
    let (head, tail) = core::mem::take(storage).split_at_mut(len);
    *storage = tail;
    Some(head)
}

/// The checks of a configuration that do not depend on storage.
fn check_config(config: &SourceConfig) -> Result<(), EngineError> {
    if config.max_pages_per_poll == 0 {
        return Err(EngineError::InvalidConfig {
            what: "max_pages_per_poll is 0: a poll must walk at least one page",
        });
    }
    Ok(())
}

impl<'b, W: Deref<Target = [AtomicU64]>, S: AsRef<[u64]> + AsMut<[u64]>> SourceEngine<'b, W, S> {
    /// The engine over its storage: `set` over the layout, `[hashes, page, payload]`
    /// sized by [`storage_parts`].
    fn build(
        bitmap: &'b AtomicDirtyBitmap<W>,
        config: SourceConfig,
        now_ns: u64,
        encoder: PageEncoder<NoClock, S>,
        mut set: DirtySet<S>,
        [mut sent_hashes, page_buf, payload_buf]: [S; 3],
    ) -> Result<Self, EngineError> {
        // The engine keeps no clock of its own: the time is the coordinator's.
        let _ = now_ns;
        let layout = *bitmap.layout();
        let page_size = layout.page_size() as usize;
        // Only this stream's pages: the other streams' engines may already be sending.
        harvest_stream(bitmap, config.stream, &mut set)?;
        set.clear();
        // Every page is sent in the bulk round, which overwrites these (a run of
        // pages known zero keeps this value); until then a page stands as zero, as on
        // a destination's fresh memory.
        let zero_hash = crate::memory::zero_page_hash(page_size);
        sent_hashes.as_mut().fill(zero_hash);
        Ok(SourceEngine {
            bitmap,
            config,
            round_codecs_start: *encoder.stats(),
            encoder,
            phase: Phase::Header,
            event: None,
            set,
            cursor: 0,
            framer: PageFramer::new(page_size),
            page_buf,
            payload_buf,
            round_pages: 0,
            round_planned: 0,
            round_wire_bytes: 0,
            round_deferred: 0,
            announce_final: false,
            announce_round: false,
            predicted_downtime_ns: 0,
            zero_hash,
            sent_hashes,
        })
    }
}
