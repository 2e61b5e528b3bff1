//! When to compress: LZ4 pays where the link, not the encoder, is the bottleneck.
//!
//! A sans-IO policy: [`CompressionChoice`] is fed what a stream measured (pages, bytes,
//! nanoseconds of the caller's clock, real or virtual) and answers whether the next
//! poll compresses. It reads no clock itself, so the threaded runtime and a simulator
//! run the same choice.

use core::fmt;
use core::str::FromStr;

/// LZ4 compression of a migration's pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// Follow the bottleneck, per stream: measure the page rate raw and with LZ4 and
    /// keep the clearly faster one ([`CompressionChoice`]).
    #[default]
    Auto,
    /// Always LZ4 (where it makes a page smaller).
    On,
    /// Never LZ4.
    Off,
}

impl Compression {
    /// The name [`FromStr`] accepts: `auto`, `on` or `off`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::On => "on",
            Compression::Off => "off",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compression mode other than `auto`, `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCompression;

impl fmt::Display for UnknownCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("compression must be auto, on or off")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UnknownCompression {}

impl FromStr for Compression {
    type Err = UnknownCompression;

    /// `auto`, `on` or `off` (any case); anything else is refused, never taken as
    /// auto.
    fn from_str(s: &str) -> Result<Self, UnknownCompression> {
        [Compression::Auto, Compression::On, Compression::Off]
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or(UnknownCompression)
    }
}

/// Whether a stream compresses with LZ4, chosen by measuring both modes.
///
/// What counts is a stream's end-to-end rate: the pages it gets out per second, with
/// everything downstream in the time (encoding, waiting for the sender, which waits
/// for the link or a bandwidth cap, which over loopback waits for the destination).
/// No model of where the bottleneck is survives every setup (over loopback the "link"
/// is the destination's CPU, and LZ4 makes its work per byte dearer), so the choice
/// measures instead: it runs in one mode, tries the other for one window now and
/// then, and switches when the other's measured rate is better by a margin (half
/// again for LZ4, a fifth for raw). So LZ4 stays off on
/// loopback and fast links, where encoding is the bottleneck, and goes on where the
/// link is slow.
///
/// Only pages that needed encoding count (zero pages cost the same in both modes).
#[derive(Clone, Debug)]
pub struct CompressionChoice {
    forced: Option<bool>,
    lz4: bool,
    /// Smoothed pages per second measured in each mode (0 raw, 1 LZ4).
    rate: [Option<f64>; 2],
    /// Windows since the last probe of the other mode.
    since_probe: u32,
    /// The window after a change of mode begins with a warm-up.
    warming_up: bool,
    /// The mode to go back to after a probe.
    probing_from: Option<bool>,
    window: Window,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    /// Stream bytes of this window so far (the warm-up's included).
    bytes: u64,
    pages: u64,
    ns: u64,
}

/// Stream bytes per measured window.
const WINDOW_BYTES: u64 = 8 << 20;
/// Stream bytes not measured after a change of mode: the old mode's bytes still fill
/// the queues and socket buffers ahead (loopback TCP alone holds several MiB), and
/// the new mode's first bytes only fill them up again.
const WARMUP_BYTES: u64 = 12 << 20;
/// Windows between probes of the mode not in use.
const PROBE_EVERY: u32 = 32;
/// Windows before the first probe.
const FIRST_PROBE_AFTER: u32 = 1;

impl CompressionChoice {
    /// A choice in `mode`. Auto starts uncompressed and first probes LZ4 after one
    /// measured window; on and off never change.
    pub fn new(mode: Compression) -> Self {
        let forced = match mode {
            Compression::On => Some(true),
            Compression::Off => Some(false),
            Compression::Auto => None,
        };
        CompressionChoice {
            forced,
            lz4: forced.unwrap_or(false),
            rate: [None; 2],
            // The first window starts with a warm-up too: a connection's first bytes
            // are not typical of it (TCP slow start, the destination setting up).
            since_probe: PROBE_EVERY - FIRST_PROBE_AFTER,
            warming_up: true,
            probing_from: None,
            window: Window::default(),
        }
    }

    /// The current choice.
    pub fn lz4(&self) -> bool {
        self.lz4
    }

    /// Adds one poll: `pages` pages that needed encoding (not zero pages) went out in
    /// `bytes` of stream in `elapsed_ns`, from the end of the previous poll until the
    /// sender took the buffer. Returns the choice for the next poll.
    pub fn observe(&mut self, pages: u64, bytes: u64, elapsed_ns: u64) -> bool {
        if self.forced.is_some() {
            return self.lz4;
        }
        let w = &mut self.window;
        w.bytes += bytes;
        if self.warming_up {
            if w.bytes >= WARMUP_BYTES {
                self.warming_up = false;
                *w = Window::default();
            }
            return self.lz4;
        }
        w.pages += pages;
        w.ns += elapsed_ns;
        if w.bytes < WINDOW_BYTES {
            return self.lz4;
        }
        let w = core::mem::take(&mut self.window);
        if w.pages > 0 && w.ns > 0 {
            let rate = w.pages as f64 * 1e9 / w.ns as f64;
            let m = usize::from(self.lz4);
            self.rate[m] = Some(match self.rate[m] {
                Some(old) => (old + rate) / 2.0,
                None => rate,
            });
        }
        let mode = match self.probing_from.take() {
            // A probe ends: keep the better mode.
            Some(from) => self.better(from),
            None => {
                self.since_probe += 1;
                if self.since_probe >= PROBE_EVERY && w.pages > 0 {
                    self.since_probe = 0;
                    self.probing_from = Some(self.lz4);
                    !self.lz4
                } else {
                    self.lz4
                }
            }
        };
        if mode != self.lz4 {
            self.warming_up = true;
        }
        self.lz4 = mode;
        self.lz4
    }

    /// `current`, unless the other mode's measured rate is better by the margin to
    /// switch to it: half again for LZ4, a fifth for raw. The bias is for raw: LZ4
    /// costs CPU on both ends, which a measured rate on one stream does not see when
    /// source and destination share cores.
    fn better(&self, current: bool) -> bool {
        let (now, other) = (usize::from(current), usize::from(!current));
        let margin = if current { 1.2 } else { 1.5 };
        match (self.rate[now], self.rate[other]) {
            (Some(now), Some(other)) if other > now * margin => !current,
            (None, Some(_)) => !current,
            _ => current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls per window in the tests: 256 KiB each.
    const POLLS: u32 = ((WINDOW_BYTES + WARMUP_BYTES) / (256 << 10)) as u32;

    /// Runs `windows` windows' worth of polls of a stream that gets `raw` or `lz4`
    /// pages per ms out (256 KiB per poll); returns the polls made with LZ4.
    fn run(choice: &mut CompressionChoice, windows: u32, raw: u64, lz4: u64) -> u32 {
        let mut lz4_polls = 0;
        for _ in 0..windows * POLLS {
            let (rate, page_bytes) = if choice.lz4() {
                (lz4, 1024)
            } else {
                (raw, 4096)
            };
            lz4_polls += u32::from(choice.lz4());
            let pages = (256 << 10) / page_bytes;
            choice.observe(pages, 256 << 10, pages * 1_000_000 / rate);
        }
        lz4_polls
    }

    #[test]
    fn compression_follows_the_measured_rate() {
        let polls = |windows: u32| windows * POLLS;
        // Loopback: raw gets 200 pages/ms out, LZ4 60. Raw, apart from the probes.
        let mut auto = CompressionChoice::new(Compression::Auto);
        assert!(!auto.lz4(), "auto starts uncompressed");
        let lz4 = run(&mut auto, 100, 200, 60);
        assert!(lz4 > 0 && lz4 < polls(100) / 10, "{lz4} of {}", polls(100));
        // The link slows (1 GbE): raw 30 pages/ms, LZ4 55. The next probe switches.
        run(&mut auto, PROBE_EVERY + 2, 30, 55);
        let lz4 = run(&mut auto, 100, 30, 55);
        assert!(lz4 > polls(100) * 9 / 10, "{lz4} of {}", polls(100));
        // LZ4 only a third better: not worth switching to from raw.
        let mut close = CompressionChoice::new(Compression::Auto);
        let lz4 = run(&mut close, 100, 45, 60);
        assert!(lz4 < polls(100) / 10, "{lz4} of {}", polls(100));
        let lz4 = run(&mut auto, 100, 30, 55);
        assert!(lz4 > polls(100) * 9 / 10, "{lz4} of {}", polls(100));
        // Close rates (within the margins): no change.
        let lz4 = run(&mut auto, 100, 60, 55);
        assert!(lz4 > polls(100) * 9 / 10, "{lz4} of {}", polls(100));
        // Fast again: back to raw.
        run(&mut auto, PROBE_EVERY + 2, 200, 60);
        let lz4 = run(&mut auto, 100, 200, 60);
        assert!(lz4 < polls(100) / 10, "{lz4} of {}", polls(100));
        let mut on = CompressionChoice::new(Compression::On);
        assert_eq!(run(&mut on, 10, 200, 1), polls(10));
        let mut off = CompressionChoice::new(Compression::Off);
        assert_eq!(run(&mut off, 10, 1, 200), 0);
    }

    #[test]
    fn modes_parse_and_unknown_ones_are_refused() {
        assert_eq!("auto".parse(), Ok(Compression::Auto));
        assert_eq!("ON".parse(), Ok(Compression::On));
        assert_eq!("off".parse(), Ok(Compression::Off));
        assert_eq!("lz4".parse::<Compression>(), Err(UnknownCompression));
        assert_eq!("".parse::<Compression>(), Err(UnknownCompression));
        for c in [Compression::Auto, Compression::On, Compression::Off] {
            assert_eq!(c.name().parse(), Ok(c));
        }
    }

    #[test]
    fn a_window_of_zero_pages_measures_nothing() {
        let mut auto = CompressionChoice::new(Compression::Auto);
        for _ in 0..10 * POLLS {
            auto.observe(0, 256 << 10, 1_000_000);
        }
        assert!(!auto.lz4(), "no probe without pages to measure");
        assert_eq!(auto.rate, [None, None]);
    }
}
