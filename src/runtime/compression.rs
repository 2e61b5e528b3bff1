//! When to compress: LZ4 pays where the link, not the encoder, is the bottleneck.

/// Whether a stream compresses with LZ4, chosen from measured rates.
///
/// A stream's encoder and its sender work in a pipeline, so a page costs the larger
/// of its encode time and its time on the link. Per mode (raw/delta, or with LZ4) the
/// choice keeps the encode time per page and the wire bytes per page it measured, and
/// for both modes the link's time per byte (time the sender spent sending, including
/// waits for a bandwidth cap, over the bytes it sent; never time spent waiting for
/// the encoder). After each window of 16 polls it picks the mode with the lower cost
/// per page, switching only for a gain of a fifth or more seen in two windows in a
/// row. A mode not measured yet is
/// estimated from the other: LZ4 encodes about 4x slower and halves the bytes of
/// text-like pages. So LZ4 stays off on loopback and fast links, where the encoder is
/// the bottleneck, and goes on over slow links.
#[derive(Clone, Debug)]
pub struct CompressionChoice {
    forced: Option<bool>,
    lz4: bool,
    /// Per mode (0 raw, 1 LZ4): smoothed encode ns per page and wire bytes per page.
    encode_ns_per_page: [Option<f64>; 2],
    bytes_per_page: [Option<f64>; 2],
    link_ns_per_byte: Option<f64>,
    window: Window,
    /// Windows in a row that favoured the other mode.
    votes_to_switch: u8,
}

#[derive(Clone, Copy, Debug, Default)]
struct Window {
    polls: u32,
    pages: u64,
    encode_ns: u64,
    wire_bytes: u64,
}

/// Polls per decision.
const WINDOW_POLLS: u32 = 16;

impl CompressionChoice {
    /// `auto`, `on` or `off`. Auto starts uncompressed.
    pub fn new(mode: &str) -> Self {
        let forced = match mode {
            "on" => Some(true),
            "off" => Some(false),
            _ => None,
        };
        CompressionChoice {
            forced,
            lz4: forced.unwrap_or(false),
            encode_ns_per_page: [None; 2],
            bytes_per_page: [None; 2],
            link_ns_per_byte: None,
            window: Window::default(),
            votes_to_switch: 0,
        }
    }

    /// The current choice.
    pub fn lz4(&self) -> bool {
        self.lz4
    }

    /// Adds one poll: `pages` encoded in `encode_ns` into `wire_bytes`; and the link's
    /// cost so far, `link_ns` spent sending `link_bytes` (cumulative or per poll: only
    /// the ratio is used, smoothed). Returns the choice for the next poll.
    pub fn observe(
        &mut self,
        pages: u64,
        encode_ns: u64,
        wire_bytes: u64,
        link_ns: u64,
        link_bytes: u64,
    ) -> bool {
        if self.forced.is_some() {
            return self.lz4;
        }
        if link_bytes > 0 {
            let sample = link_ns as f64 / link_bytes as f64;
            self.link_ns_per_byte = Some(smooth(self.link_ns_per_byte, sample));
        }
        let w = &mut self.window;
        w.polls += 1;
        w.pages += pages;
        w.encode_ns += encode_ns;
        w.wire_bytes += wire_bytes;
        if w.polls < WINDOW_POLLS {
            return self.lz4;
        }
        let w = core::mem::take(&mut self.window);
        if w.pages == 0 {
            return self.lz4;
        }
        let mode = usize::from(self.lz4);
        let per_page = |x: u64| x as f64 / w.pages as f64;
        self.encode_ns_per_page[mode] =
            Some(smooth(self.encode_ns_per_page[mode], per_page(w.encode_ns)));
        self.bytes_per_page[mode] = Some(smooth(self.bytes_per_page[mode], per_page(w.wire_bytes)));
        let Some(link) = self.link_ns_per_byte else {
            return self.lz4;
        };
        let cost = |m: usize| {
            let (encode, bytes) = self.estimate(m);
            encode.max(bytes * link)
        };
        let (now, other) = (cost(mode), cost(1 - mode));
        // Two windows in a row must agree: one noisy window (a descheduled sender, a
        // TCP window opening) does not flip the mode.
        if other * 1.2 < now {
            self.votes_to_switch += 1;
            if self.votes_to_switch >= 2 {
                self.lz4 = !self.lz4;
                self.votes_to_switch = 0;
            }
        } else {
            self.votes_to_switch = 0;
        }
        self.lz4
    }

