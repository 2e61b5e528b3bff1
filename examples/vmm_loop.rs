//! A VMM's migration loop, to copy: the guest's RAM is a vm-memory `GuestMemoryMmap`
//! (two regions with a hole, as below and above a PCI hole), a vCPU thread keeps
//! writing it, and precopy migrates it over a socket into the destination VMM's own
//! `GuestMemoryMmap`, with the guest paused once, for the final round.
//!
//! ```sh
//! cargo run --release --example vmm_loop --features vm-memory
//! ```
//!
//! What the VMM owns, and does at each event:
//! - the vCPUs: they write guest memory, then mark the page in the
//!   [`AtomicDirtyBitmap`] (the order the bitmap's no-lost-write contract needs; a
//!   KVM guest would instead bring KVM's dirty log in at the `SyncDirtyLog` event);
//! - the socket: every byte `poll_transmit` returns goes out, in order;
//! - the pause: at `PauseGuest` it stops the vCPUs, then calls `guest_paused`;
//! - the device state (with `SourceConfig::device_state`): at `DeviceState`, after the
//!   final round's pages, it hands over the paused vCPUs' state (here one "register",
//!   the vCPU's counter) with `send_device_state` and sends those bytes too; the
//!   destination gets them from `Applier::device_state` once the memory verified;
//! - the verdict: after `Complete` it reads the destination's answer and passes it
//!   to `handle_verdict`; `Done` ends the migration.
//!
//! The destination applies the stream into its RAM through an [`Applier`] over
//! [`VmMemory`] (volatile copies: its devices may already map that memory), keeping
//! the hash of each page it writes ([`KeptHashes`]), and answers one byte, 1 once the
//! digest of its memory matched the source's.

use std::error::Error;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use precopy::bitmap::AtomicDirtyBitmap;
use precopy::engine::{Applier, Migration, MigrationEvent, Progress, SourceConfig};
use precopy::layout::{GuestLayout, Shard};
use precopy::memory::{KeptHashes, VmMemory};
use precopy::schedule::Policy;
use precopy::wire::DeviceState;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const PAGE: u64 = 4096;
/// The vCPU writes over the first 4 MiB of guest memory.
const WORKING_SET_PAGES: u64 = 1024;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> Result<()> {
    // 48 MiB below 4 GiB, a hole, 16 MiB above: on both sides.
    let ranges = [
        (GuestAddress(0), 48 << 20),
        (GuestAddress(1 << 32), 16 << 20),
    ];
    let source_ram = GuestMemoryMmap::<()>::from_ranges(&ranges)?;
    let destination_ram = GuestMemoryMmap::<()>::from_ranges(&ranges)?;
    let source = VmMemory::new(&source_ram, PAGE)?;
    let layout = source.layout();
    let bitmap = AtomicDirtyBitmap::new(layout);
    let (mut link, mut destination_link) = UnixStream::pair()?;
    let (pause, parked) = (AtomicBool::new(false), AtomicBool::new(false));
    // The vCPU's one "register", saved when it parks.
    let register = AtomicU64::new(0);

    let (report, downtime) = std::thread::scope(|s| -> Result<_> {
        s.spawn(|| vcpu(&source_ram, &layout, &bitmap, &pause, &parked, &register));
        let destination = s.spawn(|| receive(&destination_ram, &mut destination_link));

        let start = Instant::now();
        let now = || start.elapsed().as_nanos() as u64;
        let config = SourceConfig {
            device_state: true,
            ..SourceConfig::new(4096)
        };
        let mut migration = Migration::new(&bitmap, config, Policy::default(), now())?;
        let mut buf = vec![0u8; (256 << 10).max(migration.min_buffer_len())];
        let mut paused_at = None;
        let report = 'migration: loop {
            let len = migration.poll_transmit(&source, now(), &mut buf)?;
            link.write_all(&buf[..len])?;
            while let Some(event) = migration.poll_event() {
                match event {
                    MigrationEvent::RoundDone(r) => {
                        let s = r.outcome.stats;
                        println!(
                            "round {}: {} pages sent, {} dirty, predicted downtime {:.1} ms",
                            s.round,
                            s.pages_sent,
                            s.dirty_pages,
                            s.predicted_downtime_ns as f64 / 1e6
                        );
                    }
                    // A real VMM takes this share of time from its vCPUs.
                    MigrationEvent::Throttle(percent) => println!("throttle the vCPUs {percent}%"),
                    // Only with `SourceConfig::sync_before_harvest`: a KVM VMM clears the
                    // dirty log in KVM, ORs it into `bitmap`, then answers.
                    MigrationEvent::SyncDirtyLog { .. } => migration.dirty_log_synced(now())?,
                    MigrationEvent::PauseGuest { .. } => {
                        pause.store(true, Ordering::Release);
                        while !parked.load(Ordering::Acquire) {
                            std::thread::yield_now();
                        }
                        paused_at = Some(Instant::now());
                        migration.guest_paused(now())?;
                    }
                    MigrationEvent::DeviceState => {
                        let state = register.load(Ordering::Acquire).to_le_bytes();
                        let item = DeviceState {
                            id: VCPU0,
                            version: 1,
                            data: &state,
                        };
                        let mut out = vec![0u8; item.frame_len()];
                        let len = migration.send_device_state(&[item], &mut out)?;
                        link.write_all(&out[..len])?;
                    }
                    MigrationEvent::Complete { .. } => {
                        let mut verdict = [0u8; 1];
                        link.read_exact(&mut verdict)?;
                        migration.handle_verdict(verdict == [1])?;
                    }
                    MigrationEvent::Done(report) => break 'migration report,
                }
            }
        };
        let resumed_at = destination
            .join()
            .map_err(|_| "the destination panicked")??;
        // The destination's vCPU would resume from this counter.
        assert_eq!(resumed_at, register.load(Ordering::Acquire));
        let downtime = paused_at.map(|p| p.elapsed()).unwrap_or_default();
        Ok((report, downtime))
    })?;

    // Here the destination's vCPUs would run. Check what the migration promised.
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for &(start, len) in &ranges {
        for offset in (0..len as u64).step_by(a.len()) {
            source_ram.read_slice(&mut a, GuestAddress(start.0 + offset))?;
            destination_ram.read_slice(&mut b, GuestAddress(start.0 + offset))?;
            assert!(a == b, "memory differs near {:#x}", start.0 + offset);
        }
    }
    println!(
        "{} rounds, {} bytes on the wire for {} MiB, downtime {:.1} ms (predicted {:.1} ms): destination memory equals the source's",
        report.rounds,
        report.wire_bytes,
        layout.total_bytes() >> 20,
        downtime.as_secs_f64() * 1e3,
        report.predicted_downtime_ns as f64 / 1e6,
    );
    Ok(())
}

