//! The small trait through which precopy reaches guest memory.
//!
//! The VMM implements [`PageMemory`] over its mapping of guest RAM; tests implement it
//! over a `Vec<u8>` ([`VecMemory`]). Pages are numbered densely as in
//! [`crate::layout::GuestLayout`].

use core::fmt;

/// Why a page could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// The page index is past the end of guest memory.
    PageOutOfRange {
        /// The page asked for.
        page: u64,
        /// Pages in guest memory.
        total: u64,
    },
    /// The buffer is not exactly one page long.
    BadBufferLength {
        /// Bytes in the buffer.
        len: usize,
        /// The page size.
        page_size: usize,
    },
    /// The page belongs to another stream's share of memory ([`StreamMemory`]).
    OtherStream {
        /// The page asked for.
        page: u64,
    },
    /// A page size that is not a power of two.
    BadPageSize {
        /// The page size asked for, bytes.
        page_size: usize,
    },
    /// Memory of this size cannot be allocated on this machine.
    TooLarge {
        /// The page size, bytes.
        page_size: usize,
        /// Pages asked for.
        pages: u64,
    },
    /// The backing memory refused an access to a page in range (e.g. a vm-memory
    /// region that no longer maps the address).
    Inaccessible {
        /// The page.
        page: u64,
        /// Its guest-physical address.
        addr: u64,
    },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemoryError::PageOutOfRange { page, total } => {
                write!(
                    f,
                    "page {page} is out of range (guest memory has {total} pages)"
                )
            }
            MemoryError::BadBufferLength { len, page_size } => {
                write!(
                    f,
                    "buffer of {len} bytes given for a page of {page_size} bytes"
                )
            }
            MemoryError::OtherStream { page } => {
                write!(f, "page {page} belongs to another stream of the migration")
            }
            MemoryError::BadPageSize { page_size } => {
                write!(f, "page size {page_size} is not a power of two")
            }
            MemoryError::TooLarge { page_size, pages } => write!(
                f,
                "guest memory of {pages} pages of {page_size} bytes cannot be allocated \
                 on this machine (more than its memory or address space allows)"
            ),
            MemoryError::Inaccessible { page, addr } => write!(
                f,
                "page {page} (guest address {addr:#x}) is not accessible in the guest \
                 memory map"
            ),
        }
    }
}

impl core::error::Error for MemoryError {}

mod digest;
#[cfg(feature = "alloc")]
mod kept;
#[cfg(feature = "alloc")]
mod streams;
pub use digest::{digest_memory, digest_stream, migration_digest, MemoryDigest};
#[cfg(feature = "alloc")]
pub use kept::KeptHashes;
#[cfg(feature = "alloc")]
pub use streams::{FreshMemory, StreamMemory};
#[cfg(feature = "vm-memory")]
mod vm_memory;
#[cfg(feature = "vm-memory")]
pub use vm_memory::VmMemory;

/// Page-granular access to guest memory.
pub trait PageMemory {
    /// Page size in bytes (a power of two).
    fn page_size(&self) -> usize;

    /// Number of pages.
    fn total_pages(&self) -> u64;

    /// Copies page `page` into `buf` (exactly one page long). On the source this races
    /// with guest writes; the dirty bitmap's ordering contract makes that safe.
    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError>;

    /// Overwrites page `page` with `data` (exactly one page long).
    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError>;

    /// Writes the XXH3-64 ([`crate::codec::base_hash`]) of each page of
    /// `first..first + hashes.len()` into `hashes`, reading pages through `scratch`
    /// (one page long). The default reads and hashes one page at a time, on the
    /// caller's thread (the core spawns no thread); memory that knows its pages'
    /// hashes without reading them ([`FreshMemory`]) overrides it. To spread a large
    /// digest over threads, the std runtime calls this per range from a thread pool
    /// (`runtime::ParallelHash`).
    fn hash_pages(
        &self,
        first: u64,
        hashes: &mut [u64],
        scratch: &mut [u8],
    ) -> Result<(), MemoryError> {
        for (page, hash) in (first..).zip(hashes.iter_mut()) {
            self.read_page(page, scratch)?;
            *hash = page_hash(scratch);
        }
        Ok(())
    }