    /// Encode ns and wire bytes per page in mode `m`, measured or estimated from the
    /// other mode.
    fn estimate(&self, m: usize) -> (f64, f64) {
        const LZ4_ENCODE_COST: f64 = 4.0;
        const LZ4_BYTES: f64 = 0.5;
        let other = 1 - m;
        let encode = self.encode_ns_per_page[m].unwrap_or_else(|| {
            let o = self.encode_ns_per_page[other].unwrap_or(0.0);
            if m == 1 {
                o * LZ4_ENCODE_COST
            } else {
                o / LZ4_ENCODE_COST
            }
        });
        let bytes = self.bytes_per_page[m].unwrap_or_else(|| {
            let o = self.bytes_per_page[other].unwrap_or(0.0);
            if m == 1 {
                o * LZ4_BYTES
            } else {
                o / LZ4_BYTES
            }
        });
        (encode, bytes)
    }
}

/// An exponentially weighted average giving the new sample half the weight.
fn smooth(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(old) => (old + sample) / 2.0,
        None => sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds windows of a stream whose encoder takes `raw_ns`/`lz4_ns` per 4 KiB page
    /// and whose link takes `link_ns_per_byte`; LZ4 halves the bytes.
    fn run(choice: &mut CompressionChoice, raw_ns: u64, lz4_ns: u64, link_ns_per_byte: u64) {
        for _ in 0..WINDOW_POLLS * 8 {
            let (ns, bytes) = if choice.lz4() {
                (lz4_ns * 64, 2048 * 64)
            } else {
                (raw_ns * 64, 4096 * 64)
            };
            choice.observe(64, ns, bytes, bytes * link_ns_per_byte, bytes);
        }
    }

    #[test]
    fn compression_follows_the_bottleneck() {
        // Raw encoding 1 us/page, LZ4 4 us/page. A link of 0 or 1 ns/byte (4 us/page
        // raw, 2 us compressed): raw wins or ties, LZ4 would make the encoder 4x
        // slower.
        let mut auto = CompressionChoice::new("auto");
        assert!(!auto.lz4(), "auto starts uncompressed");
        run(&mut auto, 1_000, 4_000, 0);
        assert!(!auto.lz4(), "a free link never needs compression");
        run(&mut auto, 1_000, 4_000, 1);
        assert!(!auto.lz4());
        // 1 GbE-like: 8 ns/byte, 32 us/page raw, 16 us compressed: compress.
        run(&mut auto, 1_000, 4_000, 8);
        assert!(auto.lz4());
        // The link gets fast again: LZ4's measured 4 us/page loses to raw's 1 us.
        run(&mut auto, 1_000, 4_000, 0);
        assert!(!auto.lz4());
        // 1 ns/byte (about 8 Gbit/s): raw costs max(1, 4.1) us, LZ4 max(4, 2) us, not
        // a fifth better: stay raw.
        run(&mut auto, 1_000, 4_000, 1);
        assert!(!auto.lz4());
        let mut on = CompressionChoice::new("on");
        run(&mut on, 1_000, 4_000, 0);
        assert!(on.lz4());
        let mut off = CompressionChoice::new("off");
        run(&mut off, 1_000, 4_000, 100);
        assert!(!off.lz4());
    }

    #[test]
    fn one_noisy_window_does_not_flip_the_mode() {
        let mut auto = CompressionChoice::new("auto");
        run(&mut auto, 1_000, 4_000, 0);
        // One window of a slow link, then fast again: still raw.
        for _ in 0..WINDOW_POLLS {
            auto.observe(64, 64_000, 4096 * 64, 4096 * 64 * 50, 4096 * 64);
        }
        assert!(!auto.lz4());
        run(&mut auto, 1_000, 4_000, 0);
        assert!(!auto.lz4());
    }
}
