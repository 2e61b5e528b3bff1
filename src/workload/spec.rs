//! What a workload is: the [`Workload`] spec and its parser, which pages hold data
//! before the migration ([`Workload::holds_data`]) and the order the guest writes
//! pages in ([`WriteStream`]). The demo's writer threads and the simulator's virtual
//! writers both draw from these, so one spec means the same in both.

use std::format;
use std::str::FromStr;
use std::string::String;

use super::{Rng, WorkloadError};

/// How the guest writes its memory. Parsed from `NAME[:key=value,...]`; rates are in
/// pages per second and accept `k`/`m` suffixes, sizes in bytes accept `K`/`M`/`G`
/// (and `all`: the whole memory).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Mostly zero memory and a trickle of writes to random pages
    /// (`idle:rate=100,zero=0.75`): a freshly booted guest.
    Idle {
        /// Pages written per second.
        rate: u64,
        /// Fraction of memory that is zero before the migration (1.0 by default);
        /// the rest holds data, in blocks of 512 pages spread over memory.
        zero: f64,
    },
    /// Every page written once, in order, then nothing (`once:rate=250k`): data loaded
    /// into memory and then only read. (vMotion's "Once", where all memory was
    /// written *before* the migration, is `fill:rate=0`.)
    Once {
        /// Pages written per second.
        rate: u64,
    },
    /// A dirtying loop over a working set at the start of memory
    /// (`continuous:rate=50k,set=256M`); `set=all` loops sequentially over all of
    /// memory (vMotion's "Continuous").
    Continuous {
        /// Pages written per second.
        rate: u64,
        /// Working set, bytes.
        set: u64,
    },
    /// Every page of memory filled with non-zero data before the migration starts,
    /// then a dirtying loop like [`Continuous`](Self::Continuous)
    /// (`fill:rate=50k,set=256M`): a fully written guest, nothing for zero-page
    /// elision to skip, so whatever costs per page of memory shows.
    Fill {
        /// Pages written per second.
        rate: u64,
        /// Working set of the writes, bytes.
        set: u64,
    },
    /// Zipf-skewed writes over all memory (`hotspot:rate=50k,skew=1.1`).
    Hotspot {
        /// Pages written per second.
        rate: u64,
        /// Zipf exponent (larger: hotter hot pages).
        skew: f64,
    },
    /// A database server (`oltp:rate=50k,pool=1G,log=64M,skew=0.99,log_share=20`):
    /// Zipf-skewed writes over a buffer pool at the start of memory, and
    /// `log_share` percent of the writes appended sequentially to a log ring after
    /// it. The pool and the log hold data before the migration, the rest is zero.
    Oltp {
        /// Pages written per second.
        rate: u64,
        /// Buffer pool, bytes.
        pool: u64,
        /// Log ring, bytes.
        log: u64,
        /// Zipf exponent of the pool's writes.
        skew: f64,
        /// Percent of the writes that go to the log.
        log_share: u8,
    },
}

/// Pages per block of an idle guest's data (2 MiB of 4 KiB pages).
const IDLE_BLOCK_PAGES: u64 = 512;

impl Workload {
    /// Pages written per second.
    pub fn rate(&self) -> u64 {
        match *self {
            Workload::Idle { rate, .. }
            | Workload::Once { rate }
            | Workload::Continuous { rate, .. }
            | Workload::Fill { rate, .. }
            | Workload::Hotspot { rate, .. }
            | Workload::Oltp { rate, .. } => rate,
        }
    }

    /// The same workload at another rate (a sweep over the write rate).
    pub fn with_rate(mut self, new: u64) -> Self {
        match &mut self {
            Workload::Idle { rate, .. }
            | Workload::Once { rate }
            | Workload::Continuous { rate, .. }
            | Workload::Fill { rate, .. }
            | Workload::Hotspot { rate, .. }
            | Workload::Oltp { rate, .. } => *rate = new,
        }
        self
    }