/// The guest's vCPU: writes a counter into the working set, page after page, about
/// 20k pages per second, until paused. Memory first, then the mark.
fn vcpu(
    ram: &GuestMemoryMmap,
    layout: &GuestLayout,
    bitmap: &AtomicDirtyBitmap<Box<[std::sync::atomic::AtomicU64]>>,
    pause: &AtomicBool,
    parked: &AtomicBool,
    register: &AtomicU64,
) {
    let mut counter = 0u64;
    while !pause.load(Ordering::Acquire) {
        let page = counter % WORKING_SET_PAGES;
        if let Ok(addr) = layout.addr_of(page) {
            let _ = ram.write_obj(counter, GuestAddress(addr));
            let _ = bitmap.mark(page);
        }
        counter += 1;
        if counter % 20 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    register.store(counter, Ordering::Release);
    parked.store(true, Ordering::Release);
}

/// The device-state id of vCPU 0's registers (the VMM's own numbering).
const VCPU0: u32 = 0;

/// The destination VMM: applies the stream into its own RAM, answers the verdict;
/// returns the vCPU's counter from the device state received.
fn receive(ram: &GuestMemoryMmap, link: &mut UnixStream) -> Result<u64> {
    // Keeping the hash of every page it writes, its half of the end-to-end check
    // folds 8 bytes per page at the switchover instead of reading all its RAM.
    let memory = KeptHashes::new(VmMemory::new(ram, PAGE)?, Shard::WHOLE);
    let mut applier = Applier::with_memory(memory);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = link.read(&mut buf)?;
        if n == 0 {
            applier.finish()?; // the source hung up: says what was missing
            return Err("the stream ended before its completion".into());
        }
        match applier.feed(&buf[..n]) {
            Ok(Progress::Complete) => break,
            Ok(Progress::InProgress) => {}
            Err(e) => {
                link.write_all(&[0])?;
                return Err(e.into());
            }
        }
    }
    // The memory's digest matched the source's: the guest may resume here, its vCPU
    // restored from the device state (given out only now, verified).
    let vcpu = applier
        .device_state()
        .and_then(|mut items| items.find(|d| d.id == VCPU0 && d.version == 1))
        .ok_or("no vCPU state in the stream")?;
    let register = u64::from_le_bytes(vcpu.data.try_into()?);
    link.write_all(&[1])?;
    Ok(register)
}
