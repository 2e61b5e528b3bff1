//! Option parsers and checks shared by every subcommand: sizes with K/M/G/T suffixes,
//! page sizes, bounded counts and durations, and what this host can hold. Every
//! option is checked here (or by clap with these parsers) before anything is
//! allocated, created or calibrated; a message names the option and the valid range.

use precopy::layout::PageSize;
use precopy::runtime::Size;

/// A size for a message: exact when round (`16 GiB`), else to a tenth of a GiB.
pub fn size(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        Size(bytes).to_string()
    } else {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    }
}

/// Parses a byte size with an optional K/M/G/T suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        Some('T' | 't') => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 4096, 4K, 64M, 1G, 1T)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large (at most 16383T)"))
}

/// Parses a page size: a size (K suffix allowed) that is a power of two from 512 B to
/// 64 KiB.
pub fn parse_page_size(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s)?;
    PageSize::new(bytes).map_err(|e| format!("{e} (e.g. 4096 or 4K)"))?;
    Ok(bytes)
}

/// A parser of whole numbers from `min` to `max` (inclusive) with a message naming
/// the range.
fn bounded(s: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number ({min} to {max}{unit})"))?;
    if !(min..=max).contains(&n) {
        return Err(format!("{n} is out of range ({min} to {max}{unit})"));
    }
    Ok(n)
}

/// The most writer threads (vCPUs) a synthetic guest runs.
pub const MAX_WRITERS: u64 = 1024;

/// Parses `--writers`: 1 to [`MAX_WRITERS`].
pub fn parse_writers(s: &str) -> Result<usize, String> {
    bounded(s, 1, MAX_WRITERS, "").map(|n| n as usize)
}

/// Parses a timeout in seconds: 1 s to one day.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    bounded(s, 1, 86_400, " seconds")
}

/// Parses `--downtime-ms`: 1 ms to 10 minutes.
pub fn parse_downtime_ms(s: &str) -> Result<u64, String> {
    bounded(s, 1, 600_000, " ms")
}

/// Parses `--max-rounds`: 1 to 10000.
pub fn parse_rounds(s: &str) -> Result<u32, String> {
    bounded(s, 1, 10_000, "").map(|n| n as u32)
}

/// The slowest `--max-bandwidth`, bytes per second.
pub const MIN_BANDWIDTH: u64 = 64 << 10;

/// Parses `--max-bandwidth`: a size per second, at least [`MIN_BANDWIDTH`].
pub fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < MIN_BANDWIDTH {
        return Err(format!(
            "{n} bytes per second is too slow (at least 64K, e.g. 100M)"
        ));
    }
    Ok(n)
}

/// This host's physical memory, bytes (`None` if the OS does not say).
pub fn host_memory() -> Option<u64> {
    // SAFETY: sysconf only reads a system value.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (pages, page) = (u64::try_from(pages).ok()?, u64::try_from(page).ok()?);
    pages.checked_mul(page).filter(|&b| b > 0)
}

/// Refuses `bytes` of memory for `option` (`copies` times: a demo holds the source
/// and the destination) when this host cannot hold it.
pub fn check_fits_host(option: &str, bytes: u64, copies: u64) -> Result<(), String> {
    let Some(host) = host_memory() else {
        return Ok(());
    };
    let need = bytes.saturating_mul(copies);
    if need >= host {
        let times = if copies > 1 {
            format!(" ({copies} copies: source and destination)")
        } else {
            String::new()
        };
        return Err(format!(
            "{option} {}: this host has {} of memory, which cannot hold {}{times}; \
             give less than {}",
            size(bytes),
            size(host),
            size(need),
            size(host / copies.max(1))
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_suffixes_and_refuse_overflow() {
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("17179869184G").is_err());
        assert!(parse_size("4X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn page_sizes_are_checked_with_the_one_rule() {
        assert_eq!(parse_page_size("4K"), Ok(4096));
        assert!(parse_page_size("2M").unwrap_err().contains("4096"));
        assert!(parse_page_size("1").is_err());
        assert!(parse_page_size("3000").is_err());
    }

    #[test]
    fn bounded_options_name_their_range() {
        assert!(parse_writers("0").unwrap_err().contains("1 to 1024"));
        assert_eq!(parse_writers("8"), Ok(8));
        assert!(parse_secs("18446744073709551615").is_err());
        assert!(parse_downtime_ms("0")
            .unwrap_err()
            .contains("1 to 600000 ms"));
        assert!(parse_bandwidth("1").unwrap_err().contains("64K"));
    }
}
