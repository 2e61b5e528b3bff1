//! The per-page chooser: zero, delta, LZ4 or raw, and the cache kept in step.

use super::stats::{Clock, CodecStats, Encoding, NoClock};
use crate::layout::OwnedWords;

use super::{
    check_page_size, delta_encode, is_zero_page, lz4_max_output_len, CacheStats, CodecError,
    Lz4Compressor, PageCache,
};

/// Knobs of a [`PageEncoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Page size in bytes.
    pub page_size: usize,
    /// Byte budget of the delta page cache (0 turns delta encoding off).
    pub cache_bytes: usize,
    /// Longest delta worth sending; past it the delta encoder gives up early (capped
    /// at a page: a delta is never longer than the raw page).
    pub delta_max: usize,
    /// Longest LZ4 block worth sending instead of the raw page.
    pub lz4_max: usize,
}

impl EncoderConfig {
    /// Defaults for `page_size`: a 64 MiB cache (QEMU's XBZRLE default), deltas up to
    /// a quarter page, LZ4 when it saves at least an eighth.
    pub fn new(page_size: usize) -> Self {
        EncoderConfig {
            page_size,
            cache_bytes: 64 << 20,
            delta_max: page_size / 4,
            lz4_max: page_size - page_size / 8,
        }
    }
}

/// What [`PageEncoder::encode`] produced: the payload is `out[..len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodedPage {
    /// The codec chosen.
    pub encoding: Encoding,
    /// Payload length (0 for a zero page).
    pub len: usize,
    /// For a delta, [`base_hash`](super::base_hash) of the base it was made against.
    pub base_hash: u64,
    /// [`base_hash`](super::base_hash) of the page itself when the encoder computed
    /// it anyway (storing the page as the next delta base); `None` otherwise (zero
    /// pages, no delta cache).
    pub page_hash: Option<u64>,
}

/// Chooses a codec per page and keeps the delta cache in step with what was sent.
///
/// Per page: an all-zero page is sent as zero (and its cached base dropped); a page
/// with a cached base whose delta fits [`EncoderConfig::delta_max`] is sent as a
/// delta; else LZ4 if the block fits [`EncoderConfig::lz4_max`]; else raw. Every
/// non-zero page sent becomes the page's cached base, so a delta is always made
/// against exactly the bytes the destination holds (delta base agreement). Encode
/// from a private copy of the page (not from live guest memory), since the cache is
/// updated from the same bytes.
///
/// ```
/// use precopy::codec::{Encoding, EncoderConfig, PageEncoder};
/// let mut enc = PageEncoder::new(EncoderConfig::new(4096)).unwrap();
/// let mut out = vec![0; enc.max_payload_len()];
/// let mut page = vec![0u8; 4096];
/// assert_eq!(enc.encode(3, &page, &mut out).unwrap().encoding, Encoding::Zero);
/// let mut x = 1u32; // incompressible bytes
/// page.iter_mut().for_each(|b| { x ^= x << 13; x ^= x >> 17; x ^= x << 5; *b = x as u8 });
/// assert_eq!(enc.encode(3, &page, &mut out).unwrap().encoding, Encoding::Raw);
/// page[10] ^= 1;
/// let sent = enc.encode(3, &page, &mut out).unwrap();
/// assert_eq!((sent.encoding, sent.len), (Encoding::Delta, 3));
/// ```
///
/// The delta cache lives in `u64` words held by `S`: [`OwnedWords`] allocated by
/// [`new`](PageEncoder::new) and [`with_clock`](PageEncoder::with_clock) (feature
/// `alloc`), or caller words given to [`over`](PageEncoder::over) (no allocator; size
/// them with [`PageCache::storage_words`] of the configured budget).
#[derive(Debug)]
pub struct PageEncoder<C: Clock = NoClock, S = OwnedWords> {
    config: EncoderConfig,
    cache: PageCache<S>,
    lz4: Lz4Compressor,
    stats: CodecStats,
    clock: C,
    lz4_enabled: bool,
}

#[cfg(feature = "alloc")]
impl PageEncoder<NoClock, OwnedWords> {
    /// An encoder whose statistics count pages and bytes but not time.
    pub fn new(config: EncoderConfig) -> Result<Self, CodecError> {
        Self::with_clock(config, NoClock)
    }
}

#[cfg(feature = "alloc")]
impl<C: Clock> PageEncoder<C, OwnedWords> {
    /// An encoder that times each codec with `clock` (see [`Clock`]), its delta cache
    /// allocated here.
    pub fn with_clock(config: EncoderConfig, clock: C) -> Result<Self, CodecError> {
        check_page_size(config.page_size)?;
        let cache = PageCache::new(config.page_size, config.cache_bytes)?;
        Ok(Self::with_cache(config, clock, cache))
    }
}

