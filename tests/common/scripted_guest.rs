//! A guest for the consistency property tests: its writes follow a script and run
//! inside the engines' page reads. Shared by `tests/engine_consistency.rs` and
//! `tests/multistream_consistency.rs`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use precopy::bitmap::AtomicDirtyBitmap;
use precopy::memory::{AtomicMemory, MemoryError, PageMemory};

/// A guest write: page, word in the page, value.
pub type Write = (u64, usize, u64);

/// The dirty bitmap of the tests' guests.
pub type Bitmap = AtomicDirtyBitmap<Box<[std::sync::atomic::AtomicU64]>>;

/// Source memory whose page reads run the write schedule: before each read, the next
/// scripted writes land in memory and then are marked (the bitmap's contract), so
/// writes fall between a harvest and a page read, between reads of one round, while a
/// page is being encoded from its private copy, and while other engines are between
/// polls.
pub struct ScriptedGuest<'a> {
    /// The guest's memory.
    pub memory: &'a AtomicMemory,
    /// The guest's dirty bitmap.
    pub bitmap: &'a Bitmap,
    /// Writes still to come, one batch per page read.
    pub script: RefCell<VecDeque<Vec<Write>>>,
    /// A paused guest writes nothing.
    pub paused: Cell<bool>,
}

impl ScriptedGuest<'_> {
    /// Runs the next batch of writes, unless paused.
    pub fn run_writes(&self) {
        if self.paused.get() {
            return;
        }
        if let Some(writes) = self.script.borrow_mut().pop_front() {
            for (page, word, value) in writes {
                self.memory.store_word(page, word, value).unwrap();
                self.bitmap.mark(page).unwrap();
            }
        }
    }
}

impl PageMemory for ScriptedGuest<'_> {
    fn page_size(&self) -> usize {
        self.memory.page_size()
    }
    fn total_pages(&self) -> u64 {
        self.memory.total_pages()
    }
    fn read_page(&self, page: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.run_writes();
        self.memory.read_page(page, buf)
    }
    fn write_page(&mut self, _: u64, _: &[u8]) -> Result<(), MemoryError> {
        panic!("a source engine must never write guest memory");
    }
}

/// Initial content of pages of `page_size` bytes: by `kinds[page] % 4`, zero,
/// random-ish, text-like or sparse.
pub fn fill(memory: &AtomicMemory, page_size: usize, kinds: &[u8]) {
    let mut buf = vec![0u8; page_size];
    for (page, &kind) in kinds.iter().enumerate() {
        let seed = (page as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for (i, b) in buf.iter_mut().enumerate() {
            let x = seed ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            *b = match kind % 4 {
                0 => 0,
                1 => (x >> 29) as u8,
                2 => b"the quick brown fox "[i % 20],
                _ => u8::from(i % 97 == 0) * (x as u8),
            };
        }
        memory.store_page(page as u64, &buf).unwrap();
    }
}
