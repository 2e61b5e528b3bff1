//! The real `precopy` binary as a child process, for the CLI tests (`cli`, `cli_safe`,
//! `cli_tls`): its stdout lines arrive on a channel, every wait is bounded, and the
//! child is killed when dropped. Included with `#[path]`, not from `common/mod.rs`:
//! only test crates built with the binary may name `CARGO_BIN_EXE_precopy`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_precopy");
/// The longest any child may run (debug builds on a shared 2-core machine).
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// A child process whose stdout lines arrive on a channel; killed when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its stdout, a line at a time.
    pub lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    stdout_seen: Vec<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn precopy");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Proc {
            child,
            lines,
            stderr: Some(stderr),
            stdout_seen: Vec::new(),
        }
    }

    /// The next stdout line, within the timeout.
    pub fn line(&mut self) -> String {
        let line = self
            .lines
            .recv_timeout(TIMEOUT)
            .expect("a line from precopy in time");
        self.stdout_seen.push(line.clone());
        line
    }

    /// For `recv --listen 127.0.0.1:0 --json`: the address it listens on.
    pub fn listening_addr(&mut self) -> String {
        let line = self.line();
        let addr = line
            .strip_prefix("{\"kind\":\"listening\",\"addr\":\"")
            .and_then(|r| r.strip_suffix("\"}"))
            .unwrap_or_else(|| panic!("not a listening line: {line}"));
        addr.to_string()
    }

    /// Waits for the exit (killing the child after the timeout): status, all of
    /// stdout, all of stderr.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("precopy ran past {TIMEOUT:?} and was killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = std::mem::take(&mut self.stdout_seen);
        // The child has exited, so its stdout ends and the channel disconnects at once;
        // the timeout only bounds a pipe some grandchild holds open. Not a short one:
        // the reader thread may be slow to run on a loaded machine.
        while let Ok(line) = self.lines.recv_timeout(TIMEOUT) {
            out.push(line);
        }
        let err = self
            .stderr
            .take()
            .map_or_else(String::new, |t| t.join().unwrap());
        (status, out, err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `recv --listen 127.0.0.1:0 --json` plus `extra`; returns it and its address.
pub fn listening_recv(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["recv", "--listen", "127.0.0.1:0", "--json"];
    args.extend(extra);
    let mut recv = Proc::spawn(&args);
    let addr = recv.listening_addr();
    (recv, addr)
}

/// Runs `precopy args` to its end: status, stdout lines, stderr.
pub fn run(args: &[&str]) -> (ExitStatus, Vec<String>, String) {
    Proc::spawn(args).finish()
}

/// A small guest with writers dirtying a working set.
pub const GUEST: [&str; 4] = [
    "--memory",
    "16M",
    "--workload",
    "continuous:rate=20k,set=4M",
];

/// `precopy send` of the small test guest, with `args`.
pub fn send(args: &[&str]) -> (ExitStatus, Vec<String>, String) {
    let mut all = vec!["send"];
    all.extend(args);
    all.extend(GUEST);
    run(&all)
}

/// The failure contract: exit code 1, exactly one line on stderr, `precopy: ` then
/// a message containing `needle`, no panic.
#[track_caller]
pub fn assert_fails_with(status: ExitStatus, stderr: &str, needle: &str) {
    assert_eq!(status.code(), Some(1), "exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    assert!(stderr.starts_with("precopy: "), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
}
