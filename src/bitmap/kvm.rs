//! Import of KVM dirty logs (`KVM_GET_DIRTY_LOG` words) and dirty-ring entries
//! (`struct kvm_dirty_gfn`), through a table of KVM memory slots.

use super::sync::AtomicU64;
use core::ops::Deref;

use super::{words_for_pages, AtomicDirtyBitmap, BitmapError};
use crate::layout::GuestLayout;

/// The most memory slots a [`KvmSlotTable`] holds (fixed, so no allocator is needed).
pub const MAX_KVM_SLOTS: usize = 128;

/// One KVM memory slot as the VMM registered it with `KVM_SET_USER_MEMORY_REGION`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmSlot {
    /// KVM's slot id: address space in bits 16..32, slot number in bits 0..16.
    pub slot: u32,
    /// Guest-physical address of the slot.
    pub guest_addr: u64,
    /// Pages in the slot.
    pub pages: u64,
    /// Dense page index of the slot's first page in the bitmap's layout.
    pub first_page: u64,
}

/// One entry of a KVM dirty ring, laid out as the kernel's `struct kvm_dirty_gfn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmDirtyGfn {
    /// `KVM_DIRTY_GFN_F_DIRTY` / `_RESET` flags (not interpreted here: the VMM collects
    /// entries and resets the ring).
    pub flags: u32,
    /// The memory slot id.
    pub slot: u32,
    /// Page offset within the slot.
    pub offset: u64,
}

/// Maps KVM slot ids to runs of dense pages of a [`GuestLayout`].
#[derive(Clone, Debug)]
pub struct KvmSlotTable {
    layout: GuestLayout,
    count: usize,
    slots: [KvmSlot; MAX_KVM_SLOTS],
}

impl KvmSlotTable {
    /// An empty table for `layout`.
    pub fn new(layout: GuestLayout) -> Self {
        KvmSlotTable {
            layout,
            count: 0,
            slots: [KvmSlot::default(); MAX_KVM_SLOTS],
        }
    }

    /// Registers slot `slot` covering `pages` pages at `guest_addr`. Every page must be
    /// tracked by the layout, with no hole in between. Re-registering a slot id replaces
    /// it (KVM slots are deleted and re-created when the guest's map changes).
    pub fn insert(&mut self, slot: u32, guest_addr: u64, pages: u64) -> Result<(), BitmapError> {
        let bad = BitmapError::BadSlot {
            slot,
            guest_addr,
            pages,
        };
        if pages == 0 {
            return Err(bad);
        }
        let page_size = self.layout.page_size();
        let first = self.layout.page_of(guest_addr).map_err(|_| bad)?;
        let last_addr = (pages - 1)
            .checked_mul(page_size)
            .and_then(|off| guest_addr.checked_add(off))
            .ok_or(bad)?;
        let last = self.layout.page_of(last_addr).map_err(|_| bad)?;
        if guest_addr % page_size != 0 || last - first != pages - 1 {
            return Err(bad);
        }
        let entry = KvmSlot {
            slot,
            guest_addr,
            pages,
            first_page: first,
        };
        if let Some(existing) = self.slots[..self.count].iter_mut().find(|s| s.slot == slot) {
            *existing = entry;
            return Ok(());
        }
        if self.count == MAX_KVM_SLOTS {
            return Err(bad);
        }
        self.slots[self.count] = entry;
        self.count += 1;
        Ok(())
    }

    /// The slot with id `slot`.
    pub fn get(&self, slot: u32) -> Result<&KvmSlot, BitmapError> {
        self.slots[..self.count]
            .iter()
            .find(|s| s.slot == slot)
            .ok_or(BitmapError::UnknownSlot { slot })
    }

    /// The registered slots.
    pub fn slots(&self) -> &[KvmSlot] {
        &self.slots[..self.count]
    }
}

