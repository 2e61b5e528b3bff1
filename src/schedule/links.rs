//! Link presets: well-known link speeds by name, for a bandwidth cap or a simulated
//! link.

/// Well-known link speeds, by name, in bytes per second.
pub const LINKS: [(&str, u64); 5] = [
    ("1gbe", 125_000_000),
    ("10gbe", 1_250_000_000),
    ("25gbe", 3_125_000_000),
    ("40gbe", 5_000_000_000),
    ("100gbe", 12_500_000_000),
];

/// The link speed named `name` (`1gbe`, `10gbe`, `25gbe`, `40gbe`, `100gbe`, any
/// case), bytes/s.
///
/// ```
/// use precopy::schedule::links::link_speed;
/// assert_eq!(link_speed("10GbE"), Some(1_250_000_000));
/// assert_eq!(link_speed("token-ring"), None);
/// ```
pub fn link_speed(name: &str) -> Option<u64> {
    LINKS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, speed)| speed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_named() {
        assert_eq!(link_speed("10GbE"), Some(1_250_000_000));
        assert_eq!(link_speed("1gbe"), Some(125_000_000));
        assert_eq!(link_speed("token-ring"), None);
        assert!(LINKS.windows(2).all(|w| w[0].1 < w[1].1));
    }
}
