//! Iterators over harvested dirty words: set bits as page indices, and runs of
//! consecutive dirty pages. Zero words cost one compare each.

/// Iterator over the indices of the set bits of a `&[u64]` (bit `i` of word `w` is page
/// `base + 64 * w + i`), in ascending order.
#[derive(Clone, Debug)]
pub struct DirtyPages<'a> {
    words: &'a [u64],
    base: u64,
    next_word: usize,
    current: u64,
    current_base: u64,
}

impl<'a> DirtyPages<'a> {
    /// Iterates over the set bits of `words`, numbering bit 0 of word 0 as page `base`.
    pub fn new(words: &'a [u64], base: u64) -> Self {
        DirtyPages {
            words,
            base,
            next_word: 0,
            current: 0,
            current_base: base,
        }
    }
}

impl Iterator for DirtyPages<'_> {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        while self.current == 0 {
            let w = *self.words.get(self.next_word)?;
            self.current_base = self.base + 64 * self.next_word as u64;
            self.next_word += 1;
            self.current = w;
        }
        let bit = self.current.trailing_zeros();
        self.current &= self.current - 1;
        Some(self.current_base + u64::from(bit))
    }
}

/// The set bits of one word as page indices (`base + bit`), ascending; exact-size, so
/// `Vec::extend` reserves once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WordBits {
    bits: u64,
    base: u64,
}

impl WordBits {
    /// The set bits of `bits`, numbering bit 0 as page `base`.
    #[inline]
    pub(crate) fn new(bits: u64, base: u64) -> Self {
        WordBits { bits, base }
    }
}

impl Iterator for WordBits {
    type Item = u64;

    #[inline]
    fn next(&mut self) -> Option<u64> {
        if self.bits == 0 {
            return None;
        }
        let bit = self.bits.trailing_zeros();
        self.bits &= self.bits - 1;
        Some(self.base + u64::from(bit))
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.bits.count_ones() as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for WordBits {}

/// Iterator over maximal runs of consecutive set bits of a `&[u64]`, as
/// `(first_page, page_count)`, in ascending order. Runs cross word boundaries.
#[derive(Clone, Debug)]
pub struct DirtyRuns<'a> {
    words: &'a [u64],
    base: u64,
    /// Next bit position (relative to `base`) to look at.
    pos: u64,
}

impl<'a> DirtyRuns<'a> {
    /// Iterates over the runs of set bits of `words`, numbering bit 0 of word 0 as page
    /// `base`.
    pub fn new(words: &'a [u64], base: u64) -> Self {
        DirtyRuns {
            words,
            base,
            pos: 0,
        }
    }

    /// Position of the first bit at or after `pos` whose value is `set`, or the end.
    fn seek(&self, pos: u64, set: bool) -> u64 {
        let end = 64 * self.words.len() as u64;
        crate::layout::seek_bit(|i| self.words[i], pos, end, set)
    }
}

impl Iterator for DirtyRuns<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let start = self.seek(self.pos, true);
        if start >= 64 * self.words.len() as u64 {
            self.pos = start;
            return None;
        }
        let end = self.seek(start, false);
        self.pos = end;
        Some((self.base + start, end - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn pages_and_runs_cross_word_boundaries() {
        let words = [1u64 << 63 | 1, 0b111, 0, 1 << 63];
        let pages: [u64; 6] = [0, 63, 64, 65, 66, 255];
        assert!(DirtyPages::new(&words, 10).eq(pages.iter().map(|p| p + 10)));
        let runs = [(10, 1), (73, 4), (265, 1)];
        assert!(DirtyRuns::new(&words, 10).eq(runs.iter().copied()));
        assert_eq!(DirtyRuns::new(&[!0, !0], 0).collect::<Vec<_>>(), [(0, 128)]);
        assert_eq!(DirtyRuns::new(&[0, 0], 0).next(), None);
        assert_eq!(DirtyPages::new(&[], 0).next(), None);
    }
}