impl<W: Deref<Target = [AtomicU64]>> AtomicDirtyBitmap<W> {
    /// ORs a KVM dirty log (the `u64` words `KVM_GET_DIRTY_LOG` returns for one slot;
    /// bit `i` is the slot's page `i`) into the bitmap at the slot's first page. The log
    /// may be shorter than the slot (missing words are clean). Bits past the slot's last
    /// page are refused before anything is marked.
    pub fn import_kvm_dirty_log(
        &self,
        slots: &KvmSlotTable,
        slot: u32,
        log: &[u64],
    ) -> Result<(), BitmapError> {
        let s = *slots.get(slot)?;
        self.check_slot_in_bitmap(&s)?;
        let out_of_slot = |offset| BitmapError::SlotOffsetOutOfRange {
            slot,
            offset,
            pages: s.pages,
        };
        let max_words = words_for_pages(s.pages);
        if log.len() > max_words {
            let extra = log[max_words..].iter().position(|&w| w != 0);
            if let Some(i) = extra {
                let w = log[max_words + i];
                return Err(out_of_slot(
                    (max_words + i) as u64 * 64 + u64::from(w.trailing_zeros()),
                ));
            }
        }
        let tail = s.pages % 64;
        if tail != 0 {
            if let Some(&w) = log.get(max_words - 1) {
                if w >> tail != 0 {
                    let bit = 64 - (w >> tail << tail).leading_zeros() - 1;
                    return Err(out_of_slot((max_words as u64 - 1) * 64 + u64::from(bit)));
                }
            }
        }
        let shift = (s.first_page % 64) as u32;
        let base = (s.first_page / 64) as usize;
        let mut fenced = false;
        for (i, &w) in log.iter().take(max_words).enumerate() {
            if w == 0 {
                continue;
            }
            self.or_word(base + i, w << shift, &mut fenced);
            if shift != 0 {
                self.or_word(base + i + 1, w >> (64 - shift), &mut fenced);
            }
        }
        Ok(())
    }

