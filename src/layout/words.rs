//! Word storage: what the engines keep their state in, owned or the caller's.
//!
//! Every engine that needs more than a fixed amount of state (the dirty set, the delta
//! cache, the source engine's kept hashes and page buffers, the coordinator's streams)
//! keeps it in `u64` words held by a storage parameter `S: AsRef<[u64]> + AsMut<[u64]>`:
//! [`OwnedWords`] (feature `alloc`, what the `new` constructors allocate) or
//! `&mut [u64]` the caller provides (no allocator: a C host, a kernel module, a
//! bare-metal monitor). Both run the same code.

/// Words the `alloc` conveniences own (a boxed slice, allocated once at construction).
/// Without feature `alloc` the type still exists, so every engine's default storage
/// parameter can be named, but no value of it can be made: use `&mut [u64]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedWords {
    #[cfg(feature = "alloc")]
    words: alloc::boxed::Box<[u64]>,
    #[cfg(not(feature = "alloc"))]
    never: core::convert::Infallible,
}

#[cfg(feature = "alloc")]
impl OwnedWords {
    /// `len` zeroed words.
    pub fn zeroed(len: usize) -> Self {
        OwnedWords {
            words: alloc::vec![0u64; len].into_boxed_slice(),
        }
    }

    /// The words as a vector, without copying them.
    pub fn into_vec(self) -> alloc::vec::Vec<u64> {
        self.words.into_vec()
    }

    /// `len` zeroed words, or `None` when the allocator refuses them.
    pub fn try_zeroed(len: usize) -> Option<Self> {
        let mut v = alloc::vec::Vec::new();
        v.try_reserve_exact(len).ok()?;
        v.resize(len, 0u64);
        Some(OwnedWords {
            words: v.into_boxed_slice(),
        })
    }
}

impl AsRef<[u64]> for OwnedWords {
    fn as_ref(&self) -> &[u64] {
        #[cfg(feature = "alloc")]
        return &self.words;
        #[cfg(not(feature = "alloc"))]
        match self.never {}
    }
}

impl AsMut<[u64]> for OwnedWords {
    fn as_mut(&mut self) -> &mut [u64] {
        #[cfg(feature = "alloc")]
        return &mut self.words;
        #[cfg(not(feature = "alloc"))]
        match self.never {}
    }
}

/// The first bit at or after `pos` and below `end` whose value is `set`, or `end`:
/// bit `i` is bit `i % 64` of `word(i / 64)`, so the words may be plain, atomic or
/// behind a pointer. Whole words of the other value are skipped at once.
pub(crate) fn seek_bit(word: impl Fn(usize) -> u64, mut pos: u64, end: u64, set: bool) -> u64 {
    while pos < end {
        let w = word((pos / 64) as usize);
        let w = if set { w } else { !w };
        let masked = w & (!0u64 << (pos % 64));
        if masked != 0 {
            return ((pos & !63) + u64::from(masked.trailing_zeros())).min(end);
        }
        pos = (pos & !63) + 64;
    }
    end
}

/// The bytes of `words` (native byte order).
pub(crate) fn words_as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: `u8` has alignment 1 and every byte of an initialized `u64` is an
    // initialized `u8`; the length is the same memory in bytes (no overflow: the
    // slice already spans it) and the borrow keeps `words` alive and unwritten.
    unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) }
}

/// The bytes of `words` (native byte order), writable.
pub(crate) fn words_as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: as in `words_as_bytes`; any byte pattern is a valid `u64`, so writes
    // through the byte view leave valid words, and the exclusive borrow is moved into
    // the result.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) }
}

#[cfg(test)]
mod tests {
    use super::seek_bit;

    #[test]
    fn seek_bit_finds_the_first_bit_of_a_value_or_the_end() {
        let mut bits = [0u64; 4];
        bits[0] = u64::MAX;
        bits[1] = 0b0111;
        let seek = |bits: [u64; 4], from, end, set| seek_bit(|i| bits[i], from, end, set);
        assert_eq!(seek(bits, 0, 256, false), 67);
        assert_eq!(seek(bits, 10, 256, false), 67);
        assert_eq!(seek(bits, 64, 256, false), 67);
        assert_eq!(seek(bits, 67, 256, false), 67);
        assert_eq!(seek(bits, 0, 40, false), 40, "capped at the end");
        assert_eq!(seek(bits, 0, 256, true), 0);
        assert_eq!(seek(bits, 67, 256, true), 256, "none: the end");
        assert_eq!(seek(bits, 3, 3, true), 3, "an empty range");
        bits[3] = 1 << 63;
        assert_eq!(seek(bits, 67, 256, true), 255);
        assert_eq!(seek(bits, 67, 255, true), 255);
        assert_eq!(seek(bits, 67, 200, true), 200);
    }
}
