//! Zero-page detection at memory speed.

/// Bytes checked between early exits: small enough to stop soon on a non-zero page,
/// large enough that the inner loop is a straight run of vector ORs.
const BLOCK: usize = 256;

/// Whether every byte of `page` is zero.
///
/// Reads the page 256 bytes at a time, OR-ing 64-bit words (the compiler turns the
/// inner loop into vector ORs) and stops at the first block with a set bit. Works on
/// any length; whole pages are the intended use.
///
/// ```
/// use precopy::codec::is_zero_page;
/// let mut page = [0u8; 4096];
/// assert!(is_zero_page(&page));
/// page[4095] = 1;
/// assert!(!is_zero_page(&page));
/// ```
#[inline]
pub fn is_zero_page(page: &[u8]) -> bool {
    let mut blocks = page.chunks_exact(BLOCK);
    for block in &mut blocks {
        let acc = block.chunks_exact(8).fold(0u64, |acc, w| acc | word(w));
        if acc != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&b| b == 0)
}

/// The 8 bytes at the start of `w` (at least 8 long) as a little-endian word.
#[inline(always)]
pub(crate) fn word(w: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&w[..8]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_single_set_byte_is_seen() {
        let mut page = [0u8; 1000]; // not a multiple of the block: exercises the tail
        assert!(is_zero_page(&page));
        for i in 0..page.len() {
            page[i] = 0x80;
            assert!(!is_zero_page(&page), "byte {i}");
            page[i] = 0;
        }
        assert!(is_zero_page(&[]));
    }
}
