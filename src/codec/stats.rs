//! Per-codec statistics, and the clock hook that times them.
//!
//! The core never reads a clock: a [`PageEncoder`](super::PageEncoder) asks the
//! [`Clock`] it was built with before and after each codec it runs. The default,
//! [`NoClock`], always answers 0, so the time columns stay 0 at no cost; a VMM passes
//! a closure over its monotonic clock, a simulator its virtual clock.

/// A source of nanoseconds for the statistics. Any `FnMut() -> u64` is one.
pub trait Clock {
    /// Nanoseconds since any fixed point; only differences are used.
    fn now_ns(&mut self) -> u64;
}

/// The clock that does not tick: statistics count pages and bytes, not time.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoClock;

impl Clock for NoClock {
    #[inline(always)]
    fn now_ns(&mut self) -> u64 {
        0
    }
}

impl<F: FnMut() -> u64> Clock for F {
    #[inline]
    fn now_ns(&mut self) -> u64 {
        self()
    }
}

/// How a page was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// All zero: no payload.
    Zero,
    /// Delta against the cached version last sent.
    Delta,
    /// LZ4 block.
    Lz4,
    /// The page bytes as they are.
    Raw,
}

impl Encoding {
    /// Every encoding, in the order the chooser tries them.
    pub const ALL: [Encoding; 4] = [
        Encoding::Zero,
        Encoding::Delta,
        Encoding::Lz4,
        Encoding::Raw,
    ];

    /// Lower-case name (`zero`, `delta`, `lz4`, `raw`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Zero => "zero",
            Encoding::Delta => "delta",
            Encoding::Lz4 => "lz4",
            Encoding::Raw => "raw",
        }
    }
}

/// Counters of one codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CodecCounters {
    /// Times the codec was run on a page (including runs that gave up).
    pub attempts: u64,
    /// Pages sent with this codec.
    pub pages: u64,
    /// Page bytes sent with this codec (pages x page size).
    pub bytes_in: u64,
    /// Payload bytes this codec produced for them.
    pub bytes_out: u64,
    /// Nanoseconds spent in all attempts, as told by the encoder's [`Clock`].
    pub ns: u64,
}

/// Counters of every codec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CodecStats {
    counters: [CodecCounters; 4],
}

impl CodecStats {
    /// The counters of `encoding`.
    pub fn get(&self, encoding: Encoding) -> &CodecCounters {
        &self.counters[encoding as usize]
    }

    pub(crate) fn get_mut(&mut self, encoding: Encoding) -> &mut CodecCounters {
        &mut self.counters[encoding as usize]
    }

    /// The counts added since `earlier` (a snapshot of the same statistics): one
    /// round's worth, for the per-round table.
    pub fn since(&self, earlier: &CodecStats) -> CodecStats {
        let mut out = *self;
        for (c, e) in out.counters.iter_mut().zip(&earlier.counters) {
            c.attempts = c.attempts.saturating_sub(e.attempts);
            c.pages = c.pages.saturating_sub(e.pages);
            c.bytes_in = c.bytes_in.saturating_sub(e.bytes_in);
            c.bytes_out = c.bytes_out.saturating_sub(e.bytes_out);
            c.ns = c.ns.saturating_sub(e.ns);
        }
        out
    }

    /// Adds `other`'s counts (another stream's, for a multi-stream total).
    pub fn add(&mut self, other: &CodecStats) {
        for (c, o) in self.counters.iter_mut().zip(&other.counters) {
            c.attempts = c.attempts.saturating_add(o.attempts);
            c.pages = c.pages.saturating_add(o.pages);
            c.bytes_in = c.bytes_in.saturating_add(o.bytes_in);
            c.bytes_out = c.bytes_out.saturating_add(o.bytes_out);
            c.ns = c.ns.saturating_add(o.ns);
        }
    }

    /// Pages sent, over all codecs.
    pub fn pages(&self) -> u64 {
        self.counters.iter().map(|c| c.pages).sum()
    }

    /// Payload bytes produced, over all codecs.
    pub fn bytes_out(&self) -> u64 {
        self.counters.iter().map(|c| c.bytes_out).sum()
    }
}
