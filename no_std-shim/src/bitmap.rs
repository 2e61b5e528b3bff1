//! The dirty bitmap over caller memory, and KVM dirty-log / dirty-ring import.
//!
//! The host allocates a [`PrecopyBitmap`] (fixed size, any storage: stack, static,
//! heap) and the bitmap's words (`precopy_bitmap_storage_words` says how many), and
//! keeps both alive while the bitmap is used. Marking, harvesting and importing take a
//! `const` bitmap and may run on any number of threads at once; only
//! `precopy_bitmap_init` needs the bitmap to itself.

use core::ffi::c_int;
use core::sync::atomic::AtomicU64;

use core_precopy::bitmap::{
    words_for_pages, AtomicDirtyBitmap, KvmDirtyGfn, KvmSlotTable, MAX_KVM_SLOTS,
};
use core_precopy::layout::{GuestLayout, MAX_REGIONS};

use crate::error::{
    bitmap_code, layout_code, status, PRECOPY_ERR_BAD_LENGTH, PRECOPY_ERR_BUFFER_TOO_SMALL,
    PRECOPY_ERR_PAGE_OUT_OF_RANGE, PRECOPY_ERR_TOO_MANY_REGIONS, PRECOPY_MORE, PRECOPY_OK,
};
use crate::ffi::{as_mut, as_slice, as_slice_mut, assert_fits, write_opt, Blob};

/// Most memory regions in a guest layout.
pub const PRECOPY_MAX_REGIONS: usize = 64;
/// Most KVM memory slots in a slot table.
pub const PRECOPY_MAX_KVM_SLOTS: usize = 128;
/// Bytes in a [`PrecopyBitmap`].
pub const PRECOPY_BITMAP_SIZE: usize = 1664;
/// Bytes in a [`PrecopyKvmSlots`].
pub const PRECOPY_KVM_SLOTS_SIZE: usize = 5760;

const _: () = assert!(PRECOPY_MAX_REGIONS == MAX_REGIONS);
const _: () = assert!(PRECOPY_MAX_KVM_SLOTS == MAX_KVM_SLOTS);

/// One contiguous range of guest-physical memory.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyRegion {
    /// Guest-physical address of the first byte (page-aligned).
    pub guest_addr: u64,
    /// Length in bytes (a non-zero multiple of the page size).
    pub len: u64,
}

/// Storage for a dirty bitmap's state (not its words): opaque, 8-byte aligned, valid
/// after `precopy_bitmap_init`. It points at the caller's words; it may be copied
/// (the copy tracks the same words).
#[repr(C)]
pub struct PrecopyBitmap {
    /// Opaque.
    pub opaque: [u64; PRECOPY_BITMAP_SIZE / 8],
}

/// Storage for a table of KVM memory slots: opaque, 8-byte aligned, valid after
/// `precopy_kvm_slots_init`.
#[repr(C)]
pub struct PrecopyKvmSlots {
    /// Opaque.
    pub opaque: [u64; PRECOPY_KVM_SLOTS_SIZE / 8],
}

/// One entry of a KVM dirty ring, as the kernel's `struct kvm_dirty_gfn`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyKvmDirtyGfn {
    /// `KVM_DIRTY_GFN_F_*` flags (not interpreted).
    pub flags: u32,
    /// KVM slot id: address space in bits 16..32, slot number in bits 0..16.
    pub slot: u32,
    /// Page offset within the slot.
    pub offset: u64,
}

pub(crate) type Bitmap = AtomicDirtyBitmap<&'static [AtomicU64]>;

assert_fits!(PrecopyBitmap, Bitmap);
assert_fits!(PrecopyKvmSlots, KvmSlotTable);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyBitmap {
    type State = Bitmap;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcBITMAP");
}

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyKvmSlots {
    type State = KvmSlotTable;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcKVMSLT");
}

/// Builds a guest layout from C regions.
///
/// # Safety
/// As [`as_slice`] for `regions` and `nregions`.
pub(crate) unsafe fn layout(
    page_size: u64,
    regions: *const PrecopyRegion,
    nregions: usize,
) -> Result<GuestLayout, c_int> {
    if nregions == 0 {
        return Err(PRECOPY_ERR_BAD_LENGTH);
    }
    if nregions > MAX_REGIONS {
        return Err(PRECOPY_ERR_TOO_MANY_REGIONS);
    }
    // SAFETY: per this function's contract.
    let regions = unsafe { as_slice(regions, nregions) }?;
    let mut ranges = [(0u64, 0u64); MAX_REGIONS];
    for (dst, r) in ranges.iter_mut().zip(regions) {
        *dst = (r.guest_addr, r.len);
    }
    GuestLayout::new(page_size, &ranges[..nregions]).map_err(layout_code)
}

