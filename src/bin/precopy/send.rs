//! `precopy send`: the source of a two-process migration. A synthetic guest's writers
//! dirty memory while its stream goes to a `precopy recv` over TCP, or into a file.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgGroup;
use precopy::runtime::{receive, FileSink, Limits};

use crate::migrate::{self, MigrationArgs, Source};
use crate::signals::TempFile;
use crate::tls_args::{self, TlsArgs};

/// Options of `precopy send`.
#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("to").required(true).args(["connect", "output"])))]
pub struct Args {
    /// Migrate to a `precopy recv --listen` at this address (HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    connect: Option<String>,
    /// Write the migration stream to FILE instead (a snapshot; restore it with
    /// `precopy recv --input FILE`). It is written to a temporary file beside FILE,
    /// read back and verified, and only then renamed over FILE: on any failure or
    /// signal FILE is untouched.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Seconds (1 to 86400) to wait for the destination: to connect, and for each
    /// read or write.
    #[arg(long, default_value = "30", value_parser = crate::options::parse_secs)]
    timeout: u64,
    /// With --output: skip reading the file back to verify it restores to the
    /// source's memory digest, and write FILE in place (the way to write to a FIFO or
    /// a device, which cannot be read back).
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    tls: TlsArgs,
    /// With TLS: the name the destination's certificate must carry. Default: the
    /// host part of --connect.
    #[arg(long, value_name = "NAME", requires = "tls_cert")]
    tls_name: Option<String>,
    #[command(flatten)]
    migration: MigrationArgs,
}

/// A session id for this run: unique enough to tell migrations apart in logs.
fn session_id() -> [u8; 16] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut seed = [0u8; 20];
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..].copy_from_slice(&std::process::id().to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&seed).to_le_bytes()
}

/// Hex of a session id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects to the first address of `addr` that answers within `timeout`.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut last = format!("connect {addr}: the name resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    Err(last)
}

/// Runs `precopy send`; `Ok` only when the destination verified the memory (for a
/// file: when it was written, synced and, unless --no-verify, read back and verified).
pub fn run(args: &Args) -> Result<(), String> {
    let m = &args.migration;
    // Where the stream goes is checked before the guest is built and calibrated.
    let output = match &args.output {
        Some(path) => Some(output_kind(args, path)?),
        None => None,
    };
    let session = session_id();
    let mut source = m.source(session)?;
    let timeout = Duration::from_secs(args.timeout.max(1));
    let session_hex = hex(&session);
    let session_json = Some(session_hex.as_str());
    if let Some(addr) = &args.connect {
        let client = args.tls.client()?;
        let name = args
            .tls_name
            .clone()
            .unwrap_or_else(|| tls_args::host_of(addr).to_string());
        let mut links = Vec::with_capacity(usize::from(source.streams));
        let mut peer = addr.clone();
        for _ in 0..source.streams {
            let stream = connect(addr, timeout)?;
            let setup = |e: std::io::Error| format!("connect {addr}: {e}");
            stream.set_nodelay(true).map_err(setup)?;
            stream.set_read_timeout(Some(timeout)).map_err(setup)?;
            stream.set_write_timeout(Some(timeout)).map_err(setup)?;
            peer = stream.peer_addr().map_or(addr.clone(), |a| a.to_string());
            let what = format!("the destination {peer}");
            links.push(tls_args::source_link(stream, client.as_ref(), &name, what)?);
        }
        let how = format!(
            "{} to {peer}, {} stream(s)",
            if client.is_some() {
                "TLS 1.3 (mutual authentication)"
            } else {
                "plain TCP"
            },
            source.streams
        );
        print_intro(m, &source, &how);
        let mut report = migrate::run_source(&mut source, m.writers, m.json, links, |l| l.finish());
        if report.error.is_none() {
            report.error = dump_source(m, &source).err();
        }
        report.print(m.json, session_json);
        return match report.error {
            Some(e) => Err(e),
            None => report.check_downtime(m.strict_downtime),
        };
    }
    let (Some(path), Some(output)) = (&args.output, output) else {
        return Err("give --connect ADDR or --output FILE".to_string());
    };
    source.streams = 1;
    let special = output != OutputKind::Regular;
    // Regular files: a temporary file beside the target, renamed over it once verified.
    let temp = if special {
        None
    } else {
        Some(TempFile::new(path)?)
    };
    let written = temp.as_ref().map_or(path.as_path(), |t| t.path());
    let sink = if output == OutputKind::Stdout {
        stdout_sink()?
    } else {
        FileSink::create(written).map_err(|e| e.to_string())?
    };
    print_intro(m, &source, &format!("file {}", path.display()));
    let mut report = migrate::run_source(&mut source, m.writers, m.json, vec![sink], |s| {
        s.finish().map(drop)
    });
    if report.error.is_none() && !args.no_verify {
        report.error = verify_file(written, &source, report.digest).err();
    }
    if report.error.is_none() {
        report.error = dump_source(m, &source).err();
    }
    if let (None, Some(temp)) = (&report.error, temp) {
        report.error = temp.persist().err();
    }
    report.print(m.json, session_json);
    match report.error {
        // The temporary file was removed (dropped); the target is untouched.
        Some(e) if !special => Err(format!("{e} ({} left as it was)", path.display())),
        Some(e) => Err(e),
        None => report.check_downtime(m.strict_downtime),
    }
}