    /// How many pages from `first` on (at most `max`) this memory knows are zero
    /// without reading them: a source's bulk round sends such a run as one zero run,
    /// in time proportional to runs, not pages. The default knows nothing (0); memory
    /// that tracks its writes ([`FreshMemory`] and its views) answers from its
    /// written bitmap, 64 pages at a time. A page out of range, or not reached by
    /// this memory (another stream's), ends the run. An answer must stay true until
    /// the caller next writes memory, with one exception: a running guest's memory
    /// whose every write the migration's dirty log reports may answer what was true
    /// when it looked (as a read at that moment would have): the bulk round sends
    /// such a page as zero, and a later write to it is harvested and sent again
    /// (`kvm::GuestRam` answers from `/proc/self/pagemap` that way). Other memory
    /// that others write concurrently keeps the default.
    fn known_zero_pages(&self, first: u64, max: u64) -> u64 {
        let _ = (first, max);
        0
    }

    /// Makes pages `first..first + count` all zero. The default writes zero pages;
    /// memory that can tell a page is already zero skips it, so a destination of
    /// fresh anonymous memory never faults in the zero pages of an idle guest.
    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        let page_size = self.page_size();
        let zero = ZERO_PAGE
            .get(..page_size)
            .ok_or(MemoryError::BadBufferLength {
                len: ZERO_PAGE.len(),
                page_size,
            })?;
        check_pages(first, count, self.total_pages())?;
        for page in first..first + count {
            self.write_page(page, zero)?;
        }
        Ok(())
    }
}

/// XXH3-64 of each `page_size` chunk of `bytes` into `hashes`, in order.
#[cfg(feature = "alloc")]
fn hash_chunks(bytes: &[u8], page_size: usize, hashes: &mut [u64]) {
    for (page, hash) in bytes.chunks_exact(page_size).zip(hashes.iter_mut()) {
        *hash = page_hash(page);
    }
}

/// [`crate::codec::base_hash`] of `page`, taking a short cut for zero pages (most of
/// a fresh guest): the zero check runs at memory speed, the hash of a zero page is
/// computed once per page size.
fn page_hash(page: &[u8]) -> u64 {
    if page.len() <= ZERO_PAGE.len() && crate::codec::is_zero_page(page) {
        zero_page_hash(page.len())
    } else {
        crate::codec::base_hash(page)
    }
}

/// The hash ([`crate::codec::base_hash`]) of a zero page of `len` bytes, computed
/// once per power-of-two length.
pub(crate) fn zero_page_hash(len: usize) -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    // Slot k holds the hash for 2^k bytes, 0 while not computed yet.
    static HASHES: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
    let slot = len
        .is_power_of_two()
        .then(|| &HASHES[len.trailing_zeros() as usize]);
    if let Some(h) = slot.map(|s| s.load(Ordering::Relaxed)).filter(|&h| h != 0) {
        return h;
    }
    let hash = if len <= ZERO_PAGE.len() {
        crate::codec::base_hash(&ZERO_PAGE[..len])
    } else {
        // The streaming hash of the same bytes equals the one-shot one.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(ZERO_PAGE.len());
            h.update(&ZERO_PAGE[..n]);
            left -= n;
        }
        h.digest()
    };
    if let Some(s) = slot {
        s.store(hash, Ordering::Relaxed);
    }
    hash
}

/// Checks that pages `first..first + count` exist in memory of `total` pages.
fn check_pages(first: u64, count: u64, total: u64) -> Result<(), MemoryError> {
    if first.checked_add(count).is_none_or(|end| end > total) {
        return Err(MemoryError::PageOutOfRange {
            page: first.saturating_add(count).saturating_sub(1).max(first),
            total,
        });
    }
    Ok(())
}

/// Checks an access to page `page` with a buffer of `len` bytes against memory of
/// `total` pages of `page_size` bytes.
#[cfg(feature = "alloc")]
fn check_page_access(
    page: u64,
    len: usize,
    page_size: usize,
    total: u64,
) -> Result<(), MemoryError> {
    if len != page_size {
        return Err(MemoryError::BadBufferLength { len, page_size });
    }
    if page >= total {
        return Err(MemoryError::PageOutOfRange { page, total });
    }
    Ok(())
}

/// Zeros for [`PageMemory::zero_pages`]'s default: as large as the largest page the
/// codecs and the stream format take (64 KiB).
static ZERO_PAGE: ZeroPage = ZeroPage(core::cell::UnsafeCell::new([0; 64 * 1024]));

