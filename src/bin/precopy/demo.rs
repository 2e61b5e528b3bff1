//! `precopy demo`: a real migration in one process. A synthetic guest's writer threads
//! dirty real memory while the source engine sends it over loopback TCP to a
//! destination thread, which applies it and verifies the final digest.

use std::net::{TcpListener, TcpStream};

use precopy::runtime::{receive, Limits, SourceLink};

use crate::migrate::{self, MigrationArgs};

/// Options of `precopy demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    migration: MigrationArgs,
}

/// Runs the demo; `Ok(true)` when the destination verified the memory.
pub fn run(args: &Args) -> Result<bool, String> {
    let args = &args.migration;
    let mut source = args.source(*b"precopy-demo-001")?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    if !args.json {
        println!(
            "precopy demo: {} MiB guest, {} B pages, workload {}, {} writer(s), loopback TCP {addr}",
            args.memory >> 20,
            args.page_size,
            source.workload,
            args.writers
        );
    }
    migrate::print_table_header(args.json);
    let limits = Limits {
        max_memory: source.layout.total_bytes(),
        expect: Some(source.layout),
    };
    let destination = std::thread::spawn(move || -> Result<(), String> {
        let (stream, peer) = listener
            .accept()
            .map_err(|e| format!("accepting the source: {e}"))?;
        let mut replies = &stream;
        receive(&mut &stream, Some(&mut replies), &limits)
            .map(drop)
            .map_err(|e| format!("receiving from {peer}: {e}"))
    });
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut link = SourceLink::new(stream, addr.to_string());
    let report = migrate::run_source(&mut source, args.writers, args.json, &mut link, |l| {
        l.finish().map_err(|e| e.to_string())
    });
    drop(link);
    let dest_result = destination
        .join()
        .map_err(|_| "the destination thread panicked".to_string())?;
    report.print(args.json, "");
    if let Some(e) = &report.error {
        return Err(e.clone());
    }
    dest_result?;
    Ok(report.verified())
}
