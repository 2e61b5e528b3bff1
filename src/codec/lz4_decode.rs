//! The LZ4 block decoder: safe Rust, every read and write bounds-checked, so any
//! input (it comes off the wire) is decoded or refused, never read or written out of
//! bounds. Our own rather than `lz4_flex`'s safe decoder, which copies an
//! overlapping match (a run of zeros, a repeated word: most of a mostly-zero page)
//! one byte at a time: this one copies such a match by doubling moves, eight times
//! faster on mostly-zero pages and as fast elsewhere (`precopy bench codec`).

/// Reads an LZ4 length extension (bytes of 255, then one below 255) at `src[*i..]`.
#[inline]
fn read_length(src: &[u8], i: &mut usize) -> Option<usize> {
    let mut n = 0usize;
    loop {
        let b = *src.get(*i)?;
        *i += 1;
        n = n.checked_add(usize::from(b))?;
        if b != 255 {
            return Some(n);
        }
    }
}

/// Copies the match of `len` bytes `off` back to `dst[o..]`. The caller checked
/// `0 < off <= o` and `o + len <= dst.len()`.
#[inline]
fn copy_match(dst: &mut [u8], o: usize, off: usize, len: usize) {
    let src = o - off;
    let end = o + len;
    if len <= off {
        // No byte of the match is read after it is written: one move (a move keeps
        // the bytes it reads as they were, so 16 may reach past the match).
        if len <= 16 && o + 16 <= dst.len() {
            dst.copy_within(src..src + 16, o);
        } else {
            dst.copy_within(src..src + len, o);
        }
    } else if off == 1 {
        let b = dst[src];
        dst[o..end].fill(b);
    } else {
        // A pattern of period `off`: copy what is already periodic, doubling (a
        // multiple of `off` back, so the bytes stay periodic).
        let mut k = o;
        while k < end {
            let n = (k - src).min(end - k);
            dst.copy_within(src..src + n, k);
            k += n;
        }
    }
}