/// 64 KiB of zeros that is never written. An immutable all-zero array would sit in
/// the read-only data of every binary that links precopy (64 KiB of a bare-metal
/// image's text); behind an `UnsafeCell` it is zero-initialized writable data (`.bss`),
/// which takes no room in the image.
struct ZeroPage(core::cell::UnsafeCell<[u8; 64 * 1024]>);

// SAFETY: nothing ever writes the cell (no `&mut` to it is made anywhere; the only
// access is `ZeroPage::get`'s shared borrow), so shared reads from any thread are fine.
unsafe impl Sync for ZeroPage {}

impl core::ops::Deref for ZeroPage {
    type Target = [u8; 64 * 1024];

    fn deref(&self) -> &Self::Target {
        // SAFETY: the cell is never written (see the `Sync` impl), so a shared
        // reference to its contents for any lifetime is sound.
        unsafe { &*self.0.get() }
    }
}

/// Guest memory in a `Vec<u8>`, for tests, the simulator and file restores.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecMemory {
    page_size: usize,
    bytes: alloc::vec::Vec<u8>,
}

#[cfg(feature = "alloc")]
impl VecMemory {
    /// Zeroed memory of `pages` pages of `page_size` bytes.
    pub fn new(page_size: usize, pages: u64) -> Self {
        assert!(
            page_size.is_power_of_two(),
            "page size must be a power of two"
        );
        VecMemory {
            page_size,
            bytes: alloc::vec![0; page_size * pages as usize],
        }
    }

    /// Zeroed memory of `pages` pages of `page_size` bytes, or `TooLarge` when this
    /// machine will not give that much (never an abort): what a destination sizes
    /// from a stream's header uses.
    pub fn try_new(page_size: usize, pages: u64) -> Result<Self, MemoryError> {
        if !page_size.is_power_of_two() {
            return Err(MemoryError::BadPageSize { page_size });
        }
        let len = usize::try_from(pages)
            .ok()
            .and_then(|p| p.checked_mul(page_size));
        let bytes = len
            .and_then(try_zeroed_vec::<u8>)
            .ok_or(MemoryError::TooLarge { page_size, pages })?;
        Ok(VecMemory { page_size, bytes })
    }

    /// All of memory as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// All of memory as mutable bytes.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn range(&self, page: u64, len: usize) -> Result<core::ops::Range<usize>, MemoryError> {
        check_page_access(page, len, self.page_size, self.total_pages())?;
        let start = page as usize * self.page_size;
        Ok(start..start + self.page_size)
    }
}

#[cfg(feature = "alloc")]
impl PageMemory for VecMemory {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn total_pages(&self) -> u64 {
        (self.bytes.len() / self.page_size) as u64
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let r = self.range(page, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        let r = self.range(page, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }

    fn hash_pages(&self, first: u64, hashes: &mut [u64], _: &mut [u8]) -> Result<(), MemoryError> {
        let last = first.saturating_add(hashes.len() as u64).saturating_sub(1);
        if !hashes.is_empty() {
            self.range(last, self.page_size)?;
        }
        let start = first as usize * self.page_size;
        let bytes = &self.bytes[start..start + hashes.len() * self.page_size];
        hash_chunks(bytes, self.page_size, hashes);
        Ok(())
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        check_pages(first, count, self.total_pages())?;
        for page in first..first + count {
            let r = self.range(page, self.page_size)?;
            let bytes = &mut self.bytes[r];
            // Reading a never-written page of a zeroed allocation maps the shared zero
            // page; writing would fault in and clear a private one.
            if !crate::codec::is_zero_page(bytes) {
                bytes.fill(0);
            }
        }
        Ok(())
    }
}

/// Guest memory shared with writer threads: `AtomicU64` words, so writers can store
/// while a migration reads pages concurrently (relaxed accesses, the way a guest's
/// writes race with a VMM's reads; the dirty bitmap's ordering contract makes the
/// migration correct). Used by the synthetic guest, the simulator and the tests.
#[cfg(feature = "alloc")]
#[derive(Debug)]
pub struct AtomicMemory {
    page_size: usize,
    words: alloc::boxed::Box<[core::sync::atomic::AtomicU64]>,
}

#[cfg(feature = "alloc")]
impl AtomicMemory {
    /// Zeroed memory of `pages` pages of `page_size` bytes (a power of two, at least 8).
    pub fn new(page_size: usize, pages: u64) -> Self {
        assert!(
            page_size.is_power_of_two() && page_size >= 8,
            "page size must be a power of two of at least 8 bytes"
        );
        let len = page_size / 8 * pages as usize;
        let words = zeroed_atomics(len);
        AtomicMemory { page_size, words }
    }

