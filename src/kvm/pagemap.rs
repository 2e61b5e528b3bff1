//! Which pages of an anonymous mapping the host never backed, from
//! `/proc/self/pagemap`: such a page reads as zero, so a source's bulk round can send
//! it as part of a zero run without reading it (an idle 3 GiB guest is mostly that).
//!
//! An answer is true when the entries were read. The guest may write a page after
//! that; a migration's source relies on the dirty log for it, as it does for a page it
//! read: the write is harvested and the page sent again. Answers come from a window of
//! entries per thread (one `pread` per [`WINDOW`] pages), read again when a query
//! leaves it or goes back (a new bulk round starts at its first page again).

#[allow(unused_imports)]
use std::prelude::rust_2021::*;

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::layout::seek_bit;

/// Pages per window: 32 KiB of pagemap entries.
pub(crate) const WINDOW: usize = 4096;

/// A window older than this is read again (a bulk round covers a window in far less;
/// an older one may predate the migration asking).
const MAX_AGE: Duration = Duration::from_millis(100);

/// pagemap entry bit 63: the page is present in RAM.
const PRESENT: u64 = 1 << 63;
/// pagemap entry bit 62: the page is swapped out.
const SWAPPED: u64 = 1 << 62;

/// The pagemap entries of a window of one mapping, for one thread.
struct Window {
    /// The mapping's first host page (its address / 4096): identifies it.
    base: u64,
    /// Mapping-relative page of `zero`'s bit 0.
    start: u64,
    /// Pages the window covers.
    len: u64,
    /// Bit `i`: page `start + i` was neither present nor swapped (reads as zero).
    zero: [u64; WINDOW / 64],
    /// The last query's first page (a query below it reads the window again).
    last: u64,
    /// When the entries were read.
    read_at: Instant,
}

std::thread_local! {
    static CACHE: RefCell<Option<Window>> = const { RefCell::new(None) };
}

/// `/proc/self/pagemap`, opened once per mapping that asks (`None` where it cannot be:
/// then nothing is known zero).
pub(crate) fn open() -> Option<File> {
    File::open("/proc/self/pagemap").ok()
}

/// How many pages from `first` on (at most `max`, never past `total`) of the
/// anonymous mapping at host address `addr` (4 KiB-aligned, 4 KiB pages) are backed by
/// nothing: never written or discarded, so they read as zero.
pub(crate) fn untouched_pages(pagemap: &File, addr: u64, total: u64, first: u64, max: u64) -> u64 {
    let end = first.saturating_add(max).min(total);
    let base = addr / 4096;
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let mut page = first;
        while page < end {
            let fresh = match cache.as_ref() {
                Some(w) => {
                    w.base != base
                        || page < w.start
                        || page >= w.start + w.len
                        || first < w.last
                        || w.read_at.elapsed() > MAX_AGE
                }
                None => true,
            };
            if fresh {
                match read_window(pagemap, base, page, total) {
                    Some(w) => *cache = Some(w),
                    None => {
                        *cache = None;
                        break;
                    }
                }
            }
            let Some(w) = cache.as_mut() else { break };
            w.last = first;
            // Bit `i` of `zero` is page `start + i`: the run ends at its first clear bit.
            let limit = w.len.min(end - w.start);
            let stop = seek_bit(|i| w.zero[i], page - w.start, limit, false);
            page = w.start + stop;
            if stop < limit {
                break;
            }
        }
        page - first
    })
}

/// Reads the entries of `start..start + WINDOW` (cut at `total`) of the mapping whose
/// first host page is `base`.
fn read_window(pagemap: &File, base: u64, start: u64, total: u64) -> Option<Window> {
    let len = (total - start).min(WINDOW as u64);
    let mut raw = [0u8; WINDOW * 8];
    let bytes = &mut raw[..len as usize * 8];
    let offset = base.checked_add(start)?.checked_mul(8)?;
    let read_at = Instant::now();
    pagemap.read_exact_at(bytes, offset).ok()?;
    let mut zero = [0u64; WINDOW / 64];
    for (i, entry) in bytes.chunks_exact(8).enumerate() {
        let e = u64::from_ne_bytes(entry.try_into().ok()?);
        if e & (PRESENT | SWAPPED) == 0 {
            zero[i / 64] |= 1 << (i % 64);
        }
    }
    Some(Window {
        base,
        start,
        len,
        zero,
        last: start,
        read_at,
    })
}