/// Decodes the LZ4 block `src` into `dst`; returns the bytes decoded, or `None` for
/// a malformed block (cut short, an offset of zero or before the start, a literal or
/// match past the end of `dst`). Bytes of `dst` past those decoded may be written.
pub(super) fn decode_block(src: &[u8], dst: &mut [u8]) -> Option<usize> {
    let mut i = 0usize;
    let mut o = 0usize;
    loop {
        let token = *src.get(i)?;
        i += 1;
        // The common sequence: both lengths in the token (literals <= 14, match <=
        // 18) and far from both ends. One bounds check for its bytes, fixed-size
        // copies (the bytes they write past the sequence are written again later).
        if token >> 4 < 15 && token & 15 < 15 && o + 34 <= dst.len() {
            if let Some(seq) = src.get(i..i + 18) {
                let lit = usize::from(token >> 4);
                dst[o..o + 16].copy_from_slice(&seq[..16]);
                o += lit;
                i += lit + 2;
                let off = usize::from(u16::from_le_bytes([seq[lit], seq[lit + 1]]));
                let len = usize::from(token & 15) + 4;
                if off == 0 || off > o {
                    return None;
                }
                if off >= len {
                    dst.copy_within(o - off..o - off + 18, o);
                } else {
                    // Short and overlapping: byte by byte beats a few moves.
                    for k in o..o + len {
                        dst[k] = dst[k - off];
                    }
                }
                o += len;
                continue;
            }
        }
        let mut lit = usize::from(token >> 4);
        if lit == 15 {
            lit = lit.checked_add(read_length(src, &mut i)?)?;
        }
        let lit_end = i.checked_add(lit)?;
        if lit <= 16 && i + 16 <= src.len() && o + 16 <= dst.len() {
            if lit_end > src.len() || o + lit > dst.len() {
                return None;
            }
            dst[o..o + 16].copy_from_slice(&src[i..i + 16]);
        } else {
            let from = src.get(i..lit_end)?;
            dst.get_mut(o..o.checked_add(lit)?)?.copy_from_slice(from);
        }
        i = lit_end;
        o += lit;
        if i == src.len() {
            // The last sequence: literals only.
            return Some(o);
        }
        let off = match src.get(i..i + 2)? {
            &[a, b] => usize::from(u16::from_le_bytes([a, b])),
            _ => return None,
        };
        i += 2;
        if off == 0 || off > o {
            return None;
        }
        let mut len = usize::from(token & 15);
        if len == 15 {
            len = len.checked_add(read_length(src, &mut i)?)?;
        }
        len = len.checked_add(4)?;
        if len > dst.len() - o {
            return None;
        }
        copy_match(dst, o, off, len);
        o += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn lz4(page: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; crate::codec::lz4_max_output_len(page.len())];
        let n = crate::codec::Lz4Compressor::new()
            .compress(page, &mut out)
            .expect("room for the worst case");
        out.truncate(n);
        out
    }

    /// Blocks of the four page classes, and of runs that exercise every copy
    /// (periods 1 to 20, long literals and matches, near both ends).
    fn samples() -> Vec<Vec<u8>> {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut pages = Vec::new();
        for period in 1..=20usize {
            for len in [4096usize, 512, 4097 - 4 * period] {
                let pattern: Vec<u8> = (0..period).map(|_| next() as u8).collect();
                let mut p: Vec<u8> = (0..len).map(|i| pattern[i % period]).collect();
                // A few random bytes so matches start and stop.
                for _ in 0..(next() % 8) {
                    let at = (next() as usize) % len;
                    p[at] = next() as u8;
                }
                pages.push(p);
            }
        }
        pages.push((0..4096).map(|_| next() as u8).collect());
        pages.push(vec![0; 4096]);
        pages.push(vec![]);
        pages.push(vec![7]);
        let words: [&[u8]; 4] = [b"the ", b"guest ", b"memory ", b"0x7f3a "];
        let mut text = Vec::new();
        while text.len() < 4096 {
            text.extend_from_slice(words[(next() % 4) as usize]);
        }
        text.truncate(4096);
        pages.push(text);
        pages
    }

    #[test]
    fn decodes_what_lz4_flex_encodes_exactly() {
        for page in samples() {
            let block = lz4(&page);
            let mut out = vec![0xa5u8; page.len()];
            assert_eq!(decode_block(&block, &mut out), Some(page.len()), "{page:?}");
            assert_eq!(out, page);
            // Into a larger buffer too: the decoded length, the same bytes.
            let mut big = vec![0u8; page.len() + 100];
            assert_eq!(decode_block(&block, &mut big), Some(page.len()));
            assert_eq!(big[..page.len()], page[..]);
            // One byte too small: refused.
            if !page.is_empty() {
                let mut small = vec![0u8; page.len() - 1];
                assert_eq!(decode_block(&block, &mut small), None);
            }
        }
    }

    #[test]
    fn agrees_with_lz4_flex_on_damaged_blocks() {
        // Truncations and byte flips of real blocks: never a panic, and whenever
        // lz4_flex's safe decoder accepts the damaged block, the same bytes.
        for page in samples() {
            let block = lz4(&page);
            let mut variants: Vec<Vec<u8>> =
                (0..block.len()).map(|n| block[..n].to_vec()).collect();
            for at in 0..block.len() {
                for x in [0x01u8, 0x10, 0x80, 0xff] {
                    let mut b = block.clone();
                    b[at] ^= x;
                    variants.push(b);
                }
            }
            for b in variants {
                let mut ours = vec![0u8; page.len()];
                let mut theirs = vec![0u8; page.len()];
                // Ours is the stricter: what it accepts, lz4_flex decodes the same.
                if let Some(n) = decode_block(&b, &mut ours) {
                    let theirs_n = lz4_flex::block::decompress_into(&b, &mut theirs);
                    assert_eq!(theirs_n.ok(), Some(n), "{b:?}");
                    assert_eq!(ours[..n], theirs[..n]);
                }
            }
        }
    }

    #[test]
    fn refuses_zero_and_out_of_range_offsets() {
        // One literal then a match at offset 0, then at offset 2 (before the start).
        let mut out = [0u8; 64];
        assert_eq!(decode_block(&[0x10, b'a', 0, 0, 0x00], &mut out), None);
        assert_eq!(decode_block(&[0x10, b'a', 2, 0, 0x00], &mut out), None);
        // Offset 1, match of 4, then 1 literal: "aaaaab".
        assert_eq!(
            decode_block(&[0x10, b'a', 1, 0, 0x10, b'b'], &mut out),
            Some(6)
        );
        assert_eq!(&out[..6], b"aaaaab");
        // A literal length extension cut short, a match length past the buffer.
        assert_eq!(decode_block(&[0xf0, 255], &mut out), None);
        assert_eq!(decode_block(&[0x1f, b'a', 1, 0, 255, 255], &mut out), None);
    }
}
