//! Guest pages made on demand: a page's content is a pure function of (page, version,
//! content class), so a 1 TiB guest needs no 1 TiB of RAM. The source keeps one
//! version number per written page ([`SourceMemory`]); the destination
//! ([`DestMemory`]) reads the stamp of every page it receives, regenerates that
//! version and checks it byte for byte, and keeps only the version and the hash.

use std::boxed::Box;
use std::format;
use std::string::String;
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

use crate::codec::{base_hash, is_zero_page};
use crate::memory::{MemoryError, PageMemory};
use crate::workload::pages::{demo_page, fill, mix_kind};
use crate::workload::{Rng, Workload};

/// Template pages per generator (the content classes of the codec benchmarks' mix).
const TEMPLATES: usize = 40;
/// The stamp's magic, in bytes 12..16 of every non-zero page.
const STAMP_MAGIC: u32 = 0x5349_4d50; // "PMIS"
/// Pages per chunk of the sparse per-page tables.
const CHUNK: u64 = 4096;

/// What the pages that hold data contain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Content {
    /// The demo's pages ([`demo_page`]): text-like header and counter words; a write
    /// changes one word, as the demo's writers do. The default: one spec means the
    /// same guest in the demo and the simulator.
    #[default]
    Demo,
    /// The codec benchmarks' realistic mix (40% text, 25% structured, 20% mostly
    /// zero, 15% random); a write changes a run of 8 to 64 bytes.
    Mix,
}

impl core::str::FromStr for Content {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "demo" => Ok(Content::Demo),
            "mix" => Ok(Content::Mix),
            _ => Err(format!("unknown page content '{s}' (demo, mix)")),
        }
    }
}

/// Makes page contents: `content(page, version)`. Version 0 is the content before
/// the migration (zero, or data where the workload holds data); every write makes the
/// next version: the page's template (a text-like, structured, mostly-zero or random
/// page, as in the codec benchmarks' mix) with a small edit (8 to 64 bytes, like a
/// guest's field or line) and the stamp (page, version) in its first 16 bytes.
#[derive(Debug)]
pub struct PageGen {
    page_size: usize,
    total_pages: u64,
    workload: Workload,
    content: Content,
    templates: Vec<u8>,
}

impl PageGen {
    /// A generator for `workload`'s guest of `total_pages` pages of `page_size`,
    /// its pages holding `content`.
    pub fn new(workload: Workload, content: Content, total_pages: u64, page_size: usize) -> Self {
        let mut rng = Rng::new(0x7e3a_91c4_55d2_0b17);
        let mut templates = vec![0u8; TEMPLATES * page_size];
        for (i, t) in templates.chunks_exact_mut(page_size).enumerate() {
            fill(t, mix_kind(i), &mut rng);
        }
        PageGen {
            page_size,
            total_pages,
            workload,
            content,
            templates,
        }
    }

    /// Page size, bytes.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Pages of the guest.
    pub fn total_pages(&self) -> u64 {
        self.total_pages
    }

    /// Whether `page` at `version` is all zero.
    pub fn is_zero(&self, page: u64, version: u32) -> bool {
        version == 0
            && !self
                .workload
                .holds_data(page, self.total_pages, self.page_size as u64)
    }

    /// Writes `page`'s content at `version` into `out` (one page).
    pub fn fill(&self, page: u64, version: u32, out: &mut [u8]) {
        if self.is_zero(page, version) {
            out.fill(0);
            return;
        }
        let ps = self.page_size;
        let mut rng = Rng::new(page.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(version));
        match self.content {
            Content::Demo => {
                demo_page(page, out);
                if version > 0 && ps >= 24 {
                    // One word changes, as a demo writer's write.
                    let w = 2 + rng.index(ps / 8 - 2);
                    out[w * 8..w * 8 + 8]
                        .copy_from_slice(&(u64::from(version) ^ page).to_le_bytes());
                }
            }
            Content::Mix => {
                // The template is the page's for good (its content class); the edit
                // is the version's.
                let t = (Rng::new(page).next_u64() % TEMPLATES as u64) as usize;
                out.copy_from_slice(&self.templates[t * ps..(t + 1) * ps]);
                if version > 0 && ps > 96 {
                    let len = 8 + rng.index(57);
                    let at = 16 + rng.index(ps - 16 - len);
                    out[at..at + len]
                        .iter_mut()
                        .for_each(|b| *b = b.wrapping_add(0x3b));
                }
            }
        }
        if ps >= 16 {
            out[..8].copy_from_slice(&page.to_le_bytes());
            out[8..12].copy_from_slice(&version.to_le_bytes());
            out[12..16].copy_from_slice(&STAMP_MAGIC.to_le_bytes());
        }
    }

