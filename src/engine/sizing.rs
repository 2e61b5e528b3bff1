//! How much caller storage each engine needs, for a host without an allocator.

use super::coordinator::coordinator_storage_words;
use super::{source_storage_words, EngineError, SourceConfig};
use crate::bitmap::words_for_pages;
use crate::codec::EncoderConfig;
use crate::layout::{GuestLayout, Shard};
use crate::wire::decoder_buffer_len;

/// Bytes of storage a migration over one layout needs, per part (every part is
/// `u64` words: give 8-byte aligned memory).
///
/// ```
/// use precopy::engine::storage_needs;
/// use precopy::layout::GuestLayout;
///
/// let layout = GuestLayout::flat(4096, 1 << 30).unwrap(); // 1 GiB, 4 KiB pages
/// let needs = storage_needs(&layout, 8 << 20, 4).unwrap(); // 8 MiB cache, 4 streams
/// assert_eq!(needs.bitmap_bytes, (1 << 18) / 8);
/// assert!(needs.source_bytes[0] <= (8 << 20) + (1 << 18) / 8 + (1 << 16) * 8 + 12 * 1024);
/// assert_eq!(needs.coordinator_bytes, 4 * 24);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageNeeds {
    /// The dirty bitmap ([`AtomicDirtyBitmap::from_words`](crate::bitmap::AtomicDirtyBitmap::from_words)),
    /// one for all streams.
    pub bitmap_bytes: usize,
    /// Each stream's [`SourceEngine::over`](super::SourceEngine::over) (index: the
    /// stream; only the first `streams` entries are set): its dirty set, a kept hash
    /// per page of its stream, two page buffers and its delta cache.
    pub source_bytes: [usize; crate::layout::MAX_STREAMS as usize],
    /// All the streams' source engines together.
    pub sources_total_bytes: usize,
    /// The [`CoordinatorCore::over`](super::CoordinatorCore::over) of the streams.
    pub coordinator_bytes: usize,
    /// Each destination stream's [`Applier::new`](super::Applier::new): its frame
    /// buffer and page buffer (rounded up to whole words).
    pub applier_bytes: usize,
}

/// Bytes each part of a migration of `layout` over `streams` streams needs, with a
/// delta cache of `cache_bytes` per stream (see [`StorageNeeds`]; the default codec
/// limits of [`EncoderConfig::new`]). A stream count outside 1 to
/// [`MAX_STREAMS`](crate::layout::MAX_STREAMS) is [`EngineError::InvalidConfig`].
pub fn storage_needs(
    layout: &GuestLayout,
    cache_bytes: usize,
    streams: usize,
) -> Result<StorageNeeds, EngineError> {
    let count =
        u8::try_from(streams)
            .ok()
            .filter(|&n| n >= 1)
            .ok_or(EngineError::InvalidConfig {
                what: "a migration needs 1 to MAX_STREAMS (255) streams",
            })?;
    let page_size = layout.page_size() as usize;
    let mut needs = StorageNeeds {
        bitmap_bytes: words_for_pages(layout.total_pages()) * 8,
        source_bytes: [0; crate::layout::MAX_STREAMS as usize],
        sources_total_bytes: 0,
        coordinator_bytes: coordinator_storage_words(streams) * 8,
        applier_bytes: (decoder_buffer_len(page_size) + page_size).next_multiple_of(8),
    };
    for index in 0..count {
        let stream = Shard::new(index, count).ok_or(EngineError::InvalidConfig {
            what: "a stream index past the stream count",
        })?;
        let config = SourceConfig {
            encoder: EncoderConfig {
                cache_bytes,
                ..EncoderConfig::new(page_size)
            },
            stream,
            ..SourceConfig::new(page_size)
        };
        let bytes = source_storage_words(layout, &config)?
            .checked_mul(8)
            .ok_or(EngineError::InvalidConfig {
                what: "the engine's storage would exceed the address space",
            })?;
        needs.source_bytes[usize::from(index)] = bytes;
        needs.sources_total_bytes = needs.sources_total_bytes.saturating_add(bytes);
    }
    Ok(needs)
}
