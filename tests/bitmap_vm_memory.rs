//! Our bitmap behind the real rust-vmm vm-memory crate: writes made through
//! `GuestMemory` are tracked, and a harvest returns exactly the pages written.
#![cfg(feature = "vm-memory")]

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use precopy::bitmap::{guest_memory_mmap, AtomicDirtyBitmap};
use precopy::layout::GuestLayout;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

type Owned = AtomicDirtyBitmap<Box<[AtomicU64]>>;

#[test]
fn shared_bitmap_tracks_writes_in_every_region() {
    let layout = GuestLayout::new(4096, &[(0, 1 << 20), (1 << 32, 2 << 20)]).unwrap();
    let bitmap = Arc::new(Owned::new(layout));
    let mem = guest_memory_mmap(&bitmap).unwrap();
    assert_eq!(mem.num_regions(), 2);

    // Unaligned writes that span pages, in both regions; and an object write.
    mem.write_slice(&[0xaa; 5000], GuestAddress(4095)).unwrap(); // pages 0, 1, 2
    mem.write_obj(7u64, GuestAddress((1 << 32) + 3 * 4096))
        .unwrap(); // dense 256 + 3
    mem.write_slice(&[1; 4096], GuestAddress((1 << 32) + (2 << 20) - 4096))
        .unwrap(); // last page, dense 767
    let dirty: Vec<u64> = bitmap.harvest().pages().collect();
    assert_eq!(dirty, [0, 1, 2, 259, 767]);

    // Reads do not mark; the bytes really landed in guest memory.
    let mut buf = [0u8; 5000];
    mem.read_slice(&mut buf, GuestAddress(4095)).unwrap();
    assert!(buf.iter().all(|&b| b == 0xaa));
    assert_eq!(bitmap.dirty_pages(), 0);

    // Writes through a volatile slice of a region are tracked too.
    let region = mem.find_region(GuestAddress(1 << 32)).unwrap();
    let slice = region
        .get_slice(vm_memory::MemoryRegionAddress(8192), 100)
        .unwrap();
    slice.write_slice(&[3; 10], 0).unwrap();
    assert_eq!(bitmap.harvest().pages().collect::<Vec<_>>(), [258]);
}

#[test]
fn per_region_bitmaps_from_new_bitmap() {
    // vm-memory builds one bitmap per region through `NewBitmap::with_len`.
    let mem: GuestMemoryMmap<Owned> =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 10), (GuestAddress(1 << 20), 8192)])
            .unwrap();
    mem.write_slice(&[9; 3], GuestAddress(8191)).unwrap();
    mem.write_obj(1u32, GuestAddress((1 << 20) + 4096)).unwrap();
    let regions: Vec<_> = mem.iter().collect();
    let (m0, m1) = (regions[0].get_mmap(), regions[1].get_mmap());
    let first: Vec<u64> = m0.bitmap().harvest().pages().collect();
    let second: Vec<u64> = m1.bitmap().harvest().pages().collect();
    assert_eq!(first, [1, 2]);
    assert_eq!(second, [1]);
    // The vm-memory trait view agrees, and out-of-range offsets are simply clean.
    let b = regions[1].bitmap();
    b.mark_dirty(0, 1);
    assert!(b.dirty_at(0) && !b.dirty_at(4096) && !b.dirty_at(1 << 40));
}