    /// The (page, version) a page's stamp names, if it carries one.
    pub fn stamp(data: &[u8]) -> Option<(u64, u32)> {
        let page = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
        let version = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
        let magic = u32::from_le_bytes(data.get(12..16)?.try_into().ok()?);
        (magic == STAMP_MAGIC).then_some((page, version))
    }
}

/// A sparse per-page table: chunks of [`CHUNK`] values, allocated when a value in
/// them first becomes non-zero.
#[derive(Debug)]
struct Sparse<T: Copy + Default + PartialEq> {
    chunks: Vec<Option<Box<[T]>>>,
}

impl<T: Copy + Default + PartialEq> Sparse<T> {
    fn new(pages: u64) -> Self {
        Sparse {
            chunks: (0..pages.div_ceil(CHUNK)).map(|_| None).collect(),
        }
    }

    /// The value of `page` (the default past the end).
    fn get(&self, page: u64) -> T {
        match self.chunks.get((page / CHUNK) as usize) {
            Some(Some(c)) => c[(page % CHUNK) as usize],
            _ => T::default(),
        }
    }

    /// Sets the value of `page` (nothing past the end).
    fn set(&mut self, page: u64, value: T) {
        let Some(slot) = self.chunks.get_mut((page / CHUNK) as usize) else {
            return;
        };
        if slot.is_none() && value == T::default() {
            return;
        }
        let c = slot.get_or_insert_with(|| vec![T::default(); CHUNK as usize].into_boxed_slice());
        c[(page % CHUNK) as usize] = value;
    }

    /// Whether the chunk of `page` holds only defaults for sure (never allocated).
    fn chunk_empty(&self, page: u64) -> bool {
        self.chunks
            .get((page / CHUNK) as usize)
            .is_none_or(|c| c.is_none())
    }
}

/// The source guest's memory: one version per page (sparse), contents generated on
/// read. The simulator's virtual writers bump versions ([`write`](Self::write)).
#[derive(Debug)]
pub struct SourceMemory {
    gen: Arc<PageGen>,
    versions: Sparse<u32>,
}

impl SourceMemory {
    /// Memory of `gen`'s guest, every page at version 0.
    pub fn new(gen: Arc<PageGen>) -> Self {
        let versions = Sparse::new(gen.total_pages);
        SourceMemory { gen, versions }
    }

    /// The page generator.
    pub fn gen(&self) -> &Arc<PageGen> {
        &self.gen
    }

    /// The guest writes `page`: its next version (a page past the end is ignored).
    pub fn write(&mut self, page: u64) {
        let v = self.versions.get(page);
        self.versions
            .set(page, v.saturating_add(1).min(u32::MAX - 1));
    }

    /// The version of `page`.
    pub fn version(&self, page: u64) -> u32 {
        self.versions.get(page)
    }

    /// What a destination holding `page` as it is now keeps for it
    /// ([`DestMemory::state`]).
    pub fn expected_state(&self, page: u64) -> u32 {
        let v = self.version(page);
        if self.gen.is_zero(page, v) {
            0
        } else {
            v + 1
        }
    }
}

impl PageMemory for SourceMemory {
    fn page_size(&self) -> usize {
        self.gen.page_size
    }

    fn total_pages(&self) -> u64 {
        self.gen.total_pages
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        check(&self.gen, page, buf.len())?;
        self.gen.fill(page, self.versions.get(page), buf);
        Ok(())
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        // The source is only read by the migration; its guest writes through `write`.
        check(&self.gen, page, data.len())?;
        Err(MemoryError::Inaccessible {
            page,
            addr: page * self.gen.page_size as u64,
        })
    }