impl<C: Clock, S: AsRef<[u64]> + AsMut<[u64]>> PageEncoder<C, S> {
    /// An encoder whose delta cache lives in caller words (no allocation): `cache`
    /// holds at least [`PageCache::storage_words`]`(config.page_size,
    /// config.cache_bytes)` words, else [`CodecError::CacheStorageTooSmall`].
    pub fn over(config: EncoderConfig, clock: C, cache: S) -> Result<Self, CodecError> {
        check_page_size(config.page_size)?;
        let cache = PageCache::over(config.page_size, config.cache_bytes, cache)?;
        Ok(Self::with_cache(config, clock, cache))
    }

    fn with_cache(config: EncoderConfig, clock: C, cache: PageCache<S>) -> Self {
        PageEncoder {
            config,
            cache,
            lz4: Lz4Compressor::new(),
            stats: CodecStats::default(),
            clock,
            lz4_enabled: true,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Room `out` needs in [`encode`](Self::encode): LZ4's worst case for a page.
    pub fn max_payload_len(&self) -> usize {
        lz4_max_output_len(self.config.page_size)
    }

    /// Per-codec statistics so far.
    pub fn stats(&self) -> &CodecStats {
        &self.stats
    }

    /// The delta cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Turns LZ4 on or off (on by default). Off, pages that are neither zero nor a
    /// small delta go raw: where the encoder and not the link is the bottleneck (a
    /// fast link), LZ4's ~1 GB/s per core would slow the migration down.
    pub fn set_lz4(&mut self, enabled: bool) {
        self.lz4_enabled = enabled;
    }

    /// Whether LZ4 is on.
    pub fn lz4_enabled(&self) -> bool {
        self.lz4_enabled
    }

    /// Drops the cached base of `page`: call it when an encoded page is not going to
    /// reach the destination after all (so the next delta is not made against it).
    pub fn forget(&mut self, page: u64) {
        self.cache.drop_page(page);
    }

    /// Counts pages `first..first + count` as sent zero without reading or encoding
    /// them (a run the memory knows is zero) and drops their cached bases. Costs
    /// `O(min(count, pages cached))`, not a page read each.
    pub fn zero_run(&mut self, first: u64, count: u64) {
        self.cache.drop_range(first, count);
        let c = self.stats.get_mut(Encoding::Zero);
        c.pages += count;
        c.bytes_in += count.saturating_mul(self.config.page_size as u64);
    }

    /// Encodes `data` (one page, the version of page `page` being sent) into `out`
    /// (at least [`max_payload_len`](Self::max_payload_len) bytes).
    pub fn encode(
        &mut self,
        page: u64,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<EncodedPage, CodecError> {
        let page_size = self.config.page_size;
        if data.len() != page_size {
            return Err(CodecError::BadPageLength {
                len: data.len(),
                page_size,
            });
        }
        let needed = self.max_payload_len();
        if out.len() < needed {
            return Err(CodecError::OutputTooSmall {
                needed,
                got: out.len(),
            });
        }

        let t = self.clock.now_ns();
        let zero = is_zero_page(data);
        let mut t = self.charge(Encoding::Zero, t);
        if zero {
            self.cache.drop_page(page);
            return Ok(self.sent(Encoding::Zero, 0, 0, None));
        }

        if let Some(base) = self.cache.lookup(page) {
            let hash = base.hash;
            let limit = self.config.delta_max.min(page_size);
            let delta = delta_encode(base.bytes, data, &mut out[..limit])?;
            t = self.charge(Encoding::Delta, t);
            if let Some(len) = delta {
                let page_hash = self.cache.store(page, data);
                return Ok(self.sent(Encoding::Delta, len, hash, page_hash));
            }
        }

        let page_hash;
        if self.lz4_enabled {
            let len = self.lz4.compress(data, out)?;
            self.charge(Encoding::Lz4, t);
            page_hash = self.cache.store(page, data);
            if len <= self.config.lz4_max {
                return Ok(self.sent(Encoding::Lz4, len, 0, page_hash));
            }
        } else {
            // Raw is sent: it becomes the base all the same.
            page_hash = self.cache.store(page, data);
        }
        out[..page_size].copy_from_slice(data);
        Ok(self.sent(Encoding::Raw, page_size, 0, page_hash))
    }

    /// Counts an attempt of `encoding` that started at `since`; returns the time now.
    fn charge(&mut self, encoding: Encoding, since: u64) -> u64 {
        let now = self.clock.now_ns();
        let c = self.stats.get_mut(encoding);
        c.attempts += 1;
        c.ns += now.saturating_sub(since);
        now
    }

    fn sent(
        &mut self,
        encoding: Encoding,
        len: usize,
        base_hash: u64,
        page_hash: Option<u64>,
    ) -> EncodedPage {
        let c = self.stats.get_mut(encoding);
        c.pages += 1;
        c.bytes_in += self.config.page_size as u64;
        c.bytes_out += len as u64;
        EncodedPage {
            encoding,
            len,
            base_hash,
            page_hash,
        }
    }
}