    /// The address of the first byte (for advice to the OS such as huge pages; the
    /// memory is only ever accessed through the atomics).
    pub fn as_ptr(&self) -> *const u8 {
        self.words.as_ptr().cast()
    }

    /// Size in bytes.
    pub fn byte_len(&self) -> usize {
        self.words.len() * 8
    }

    /// Stores `value` at byte offset `8 * word` of page `page` (a guest write; the
    /// caller marks the page dirty afterwards).
    pub fn store_word(&self, page: u64, word: usize, value: u64) -> Result<(), MemoryError> {
        let per_page = self.page_size / 8;
        if page >= self.total_pages() || word >= per_page {
            return Err(MemoryError::PageOutOfRange {
                page,
                total: self.total_pages(),
            });
        }
        self.words[page as usize * per_page + word]
            .store(value, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn page_words(
        &self,
        page: u64,
        len: usize,
    ) -> Result<&[core::sync::atomic::AtomicU64], MemoryError> {
        check_page_access(page, len, self.page_size, self.total_pages())?;
        let per_page = self.page_size / 8;
        let start = page as usize * per_page;
        Ok(&self.words[start..start + per_page])
    }

    /// Makes pages `first..first + count` zero through a shared reference, writing
    /// only words that are not zero already: pages never written stay untouched (and,
    /// in a fresh allocation, unbacked).
    pub fn clear_pages(&self, first: u64, count: u64) -> Result<(), MemoryError> {
        check_pages(first, count, self.total_pages())?;
        let per_page = self.page_size / 8;
        let start = first as usize * per_page;
        for w in &self.words[start..start + count as usize * per_page] {
            if w.load(core::sync::atomic::Ordering::Relaxed) != 0 {
                w.store(0, core::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Overwrites page `page` from `data` through a shared reference (a guest write).
    pub fn store_page(&self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        let words = self.page_words(page, data.len())?;
        for (w, chunk) in words.iter().zip(data.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            w.store(u64::from_le_bytes(b), core::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Integers, for which all-zero bytes are a valid value.
#[cfg(feature = "alloc")]
pub(crate) trait ZeroIsValid: Copy {}
#[cfg(feature = "alloc")]
impl ZeroIsValid for u8 {}
#[cfg(feature = "alloc")]
impl ZeroIsValid for u64 {}

/// `len` zeroes from a zeroed allocation (untouched pages stay unbacked), or `None`
/// when the allocator refuses: a size read from a peer must never abort the process.
#[cfg(feature = "alloc")]
pub(crate) fn try_zeroed_vec<T: ZeroIsValid>(len: usize) -> Option<alloc::vec::Vec<T>> {
    if len == 0 {
        return Some(alloc::vec::Vec::new());
    }
    let layout = core::alloc::Layout::array::<T>(len).ok()?;
    // SAFETY: `layout` has a non-zero size (len > 0 and T is an integer). The
    // allocation is zeroed, and all-zero bytes are a valid T (ZeroIsValid), so the
    // `len` elements are initialized. The vector frees it with the same layout (the
    // global allocator, capacity `len` of T).
    unsafe {
        let ptr = alloc::alloc::alloc_zeroed(layout).cast::<T>();
        if ptr.is_null() {
            return None;
        }
        Some(alloc::vec::Vec::from_raw_parts(ptr, len, len))
    }
}

/// `len` zeroed atomics from a zeroed allocation: the OS hands out untouched pages
/// lazily, so a large, mostly-zero guest costs nothing until written.
#[cfg(feature = "alloc")]
fn zeroed_atomics(len: usize) -> alloc::boxed::Box<[core::sync::atomic::AtomicU64]> {
    use core::sync::atomic::AtomicU64;
    if len == 0 {
        return alloc::boxed::Box::new([]);
    }
    let layout = core::alloc::Layout::array::<AtomicU64>(len).expect("guest memory size overflows");
    // SAFETY: `layout` has a non-zero size (len > 0). The allocation is zeroed, and
    // all-zero bytes are a valid `AtomicU64`, so the `len` elements are initialized.
    // The box is built with the same layout it will be freed with (the global
    // allocator, `[AtomicU64]` of `len` elements).
    unsafe {
        let ptr = alloc::alloc::alloc_zeroed(layout).cast::<AtomicU64>();
        if ptr.is_null() {
            alloc::alloc::handle_alloc_error(layout);
        }
        alloc::boxed::Box::from_raw(core::ptr::slice_from_raw_parts_mut(ptr, len))
    }
}

#[cfg(feature = "alloc")]
impl PageMemory for AtomicMemory {
    fn page_size(&self) -> usize {
        self.page_size
    }

    fn total_pages(&self) -> u64 {
        (self.words.len() * 8 / self.page_size) as u64
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let words = self.page_words(page, buf.len())?;
        for (w, chunk) in words.iter().zip(buf.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&w.load(core::sync::atomic::Ordering::Relaxed).to_le_bytes());
        }
        Ok(())
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.store_page(page, data)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.clear_pages(first, count)
    }
}

/// Shared guest memory: the appliers of a multi-stream migration each write their own
/// pages of one `AtomicMemory` through a `&AtomicMemory`, from their own threads.
#[cfg(feature = "alloc")]
impl PageMemory for &AtomicMemory {
    fn page_size(&self) -> usize {
        (**self).page_size()
    }

    fn total_pages(&self) -> u64 {
        (**self).total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read_page(page, buf)
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.store_page(page, data)
    }

    fn hash_pages(
        &self,
        first: u64,
        hashes: &mut [u64],
        scratch: &mut [u8],
    ) -> Result<(), MemoryError> {
        (**self).hash_pages(first, hashes, scratch)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        self.clear_pages(first, count)
    }
}

/// Memory lent for a while: a destination applies into `&mut memory` and keeps it.
impl<M: PageMemory + ?Sized> PageMemory for &mut M {
    fn known_zero_pages(&self, first: u64, max: u64) -> u64 {
        (**self).known_zero_pages(first, max)
    }

    fn page_size(&self) -> usize {
        (**self).page_size()
    }

    fn total_pages(&self) -> u64 {
        (**self).total_pages()
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read_page(page, buf)
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        (**self).write_page(page, data)
    }

    fn hash_pages(
        &self,
        first: u64,
        hashes: &mut [u64],
        scratch: &mut [u8],
    ) -> Result<(), MemoryError> {
        (**self).hash_pages(first, hashes, scratch)
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        (**self).zero_pages(first, count)
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    #[test]
    fn zero_pages_clears_data_and_reports_bad_ranges() {
        let mut m = VecMemory::new(512, 4);
        m.as_bytes_mut()[512 + 7] = 1;
        m.as_bytes_mut()[3 * 512] = 9;
        m.zero_pages(0, 3).unwrap();
        assert!(m.as_bytes()[..3 * 512].iter().all(|&b| b == 0));
        assert_eq!(m.as_bytes()[3 * 512], 9, "outside the range");
        assert!(m.zero_pages(3, 2).is_err());

        // AtomicMemory clears only words that are not zero, also through a shared
        // reference (a multi-stream destination) and for pages above 64 KiB.
        let a = AtomicMemory::new(512, 3);
        a.store_word(1, 3, 42).unwrap();
        a.store_word(2, 0, 7).unwrap();
        let mut shared = &a;
        shared.zero_pages(0, 2).unwrap();
        let mut page = [1u8; 512];
        a.read_page(1, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 0));
        a.read_page(2, &mut page).unwrap();
        assert_eq!(page[0], 7, "outside the range");
        assert!(shared.zero_pages(2, 2).is_err());
        let mut big = AtomicMemory::new(128 << 10, 1);
        big.store_word(0, 1000, 1).unwrap();
        big.zero_pages(0, 1).unwrap();
        let mut big_page = alloc::vec![1u8; 128 << 10];
        big.read_page(0, &mut big_page).unwrap();
        assert!(big_page.iter().all(|&b| b == 0));
        // The zero-page hash short cut agrees with hashing, at every size.
        for len in [512, 4096, 64 << 10, 128 << 10, 3000] {
            let zero = alloc::vec![0u8; len];
            assert_eq!(zero_page_hash(len), crate::codec::base_hash(&zero), "{len}");
            assert_eq!(page_hash(&zero), crate::codec::base_hash(&zero), "{len}");
        }
    }
}
