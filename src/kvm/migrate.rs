//! A KVM guest migrated in one process: the runtime sends the source guest's RAM over
//! loopback TCP (one connection per stream) with its vCPU writing, into a destination
//! [`GuestRam`] (received in place: the destination VM's slots map that same memory);
//! at the switchover the vCPU pauses, its state travels in the stream (a device-state
//! frame on stream 0, [`VcpuState::to_bytes`]), and a destination VM continues it
//! from the received bytes. [`receive_migration`] and [`resume_received`] are the
//! destination's half, which `precopy kvm-demo --two-process` runs in another process.

use std::format;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
#[allow(unused_imports)]
use std::prelude::rust_2021::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvm_ioctls::Kvm;

use super::guest::KvmGuest;
use super::program::COUNTER_ADDR;
use super::ram::GuestRam;
use super::vcpu::VcpuState;
use super::KvmError;
use crate::engine::Guest;
use crate::layout::Shard;
use crate::memory::KeptHashes;
use crate::runtime::{
    accept_streams, migrate_streams, AppliedStreams, Limits, MigrationOptions, MigrationReport,
    Observer, RuntimeError, SourceLink, StreamsFinal, StreamsRound,
};

/// How long the destination waits for each stream and each read.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the destination's vCPU runs before the continuity check.
const CONTINUITY_RUN: Duration = Duration::from_millis(200);

/// What [`migrate_local`] reports.
#[derive(Debug)]
pub struct LocalMigration {
    /// The runtime's report (rounds, bytes, pause and verification times).
    pub report: MigrationReport,
    /// Each live round's dirty pages at its end, as the scheduler saw them.
    pub live_dirty: Vec<u64>,
    /// What the destination applied and verified.
    pub applied: AppliedStreams,
    /// The vCPU state the destination restored: decoded from the stream's
    /// device-state frame (and checked equal to the source's at the pause).
    pub state: VcpuState,
    /// The counter at the fixed address when the source paused.
    pub counter_at_pause: u64,
    /// The first page at which the two memories differ, compared with both VMs
    /// paused (`None`: byte-equal).
    pub first_difference: Option<u64>,
    /// Creating the destination VM over the received memory, handing it the vCPU state
    /// and starting its vCPU, ns. A VMM starts it as soon as the destination verified
    /// (the report's `verified_at`); here the source's re-read and the memory
    /// comparison run first, so the guest's real pause is the downtime plus this.
    pub restore_ns: u64,
    /// The continuity check on the destination.
    pub continuity: Continuity,
    /// The destination VM, running.
    pub destination: KvmGuest,
}

/// The counter after the destination ran for 200 ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Continuity {
    /// The counter at the fixed address, read with the destination paused.
    pub counter: u64,
    /// The value in working-set page `(c + 1) mod set`, `c` the counter at the pause.
    pub next_page_value: u64,
    /// Whether the guest continued from where it stopped: the counter went past `c`,
    /// and page `(c + 1) mod set` holds a value congruent to `c + 1` and above `c`
    /// (a restart from 0 or a lost state fails this). An idle guest (rate 0) passes
    /// when its vCPU runs with the counter still at `c`.
    pub continued: bool,
}

/// Forwards to the caller's observer and records each live round's dirty pages.
struct Recording<'a> {
    inner: &'a mut dyn Observer,
    live_dirty: Vec<u64>,
}

impl Observer for Recording<'_> {
    fn round_done(&mut self, round: &StreamsRound) {
        self.live_dirty.push(round.outcome.stats.dirty_pages);
        self.inner.round_done(round);
    }
    fn final_round(&mut self, round: &StreamsFinal) {
        self.inner.final_round(round);
    }
    fn progress(&mut self, sent: u64, planned: u64, lz4_streams: u8) {
        self.inner.progress(sent, planned, lz4_streams);
    }
    fn ended(&mut self, report: &MigrationReport) {
        self.inner.ended(report);
    }
}

/// Why an in-process KVM migration failed.
#[derive(Debug)]
pub enum LocalMigrationError {
    /// The migration itself (the source guest was resumed and runs on).
    Migration(RuntimeError),
    /// The destination side (receiving, or its VM).
    Destination(String),
    /// Setting up (sockets) or the KVM side after the migration.
    Kvm(KvmError),
}

