//! XBZRLE-style delta: the new page against the version last sent.
//!
//! The encoding is a sequence of pairs `(unchanged_len, changed_len, changed bytes)`,
//! lengths as [LEB128](super::varint) varints, the changed bytes copied from the new
//! page (as in QEMU's XBZRLE: XOR finds the runs, the new bytes are sent, so decoding
//! is a copy). A run of unchanged bytes at the end of the page is left implicit; an
//! identical page encodes to zero bytes. Runs are found a 64-bit word at a time (a
//! bit mask of changed words per 512 bytes, walked with bit scans): a changed run ends
//! at the first unchanged word, so one or a few equal bytes inside a changed stretch
//! ride along instead of costing two varints.

use super::varint;
use super::zero::word;
use super::{CodecError, DeltaFault};

/// Encodes `new` against `old` (same length, a multiple of 64, as every supported
/// page size is) into `out`, giving up
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
    if old.len() != new.len() || new.len() % BLOCK != 0 {
        return Err(CodecError::BadPageLength {
            len: old.len(),
            page_size: new.len(),
        });
    }
    let mut run = Run { out, at: 0, pos: 0 };
    let xor = |w: usize| word(&old[w * 8..]) ^ word(&new[w * 8..]);
    let words = new.len() / 8;
    // Byte offset where the open changed run starts, if one is open.
    let mut start: Option<usize> = None;
    for (g, (og, ng)) in old.chunks(GROUP).zip(new.chunks(GROUP)).enumerate() {
        // Bit w of `changed`: word w of the group differs. Built branch-free; then the
        // runs are walked with bit scans, so the cost is per run, not per word.
        let mut changed = 0u64;
        for (w, (a, b)) in og.chunks_exact(8).zip(ng.chunks_exact(8)).enumerate() {
            changed |= u64::from(word(a) != word(b)) << w;
        }
        let n = og.len() / 8; // words in this group (64 but for a short last group)
        let unchanged = !changed & (u64::MAX >> (64 - n));
        let first = g * (GROUP / 8);
        let mut pos = 0u32;
        loop {
            if start.is_none() {
                let rest = changed.checked_shr(pos).unwrap_or(0);
                if rest == 0 {
                    break;
                }
                pos += rest.trailing_zeros();
                let w = first + pos as usize;
                start = Some(w * 8 + (xor(w).trailing_zeros() / 8) as usize);
            }
            let rest = unchanged.checked_shr(pos).unwrap_or(0);
            if rest == 0 {
                break; // the run goes on into the next group
            }
            pos += rest.trailing_zeros();
            let w = first + pos as usize; // first unchanged word after the run
            let end = w * 8 - (xor(w - 1).leading_zeros() / 8) as usize;
            if let Some(s) = start.take() {
                if !run.emit(s, &new[s..end]) {
                    return Ok(None);
                }
            }
        }
    }
    if let Some(s) = start {
        let end = new.len() - (xor(words - 1).leading_zeros() / 8) as usize;
        if !run.emit(s, &new[s..end]) {
            return Ok(None);
        }
    }
    Ok(Some(run.at))
}

/// Bytes whose changed words are gathered into one 64-bit mask.
const GROUP: usize = 512;

/// Page lengths the encoder takes are multiples of this.
const BLOCK: usize = 64;

/// The encoder's output cursor.
struct Run<'o> {
    out: &'o mut [u8],
    /// Bytes written.
    at: usize,
    /// Page offset after the last changed run written.
    pos: usize,
}

impl Run<'_> {
    /// Writes one `(unchanged, changed, bytes)` triple for `changed` starting at page
    /// offset `start`; false when it does not fit.
    #[inline]
    fn emit(&mut self, start: usize, changed: &[u8]) -> bool {
        let Some(a) = varint::put(self.out, self.at, start - self.pos) else {
            return false;
        };
        let Some(a) = varint::put(self.out, a, changed.len()) else {
            return false;
        };
        let Some(dst) = self.out.get_mut(a..a + changed.len()) else {
            return false;
        };
        dst.copy_from_slice(changed);
        self.at = a + changed.len();
        self.pos = start + changed.len();
        true
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
