//! The `precopy` command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_bitmap;
mod bench_codec;
mod bench_harvest;
mod bench_pipeline;
mod certs;
mod demo;
mod json;
mod kvm_demo;
mod kvm_two;
mod migrate;
mod options;
mod recv;
mod report;
mod send;
mod signals;
mod sim;
mod sim_plot;
mod sim_scenarios;
mod sim_sweep;
mod tls_args;

/// precopy: pre-copy live migration of VM memory.
#[derive(Parser, Debug)]
#[command(name = "precopy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Migrate a synthetic guest with writers running, over loopback TCP, and verify it.
    Demo(demo::Args),
    /// Migrate a real KVM guest (a program writing at a paced rate) live and continue it
    /// on a destination VM, in this process or another (exit status 3: no /dev/kvm here).
    KvmDemo(kvm_demo::Args),
    /// Write kvm-demo's guest program as a multiboot image (for QEMU's -kernel).
    #[command(hide = true)]
    KvmImage(kvm_demo::ImageArgs),
    /// The destination process of `kvm-demo --two-process`: receive a KVM guest's
    /// migration, resume it on a VM of its own, report in one JSON line.
    #[command(hide = true)]
    KvmRecv(kvm_two::RecvArgs),
    /// Migrate a synthetic guest to a `precopy recv` over TCP, or into a stream file.
    Send(send::Args),
    /// Take a migration from a `precopy send` over TCP, or restore a stream file, and
    /// verify the memory digest.
    Recv(recv::Args),
    /// Make a CA and a source and a destination certificate signed by it, for trying
    /// TLS out (`send`/`recv` --tls-cert, --tls-key, --tls-ca).
    Certs(certs::Args),
    /// Simulate a migration of any size on a virtual clock (the real engines, codecs
    /// and destination over a modelled link and CPU), printed like `demo`.
    Sim(sim::Command),
    /// Measure precopy against a peer implementation in the same run.
    Bench {
        #[command(subcommand)]
        suite: BenchSuite,
    },
}

#[derive(Subcommand, Debug)]
enum BenchSuite {
    /// Dirty bitmap: marking and harvesting, against rust-vmm vm-memory's AtomicBitmap.
    Bitmap(bench_bitmap::Args),
    /// Page codecs (zero check, LZ4, delta), against memcpy of the same pages.
    Codec(bench_codec::Args),
    /// Whole migrations over loopback TCP (idle, once, continuous), against memcpy.
    Pipeline(bench_pipeline::Args),
    /// KVM dirty tracking (log, clear, ring) on a running guest: microseconds per sync.
    Harvest(bench_harvest::Args),
}

fn main() -> ExitCode {
    signals::install();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => match demo::run(&args) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the destination did not verify the migrated memory".to_string()),
            Err(e) => Err(e),
        },
        Command::KvmDemo(args) => match kvm_demo::run(&args) {
            Ok(kvm_demo::Outcome::Ok) => Ok(()),
            Ok(kvm_demo::Outcome::NoKvm(line)) => {
                eprintln!("precopy: {line}");
                return ExitCode::from(kvm_demo::NO_KVM_EXIT);
            }
            Err(e) => Err(e),
        },
        Command::KvmImage(args) => kvm_demo::write_image(&args),
        Command::KvmRecv(args) => kvm_two::recv(&args),
        Command::Send(args) => send::run(&args),
        Command::Sim(cmd) => match sim::main(&cmd) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the simulated migration did not verify".to_string()),
            Err(e) => Err(e),
        },
        Command::Recv(args) => recv::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Bench { suite } => match suite {
            BenchSuite::Bitmap(args) => bench_bitmap::run(&args),
            BenchSuite::Codec(args) => bench_codec::run(&args),
            BenchSuite::Pipeline(args) => bench_pipeline::run(&args),
            BenchSuite::Harvest(args) => bench_harvest::run(&args),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error carries.
            eprintln!("precopy: {}", e.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}