    /// Whether page `page` of `total_pages` pages of `page_size` bytes holds data
    /// (is not zero) before the migration starts: a continuous guest's working set,
    /// an OLTP guest's pool and log, a fill or hotspot guest's every page, an idle
    /// guest's non-zero share in blocks spread over memory.
    pub fn holds_data(&self, page: u64, total_pages: u64, page_size: u64) -> bool {
        let pages = |bytes: u64| (bytes / page_size.max(1)).min(total_pages);
        match *self {
            Workload::Idle { zero, .. } => {
                let block = page / IDLE_BLOCK_PAGES;
                // A fixed hash of the block: the same blocks hold data in every run.
                let h = Rng::new(block ^ 0x1d1e_b10c).next_u64();
                (h >> 11) as f64 / (1u64 << 53) as f64 >= zero
            }
            Workload::Once { .. } => false,
            Workload::Continuous { set, .. } => page < pages(set),
            Workload::Fill { .. } | Workload::Hotspot { .. } => true,
            Workload::Oltp { pool, log, .. } => page < pages(pool).saturating_add(pages(log)),
        }
    }
}

fn parse_scaled(value: &str, key: &str, units: &[(char, u64)]) -> Result<u64, String> {
    let (digits, scale) = match value.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let scale = units
                .iter()
                .find(|(u, _)| *u == c)
                .map(|(_, s)| *s)
                .ok_or_else(|| format!("{key}={value}: unknown suffix '{c}'"))?;
            (&value[..value.len() - 1], scale)
        }
        _ => (value, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{key}={value}: not a number"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{key}={value}: too large"))
}

fn parse_fraction(value: &str, key: &str, max: f64) -> Result<f64, String> {
    let s: f64 = value
        .parse()
        .map_err(|_| format!("{key}={value}: not a number"))?;
    if !(s.is_finite() && s >= 0.0 && s <= max) {
        return Err(format!("{key}={value}: must be from 0 to {max}"));
    }
    Ok(s)
}

/// The keys each workload takes.
fn keys(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "idle" => &["rate", "zero"],
        "once" => &["rate"],
        "continuous" | "fill" => &["rate", "set"],
        "hotspot" => &["rate", "skew"],
        "oltp" => &["rate", "pool", "log", "skew", "log_share"],
        _ => return None,
    })
}

/// The highest `rate` a workload takes, page writes per second (all writers).
pub const MAX_RATE: u64 = 100_000_000;

impl FromStr for Workload {
    type Err = WorkloadError;

