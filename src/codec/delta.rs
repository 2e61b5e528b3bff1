//! XBZRLE-style delta: the new page against the version last sent.
//!
//! The encoding is a sequence of pairs `(unchanged_len, changed_len, changed bytes)`,
//! lengths as [LEB128](super::varint) varints, the changed bytes copied from the new
//! page (as in QEMU's XBZRLE: XOR finds the runs, the new bytes are sent, so decoding
//! is a copy). A run of unchanged bytes at the end of the page is left implicit; an
//! identical page encodes to zero bytes. Runs are found a 64-bit word at a time: a
//! changed run ends at the first unchanged word, so one or a few equal bytes inside a
//! changed stretch ride along instead of costing two varints.

use super::varint;
use super::zero::word;
use super::{CodecError, DeltaFault};

/// Encodes `new` against `old` (same length, a multiple of 8) into `out`, giving up
/// as soon as the encoding would not fit: `out.len()` is the caller's threshold (for
/// example an eighth of a page). Returns the encoded length, or `None` on give-up.
///
/// ```
/// use precopy::codec::{delta_apply, delta_encode};
/// let old = vec![7u8; 4096];
/// let mut new = old.clone();
/// new[100..108].copy_from_slice(b"changed!");
/// let mut out = [0u8; 512];
/// let n = delta_encode(&old, &new, &mut out).unwrap().unwrap();
/// assert_eq!(n, 2 + 8); // two one-byte run lengths and the 8 new bytes
/// let mut page = old.clone();
/// delta_apply(&mut page, &out[..n]).unwrap();
/// assert_eq!(page, new);
/// ```
pub fn delta_encode(old: &[u8], new: &[u8], out: &mut [u8]) -> Result<Option<usize>, CodecError> {
    if old.len() != new.len() || new.len() % 8 != 0 {
        return Err(CodecError::BadPageLength {
            len: old.len(),
            page_size: new.len(),
        });
    }
    let words = new.len() / 8;
    let xor = |i: usize| word(&old[i * 8..]) ^ word(&new[i * 8..]);
    let mut i = 0; // word index
    let mut pos = 0; // byte position after the last changed run written
    let mut at = 0; // bytes written to `out`
    loop {
        // Skip unchanged words, four at a time while they are all equal.
        while i + 4 <= words {
            let b = i * 8;
            let (o, n) = (&old[b..b + 32], &new[b..b + 32]);
            let diff = (word(o) ^ word(n))
                | (word(&o[8..]) ^ word(&n[8..]))
                | (word(&o[16..]) ^ word(&n[16..]))
                | (word(&o[24..]) ^ word(&n[24..]));
            if diff != 0 {
                break;
            }
            i += 4;
        }
        while i < words && xor(i) == 0 {
            i += 1;
        }
        if i == words {
            return Ok(Some(at));
        }
        let start = i * 8 + (xor(i).trailing_zeros() / 8) as usize;
        i += 1;
        while i < words && xor(i) != 0 {
            i += 1;
        }
        let end = i * 8 - (xor(i - 1).leading_zeros() / 8) as usize;
        let len = end - start;
        let Some(a) = varint::put(out, at, start - pos) else {
            return Ok(None);
        };
        let Some(a) = varint::put(out, a, len) else {
            return Ok(None);
        };
        let Some(dst) = out.get_mut(a..a + len) else {
            return Ok(None);
        };
        dst.copy_from_slice(&new[start..end]);
        at = a + len;
        pos = end;
    }
}

/// Applies delta `data` to `page`, which holds the base the delta was made from.
///
/// The data is untrusted: every run is checked against the page. On error `page` may
/// be partly updated, so apply into a scratch copy and keep it only on success (the
/// destination applier does).
pub fn delta_apply(page: &mut [u8], data: &[u8]) -> Result<(), CodecError> {
    let mut at = 0; // position in `data`
    let mut pos = 0; // position in `page`
    while at < data.len() {
        let fault = |offset, reason| CodecError::DeltaCorrupt { offset, reason };
        let (unchanged, a) = varint::get(data, at).map_err(|r| fault(at, r))?;
        let (len, a) = varint::get(data, a).map_err(|r| fault(at, r))?;
        if len == 0 {
            return Err(fault(at, DeltaFault::EmptyChangedRun));
        }
        let start = pos + unchanged;
        let end = start + len;
        let dst = page
            .get_mut(start..end)
            .ok_or(fault(at, DeltaFault::RunPastPageEnd))?;
        let src = data
            .get(a..a + len)
            .ok_or(fault(a, DeltaFault::TruncatedBytes))?;
        dst.copy_from_slice(src);
        at = a + len;
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_page_is_empty_and_first_last_bytes_roundtrip() {
        let old = [3u8; 512];
        let mut out = [0u8; 64];
        assert_eq!(delta_encode(&old, &old, &mut out), Ok(Some(0)));
        for at in [0, 1, 7, 8, 255, 504, 511] {
            let mut new = old;
            new[at] = 9;
            let n = delta_encode(&old, &new, &mut out).unwrap().unwrap();
            let unchanged_varint = if at < 0x80 { 1 } else { 2 };
            assert_eq!(n, unchanged_varint + 2, "offset {at}");
            let mut page = old;
            delta_apply(&mut page, &out[..n]).unwrap();
            assert_eq!(page, new, "offset {at}");
        }
    }

    #[test]
    fn gives_up_past_the_threshold() {
        let old = [0u8; 512];
        let new = [1u8; 512];
        let mut out = [0u8; 100];
        assert_eq!(delta_encode(&old, &new, &mut out), Ok(None));
        let mut big = [0u8; 520];
        assert_eq!(delta_encode(&old, &new, &mut big), Ok(Some(515)));
    }

    #[test]
    fn corrupt_runs_are_errors() {
        let mut page = [0u8; 16];
        let err = |offset, reason| Err(CodecError::DeltaCorrupt { offset, reason });
        assert_eq!(
            delta_apply(&mut page, &[0, 0]),
            err(0, DeltaFault::EmptyChangedRun)
        );
        assert_eq!(
            delta_apply(&mut page, &[10, 7]),
            err(0, DeltaFault::RunPastPageEnd)
        );
        assert_eq!(
            delta_apply(&mut page, &[0, 2, 1]),
            err(2, DeltaFault::TruncatedBytes)
        );
        assert_eq!(
            delta_apply(&mut page, &[0]),
            err(0, DeltaFault::TruncatedVarint)
        );
    }
}