/// Where `--output` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutputKind {
    /// A regular file (or none yet): through a temporary file, verified.
    Regular,
    /// A FIFO or a device, with --no-verify: written in place.
    Special,
    /// Standard output (`-`, or a path to the same file), with --no-verify: the
    /// table and JSON go to stderr instead.
    Stdout,
}

/// Checks `--output` against --no-verify and --streams.
fn output_kind(args: &Args, path: &Path) -> Result<OutputKind, String> {
    if let Some(n @ 2..) = args.migration.streams {
        return Err(format!(
            "--streams {n} with --output: a stream file holds one stream (leave --streams out)"
        ));
    }
    if path.as_os_str() == "-" || same_file_as_stdout(path) {
        if !args.no_verify {
            return Err(format!(
                "--output {}: standard output cannot be read back to verify the stream; add \
                 --no-verify to write it there (the table and JSON then go to stderr)",
                path.display()
            ));
        }
        return Ok(OutputKind::Stdout);
    }
    // A FIFO or a device cannot be read back, nor renamed over: only --no-verify
    // writes to one (in place).
    if std::fs::metadata(path).is_ok_and(|md| !md.is_file()) {
        if !args.no_verify {
            return Err(format!(
                "--output {}: not a regular file (a FIFO or a device), so the stream cannot \
                 be read back to verify it; add --no-verify to write it there unverified",
                path.display()
            ));
        }
        return Ok(OutputKind::Special);
    }
    Ok(OutputKind::Regular)
}

/// Whether `path` is the file standard output is.
fn same_file_as_stdout(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = std::fs::metadata(path) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes a `stat` into the pointer it is given, which points to a
    // properly sized and aligned, zeroed (valid) `stat`.
    let st = unsafe {
        if libc::fstat(1, st.as_mut_ptr()) != 0 {
            return false;
        }
        st.assume_init()
    };
    md.dev() == st.st_dev && md.ino() == st.st_ino
}

/// The stream to standard output: a new descriptor for it, and standard output
/// pointed at stderr so the table and JSON stay out of the stream.
fn stdout_sink() -> Result<FileSink, String> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let _ = std::io::stdout().flush();
    // SAFETY: dup returns a new descriptor this function owns (or -1); dup2 only
    // repoints descriptor 1, which Rust's stdout writes to, at stderr's file.
    let fd = unsafe { libc::dup(1) };
    if fd < 0 || unsafe { libc::dup2(2, 1) } < 0 {
        return Err(format!("--output -: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is the new descriptor dup returned, owned by nothing else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    Ok(FileSink::from_file(file, Path::new("standard output")))
}

/// `--dump-memory`: the source guest's memory as migrated, once the migration
/// succeeded.
fn dump_source(m: &MigrationArgs, source: &Source) -> Result<(), String> {
    match &m.dump_memory {
        Some(path) => migrate::dump(path, &migrate::guest_bytes(&source.guest)?),
        None => Ok(()),
    }
}

/// Reads the stream file back as `recv --input` would and checks it restores to the
/// source's digest.
fn verify_file(path: &Path, source: &Source, digest: Option<u128>) -> Result<(), String> {
    let what = format!("verifying {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| format!("{what}: {e}"))?;
    let limits = Limits {
        max_memory: source.layout.total_bytes(),
        expect: Some(source.layout),
    };
    let received = receive(&mut file, None, &limits).map_err(|e| format!("{what}: {e}"))?;
    if Some(received.digest) != digest {
        return Err(format!(
            "{what}: it restores to digest {:#034x}, not the source's",
            received.digest
        ));
    }
    Ok(())
}

fn print_intro(m: &MigrationArgs, source: &Source, to: &str) {
    if !m.json {
        println!(
            "precopy send: {} MiB guest, {} B pages, workload {}, {} writer(s), {to}",
            m.memory >> 20,
            m.page_size,
            source.workload,
            m.writers
        );
    }
    migrate::print_table_header(m.json);
}
