//! `precopy kvm-demo --two-process`: the destination in another process. The source
//! starts `precopy kvm-recv` (hidden) as a child, which listens on loopback, receives
//! the migration into its own guest RAM, creates its own VM, restores the vCPU from the
//! stream's device-state frame, runs it and reports, in one JSON line, the counter's
//! continuity and the digest of the memory it received.

/// Options of `precopy kvm-recv` (hidden; `kvm-demo --two-process` starts it).
#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    /// Address to listen on (port 0: any free port; the bound address is the first
    /// line printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Guest memory size the source announces (bytes; K, M, G suffixes).
    #[arg(long, value_parser = crate::migrate::parse_size)]
    pub memory: u64,
    /// The working set the guest writes (bytes; K, M, G suffixes).
    #[arg(long, value_parser = crate::migrate::parse_size)]
    pub working_set: u64,
    /// Page writes per second the guest makes (pacing on the destination).
    #[arg(long)]
    pub rate: u64,
    /// Exit (status 2) when standard input closes: the parent that started this
    /// destination died, so nothing will connect or read the report.
    #[arg(long)]
    pub exit_with_parent: bool,
}

/// What the destination process reported.
#[derive(Debug, serde::Deserialize)]
#[cfg_attr(
    not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
pub struct Landed {
    /// The destination's process id.
    pub pid: u32,
    /// The device-state items received: (id, version, bytes).
    pub device_state: Vec<(u32, u16, usize)>,
    /// RIP of the vCPU state restored.
    pub rip: u64,
    /// The counter in the received memory: where the guest stopped.
    pub counter_at_pause: u64,
    /// VM creation, state restore and vCPU start, ms.
    pub restore_ms: f64,
    /// The counter after 200 ms on the destination.
    pub counter_after: u64,
    /// Page `(c + 1) mod set`'s value.
    pub next_page_value: u64,
    /// Whether the guest continued from where it stopped.
    pub counter_continued: bool,
    /// The digest of all received memory, read before the VM started (hex).
    pub memory_digest: String,
}

#[cfg(not(all(feature = "kvm", target_os = "linux", target_arch = "x86_64")))]
pub fn recv(_args: &RecvArgs) -> Result<(), String> {
    Err("kvm-recv needs a precopy built with --features kvm (Linux x86-64)".into())
}

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
pub use imp::{migrate, recv};