    fn from_str(spec: &str) -> Result<Self, WorkloadError> {
        let err = |problem: String| WorkloadError::Spec {
            spec: spec.into(),
            problem,
        };
        let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
        let allowed = keys(name).ok_or_else(|| {
            err(format!(
                "unknown workload '{name}' (idle, once, continuous, fill, hotspot, oltp)"
            ))
        })?;
        let (mut rate, mut set, mut skew, mut zero) = (None, None, None, None);
        let (mut pool, mut log, mut log_share) = (None, None, None);
        let rates = [('k', 1_000), ('m', 1_000_000)];
        let sizes = [
            ('K', 1 << 10),
            ('M', 1 << 20),
            ('G', 1 << 30),
            ('T', 1 << 40),
        ];
        let size = |v: &str, k: &str| match v {
            "all" => Ok(u64::MAX),
            _ => parse_scaled(v, k, &sizes),
        };
        for kv in args.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| err(format!("'{kv}' is not key=value")))?;
            let known = ["rate", "set", "skew", "zero", "pool", "log", "log_share"];
            if !known.contains(&k) {
                return Err(err(format!("unknown key '{k}' ({})", known.join(", "))));
            }
            if !allowed.contains(&k) {
                return Err(err(format!("'{k}' does not apply to {name}")));
            }
            if args
                .split(',')
                .filter(|o| o.split('=').next() == Some(k))
                .count()
                > 1
            {
                return Err(err(format!("'{k}' is given more than once")));
            }
            match k {
                "rate" => {
                    let r = parse_scaled(v, k, &rates).map_err(err)?;
                    if r > MAX_RATE {
                        return Err(err(format!(
                            "rate={v}: at most {MAX_RATE} page writes per second (100m)"
                        )));
                    }
                    rate = Some(r);
                }
                "set" => set = Some(size(v, k).map_err(err)?),
                "pool" => pool = Some(size(v, k).map_err(err)?),
                "log" => log = Some(size(v, k).map_err(err)?),
                "zero" => zero = Some(parse_fraction(v, k, 1.0).map_err(err)?),
                "log_share" => log_share = Some(parse_fraction(v, k, 100.0).map_err(err)? as u8),
                _ => {
                    let s: f64 = v
                        .parse()
                        .map_err(|_| err(format!("skew={v}: not a number")))?;
                    if !(s.is_finite() && s > 0.0) {
                        return Err(err(format!("skew={v}: must be above 0")));
                    }
                    skew = Some(s);
                }
            }
        }
        Ok(match name {
            "idle" => Workload::Idle {
                rate: rate.unwrap_or(100),
                zero: zero.unwrap_or(1.0),
            },
            "once" => Workload::Once {
                rate: rate.unwrap_or(250_000),
            },
            "continuous" => Workload::Continuous {
                rate: rate.unwrap_or(50_000),
                set: set.unwrap_or(256 << 20),
            },
            "fill" => Workload::Fill {
                rate: rate.unwrap_or(50_000),
                set: set.unwrap_or(256 << 20),
            },
            "hotspot" => Workload::Hotspot {
                rate: rate.unwrap_or(50_000),
                skew: skew.unwrap_or(1.1),
            },
            _ => Workload::Oltp {
                rate: rate.unwrap_or(50_000),
                pool: pool.unwrap_or(1 << 30),
                log: log.unwrap_or(64 << 20),
                skew: skew.unwrap_or(0.99),
                log_share: log_share.unwrap_or(20),
            },
        })
    }
}

impl core::fmt::Display for Workload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let size = |s: u64| {
            if s == u64::MAX {
                "all".into()
            } else {
                s.to_string()
            }
        };
        match *self {
            Workload::Idle { rate, zero } => write!(f, "idle:rate={rate},zero={zero}"),
            Workload::Once { rate } => write!(f, "once:rate={rate}"),
            Workload::Continuous { rate, set } => {
                write!(f, "continuous:rate={rate},set={}", size(set))
            }
            Workload::Fill { rate, set } => write!(f, "fill:rate={rate},set={}", size(set)),
            Workload::Hotspot { rate, skew } => write!(f, "hotspot:rate={rate},skew={skew}"),
            Workload::Oltp {
                rate,
                pool,
                log,
                skew,
                log_share,
            } => write!(
                f,
                "oltp:rate={rate},pool={},log={},skew={skew},log_share={log_share}",
                size(pool),
                size(log)
            ),
        }
    }
}

use std::string::ToString;

/// The pages one writer (vCPU `index` of `threads`) writes, in order: the demo's
/// writer threads take the next page at their rate in real time, the simulator's
/// virtual writers in virtual time. Deterministic: the same workload, size and
/// writer give the same pages.
#[derive(Clone, Debug)]
pub struct WriteStream {
    workload: Workload,
    pages: u64,
    threads: u64,
    cursor: u64,
    /// Pages the sequential loop runs over (continuous, fill) or the pool (oltp).
    span: u64,
    /// The OLTP log ring: first page and pages.
    log: (u64, u64),
    log_cursor: u64,
    rng: Rng,
}

