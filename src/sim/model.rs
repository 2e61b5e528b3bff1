//! The simulator's models of the machine: the link ([`LinkModel`]) and the CPU
//! ([`CpuModel`]), both plain numbers the event loop turns into virtual time.

use std::string::String;
use std::time::Instant;
use std::vec;

use crate::codec::{CodecStats, EncoderConfig, Encoding, PageEncoder};
use crate::schedule::links::link_speed;

#[cfg(test)]
use super::pages::Content;
use super::pages::PageGen;
use super::SimError;

/// A network link shared by the migration's streams.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// Line rate, bytes per second (10 GbE: 1.25e9).
    pub bytes_per_sec: u64,
    /// One-way latency, ns (bytes arrive this long after they left; verdicts come
    /// back as late).
    pub latency_ns: u64,
    /// Payload bytes per packet (TCP MSS at a 1500-byte MTU with timestamps: 1448).
    pub mss: u64,
    /// Bytes each packet costs on the line besides its payload: Ethernet preamble,
    /// header, FCS and inter-frame gap (38), IPv4 (20), TCP with timestamps (32).
    pub per_packet_bytes: u64,
    /// Stream bytes each send costs besides its packets (a buffer handed to the
    /// socket): 0 by default; the stream's own frame headers are in its bytes.
    pub per_send_bytes: u64,
    /// Buffers a stream may queue for the link before its encoder waits
    /// (back-pressure), besides the one being sent.
    pub queue_buffers: usize,
}

impl LinkModel {
    /// A link of `bytes_per_sec` line rate with Ethernet/IPv4/TCP framing, 50 us of
    /// latency (a switch and two NICs in a rack) and 4 queued buffers per stream.
    pub fn ethernet(bytes_per_sec: u64) -> Self {
        LinkModel {
            bytes_per_sec,
            latency_ns: 50_000,
            mss: 1448,
            per_packet_bytes: 90,
            per_send_bytes: 0,
            queue_buffers: 4,
        }
    }

    /// A preset by name: `1gbe`, `10gbe`, `25gbe`, `40gbe`, `100gbe`.
    pub fn preset(name: &str) -> Result<Self, SimError> {
        link_speed(name)
            .map(Self::ethernet)
            .ok_or_else(|| SimError::Config(String::from("unknown link") + " '" + name + "'"))
    }

    /// Line time of a send of `bytes` stream bytes, ns.
    pub fn send_ns(&self, bytes: u64) -> u64 {
        let packets = bytes.div_ceil(self.mss.max(1));
        let line = bytes + self.per_send_bytes + packets * self.per_packet_bytes;
        (u128::from(line) * 1_000_000_000 / u128::from(self.bytes_per_sec.max(1))) as u64
    }

    /// Stream bytes per second the link carries at most (its goodput).
    pub fn goodput(&self) -> f64 {
        let mss = self.mss.max(1) as f64;
        self.bytes_per_sec as f64 * mss / (mss + self.per_packet_bytes as f64)
    }
}

/// What the source's CPUs cost, ns per operation; the event loop charges each
/// encoder's polls with these (an encoder runs on its own core while `cores` last).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuModel {
    /// Cores for the encoders (more streams than cores share them).
    pub cores: u32,
    /// Per page read and tested for zero (every page the encoder reads).
    pub zero_ns: f64,
    /// Per delta attempt.
    pub delta_ns: f64,
    /// Per LZ4 attempt.
    pub lz4_ns: f64,
    /// Per page sent raw (copy into the buffer).
    pub raw_ns: f64,
    /// Per non-zero page sent: the private copy's hash and the delta cache's copy.
    pub page_ns: f64,
    /// Per page of a known-zero run (kept hash set, nothing read).
    pub walk_ns: f64,
    /// Per page hash folded into a completion digest (both sides).
    pub fold_ns: f64,
    /// Per poll (a buffer filled and handed to the sender).
    pub poll_ns: f64,
}

impl Default for CpuModel {
    /// Fixed costs: [`calibrate`](Self::calibrate) on this project's 2-core test
    /// machine (release build, the codec benchmarks' page mix), rounded; 8 cores (the
    /// published migrations' hosts had 8). A deterministic default for tests and the
    /// scenarios.
    fn default() -> Self {
        CpuModel {
            cores: 8,
            zero_ns: 30.0,
            delta_ns: 500.0,
            lz4_ns: 3400.0,
            raw_ns: 120.0,
            page_ns: 600.0,
            walk_ns: 2.0,
            fold_ns: 0.4,
            poll_ns: 3000.0,
        }
    }
}