#[cfg(all(feature = "kvm", target_os = "linux", target_arch = "x86_64"))]
mod imp {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, ChildStdout, Command, Stdio};
    use std::time::{Duration, Instant};

    use precopy::kvm::{
        layout_for, receive_migration, resume_received, small_socket_buffers, KvmGuest,
    };
    use precopy::memory::digest_memory;
    use precopy::runtime::{
        migrate_streams, Limits, MigrationOptions, MigrationReport, Observer, RuntimeError,
        SourceLink,
    };

    use super::{Landed, RecvArgs};

    /// The destination process: listens, receives, resumes, reports one JSON line.
    pub fn recv(args: &RecvArgs) -> Result<(), String> {
        if args.exit_with_parent {
            // The parent holds our stdin open: its end closes when it dies (a
            // SIGINT or SIGKILL runs no destructor that would kill this process).
            std::thread::spawn(|| {
                let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                eprintln!("precopy kvm-recv: the source process is gone; exiting");
                std::process::exit(2);
            });
        }
        let kvm = kvm_ioctls::Kvm::new().map_err(|e| format!("/dev/kvm: {e}"))?;
        let layout = layout_for(args.memory).map_err(|e| format!("--memory: {e}"))?;
        let listener = TcpListener::bind(&args.listen)
            .map_err(|e| format!("listening on {}: {e}", args.listen))?;
        // Accepted sockets inherit it: the backlog stays out of the downtime.
        small_socket_buffers(&listener);
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("{{\"kind\":\"kvm_recv_listening\",\"addr\":\"{addr}\"}}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        let limits = Limits {
            max_memory: layout.total_bytes(),
            expect: Some(layout),
        };
        let (ram, applied) = receive_migration(&listener, &limits)?;
        // The memory as received, before its VM runs: the source compares this digest
        // with its own paused memory's.
        let digest = digest_memory(&*ram, &mut vec![0u8; 4096]).map_err(|e| e.to_string())?;
        let set_pages = args.working_set / 4096;
        let resumed = resume_received(&kvm, ram, &applied, (args.rate, set_pages))
            .map_err(|e| e.to_string())?;
        let device: Vec<String> = applied
            .device_state
            .iter()
            .map(|d| format!("[{},{},{}]", d.id, d.version, d.data.len()))
            .collect();
        let c = resumed.continuity;
        println!(
            "{{\"kind\":\"kvm_recv\",\"pid\":{},\"device_state\":[{}],\"rip\":{},\"counter_at_pause\":{},\"restore_ms\":{:.1},\"counter_after\":{},\"next_page_value\":{},\"counter_continued\":{},\"memory_digest\":\"{digest:#034x}\"}}",
            std::process::id(),
            device.join(","),
            resumed.state.regs.rip,
            resumed.counter_at_pause,
            resumed.restore_ns as f64 / 1e6,
            c.counter,
            c.next_page_value,
            c.continued,
        );
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        if !c.continued {
            return Err(format!("the counter did not continue: {c:?}"));
        }
        Ok(())
    }

    /// The child process, killed (by its id) and reaped if still running when dropped.
    struct Destination {
        child: Child,
        lines: BufReader<ChildStdout>,
    }

    impl Drop for Destination {
        fn drop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }

    impl Destination {
        /// The next line the child printed whose kind is `kind`.
        fn line(&mut self, kind: &str) -> Result<String, String> {
            let mut line = String::new();
            loop {
                line.clear();
                let n = self
                    .lines
                    .read_line(&mut line)
                    .map_err(|e| format!("reading the destination process: {e}"))?;
                if n == 0 {
                    let status = self.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "the destination process ended ({status}) before reporting {kind}"
                    ));
                }
                if line.contains(&format!("\"kind\":\"{kind}\"")) {
                    return Ok(line.trim().to_string());
                }
            }
        }
    }

    /// How [`migrate`] failed: the migration itself (the guest resumed at the
    /// source), or the destination process.
    pub struct Failed {
        /// Whether the migration failed (else it verified and the destination did not).
        pub migration: bool,
        /// What happened.
        pub error: String,
    }

    /// Migrates `source` to a `precopy kvm-recv` child over `streams` loopback
    /// connections; returns what the destination process reported and whether its
    /// memory digest equals the source's paused memory's.
    pub fn migrate(
        source: &KvmGuest,
        (memory, working_set, rate, streams): (u64, u64, u64, u8),
        options: &MigrationOptions,
        observer: &mut dyn Observer,
    ) -> Result<(Landed, bool), Failed> {
        let dest_err = |error: String| Failed {
            migration: false,
            error,
        };
        let exe = std::env::current_exe().map_err(|e| dest_err(format!("own path: {e}")))?;
        let mut child = Command::new(exe)
            .args(["kvm-recv", "--listen", "127.0.0.1:0"])
            .args(["--memory", &memory.to_string()])
            .args(["--working-set", &working_set.to_string()])
            .args(["--rate", &rate.to_string(), "--exit-with-parent"])
            .stdout(Stdio::piped())
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| dest_err(format!("starting the destination process: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| dest_err("no stdout".into()))?;
        let mut dest = Destination {
            child,
            lines: BufReader::new(stdout),
        };
        let listening = dest.line("kvm_recv_listening").map_err(dest_err)?;
        let addr = listening
            .split("\"addr\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or_else(|| dest_err(format!("no address in {listening}")))?
            .to_string();
        let mut links = Vec::new();
        for _ in 0..streams.max(1) {
            let s = TcpStream::connect(&addr)
                .map_err(|e| dest_err(format!("connecting to {addr}: {e}")))?;
            s.set_nodelay(true).map_err(|e| dest_err(e.to_string()))?;
            small_socket_buffers(&s);
            links.push(SourceLink::new(s, addr.clone()));
        }
        let result: Result<MigrationReport, RuntimeError> =
            migrate_streams(source, links, |l| l.finish(), options, observer);
        if let Err(e) = result {
            return Err(Failed {
                migration: true,
                error: e.to_string(),
            });
        }
        // The source stays paused: its memory is what the destination must hold.
        let digest = digest_memory(&**source.ram(), &mut vec![0u8; 4096])
            .map_err(|e| dest_err(format!("source digest: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let line = dest.line("kvm_recv").map_err(dest_err)?;
        let landed: Landed = serde_json::from_str(&line)
            .map_err(|e| dest_err(format!("the destination's report {line}: {e}")))?;
        let status = loop {
            match dest.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return Err(dest_err("the destination process did not exit".into())),
            }
        };
        if !status.success() && landed.counter_continued {
            return Err(dest_err(format!(
                "the destination process ended with {status}"
            )));
        }
        let equal = landed.memory_digest == format!("{digest:#034x}");
        Ok((landed, equal))
    }
}