/// Computes the bitmap storage a guest layout needs: `*words_out` gets the number of
/// `uint64_t` words to pass to `precopy_bitmap_init`, and `*pages_out` (if not NULL)
/// the number of pages tracked.
///
/// # Safety
/// `regions` points at `nregions` regions; `words_out` at a writable `size_t`;
/// `pages_out` is NULL or points at a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_storage_words(
    page_size: u64,
    regions: *const PrecopyRegion,
    nregions: usize,
    words_out: *mut usize,
    pages_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let words_out = unsafe { as_mut(words_out) }?;
        // SAFETY: per this function's contract.
        let layout = unsafe { layout(page_size, regions, nregions) }?;
        // SAFETY: per this function's contract.
        unsafe { write_opt(pages_out, layout.total_pages()) }?;
        *words_out = words_for_pages(layout.total_pages());
        Ok(())
    })())
}

/// Initializes `bm` as an all-clean bitmap for the guest layout (`page_size`, a power of
/// two; `regions`, up to `PRECOPY_MAX_REGIONS` page-aligned, non-overlapping ranges in
/// any order) over the caller's `words` (8-byte aligned, at least the count
/// `precopy_bitmap_storage_words` gives; they are zeroed here). Pages are numbered
/// densely from 0 in guest address order; holes take no page numbers.
///
/// # Safety
/// `bm` points at writable storage for a `precopy_bitmap_t`; `regions` at `nregions`
/// regions; `words` at `nwords` words that stay valid, and are only accessed through
/// this library, for as long as `bm` is used.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_init(
    bm: *mut PrecopyBitmap,
    page_size: u64,
    regions: *const PrecopyRegion,
    nregions: usize,
    words: *mut u64,
    nwords: usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let layout = unsafe { layout(page_size, regions, nregions) }?;
        let needed = words_for_pages(layout.total_pages());
        if nwords < needed {
            return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: `AtomicU64` has the size and bit validity of `u64` (and its alignment
        // on the 64-bit targets this is built for; `as_slice` checks alignment for
        // `AtomicU64`). The words live, and are accessed only through this library,
        // while the bitmap is used (this function's contract), which the 'static
        // lifetime stands for.
        let words: &'static [AtomicU64] = unsafe { as_slice(words.cast::<AtomicU64>(), nwords) }?;
        let bitmap = AtomicDirtyBitmap::from_words(layout, words).map_err(bitmap_code)?;
        // SAFETY: per this function's contract.
        match unsafe { PrecopyBitmap::init(bm, bitmap) } {
            PRECOPY_OK => Ok(()),
            code => Err(code),
        }
    })())
}

/// The bitmap's state.
///
/// # Safety
/// `bm` is NULL or points at a `precopy_bitmap_t` valid for `'a`.
pub(crate) unsafe fn bitmap<'a>(bm: *const PrecopyBitmap) -> Result<&'a Bitmap, c_int> {
    // SAFETY: per this function's contract; bitmaps are only ever accessed shared after
    // init (marks and harvests go through atomics).
    unsafe { PrecopyBitmap::state(bm) }
}

/// Sets `*pages_out` to the number of pages the bitmap tracks.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `pages_out` at a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_total_pages(
    bm: *const PrecopyBitmap,
    pages_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, out) = unsafe { (bitmap(bm)?, as_mut(pages_out)?) };
        *out = bm.total_pages();
        Ok(())
    })())
}

/// Marks page `page` (a dense page index) dirty. Call after writing the page.
/// Wait-free; any number of threads.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_mark(bm: *const PrecopyBitmap, page: u64) -> c_int {
    // SAFETY: per this function's contract.
    status(unsafe { bitmap(bm) }.and_then(|bm| bm.mark(page).map_err(bitmap_code)))
}

/// Marks every page touched by the guest-physical range `[addr, addr + len)` dirty
/// (partial pages at either end included; zero length marks nothing). If part of the
/// range is outside every region, the pages inside regions are still marked and
/// `PRECOPY_ERR_ADDRESS_OUT_OF_RANGE` is returned.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_mark_range(
    bm: *const PrecopyBitmap,
    addr: u64,
    len: u64,
) -> c_int {
    // SAFETY: per this function's contract.
    status(unsafe { bitmap(bm) }.and_then(|bm| bm.mark_range(addr, len).map_err(bitmap_code)))
}

/// Marks the dense pages `[first_page, first_page + count)` dirty; nothing is marked if
/// any is out of range.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_mark_pages(
    bm: *const PrecopyBitmap,
    first_page: u64,
    count: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let bm = unsafe { bitmap(bm) }?;
        let end = first_page
            .checked_add(count)
            .ok_or(PRECOPY_ERR_PAGE_OUT_OF_RANGE)?;
        bm.mark_page_range(first_page..end).map_err(bitmap_code)
    })())
}