    fn known_zero_pages(&self, first: u64, max: u64) -> u64 {
        let total = self.gen.total_pages;
        let mut page = first;
        let end = first.saturating_add(max).min(total);
        while page < end {
            let zero = if self.versions.chunk_empty(page) {
                !self
                    .gen
                    .workload
                    .holds_data(page, total, self.gen.page_size as u64)
            } else {
                self.gen.is_zero(page, self.versions.get(page))
            };
            if !zero {
                break;
            }
            page += 1;
        }
        page - first.min(page)
    }
}

fn check(gen: &PageGen, page: u64, len: usize) -> Result<(), MemoryError> {
    if page >= gen.total_pages {
        return Err(MemoryError::PageOutOfRange {
            page,
            total: gen.total_pages,
        });
    }
    if len != gen.page_size {
        return Err(MemoryError::BadBufferLength {
            len,
            page_size: gen.page_size,
        });
    }
    Ok(())
}

/// What the destination keeps of a page: 0 zero, `v + 1` version `v` (checked
/// against the regenerated content when it was written), [`CORRUPT`] bytes that were
/// not any version of the page.
pub const CORRUPT: u32 = u32::MAX;

/// A destination's memory (one per stream; each holds the pages its stream sends):
/// per page a state ([`DestMemory::state`]) and the hash of its bytes, nothing more.
/// Every page written is checked against the content its stamp names, regenerated.
#[derive(Debug)]
pub struct DestMemory {
    gen: Arc<PageGen>,
    state: Sparse<u32>,
    hashes: Sparse<u64>,
    zero_hash: u64,
    scratch: Vec<u8>,
    /// Pages written with bytes that were no version of the page.
    corrupt_writes: u64,
}

impl DestMemory {
    /// Zeroed memory for `gen`'s guest.
    pub fn new(gen: Arc<PageGen>) -> Self {
        let pages = gen.total_pages;
        let zero_hash = base_hash(&vec![0u8; gen.page_size]);
        DestMemory {
            scratch: vec![0; gen.page_size],
            state: Sparse::new(pages),
            hashes: Sparse::new(pages),
            gen,
            zero_hash,
            corrupt_writes: 0,
        }
    }

    /// What this memory holds of `page` (see [`CORRUPT`]).
    pub fn state(&self, page: u64) -> u32 {
        self.state.get(page)
    }

    /// Writes whose bytes were no version of their page.
    pub fn corrupt_writes(&self) -> u64 {
        self.corrupt_writes
    }
}

/// The bytes a corrupt page reads back as.
const CORRUPT_BYTE: u8 = 0xee;

impl PageMemory for DestMemory {
    fn page_size(&self) -> usize {
        self.gen.page_size
    }