    /// Marks the pages named by KVM dirty-ring entries. Every entry that names a valid
    /// page is marked; the first invalid one (unknown slot, offset past the slot) is
    /// returned as an error after the rest are marked, so nothing valid is lost.
    pub fn import_kvm_dirty_ring(
        &self,
        slots: &KvmSlotTable,
        entries: &[KvmDirtyGfn],
    ) -> Result<(), BitmapError> {
        let mut first_err = None;
        for e in entries {
            let res = slots.get(e.slot).and_then(|s| {
                if e.offset >= s.pages {
                    return Err(BitmapError::SlotOffsetOutOfRange {
                        slot: e.slot,
                        offset: e.offset,
                        pages: s.pages,
                    });
                }
                self.mark(s.first_page + e.offset)
            });
            if let (Err(err), None) = (res, &first_err) {
                first_err = Some(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn check_slot_in_bitmap(&self, s: &KvmSlot) -> Result<(), BitmapError> {
        if s.first_page + s.pages > self.total_pages() {
            return Err(BitmapError::BadSlot {
                slot: s.slot,
                guest_addr: s.guest_addr,
                pages: s.pages,
            });
        }
        Ok(())
    }

    fn or_word(&self, word: usize, bits: u64, fenced: &mut bool) {
        if bits != 0 {
            self.set_bits(word, bits, fenced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> GuestLayout {
        // 100 pages at 0, hole, 200 pages at 1 MiB (dense pages 100..300).
        GuestLayout::new(4096, &[(0, 100 * 4096), (1 << 20, 200 * 4096)]).unwrap()
    }

    #[test]
    fn slot_table_rejects_holes_and_unknown_slots() {
        let mut t = KvmSlotTable::new(layout());
        t.insert(0, 0, 100).unwrap();
        t.insert(1, 1 << 20, 200).unwrap();
        assert!(t.insert(2, 0, 101).is_err(), "runs into the hole");
        assert!(t.insert(2, 50 * 4096, 60).is_err(), "spans the hole");
        assert!(t.insert(2, 4095, 1).is_err(), "not in a region");
        assert!(t.insert(2, 0, 0).is_err(), "empty");
        assert_eq!(t.get(9), Err(BitmapError::UnknownSlot { slot: 9 }));
        assert_eq!(t.get(1).unwrap().first_page, 100);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn dirty_log_lands_at_unaligned_slot_start() {
        let bm = AtomicDirtyBitmap::new(layout());
        let mut t = KvmSlotTable::new(layout());
        t.insert(1, 1 << 20, 200).unwrap();
        // Slot pages 0, 63, 64, 199 -> dense 100, 163, 164, 299.
        let log = [1 | 1 << 63, 1, 0, 1 << 7];
        bm.import_kvm_dirty_log(&t, 1, &log).unwrap();
        let pages: alloc::vec::Vec<u64> = bm.harvest().pages().collect();
        assert_eq!(pages, [100, 163, 164, 299]);
        // Bit for slot page 200 is past the slot: refused, nothing marked.
        let bad = [1, 0, 0, 1 << 8];
        assert_eq!(
            bm.import_kvm_dirty_log(&t, 1, &bad),
            Err(BitmapError::SlotOffsetOutOfRange {
                slot: 1,
                offset: 200,
                pages: 200
            })
        );
        assert_eq!(bm.dirty_pages(), 0);
        assert!(bm.import_kvm_dirty_log(&t, 1, &[0, 0, 0, 0, 1]).is_err());
    }

    /// KVM slots are deleted and re-created when the guest's map changes: a slot id
    /// registered again names its new range only, for dirty logs and rings alike.
    #[cfg(feature = "alloc")]
    #[test]
    fn re_registering_a_slot_replaces_its_range() {
        let bm = AtomicDirtyBitmap::new(layout());
        let mut t = KvmSlotTable::new(layout());
        t.insert(0, 0, 100).unwrap();
        t.insert(3, 1 << 20, 200).unwrap();
        // Slot 3 moves: 50 pages from guest page 10 of the first region (dense 10..60).
        t.insert(3, 10 * 4096, 50).unwrap();
        assert_eq!(
            t.slots().len(),
            2,
            "the old entry was kept beside the new one"
        );
        assert_eq!(
            *t.get(3).unwrap(),
            KvmSlot {
                slot: 3,
                guest_addr: 10 * 4096,
                pages: 50,
                first_page: 10,
            }
        );
        // Slot pages 0, 1 and 49 -> dense 10, 11, 59; not 100, 101, 149 (the old range).
        bm.import_kvm_dirty_log(&t, 3, &[0b11 | 1 << 49]).unwrap();
        let pages: alloc::vec::Vec<u64> = bm.harvest().pages().collect();
        assert_eq!(pages, [10, 11, 59]);
        // Slot page 50 was in the old range, not in the new one.
        assert_eq!(
            bm.import_kvm_dirty_log(&t, 3, &[1 << 50]),
            Err(BitmapError::SlotOffsetOutOfRange {
                slot: 3,
                offset: 50,
                pages: 50
            })
        );
        let ring = [
            KvmDirtyGfn {
                flags: 1,
                slot: 3,
                offset: 7,
            },
            KvmDirtyGfn {
                flags: 1,
                slot: 3,
                offset: 150,
            },
        ];
        assert_eq!(
            bm.import_kvm_dirty_ring(&t, &ring),
            Err(BitmapError::SlotOffsetOutOfRange {
                slot: 3,
                offset: 150,
                pages: 50
            })
        );
        let pages: alloc::vec::Vec<u64> = bm.harvest().pages().collect();
        assert_eq!(pages, [17]);
        // The other slot is unchanged.
        assert_eq!(t.get(0).unwrap().pages, 100);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn dirty_ring_marks_valid_entries_and_reports_bad_ones() {
        let bm = AtomicDirtyBitmap::new(layout());
        let mut t = KvmSlotTable::new(layout());
        t.insert(0, 0, 100).unwrap();
        t.insert(1 << 16 | 1, 1 << 20, 200).unwrap();
        let ring = [
            KvmDirtyGfn {
                flags: 1,
                slot: 0,
                offset: 5,
            },
            KvmDirtyGfn {
                flags: 1,
                slot: 7,
                offset: 0,
            },
            KvmDirtyGfn {
                flags: 1,
                slot: 1 << 16 | 1,
                offset: 199,
            },
            KvmDirtyGfn {
                flags: 1,
                slot: 0,
                offset: 100,
            },
        ];
        assert_eq!(
            bm.import_kvm_dirty_ring(&t, &ring),
            Err(BitmapError::UnknownSlot { slot: 7 })
        );
        let pages: alloc::vec::Vec<u64> = bm.harvest().pages().collect();
        assert_eq!(pages, [5, 299]);
    }
}