impl CpuModel {
    /// The CPU time of one poll that produced the codec counts `stats` (this poll's
    /// alone), ns, on one core.
    pub fn poll_cost(&self, stats: &CodecStats) -> f64 {
        let a = |e| stats.get(e).attempts as f64;
        let p = |e| stats.get(e).pages as f64;
        let zero_run_pages = (p(Encoding::Zero) - a(Encoding::Zero)).max(0.0);
        let nonzero = p(Encoding::Delta) + p(Encoding::Lz4) + p(Encoding::Raw);
        self.poll_ns
            + a(Encoding::Zero) * self.zero_ns
            + a(Encoding::Delta) * self.delta_ns
            + a(Encoding::Lz4) * self.lz4_ns
            + p(Encoding::Raw) * self.raw_ns
            + nonzero * self.page_ns
            + zero_run_pages * self.walk_ns
    }

    /// How much slower each encoder runs with `streams` encoders on `cores` cores.
    pub fn share(&self, streams: usize) -> f64 {
        (streams as f64 / f64::from(self.cores.max(1))).max(1.0)
    }

    /// Times the real codecs on `gen`'s pages (a fresh version of 2048 pages, then an
    /// edit of each, the second pass finding the first in the delta cache): this
    /// machine's costs, not deterministic from run to run.
    pub fn calibrate(gen: &PageGen, cores: u32) -> Self {
        let ps = gen.page_size();
        let n = 2048u64.min(gen.total_pages().max(1));
        let start = Instant::now();
        let clock = move || start.elapsed().as_nanos() as u64;
        let config = EncoderConfig {
            cache_bytes: 64 << 20,
            ..EncoderConfig::new(ps)
        };
        let Ok(mut enc) = PageEncoder::with_clock(config, clock) else {
            return CpuModel {
                cores,
                ..CpuModel::default()
            };
        };
        let mut page = vec![0u8; ps];
        let mut out = vec![0u8; enc.max_payload_len()];
        enc.set_lz4(true);
        // Pages spread over memory, both versions non-zero.
        let step = (gen.total_pages() / n).max(1);
        let t = Instant::now();
        let mut pages_hashed = 0u64;
        for version in [1, 2] {
            for i in 0..n {
                gen.fill(i * step, version, &mut page);
                let _ = enc.encode(i * step, &page, &mut out);
                std::hint::black_box(crate::codec::base_hash(&page));
                pages_hashed += 1;
            }
        }
        let total = t.elapsed().as_nanos() as f64;
        let s = *enc.stats();
        let per = |e: Encoding| {
            let c = s.get(e);
            (c.attempts > 0).then(|| c.ns as f64 / c.attempts as f64)
        };
        let d = CpuModel::default();
        let codec_ns: f64 = Encoding::ALL.iter().map(|&e| s.get(e).ns as f64).sum();
        let page_ns = ((total - codec_ns) / pages_hashed.max(1) as f64).max(50.0);
        // Folding a digest: 8 bytes of hash per page through XXH3.
        let hashes = vec![0x5au8; 8 << 20];
        let t = Instant::now();
        std::hint::black_box(xxhash_rust::xxh3::xxh3_128(&hashes));
        let fold_ns = t.elapsed().as_nanos() as f64 / (1u64 << 20) as f64;
        CpuModel {
            cores,
            zero_ns: per(Encoding::Zero).unwrap_or(d.zero_ns),
            delta_ns: per(Encoding::Delta).unwrap_or(d.delta_ns),
            lz4_ns: per(Encoding::Lz4).unwrap_or(d.lz4_ns),
            raw_ns: d.raw_ns.min(page_ns),
            page_ns,
            walk_ns: d.walk_ns,
            fold_ns: fold_ns.max(0.1),
            poll_ns: d.poll_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_costs_its_framing() {
        let l = LinkModel::preset("10gbe").unwrap();
        // One full packet: 1448 + 90 bytes at 1.25 GB/s.
        assert_eq!(l.send_ns(1448), 1230);
        assert!(l.goodput() < 1.25e9 && l.goodput() > 1.15e9);
        assert!(LinkModel::preset("token-ring").is_err());
    }

    #[test]
    fn calibration_measures_every_codec() {
        let g = PageGen::new("fill".parse().unwrap(), Content::Mix, 256, 4096);
        let c = CpuModel::calibrate(&g, 2);
        assert_eq!(c.cores, 2);
        for v in [c.zero_ns, c.delta_ns, c.lz4_ns, c.page_ns, c.fold_ns] {
            assert!(v.is_finite() && v > 0.0, "{c:?}");
        }
    }
}