impl WriteStream {
    /// Writer `index` of `threads` over `total_pages` pages of `page_size` bytes.
    pub fn new(
        workload: Workload,
        total_pages: u64,
        page_size: u64,
        index: usize,
        threads: usize,
    ) -> Self {
        let pages = total_pages.max(1);
        let in_pages = |bytes: u64| (bytes / page_size.max(1)).clamp(1, pages);
        let (span, log) = match workload {
            Workload::Continuous { set, .. } | Workload::Fill { set, .. } => {
                (in_pages(set), (0, 0))
            }
            Workload::Oltp { pool, log, .. } => {
                let pool = in_pages(pool);
                let log_pages = in_pages(log).min(pages - pool.min(pages - 1));
                (pool, (pool.min(pages - 1), log_pages.max(1)))
            }
            _ => (pages, (0, 0)),
        };
        WriteStream {
            workload,
            pages,
            threads: threads.max(1) as u64,
            cursor: index as u64,
            span,
            log,
            log_cursor: index as u64,
            rng: Rng::new(0x2545_f491_4f6c_dd1d ^ (index as u64 + 1)),
        }
    }

    /// The next page to write; `None` once a `once` writer has written its share.
    pub fn next_page(&mut self) -> Option<u64> {
        Some(match self.workload {
            Workload::Idle { .. } => self.rng.below(self.pages),
            Workload::Once { .. } => {
                if self.cursor >= self.pages {
                    return None;
                }
                let p = self.cursor;
                self.cursor += self.threads;
                p
            }
            Workload::Continuous { .. } | Workload::Fill { .. } => {
                let p = self.cursor % self.span;
                self.cursor += self.threads;
                p
            }
            Workload::Hotspot { skew, .. } => zipf(self.pages, skew, self.rng.below(1 << 53)),
            Workload::Oltp {
                skew, log_share, ..
            } => {
                if self.rng.below(100) < u64::from(log_share) {
                    let (first, len) = self.log;
                    let p = first + self.log_cursor % len;
                    self.log_cursor += self.threads;
                    p.min(self.pages - 1)
                } else {
                    zipf(self.span, skew, self.rng.below(1 << 53))
                }
            }
        })
    }

    /// A random word index below `words` (which word of the page a write changes).
    pub fn word(&mut self, words: u64) -> u64 {
        self.rng.below(words)
    }
}

