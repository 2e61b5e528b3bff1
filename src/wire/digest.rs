//! The digest of all guest memory that source and destination compare at the end.

use xxhash_rust::xxh3::Xxh3;

use crate::memory::{MemoryError, PageMemory};

/// XXH3-128 over every page of guest memory in page order. Feed pages in order with
/// [`update`](Self::update); the source and the destination must agree on the result.
///
/// ```
/// use precopy::wire::MemoryDigest;
/// let mut a = MemoryDigest::new();
/// a.update(&[0u8; 512]);
/// let mut b = MemoryDigest::new();
/// b.update(&[1u8; 512]);
/// assert_ne!(a.finish(), b.finish());
/// ```
#[derive(Clone)]
pub struct MemoryDigest {
    hasher: Xxh3,
}

impl core::fmt::Debug for MemoryDigest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MemoryDigest")
    }
}

impl Default for MemoryDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDigest {
    /// A digest of no pages yet.
    pub fn new() -> Self {
        MemoryDigest {
            hasher: Xxh3::new(),
        }
    }

    /// Adds the next page.
    pub fn update(&mut self, page: &[u8]) {
        self.hasher.update(page);
    }

    /// The digest of the pages added.
    pub fn finish(&self) -> u128 {
        self.hasher.digest128()
    }
}

/// The digest of all of `memory`, reading each page into `scratch` (one page long).
pub fn digest_memory<M: PageMemory + ?Sized>(
    memory: &M,
    scratch: &mut [u8],
) -> Result<u128, MemoryError> {
    let mut digest = MemoryDigest::new();
    for page in 0..memory.total_pages() {
        memory.read_page(page, scratch)?;
        digest.update(scratch);
    }
    Ok(digest.finish())
}