impl std::fmt::Display for LocalMigrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalMigrationError::Migration(e) => {
                write!(f, "migration failed (the guest runs on at the source): {e}")
            }
            LocalMigrationError::Destination(e) => write!(f, "destination: {e}"),
            LocalMigrationError::Kvm(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LocalMigrationError {}

impl From<KvmError> for LocalMigrationError {
    fn from(e: KvmError) -> Self {
        LocalMigrationError::Kvm(e)
    }
}

/// Migrates `source` (running) with `options` over `streams` loopback connections,
/// then continues it on a destination VM paced at `rate` pages per second over a
/// working set of `set_pages`, and checks memory equality and counter continuity.
/// On success the source stays paused and the destination runs.
pub fn migrate_local(
    kvm: &Kvm,
    source: &KvmGuest,
    streams: u8,
    options: &MigrationOptions,
    (rate, set_pages): (u64, u64),
    observer: &mut dyn Observer,
) -> Result<LocalMigration, LocalMigrationError> {
    let setup = |e: std::io::Error| LocalMigrationError::Destination(format!("loopback: {e}"));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(setup)?;
    // Small socket buffers: a page counts as sent once the kernel took it, so what the
    // buffers hold is a backlog the destination applies after the source finished;
    // bounded here, it stays out of the downtime (accepted sockets inherit it).
    set_buffer(listener.as_raw_fd(), libc::SO_RCVBUF);
    let addr = listener.local_addr().map_err(setup)?;
    let layout = *source.ram().layout();
    let limits = Limits {
        max_memory: layout.total_bytes(),
        expect: Some(layout),
    };
    let destination = std::thread::Builder::new()
        .name("precopy-dest".into())
        .spawn(move || receive_migration(&listener, &limits))
        .map_err(setup)?;
    let mut links = Vec::new();
    for _ in 0..streams.max(1) {
        let stream = TcpStream::connect(addr).map_err(setup)?;
        stream.set_nodelay(true).map_err(setup)?;
        set_buffer(stream.as_raw_fd(), libc::SO_SNDBUF);
        links.push(SourceLink::new(stream, addr.to_string()));
    }
    let mut recording = Recording {
        inner: observer,
        live_dirty: Vec::new(),
    };
    let result = migrate_streams(source, links, |l| l.finish(), options, &mut recording);
    let received = destination
        .join()
        .map_err(|_| LocalMigrationError::Destination("the receiving thread panicked".into()));
    let report = result.map_err(LocalMigrationError::Migration)?;
    let (dest_ram, applied) = received?.map_err(LocalMigrationError::Destination)?;
    let source_state = source
        .paused_state()
        .ok_or_else(|| LocalMigrationError::Destination("the source was never paused".into()))?;
    // Both VMs paused (the destination's does not exist yet): compare every page.
    let first_difference = source.ram().first_difference(&dest_ram);
    // The destination's vCPU continues from the state the stream carried, not from
    // this process's copy; the two must agree.
    let resumed = resume_received(kvm, dest_ram, &applied, (rate, set_pages))?;
    if resumed.state.regs != source_state.regs || resumed.state.sregs != source_state.sregs {
        return Err(LocalMigrationError::Destination(
            "the vCPU state received differs from the one the source paused with".into(),
        ));
    }
    Ok(LocalMigration {
        report,
        live_dirty: recording.live_dirty,
        applied,
        state: resumed.state,
        counter_at_pause: resumed.counter_at_pause,
        first_difference,
        restore_ns: resumed.restore_ns,
        continuity: resumed.continuity,
        destination: resumed.destination,
    })
}

/// A destination VM resumed from a received migration ([`resume_received`]).
#[derive(Debug)]
pub struct Resumed {
    /// The vCPU state decoded from the stream's device-state frame.
    pub state: VcpuState,
    /// The counter at the fixed address in the received memory: where the guest
    /// stopped at the source.
    pub counter_at_pause: u64,
    /// Creating the VM over the received memory, setting the vCPU state and starting
    /// the vCPU, ns.
    pub restore_ns: u64,
    /// The continuity check after the destination ran for 200 ms.
    pub continuity: Continuity,
    /// The destination VM, running.
    pub destination: KvmGuest,
}

/// Continues a received migration: decodes vCPU 0's state from the device state the
/// streams carried ([`VcpuState::from_items`]: a missing item, an unknown version or a
/// wrong length is an error), creates a VM over `ram` (the received memory, in
/// place), sets the state, runs it for 200 ms paced at `rate` over a working set of
/// `set_pages`, and checks that the counter continued. The VM is left running.
pub fn resume_received(
    kvm: &Kvm,
    ram: Arc<GuestRam>,
    applied: &AppliedStreams,
    (rate, set_pages): (u64, u64),
) -> Result<Resumed, LocalMigrationError> {
    let state = VcpuState::from_items(&applied.device_state)
        .map_err(|e| LocalMigrationError::Destination(e.to_string()))?;
    let counter_at_pause = ram.read_u64(COUNTER_ADDR)?;
    let restore_start = Instant::now();
    let destination = KvmGuest::restore(kvm, ram, &state, rate)?;
    let restore_ns = restore_start.elapsed().as_nanos() as u64;
    std::thread::sleep(CONTINUITY_RUN);
    destination.pause_vcpu()?;
    let counter = destination.counter()?;
    let next = (counter_at_pause + 1) % set_pages.max(1);
    let next_page_value = destination.working_set_value(next)?;
    let continued = state.regs.rbx == counter_at_pause
        && if rate == 0 {
            // An idle guest writes nothing: it runs (its pacing exits come) with the
            // counter where it stopped.
            counter == counter_at_pause && destination.vcpu().exits() > 0
        } else {
            counter > counter_at_pause
                && next_page_value > counter_at_pause
                && next_page_value % set_pages.max(1) == next
        };
    destination.resume_vcpu();
    Ok(Resumed {
        state,
        counter_at_pause,
        restore_ns,
        continuity: Continuity {
            counter,
            next_page_value,
            continued,
        },
        destination,
    })
}

/// The destination: accepts a migration's streams on `listener`, sizes its RAM by the
/// header (within `limits`), applies every stream into it in place (each through a
/// [`KeptHashes`] view of its shard) and answers the verdicts. The device state the
/// streams carried is in the [`AppliedStreams`]. Errors are the text to report.
pub fn receive_migration(
    listener: &TcpListener,
    limits: &Limits,
) -> Result<(Arc<GuestRam>, AppliedStreams), String> {
    let (first, peer) = listener
        .accept()
        .map_err(|e| format!("accepting the source: {e}"))?;
    let peer = peer.to_string();
    let incoming = accept_streams(listener, first, &peer, limits, STREAM_TIMEOUT)
        .map_err(|e| format!("accepting the streams: {e}"))?;
    let header = *incoming.header();
    let ram = match GuestRam::for_migration(header.layout) {
        Ok(ram) => Arc::new(ram),
        Err(e) => {
            let reason = RuntimeError::from(std::io::Error::other(e.to_string()));
            incoming.refuse(&reason);
            return Err(format!("destination memory: {e}"));
        }
    };
    let count = header.stream.count();
    let views: Vec<_> = (0..count)
        .map(|i| KeptHashes::new(&*ram, Shard::new(i, count).unwrap_or(Shard::WHOLE)))
        .collect();
    let applied = incoming
        .apply_into(views)
        .map_err(|e| format!("applying the streams: {e}"))?;
    Ok((ram, applied))
}

/// Bytes of socket buffer per loopback connection and direction.
const SOCKET_BUFFER: libc::c_int = 128 << 10;

/// Keeps a loopback migration's socket buffers small (128 KiB each way), as
/// [`migrate_local`] does: a page counts as sent once the kernel took it, so what the
/// buffers hold is a backlog the destination applies after the source finished; kept
/// small, it stays out of the downtime. For a listener (accepted sockets inherit it)
/// and the source's connections; advice: a refusal keeps the kernel's default.
pub fn small_socket_buffers(socket: &impl AsRawFd) {
    set_buffer(socket.as_raw_fd(), libc::SO_SNDBUF);
    set_buffer(socket.as_raw_fd(), libc::SO_RCVBUF);
}

/// Sets `option` (`SO_SNDBUF` / `SO_RCVBUF`) of socket `fd` to [`SOCKET_BUFFER`];
/// advice: a refusal keeps the kernel's default.
fn set_buffer(fd: std::os::fd::RawFd, option: libc::c_int) {
    let size = SOCKET_BUFFER;
    // SAFETY: `fd` is a live socket owned by the caller; the option value is a c_int
    // passed by pointer with its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Asserts the trait bounds the runtime needs of a KVM guest.
#[allow(dead_code)]
fn assert_guest_bounds() {
    fn is<G: Guest + Sync>() {}
    is::<KvmGuest>();
}
