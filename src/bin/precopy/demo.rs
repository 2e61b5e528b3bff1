//! `precopy demo`: a real migration in one process. A synthetic guest's writer threads
//! dirty real memory while the source engine sends it over loopback TCP to a
//! destination thread, which applies it and verifies the final digest.

use std::net::TcpListener;

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
    // Source and destination in one process: the host must hold both.
    args.validate(2)?;
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
    let (report, dest_result) =
        migrate::run_loopback(&mut source, listener, args.writers, args.json, None)?;
    report.print(args.json, None);
    if let Some(e) = &report.error {
        return Err(e.clone());
    }
    report.check_downtime(args.strict_downtime)?;
    let dest = dest_result?;
    if let (Some(path), true) = (&args.dump_memory, report.verified()) {
        migrate::dump(path, &migrate::guest_bytes(&source.guest)?)?;
        let mut dest_path = path.clone().into_os_string();
        dest_path.push(".dest");
        migrate::dump(dest_path.as_ref(), dest.as_bytes())?;
    }
    Ok(report.verified())
}
