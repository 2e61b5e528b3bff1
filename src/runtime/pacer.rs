//! Bandwidth caps: a [`TokenBucket`] shared by the streams of a migration, and
//! [`RateLimited`], any transport paced by one (a link speed for a transport that has
//! none of its own, such as loopback; the presets are in
//! [`schedule::links`](crate::schedule::links)).

use std::time::{Duration, Instant};

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

/// A rate-limited link: any [`Transport`](crate::engine::Transport) whose sends take
/// their bytes from a [`TokenBucket`] first (shared with other links to cap them
/// together). Receives are not limited.
///
/// ```
/// use precopy::engine::{MemoryTransport, Transport};
/// use precopy::runtime::pacer::{RateLimited, TokenBucket};
/// let bucket = TokenBucket::new(125_000_000, 64 << 10); // 1 Gbit/s, 64 KiB burst
/// let mut link = RateLimited::new(MemoryTransport::new(4096), &bucket);
/// link.send(&[0u8; 4096]).unwrap();
/// assert_eq!(link.get_ref().pending(), 4096);
/// ```
#[derive(Debug)]
pub struct RateLimited<'a, T> {
    inner: T,
    bucket: &'a TokenBucket,
}

impl<'a, T> RateLimited<'a, T> {
    /// `inner`, its sends paced by `bucket`.
    pub fn new(inner: T, bucket: &'a TokenBucket) -> Self {
        RateLimited { inner, bucket }
    }

    /// The transport underneath.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The transport underneath, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The transport underneath.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: crate::engine::Transport> crate::engine::Transport for RateLimited<'_, T> {
    type Error = T::Error;

    fn send(&mut self, bytes: &[u8]) -> Result<(), T::Error> {
        self.bucket.take(bytes.len());
        self.inner.send(bytes)
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, T::Error> {
        self.inner.recv(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_rate_limited_link_passes_every_byte_at_the_rate() {
        use crate::engine::{MemoryTransport, Transport};
        // 2 MB at 100 MB/s with no burst: at least 20 ms minus the last send's debt.
        let bucket = TokenBucket::new(100_000_000, 0);
        let mut link = RateLimited::new(MemoryTransport::new(1 << 20), &bucket);
        let start = Instant::now();
        for _ in 0..8 {
            link.send(&[7u8; 250_000]).unwrap();
        }
        assert!(start.elapsed() >= Duration::from_micros(17_400));
        assert_eq!(link.get_ref().pending(), 2_000_000);
        let mut buf = std::vec![0u8; 16];
        assert_eq!(link.recv(&mut buf), Ok(16));
        assert_eq!(buf, [7u8; 16]);
    }
}