/// Sets `*dirty_out` to 1 if page `page` is dirty now, else 0.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `dirty_out` at a writable `int`.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_is_dirty(
    bm: *const PrecopyBitmap,
    page: u64,
    dirty_out: *mut c_int,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, out) = unsafe { (bitmap(bm)?, as_mut(dirty_out)?) };
        if page >= bm.total_pages() {
            return Err(PRECOPY_ERR_PAGE_OUT_OF_RANGE);
        }
        *out = c_int::from(bm.is_dirty(page));
        Ok(())
    })())
}

/// Sets `*count_out` to the number of pages dirty now (a scan of the words).
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `count_out` at a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_dirty_count(
    bm: *const PrecopyBitmap,
    count_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, out) = unsafe { (bitmap(bm)?, as_mut(count_out)?) };
        *out = bm.dirty_pages();
        Ok(())
    })())
}

/// Harvests (fetch-and-clear) dirty pages from page `*cursor` on into `pages`, in
/// ascending order. On entry `*count` is the capacity of `pages`; on return, the number
/// written. `*cursor` advances past what was examined: a pass over the bitmap starts with
/// `*cursor = 0` and ends when this returns `PRECOPY_OK` (the cursor is then the page
/// count). `PRECOPY_MORE` means `pages` filled first: send them, call again with the same
/// cursor. Pages that were taken but did not fit are put back, so none is lost.
///
/// Several harvesters may run at once (each dirty page goes to one of them), with any
/// number of markers.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `cursor` and `count` at writable values;
/// `pages` at `*count` writable words (8-byte aligned).
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_harvest(
    bm: *const PrecopyBitmap,
    cursor: *mut u64,
    pages: *mut u64,
    count: *mut usize,
) -> c_int {
    let r = (|| {
        // SAFETY: per this function's contract.
        let (bm, cursor, count) = unsafe { (bitmap(bm)?, as_mut(cursor)?, as_mut(count)?) };
        // SAFETY: per this function's contract.
        let out = unsafe { as_slice_mut(pages, *count) }?;
        let total = bm.total_pages();
        let mut cur = *cursor;
        if cur > total {
            return Err(PRECOPY_ERR_PAGE_OUT_OF_RANGE);
        }
        if cur < total && out.is_empty() {
            return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
        }
        let mut n = 0usize;
        while cur < total && n < out.len() {
            let room = out.len() - n;
            if room >= 64 {
                // Whole words' worth of room: take as many words as surely fit, straight
                // into the output (each word yields at most 64 pages).
                let words = (room / 64) as u64;
                let end = (cur / 64 + words).saturating_mul(64).min(total);
                bm.harvest_range_with(cur..end, |p| {
                    out[n] = p;
                    n += 1;
                })
                .map_err(bitmap_code)?;
                cur = end;
            } else {
                // Less than a word of room: take the rest of the current word, keep what
                // fits, put the rest back and stop there.
                let end = ((cur / 64 + 1) * 64).min(total);
                let mut taken = [0u64; 64];
                let mut k = 0usize;
                bm.harvest_range_with(cur..end, |p| {
                    taken[k] = p;
                    k += 1;
                })
                .map_err(bitmap_code)?;
                let fit = k.min(room);
                out[n..n + fit].copy_from_slice(&taken[..fit]);
                n += fit;
                if fit < k {
                    let back = taken[fit..k].iter().fold(0u64, |b, &p| b | 1 << (p % 64));
                    bm.restore_words((cur / 64) as usize, &[back])
                        .map_err(bitmap_code)?;
                    cur = taken[fit];
                    break;
                }
                cur = end;
            }
        }
        *cursor = cur;
        *count = n;
        Ok(if cur < total {
            PRECOPY_MORE
        } else {
            PRECOPY_OK
        })
    })();
    r.unwrap_or_else(|code| code)
}

/// Harvests (fetch-and-clear) the raw words `[first_word, first_word + nwords)` into
/// `out` (bit `i` of word `w` is page `64 * w + i`) and sets `*taken_out` (if not NULL)
/// to the number of dirty pages taken. For hosts that walk bits themselves.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `out` at `nwords` writable words (8-byte
/// aligned); `taken_out` is NULL or points at a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_harvest_words(
    bm: *const PrecopyBitmap,
    first_word: usize,
    out: *mut u64,
    nwords: usize,
    taken_out: *mut u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, out) = unsafe { (bitmap(bm)?, as_slice_mut(out, nwords)?) };
        let end = first_word
            .checked_add(nwords)
            .ok_or(PRECOPY_ERR_BAD_LENGTH)?;
        if end > bm.words().len() {
            return Err(PRECOPY_ERR_BAD_LENGTH);
        }
        let taken = bm
            .harvest_words_into(first_word..end, out)
            .map_err(bitmap_code)?;
        // SAFETY: per this function's contract.
        unsafe { write_opt(taken_out, taken) }
    })())
}

