//! Live-migrating a running KVM guest, for VMM authors: the flow of `precopy kvm-demo`
//! in one page.
//!
//! ```sh
//! cargo run --release --features kvm --example kvm_migrate
//! ```
//!
//! 1. The source VM: RAM (`GuestRam`, two slots with a hole), dirty tracking in the
//!    best mode the kernel offers, one vCPU writing 20k pages/s.
//! 2. The destination thread accepts the streams, allocates RAM for the layout in the
//!    header and applies every stream into it in place (`KeptHashes` views).
//! 3. `migrate_streams` drives the guest: `sync_dirty` before each harvest (KVM's log
//!    or rings into the bitmap, re-protecting first), `pause` at the switchover.
//! 4. The vCPU state taken at the pause goes to a new VM over the received RAM.
#![cfg_attr(
    not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")),
    allow(unused)
)]

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    use precopy::engine::SourceConfig;
    use precopy::kvm::{layout_for, DirtyOffers, GuestConfig, GuestRam, KvmGuest};
    use precopy::layout::Shard;
    use precopy::memory::KeptHashes;
    use precopy::runtime::{accept_streams, migrate_streams, Limits, MigrationOptions, SourceLink};
    use precopy::schedule::Policy;

    let Ok(kvm) = kvm_ioctls::Kvm::new() else {
        println!("SKIP: /dev/kvm cannot be opened here");
        return Ok(());
    };
    let offers = DirtyOffers::probe(&kvm);
    println!("{}", offers.describe());
    let (set, rate) = (16384, 20_000);
    let layout = layout_for(256 << 20)?;
    let config = GuestConfig::new(set, rate, offers.best());
    let source = KvmGuest::boot(&kvm, Arc::new(GuestRam::new(layout)?), config)?;
    std::thread::sleep(Duration::from_millis(200));

    // The destination: RAM for the header's layout, written in place by every stream.
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let limits = Limits {
        max_memory: layout.total_bytes(),
        expect: Some(layout),
    };
    let destination = std::thread::spawn(move || -> Result<Arc<GuestRam>, String> {
        let (first, peer) = listener.accept().map_err(|e| e.to_string())?;
        let incoming = accept_streams(
            &listener,
            first,
            &peer.to_string(),
            &limits,
            Duration::from_secs(30),
        )
        .map_err(|e| e.to_string())?;
        let header = *incoming.header();
        let ram = Arc::new(GuestRam::new(header.layout).map_err(|e| e.to_string())?);
        let count = header.stream.count();
        let views = (0..count)
            .map(|i| KeptHashes::new(&*ram, Shard::new(i, count).unwrap_or(Shard::WHOLE)))
            .collect();
        incoming.apply_into(views).map_err(|e| e.to_string())?;
        Ok(ram)
    });

    // The source: two streams; KVM's dirty pages come in before every harvest.
    let links = (0..2)
        .map(|_| TcpStream::connect(addr).map(|s| SourceLink::new(s, addr.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let options = MigrationOptions::new(
        SourceConfig {
            sync_before_harvest: true,
            ..SourceConfig::new(4096)
        },
        Policy::default(),
    );
    let report = migrate_streams(&source, links, |l| l.finish(), &options, &mut ())?;
    let ram = destination.join().map_err(|_| "destination panicked")??;

    // The source is paused at its pacing exit: its vCPU state goes to the new VM.
    let state = source.paused_state().ok_or("the source was never paused")?;
    let counter = source.counter()?;
    let target = KvmGuest::restore(&kvm, ram, &state, rate)?;
    std::thread::sleep(Duration::from_millis(100));
    println!(
        "{} live rounds, {} bytes; paused at counter {counter} (rip {:#x}); the destination's counter is now {}",
        report.rounds,
        report.wire_bytes,
        state.regs.rip,
        target.counter()?
    );
    Ok(())
}

#[cfg(not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")))]
fn main() {
    println!("SKIP: this example needs feature `kvm` on Linux x86-64");
}