    fn total_pages(&self) -> u64 {
        self.gen.total_pages
    }

    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        check(&self.gen, page, buf.len())?;
        match self.state.get(page) {
            0 => buf.fill(0),
            CORRUPT => buf.fill(CORRUPT_BYTE),
            s => self.gen.fill(page, s - 1, buf),
        }
        Ok(())
    }

    fn write_page(&mut self, page: u64, data: &[u8]) -> Result<(), MemoryError> {
        check(&self.gen, page, data.len())?;
        if is_zero_page(data) {
            self.state.set(page, 0);
            return Ok(());
        }
        let state = match PageGen::stamp(data) {
            Some((p, v)) if p == page && v < CORRUPT - 1 => {
                self.gen.fill(page, v, &mut self.scratch);
                (self.scratch[..] == data[..]).then_some(v + 1)
            }
            _ => None,
        };
        let state = state.unwrap_or_else(|| {
            self.corrupt_writes += 1;
            CORRUPT
        });
        let hash = if state == CORRUPT {
            self.scratch.fill(CORRUPT_BYTE);
            base_hash(&self.scratch)
        } else {
            base_hash(data)
        };
        self.state.set(page, state);
        self.hashes.set(page, hash);
        Ok(())
    }

    fn hash_pages(
        &self,
        first: u64,
        hashes: &mut [u64],
        _scratch: &mut [u8],
    ) -> Result<(), MemoryError> {
        let end = first.saturating_add(hashes.len() as u64);
        if end > self.gen.total_pages {
            return Err(MemoryError::PageOutOfRange {
                page: end - 1,
                total: self.gen.total_pages,
            });
        }
        for (page, h) in (first..).zip(hashes.iter_mut()) {
            *h = match self.state.get(page) {
                0 => self.zero_hash,
                _ => self.hashes.get(page),
            };
        }
        Ok(())
    }

    fn zero_pages(&mut self, first: u64, count: u64) -> Result<(), MemoryError> {
        let end = first.saturating_add(count);
        if end > self.gen.total_pages {
            return Err(MemoryError::PageOutOfRange {
                page: end - 1,
                total: self.gen.total_pages,
            });
        }
        let mut page = first;
        while page < end {
            if self.state.chunk_empty(page) {
                // Still zero: skip to the next chunk.
                page = (page / CHUNK + 1) * CHUNK;
                continue;
            }
            self.state.set(page, 0);
            page += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen() -> Arc<PageGen> {
        Arc::new(PageGen::new(
            "continuous:set=64K".parse().unwrap(),
            Content::Mix,
            64,
            4096,
        ))
    }

    #[test]
    fn contents_are_stamped_versions_and_zero_where_unwritten() {
        let g = gen();
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        g.fill(3, 0, &mut a);
        assert_eq!(PageGen::stamp(&a), Some((3, 0)));
        g.fill(3, 1, &mut b);
        assert_eq!(PageGen::stamp(&b), Some((3, 1)));
        let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert!(differing > 0 && differing < 100, "{differing}");
        g.fill(40, 0, &mut a);
        assert!(is_zero_page(&a), "past the working set, unwritten");
        g.fill(40, 2, &mut a);
        assert!(!is_zero_page(&a));
        g.fill(40, 2, &mut b);
        assert_eq!(a, b, "deterministic");
    }

    #[test]
    fn demo_contents_are_the_demos_with_one_word_written() {
        let g = PageGen::new(
            "continuous:set=64K".parse().unwrap(),
            Content::Demo,
            64,
            4096,
        );
        let (mut a, mut b, mut demo) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
        g.fill(7, 0, &mut a);
        demo_page(7, &mut demo);
        assert_eq!(a[16..], demo[16..], "the demo's page past the stamp");
        g.fill(7, 3, &mut b);
        let words = (2..512)
            .filter(|w| a[w * 8..w * 8 + 8] != b[w * 8..w * 8 + 8])
            .count();
        assert_eq!(words, 1);
    }

    #[test]
    fn the_destination_checks_every_page_against_its_stamp() {
        let g = gen();
        let mut src = SourceMemory::new(Arc::clone(&g));
        let mut dst = DestMemory::new(Arc::clone(&g));
        let mut page = vec![0u8; 4096];
        src.write(5);
        src.read_page(5, &mut page).unwrap();
        dst.write_page(5, &page).unwrap();
        assert_eq!(dst.state(5), src.expected_state(5));
        assert_eq!(dst.corrupt_writes(), 0);
        let mut back = vec![0u8; 4096];
        dst.read_page(5, &mut back).unwrap();
        assert_eq!(back, page);
        // One flipped bit, or a page written where another belongs: caught.
        page[100] ^= 1;
        dst.write_page(5, &page).unwrap();
        assert_eq!(dst.state(5), CORRUPT);
        page[100] ^= 1;
        dst.write_page(6, &page).unwrap();
        assert_eq!(dst.corrupt_writes(), 2);
        assert_eq!(src.known_zero_pages(16, 100), 48, "pages 16..64 are zero");
        assert_eq!(src.known_zero_pages(0, 100), 0);
        src.write(20);
        assert_eq!(src.known_zero_pages(16, 100), 4);
        dst.zero_pages(0, 64).unwrap();
        assert_eq!(dst.state(5), 0);
    }
}
