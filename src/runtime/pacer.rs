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
}