/// A page drawn with probability proportional to `rank^-skew` (rank 1 = page 0), by
/// inverting the continuous approximation of the Zipf distribution; `u53` is a
/// uniform 53-bit integer.
pub(crate) fn zipf(pages: u64, skew: f64, u53: u64) -> u64 {
    let u = u53 as f64 / (1u64 << 53) as f64;
    // Ranks are drawn from [1, pages + 1) and floored, so every page can come up.
    let n = pages as f64 + 1.0;
    let rank = if (skew - 1.0).abs() < 1e-9 {
        n.powf(u)
    } else {
        let e = 1.0 - skew;
        ((n.powf(e) - 1.0) * u + 1.0).powf(1.0 / e)
    };
    (rank as u64).saturating_sub(1).min(pages - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn workload_specs_parse_and_errors_name_the_problem() {
        assert_eq!(
            "continuous:rate=20k,set=64M".parse::<Workload>().unwrap(),
            Workload::Continuous {
                rate: 20_000,
                set: 64 << 20
            }
        );
        assert_eq!(
            "idle".parse::<Workload>().unwrap(),
            Workload::Idle {
                rate: 100,
                zero: 1.0
            }
        );
        let e = |s: &str| s.parse::<Workload>().unwrap_err().to_string();
        assert_eq!(
            "fill:rate=10k".parse::<Workload>().unwrap(),
            Workload::Fill {
                rate: 10_000,
                set: 256 << 20
            }
        );
        assert!(e("busy").contains("unknown workload 'busy'"));
        assert!(e("busy").contains("oltp"), "{}", e("busy"));
        assert!(e("fill:skew=2").contains("'skew' does not apply to fill"));
        assert!(e("idle:set=1M").contains("'set' does not apply to idle"));
        assert!(e("once:rate=fast").contains("rate=fast"));
        assert!(e("once:rate=1.5").contains("rate=1.5: not a number"));
        assert!(e("hotspot:skew=-1").contains("must be above 0"));
        assert!(e("continuous:rate").contains("is not key=value"));
        assert!(e("continuous:rate=1x").contains("unknown suffix"));
        assert!(e("idle:zero=1.5").contains("must be from 0 to 1"));
        assert!(e("idle:color=red").contains("unknown key 'color'"));
    }

    #[test]
    fn specs_print_back_to_themselves() {
        for s in [
            "idle:rate=100,zero=0.75",
            "once:rate=250000",
            "continuous:rate=1000,set=all",
            "fill:rate=0,set=268435456",
            "hotspot:rate=5,skew=1.1",
            "oltp:rate=50000,pool=1073741824,log=67108864,skew=0.99,log_share=20",
        ] {
            let w: Workload = s.parse().unwrap();
            assert_eq!(w.to_string(), s);
            assert_eq!(w.to_string().parse::<Workload>().unwrap(), w);
        }
    }

    #[test]
    fn idle_zero_fraction_holds_in_blocks() {
        let w: Workload = "idle:zero=0.75".parse().unwrap();
        let pages = 512 * 4000;
        let data = (0..pages).filter(|&p| w.holds_data(p, pages, 4096)).count() as f64;
        let share = data / pages as f64;
        assert!((share - 0.25).abs() < 0.03, "{share}");
        // Whole blocks: a block's pages agree.
        assert_eq!(
            w.holds_data(512, pages, 4096),
            w.holds_data(1023, pages, 4096)
        );
        let all_zero: Workload = "idle".parse().unwrap();
        assert!((0..pages).all(|p| !all_zero.holds_data(p, pages, 4096)));
    }

    #[test]
    fn oltp_writes_hit_the_pool_and_append_to_the_log() {
        let w: Workload = "oltp:pool=4M,log=1M,log_share=25".parse().unwrap();
        let total = 4096;
        let mut s = WriteStream::new(w, total, 4096, 0, 1);
        let pages: Vec<u64> = (0..4000).map(|_| s.next_page().unwrap()).collect();
        let log: Vec<u64> = pages.iter().copied().filter(|&p| p >= 1024).collect();
        assert!((800..1200).contains(&log.len()), "{}", log.len());
        assert!(log.iter().all(|&p| p < 1024 + 256));
        assert!(log.windows(2).all(|w| w[1] == w[0] + 1 || w[1] == 1024));
        let hot = pages.iter().filter(|&&p| p < 32).count();
        assert!(hot > 600, "{hot}");
        assert!(w.holds_data(1279, total, 4096) && !w.holds_data(1280, total, 4096));
    }

    #[test]
    fn streams_are_deterministic_and_loops_sequential() {
        let w: Workload = "continuous:set=all".parse().unwrap();
        let mut a = WriteStream::new(w, 100, 4096, 1, 2);
        let got: Vec<u64> = (0..5).map(|_| a.next_page().unwrap()).collect();
        assert_eq!(got, [1, 3, 5, 7, 9]);
        let h: Workload = "hotspot".parse().unwrap();
        let mut x = WriteStream::new(h, 1 << 20, 4096, 0, 1);
        let mut y = WriteStream::new(h, 1 << 20, 4096, 0, 1);
        assert!((0..100).all(|_| x.next_page() == y.next_page()));
        let mut once = WriteStream::new("once".parse().unwrap(), 3, 4096, 0, 1);
        assert_eq!(
            (0..4).map(|_| once.next_page()).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2), None]
        );
    }

    #[test]
    fn zipf_stays_in_range_and_prefers_low_pages() {
        let low = (0..1000u64)
            .map(|i| zipf(1 << 20, 1.1, i * (1 << 43)))
            .filter(|&p| p < 1024)
            .count();
        assert!(low > 500, "{low}");
        assert_eq!(zipf(10, 1.0, (1 << 53) - 1), 9);
        assert_eq!(zipf(10, 2.0, 0), 0);
    }
}
