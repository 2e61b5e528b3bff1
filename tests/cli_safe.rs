//! The reproducers of issue 16 through the real binary: a destination no stranger can
//! crash or hold, a verdict bound to the stream, snapshots never destroyed, and no
//! panic or hang on any option. Every child is bounded in time and killed on timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/cli_proc.rs"]
mod cli_proc;
use cli_proc::{assert_fails_with, listening_recv, run, send, Proc, BIN, GUEST, TIMEOUT};

/// Clap's refusal of an option: exit code 2, the option named, no panic.
#[track_caller]
fn assert_option_refused(args: &[&str], needle: &str) {
    let (status, _, err) = run(args);
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(
        matches!(status.code(), Some(1 | 2)),
        "{args:?}: {status:?} {err}"
    );
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("precopy-safe-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A stream header for a flat guest of `bytes` (stream `index` of `count`).
fn header(bytes: u64, index: u8, count: u8) -> Vec<u8> {
    use precopy::wire::{Features, StreamHeader};
    let header = StreamHeader {
        features: Features::ALL,
        session_id: [7; 16],
        layout: precopy::layout::GuestLayout::flat(4096, bytes).unwrap(),
        stream: precopy::layout::Shard::new(index, count).unwrap(),
    };
    let mut out = vec![0u8; header.encoded_len()];
    header.emit(&mut out).unwrap();
    out
}

/// Sends `bytes`, half-closes, returns the reply.
fn fake_source(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = c.write_all(bytes);
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    reply
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Issue 16, 1: a 60-byte header declaring a guest larger than this host is refused
/// before anything is allocated, over TCP (the destination listens on) and from a
/// file; a --max-memory the host cannot hold is refused at start.
#[test]
fn a_guest_larger_than_the_host_is_refused_never_an_abort() {
    let huge = header(1 << 40, 0, 1);
    assert_eq!(huge.len(), 60);
    let (recv, addr) = listening_recv(&["--deadline", "3"]);
    let reply = fake_source(&addr, &huge);
    assert_eq!(reply.first(), Some(&0), "refused: {reply:?}");
    let reason = String::from_utf8_lossy(&reply[3..]).into_owned();
    assert!(
        reason.contains("larger than this destination's limit"),
        "{reason}"
    );
    let (status, out, err) = recv.finish();
    assert!(
        out.iter().any(|l| l.contains("\"kind\":\"refused\"")),
        "{out:?}"
    );
    assert_fails_with(status, &err, "the deadline passed");
    assert!(!err.contains("memory allocation"), "{err}");

    let dir = scratch("huge");
    let path = dir.join("huge.precopy");
    std::fs::write(&path, &huge).unwrap();
    let (status, _, err) = run(&["recv", "--input", path.to_str().unwrap()]);
    assert_fails_with(status, &err, "larger than this destination's limit");
    let (status, _, err) = run(&[
        "recv",
        "--input",
        path.to_str().unwrap(),
        "--max-memory",
        "64T",
    ]);
    assert_fails_with(status, &err, "--max-memory 64 TiB: this host has");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 16, 3: a port scan, an HTTP health check and a junk client before the real
/// source are refused and the destination takes the real source afterwards; a header
/// trickled one byte at a time is cut off by the header deadline.
#[test]
fn stray_connections_are_refused_and_the_destination_listens_on() {
    let (recv, addr) = listening_recv(&["--header-timeout", "2"]);
    drop(TcpStream::connect(&addr).unwrap()); // a port scan
    let reply = fake_source(&addr, b"GET /health HTTP/1.1\r\n\r\n");
    assert!(
        String::from_utf8_lossy(&reply).contains("an HTTP request"),
        "{reply:?}"
    );
    // A valid header at a byte every 300 ms: 60 bytes would take 18 s.
    let start = Instant::now();
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(TIMEOUT)).unwrap();
    let bytes = header(16 << 20, 0, 1);
    let mut reply = Vec::new();
    for b in &bytes {
        if slow.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let _ = slow.read_to_end(&mut reply);
    assert!(start.elapsed() < Duration::from_secs(15));
    assert!(
        String::from_utf8_lossy(&reply).contains("timed out"),
        "{reply:?}"
    );
    // The real source still gets through.
    let (status, _, err) = send(&["--connect", &addr, "--json"]);
    assert!(status.success(), "send: {err}");
    let (status, out, err) = recv.finish();
    assert!(status.success(), "recv: {err}");
    assert!(
        out.iter().any(|l| l.contains("\"verified\":true")),
        "{out:?}"
    );
    assert!(
        out.iter()
            .filter(|l| l.contains("\"kind\":\"refused\""))
            .count()
            >= 2,
        "{out:?}"
    );
}

/// A destination that answers a stream with `verdict` right after accepting its
/// header, reading (and dropping) whatever the source sends.
fn lying_destination(verdict: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut head = [0u8; 12];
        c.read_exact(&mut head).unwrap();
        let len = usize::from(u16::from_le_bytes([head[10], head[11]]));
        let mut rest = vec![0u8; len - 12];
        c.read_exact(&mut rest).unwrap();
        c.write_all(&[1, 0, 0]).unwrap();
        c.write_all(&verdict).unwrap();
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    });
    addr
}

/// Issue 16, 4: "verified" from a destination that did not receive the stream is
/// not a verdict: the old bare answer and one naming another digest both fail.
#[test]
fn a_verdict_not_bound_to_the_stream_fails_the_migration() {
    let addr = lying_destination(vec![1, 0, 0]);
    let (status, out, err) = send(&["--connect", &addr, "--streams", "1", "--json"]);
    assert_fails_with(status, &err, "without naming the session and digest");
    assert!(
        out.iter().any(|l| l.contains("\"verified\":false")),
        "{out:?}"
    );
    let mut forged = vec![2, 32, 0];
    forged.extend([0u8; 32]);
    let addr = lying_destination(forged);
    let (status, _, err) = send(&["--connect", &addr, "--streams", "1", "--json"]);
    assert_fails_with(status, &err, "answered \"verified\" for another stream");
}

/// Issue 16, 5: a destination that accepted the connection but never answers is
/// given up on within the timeout, in words.
#[test]
fn a_stopped_destination_times_out_in_time() {
    // Connections queue in the backlog; nothing is ever read or answered.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let start = Instant::now();
    let (status, _, err) = send(&["--connect", &addr, "--timeout", "2"]);
    let took = start.elapsed();
    assert_fails_with(status, &err, "timed out");
    assert!(!err.contains("os error 11"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    drop(listener);
}

/// Issue 16, 2: a failed migration to --output leaves an existing snapshot as it was
/// and no temporary file; a successful one replaces it; SIGTERM mid-run removes the
/// temporary file.
#[test]
fn send_output_never_destroys_the_previous_snapshot() {
    let dir = scratch("output");
    let target = dir.join("guest.precopy");
    std::fs::write(&target, b"the previous snapshot").unwrap();
    let t = target.to_str().unwrap();
    // A lost write fails the source's check after the stream was written.
    let (status, _, err) = send(&["--output", t, "--inject-lost-write"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("left as it was"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"the previous snapshot");
    assert_eq!(files_in(&dir), ["guest.precopy"]);
    // A signal mid-run: the temporary file goes, the target stays.
    let mut args = vec!["send", "--output", t, "--max-bandwidth", "1M"];
    args.extend(GUEST);
    let p = Proc::spawn(&args);
    let start = Instant::now();
    while files_in(&dir).len() < 2 && start.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(files_in(&dir).len(), 2, "the temporary file appears");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGTERM) };
    let (status, _, _) = p.finish();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert_eq!(files_in(&dir), ["guest.precopy"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"the previous snapshot");
    // Success replaces it with a stream that restores.
    let (status, _, err) = send(&["--output", t]);
    assert!(status.success(), "{err}");
    assert_eq!(files_in(&dir), ["guest.precopy"]);
    let (status, _, err) = run(&["recv", "--input", t]);
    assert!(status.success(), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 16, 8 and 3: a FIFO or device cannot be read back, so it is refused at once
/// with the way out; with --no-verify a FIFO is written in place.
#[test]
fn output_that_cannot_be_read_back_is_refused_with_the_way_out() {
    let dir = scratch("fifo");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for path in [fifo.to_str().unwrap(), "/dev/null"] {
        let (status, _, err) = send(&["--output", path]);
        assert_fails_with(status, &err, "add --no-verify");
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap().len())
    };
    let (status, _, err) = send(&["--output", fifo.to_str().unwrap(), "--no-verify"]);
    assert!(status.success(), "{err}");
    assert!(reader.join().unwrap() > 60);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 16, 7: a reader that goes away (`| head`) ends the program quietly, by the
/// broken pipe, leaving no stream file behind.
#[test]
fn a_broken_pipe_ends_quietly_and_leaves_no_file() {
    let dir = scratch("pipe");
    let target = dir.join("guest.precopy");
    let mut child = Command::new(BIN)
        .args(["send", "--output", target.to_str().unwrap()])
        .args(GUEST)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before the first line
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?} {err}");
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 16, 7, 8 and 11: options are checked before anything is allocated, created
/// or calibrated, named with their range; none panics or hangs.
#[test]
fn every_option_is_checked_first_and_named() {
    let dir = scratch("options");
    let out = dir.join("x");
    let out = out.to_str().unwrap();
    let cases: [(&[&str], &str); 18] = [
        (
            &["send", "--output", out, "--page-size", "2"],
            "--page-size",
        ),
        (
            &["send", "--output", out, "--page-size", "2M"],
            "4096-byte pages",
        ),
        (&["demo", "--memory", "17179869183G"], "this host has"),
        (&["demo", "--memory", "16383T"], "this host has"),
        (
            &[
                "recv",
                "--listen",
                "127.0.0.1:0",
                "--timeout",
                "18446744073709551615",
            ],
            "--timeout",
        ),
        (&["demo", "--downtime-ms", "0"], "--downtime-ms"),
        (
            &["demo", "--downtime-ms", "5"],
            "--downtime-ms 5 leaves no time",
        ),
        (&["demo", "--writers", "0"], "1 to 1024"),
        (&["demo", "--writers", "100000"], "1 to 1024"),
        (
            &["demo", "--workload", "continuous:rate=18446744073709551615"],
            "at most",
        ),
        (&["demo", "--workload", "continuous:rate=200m"], "at most"),
        (
            &["demo", "--workload", "continuous:rate=1k,rate=2k"],
            "more than once",
        ),
        (&["demo", "--max-bandwidth", "1"], "--max-bandwidth"),
        (
            &["demo", "--max-bandwidth", "64K", "--memory", "1G"],
            "hours",
        ),
        (
            &["bench", "bitmap", "--guest-gib", "1048576"],
            "--guest-gib",
        ),
        (
            &["send", "--connect", "127.0.0.1:1", "--timeout", "0"],
            "--timeout",
        ),
        (
            &["recv", "--input", "/nonexistent", "--page-size", "3000"],
            "--page-size",
        ),
        (&["demo", "--max-rounds", "0"], "--max-rounds"),
    ];
    for (args, needle) in cases {
        assert_option_refused(args, needle);
    }
    // Nothing was created for the refused --output.
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 16, 10: the downtime is compared with the limit in the JSON summary, and
/// --strict-downtime makes a downtime over the limit a failure.
#[test]
fn downtime_over_the_limit_is_reported_and_strict_fails() {
    let demo = |extra: &[&str]| {
        let mut args = vec![
            "demo",
            "--memory",
            "64M",
            "--workload",
            "continuous:rate=2m,set=64M",
            "--writers",
            "4",
            "--max-rounds",
            "1",
            "--force-switchover",
            "--downtime-ms",
            "11",
            "--json",
        ];
        args.extend(extra);
        run(&args)
    };
    let (status, out, err) = demo(&[]);
    let summary = out
        .iter()
        .find(|l| l.contains("\"kind\":\"summary\""))
        .unwrap_or_else(|| panic!("no summary: {out:?} {err}"));
    let over = summary.contains("\"downtime_over_limit\":true");
    assert!(
        over || summary.contains("\"downtime_over_limit\":false"),
        "{summary}"
    );
    if !over {
        eprintln!("SKIP: the downtime stayed within 11 ms on this run: {summary}");
        return;
    }
    assert!(status.success(), "not strict: {err}");
    let (status, out, err) = demo(&["--strict-downtime"]);
    let summary = out
        .iter()
        .find(|l| l.contains("\"kind\":\"summary\""))
        .unwrap();
    if summary.contains("\"downtime_over_limit\":true") {
        assert_fails_with(status, &err, "--strict-downtime");
    }
}

/// Issue 16, 6: all 255 streams connect before any header is read, and migrate.
#[test]
fn all_255_streams_migrate() {
    let (recv, addr) = listening_recv(&[]);
    let (status, _, err) = send(&["--connect", &addr, "--streams", "255"]);
    assert!(status.success(), "send: {err}");
    let (status, out, err) = recv.finish();
    assert!(status.success(), "recv: {err}");
    let summary = out
        .iter()
        .find(|l| l.contains("\"kind\":\"summary\""))
        .unwrap();
    assert!(summary.contains("\"streams\":255"), "{summary}");
}

/// The `sh` block of README.md's "## Two processes" section.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Two processes")
        .nth(1)
        .expect("the section");
    let block = section.split("```sh\n").nth(1).expect("an sh block");
    let block = block.split("```").next().unwrap();
    block
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Issue 16, 9: the README's two-process example runs as written (the destination
/// host and port replaced by the test's): certificates, recv, send, both verified.
#[test]
fn the_readme_two_process_example_runs_as_written() {
    let commands = readme_commands();
    assert_eq!(commands.len(), 3, "{commands:?}");
    let dir = scratch("readme");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let words = |line: &str| -> Vec<String> {
        line.split_whitespace()
            .skip(1) // "precopy"
            .map(|w| {
                w.replace("dest-host:7000", &format!("localhost:{port}"))
                    .replace("0.0.0.0:7000", &format!("0.0.0.0:{port}"))
                    .replace("dest-host", "localhost")
            })
            .collect()
    };
    let spawn = |line: &str| {
        let args = words(line);
        assert!(line.starts_with("precopy "), "{line}");
        Command::new(BIN)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let certs = spawn(&commands[0]).wait_with_output().unwrap();
    assert!(
        certs.status.success(),
        "{}",
        String::from_utf8_lossy(&certs.stderr)
    );
    let mut recv = spawn(&commands[1]);
    let mut first = String::new();
    BufReader::new(recv.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("listening"), "{first}");
    let send = spawn(&commands[2]).wait_with_output().unwrap();
    let send_err = String::from_utf8_lossy(&send.stderr);
    assert!(send.status.success(), "send: {send_err}");
    assert!(String::from_utf8_lossy(&send.stdout).contains("verified: yes"));
    let recv = recv.wait_with_output().unwrap();
    assert!(
        recv.status.success(),
        "recv: {}",
        String::from_utf8_lossy(&recv.stderr)
    );
    assert!(String::from_utf8_lossy(&recv.stdout).contains("verified: yes"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// Issue 16, build 3: the stream goes to standard output only with --no-verify, and
/// then the table and JSON go to stderr, so the bytes on stdout restore.
#[test]
fn the_stream_goes_to_stdout_with_the_report_on_stderr() {
    let (status, _, err) = send(&["--output", "-"]);
    assert_fails_with(status, &err, "add --no-verify");
    let mut args = vec!["send", "--output", "-", "--no-verify", "--json"];
    args.extend(GUEST);
    let out = Command::new(BIN).args(&args).output().unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(out.stdout.starts_with(b"PRECOPY\0"), "the stream on stdout");
    assert!(
        report.contains("\"kind\":\"summary\",\"verified\":true"),
        "{report}"
    );
    let dir = scratch("stdout");
    let path = dir.join("from-stdout.precopy");
    std::fs::write(&path, &out.stdout).unwrap();
    let (status, _, err) = run(&["recv", "--input", path.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
