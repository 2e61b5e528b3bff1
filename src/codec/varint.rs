//! LEB128 run lengths for the delta codec: at most three bytes (values below 2^21,
//! enough for any run within a page of at most 64 KiB), shortest form only.

use super::DeltaFault;

/// Most bytes in one run length.
pub(crate) const MAX_VARINT_LEN: usize = 3;

/// Writes `v` (< 2^21) at `out[at..]`; returns the new position, or `None` when the
/// bytes do not fit.
#[inline(always)]
pub(crate) fn put(out: &mut [u8], at: usize, v: usize) -> Option<usize> {
    if v < 0x80 {
        *out.get_mut(at)? = v as u8;
        Some(at + 1)
    } else if v < 0x4000 {
        let dst = out.get_mut(at..at + 2)?;
        dst[0] = (v as u8) | 0x80;
        dst[1] = (v >> 7) as u8;
        Some(at + 2)
    } else {
        let dst = out.get_mut(at..at + 3)?;
        dst[0] = (v as u8) | 0x80;
        dst[1] = ((v >> 7) as u8) | 0x80;
        dst[2] = (v >> 14) as u8;
        Some(at + 3)
    }
}

/// Reads a run length at `data[at..]`; returns it and the new position.
#[inline(always)]
pub(crate) fn get(data: &[u8], at: usize) -> Result<(usize, usize), DeltaFault> {
    let mut v = 0usize;
    for i in 0..MAX_VARINT_LEN {
        let b = *data.get(at + i).ok_or(DeltaFault::TruncatedVarint)?;
        v |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // Shortest form: a final zero byte after the first adds nothing.
            if b == 0 && i > 0 {
                return Err(DeltaFault::BadVarint);
            }
            return Ok((v, at + i + 1));
        }
    }
    Err(DeltaFault::BadVarint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_at_every_length_boundary() {
        let mut buf = [0u8; 3];
        for v in [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, 0x1f_ffff] {
            let end = put(&mut buf, 0, v).unwrap();
            assert_eq!(get(&buf[..end], 0), Ok((v, end)));
            assert_eq!(get(&buf[..end - 1], 0), Err(DeltaFault::TruncatedVarint));
        }
        assert_eq!(get(&[0x80, 0x00], 0), Err(DeltaFault::BadVarint));
        assert_eq!(
            get(&[0x80, 0x80, 0x80, 0x01], 0),
            Err(DeltaFault::BadVarint)
        );
        assert_eq!(put(&mut buf[..1], 0, 0x80), None);
    }
}
