//! The page size, validated once.

use super::LayoutError;

/// Smallest page size precopy migrates, bytes.
pub const MIN_PAGE_SIZE: usize = 512;
/// Largest page size precopy migrates, bytes. A guest backed by 2 MiB or 1 GiB huge
/// pages is described in 4 KiB pages: KVM's dirty log tracks 4 KiB pages regardless,
/// and a 4 KiB write would otherwise resend 2 MiB.
pub const MAX_PAGE_SIZE: usize = 64 * 1024;
/// Default page size: 4 KiB.
pub const DEFAULT_PAGE_SIZE: u64 = 4096;

/// A page size every layer accepts: a power of two from [`MIN_PAGE_SIZE`] (512 B) to
/// [`MAX_PAGE_SIZE`] (64 KiB). This is the one rule: the layout, the codecs, the
/// stream header and the engines all check a page size through [`PageSize::new`].
///
/// ```
/// use precopy::layout::PageSize;
/// assert_eq!(PageSize::new(4096).unwrap().bytes(), 4096);
/// assert!(PageSize::new(3000).is_err());
/// let huge = PageSize::new(2 << 20).unwrap_err().to_string();
/// assert!(huge.contains("4096-byte pages"), "{huge}");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageSize {
    shift: u8,
}

impl PageSize {
    /// 4 KiB.
    pub const DEFAULT: PageSize = PageSize { shift: 12 };

    /// `bytes` as a page size, if every layer takes it.
    pub const fn new(bytes: u64) -> Result<Self, LayoutError> {
        if bytes.is_power_of_two() && bytes >= MIN_PAGE_SIZE as u64 && bytes <= MAX_PAGE_SIZE as u64
        {
            Ok(PageSize {
                shift: bytes.trailing_zeros() as u8,
            })
        } else {
            Err(LayoutError::BadPageSize { page_size: bytes })
        }
    }

    /// Bytes per page.
    #[inline]
    pub const fn bytes(self) -> usize {
        1 << self.shift
    }

    /// log2 of the page size.
    #[inline]
    pub const fn shift(self) -> u32 {
        self.shift as u32
    }
}

impl Default for PageSize {
    fn default() -> Self {
        PageSize::DEFAULT
    }
}
