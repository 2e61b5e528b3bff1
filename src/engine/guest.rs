//! The guest a migration's source drives: its memory, its dirty bitmap, and the few
//! things a migration asks of its vCPUs.

use core::ops::Deref;
use core::sync::atomic::AtomicU64;

use crate::bitmap::AtomicDirtyBitmap;
use crate::memory::PageMemory;
use crate::wire::DeviceState;

/// A running guest as the source of a migration sees it: what the VMM (or the
/// synthetic guest of the workloads, or a simulator) gives the migration to drive.
///
/// The std runtime's `migrate_streams` reads [`memory`](Self::memory) and harvests [`bitmap`](Self::bitmap) from its
/// encoder threads while it calls the other methods from its coordinator thread, so
/// every method takes `&self` (a VMM keeps its vCPU handles behind interior
/// mutability, as it must to signal them from another thread anyway).
///
/// The order the no-lost-write invariant needs: a vCPU or device writes guest memory,
/// then marks the page dirty (in [`bitmap`](Self::bitmap) directly, or in a dirty
/// source that [`sync_dirty`](Self::sync_dirty) brings in: for KVM, *re-protect in
/// KVM (fetch-and-clear its dirty log or reset its rings), then OR into the bitmap*,
/// never the other way round).
pub trait Guest {
    /// Guest memory.
    type Memory: PageMemory + ?Sized;
    /// The words behind the dirty bitmap (owned, or the VMM's own).
    type Words: Deref<Target = [AtomicU64]>;
    /// Why pausing the guest or pulling its dirty log failed.
    type Error: core::error::Error + Send + Sync + 'static;

    /// Guest memory, read while the guest runs (a backend with volatile access).
    fn memory(&self) -> &Self::Memory;

    /// The dirty bitmap the guest's writes mark and the migration harvests.
    fn bitmap(&self) -> &AtomicDirtyBitmap<Self::Words>;

    /// Pauses the vCPUs: once this returns `Ok`, the guest writes no memory (and
    /// every write before was marked, or is pulled in by the next
    /// [`sync_dirty`](Self::sync_dirty)). A pause that fails fails the migration.
    fn pause(&self) -> Result<(), Self::Error>;

    /// Lets the vCPUs run again: the migration failed after the pause, and the guest
    /// goes on at the source.
    fn resume(&self);

    /// Takes `percent` (0 to 99) of the vCPUs' time away to slow the guest's writes;
    /// 0 stops throttling.
    fn throttle(&self, percent: u8);

    /// Brings dirty pages tracked outside [`bitmap`](Self::bitmap) into it (a KVM
    /// guest pulls its dirty log or dirty rings here, re-protecting first). The
    /// migration calls it before harvests; the default does nothing (every write
    /// marks the bitmap directly).
    fn sync_dirty(&self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Whether the guest has device state to send with the migration (vCPU
    /// registers, device models): then the migration's first stream announces it in
    /// its header and carries what [`save_device_state`](Self::save_device_state)
    /// gives after the final round. The default: none.
    fn has_device_state(&self) -> bool {
        false
    }

    /// The paused guest's device state: calls `save` once per item (each at most a
    /// page of bytes; split larger state into several items), in the order the
    /// destination should see them. Called once, after [`pause`](Self::pause)
    /// succeeded and before the final round, when
    /// [`has_device_state`](Self::has_device_state) is true. A failure fails the
    /// migration (the guest is resumed at the source).
    fn save_device_state(&self, save: &mut dyn FnMut(DeviceState<'_>)) -> Result<(), Self::Error> {
        let _ = save;
        Ok(())
    }
}
