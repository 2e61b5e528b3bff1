//! A link speed for a transport that has none of its own (loopback): sends are paced
//! so the bytes leave no faster than the link would carry them.

use std::time::{Duration, Instant};

/// Well-known link speeds, by name, in bytes per second.
pub const LINKS: [(&str, u64); 5] = [
    ("1gbe", 125_000_000),
    ("10gbe", 1_250_000_000),
    ("25gbe", 3_125_000_000),
    ("40gbe", 5_000_000_000),
    ("100gbe", 12_500_000_000),
];

/// The link speed named `name` (`1gbe`, `10gbe`, `25gbe`, `40gbe`, `100gbe`), bytes/s.
pub fn link_speed(name: &str) -> Option<u64> {
    LINKS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, speed)| speed)
}

/// Paces sends to `bytes_per_sec`: each send of `n` bytes occupies the link for
/// `n / bytes_per_sec`; a send that would start before the link is free waits.
#[derive(Clone, Debug)]
pub struct Pacer {
    bytes_per_sec: u64,
    free_at: Option<Instant>,
}

impl Pacer {
    /// A pacer for a link of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1),
            free_at: None,
        }
    }

    /// The link speed, bytes/s.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Waits until the link is free, then books it for `bytes`.
    pub fn pace(&mut self, bytes: usize) {
        let now = Instant::now();
        let start = match self.free_at {
            Some(free) if free > now => {
                std::thread::sleep(free - now);
                free
            }
            _ => now,
        };
        let busy = bytes as u128 * 1_000_000_000 / u128::from(self.bytes_per_sec);
        self.free_at = Some(start + Duration::from_nanos(busy as u64));
    }
}

/// A bandwidth cap shared by the sender threads of a multi-stream migration: a token
/// bucket that fills at `bytes_per_sec` up to `burst` bytes. A send takes its bytes
/// from the bucket, going into debt if it must; a sender finding the bucket in debt
/// waits until the debt is repaid, outside the lock, so the streams together never
/// exceed the cap by more than the burst.
#[derive(Debug)]
pub struct TokenBucket {
    bytes_per_sec: u64,
    burst: u64,
    state: std::sync::Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Bytes available (negative: owed).
    tokens: i128,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl TokenBucket {
    /// A cap of `bytes_per_sec` (at least 1) with `burst` bytes of slack, full.
    pub fn new(bytes_per_sec: u64, burst: u64) -> Self {
        TokenBucket {
            bytes_per_sec: bytes_per_sec.max(1),
            burst,
            state: std::sync::Mutex::new(BucketState {
                tokens: i128::from(burst),
                at: Instant::now(),
            }),
        }
    }

    /// The cap, bytes/s.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Takes `bytes` from the bucket, first waiting while it is in debt.
    pub fn take(&self, bytes: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let earned = now.duration_since(s.at).as_nanos() * u128::from(self.bytes_per_sec)
                / 1_000_000_000;
            s.tokens = (s.tokens + earned as i128).min(i128::from(self.burst));
            s.at = now;
            let wait = if s.tokens < 0 {
                (-s.tokens) as u128 * 1_000_000_000 / u128::from(self.bytes_per_sec)
            } else {
                0
            };
            s.tokens -= bytes as i128;
            wait
        };
        if wait > 0 {
            std::thread::sleep(Duration::from_nanos(wait as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_link_speed() {
        assert_eq!(link_speed("10GbE"), Some(1_250_000_000));
        assert_eq!(link_speed("token-ring"), None);
        // 4 MB at 100 MB/s: at least 40 ms (the first send goes at once, the last
        // one's time is booked but not waited for).
        let mut p = Pacer::new(100_000_000);
        let start = Instant::now();
        for _ in 0..5 {
            p.pace(1_000_000);
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(39), "{took:?}");
    }

    #[test]
    fn token_bucket_caps_threads_together() {
        // Two threads take 4 x 1 MB each at 100 MB/s with 1 MB of burst: 8 MB need at
        // least (8 - 1 - 1) MB / 100 MB/s = 60 ms (the burst, and the last take's debt
        // which nobody waits for).
        let bucket = TokenBucket::new(100_000_000, 1_000_000);
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| (0..4).for_each(|_| bucket.take(1_000_000)));
            }
        });
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(59), "{took:?}");
    }
}