/// ORs harvested words back into the bitmap (`words[i]` onto word `first_word + i`):
/// pages that were harvested but could not be sent go back for the next round. Bits
/// past the last page are refused before anything is restored.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `words` at `nwords` words (8-byte aligned).
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_restore_words(
    bm: *const PrecopyBitmap,
    first_word: usize,
    words: *const u64,
    nwords: usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, words) = unsafe { (bitmap(bm)?, as_slice(words, nwords)?) };
        let end = first_word
            .checked_add(nwords)
            .ok_or(PRECOPY_ERR_BAD_LENGTH)?;
        if end > bm.words().len() {
            return Err(PRECOPY_ERR_BAD_LENGTH);
        }
        bm.restore_words(first_word, words).map_err(bitmap_code)
    })())
}

/// Initializes `slots` as an empty KVM slot table for the layout of bitmap `bm`.
///
/// # Safety
/// `slots` points at writable storage for a `precopy_kvm_slots_t`; `bm` at a
/// `precopy_bitmap_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_kvm_slots_init(
    slots: *mut PrecopyKvmSlots,
    bm: *const PrecopyBitmap,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let layout = *unsafe { bitmap(bm) }?.layout();
        // SAFETY: per this function's contract.
        match unsafe { PrecopyKvmSlots::init(slots, KvmSlotTable::new(layout)) } {
            PRECOPY_OK => Ok(()),
            code => Err(code),
        }
    })())
}

/// Registers KVM slot `slot` (as given to `KVM_SET_USER_MEMORY_REGION`: address space
/// in bits 16..32) covering `pages` pages at `guest_addr`. Every page must be tracked
/// memory, with no hole. Re-registering a slot id replaces it.
///
/// # Safety
/// `slots` points at a `precopy_kvm_slots_t` nothing else uses during the call.
#[no_mangle]
pub unsafe extern "C" fn precopy_kvm_slots_insert(
    slots: *mut PrecopyKvmSlots,
    slot: u32,
    guest_addr: u64,
    pages: u64,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let table = unsafe { PrecopyKvmSlots::state_mut(slots) }?;
        table.insert(slot, guest_addr, pages).map_err(bitmap_code)
    })())
}

/// ORs a KVM dirty log (the words `KVM_GET_DIRTY_LOG` returned for slot `slot`; bit `i`
/// is the slot's page `i`) into the bitmap. The log may be shorter than the slot; a bit
/// past the slot's end is refused before anything is marked.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `slots` at a `precopy_kvm_slots_t` not written
/// during the call; `log` at `nwords` words (8-byte aligned).
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_import_kvm_log(
    bm: *const PrecopyBitmap,
    slots: *const PrecopyKvmSlots,
    slot: u32,
    log: *const u64,
    nwords: usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, table, log) = unsafe {
            (
                bitmap(bm)?,
                PrecopyKvmSlots::state(slots)?,
                as_slice(log, nwords)?,
            )
        };
        bm.import_kvm_dirty_log(table, slot, log)
            .map_err(bitmap_code)
    })())
}

/// Marks the pages named by KVM dirty-ring entries. Every valid entry is marked; the
/// first invalid one (unknown slot, offset past its slot) is then reported.
///
/// # Safety
/// `bm` points at a `precopy_bitmap_t`; `slots` at a `precopy_kvm_slots_t` not written
/// during the call; `entries` at `nentries` entries (8-byte aligned).
#[no_mangle]
pub unsafe extern "C" fn precopy_bitmap_import_kvm_ring(
    bm: *const PrecopyBitmap,
    slots: *const PrecopyKvmSlots,
    entries: *const PrecopyKvmDirtyGfn,
    nentries: usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (bm, table, entries) = unsafe {
            (
                bitmap(bm)?,
                PrecopyKvmSlots::state(slots)?,
                as_slice(entries, nentries)?,
            )
        };
        // Converted in chunks on the stack: the core type is the same layout, but a
        // copy keeps this free of layout assumptions between crates.
        let mut first_err = Ok(());
        let mut chunk = [KvmDirtyGfn::default(); 64];
        for part in entries.chunks(chunk.len()) {
            for (dst, e) in chunk.iter_mut().zip(part) {
                *dst = KvmDirtyGfn {
                    flags: e.flags,
                    slot: e.slot,
                    offset: e.offset,
                };
            }
            let r = bm.import_kvm_dirty_ring(table, &chunk[..part.len()]);
            if first_err.is_ok() {
                first_err = r.map_err(bitmap_code);
            }
        }
        first_err
    })())
}
