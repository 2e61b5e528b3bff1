//! The destination's listener: connections are accepted as fast as they come and each
//! one's header is read on its own short-lived thread within a header deadline, so a
//! slow, silent or junk connection holds nothing but itself. The first connection
//! whose header passes the [`Limits`] starts a migration; its other streams must
//! follow (same session, layout, features and stream count, each index once) within
//! the idle timeout. Until a migration has all its streams, every refusal (junk, a
//! header too slow, another session, a repeated index) is answered to that connection
//! alone and reported to the caller, and with [`ListenOptions::keep_listening`] the
//! listener goes on until its deadline.

use std::boxed::Box;
use std::format;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::string::{String, ToString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::dest::{IncomingStreams, Stream};
use super::session::{read_header, write_reply, Limits, Reply};
use super::RuntimeError;
use crate::wire::StreamHeader;

/// Makes a connection's secure channel (e.g. a TLS server session) over an accepted
/// TCP connection; run on the connection's own thread, within its header deadline.
pub type Wrap = Arc<dyn Fn(TcpStream) -> io::Result<Box<dyn ConnIo>> + Send + Sync>;

/// What [`Wrap`] returns: a connection's reads and writes.
pub trait ConnIo: Read + Write + Send {}
impl<T: Read + Write + Send> ConnIo for T {}

/// A connection whose every read and write is bounded by the idle timeout and by a
/// deadline: a peer can neither stall nor trickle past them.
pub(crate) struct Timed {
    pub(crate) io: Box<dyn ConnIo>,
    /// The TCP socket under `io` (a clone), for its timeouts and shutdown.
    pub(crate) tcp: TcpStream,
    pub(crate) idle: Duration,
    pub(crate) deadline: Option<Instant>,
    /// The read and write timeouts last set on `tcp` (a system call each: set only
    /// when the limit moved by more than [`SLACK`]).
    set: [Option<Duration>; 2],
}

/// How far a socket timeout may lag the limit before it is set again.
const SLACK: Duration = Duration::from_millis(100);

impl Timed {
    /// The time a read or write may take now.
    fn limit(&self) -> io::Result<Duration> {
        let Some(deadline) = self.deadline else {
            return Ok(self.idle);
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "the deadline passed"));
        }
        Ok(left.min(self.idle))
    }
}

impl Timed {
    /// Tells the peer why it is refused, within a second of its own (the deadline
    /// that ended it may have passed).
    pub(crate) fn refuse(&mut self, e: &RuntimeError) {
        self.idle = Duration::from_secs(1);
        self.deadline = Some(Instant::now() + self.idle);
        let _ = write_reply(self, &Reply::Refused(e.to_string()));
    }
}

impl Timed {
    /// A connection bounded by `idle` and `deadline`.
    pub(crate) fn new(
        io: Box<dyn ConnIo>,
        tcp: TcpStream,
        idle: Duration,
        deadline: Option<Instant>,
    ) -> Self {
        Timed {
            io,
            tcp,
            idle,
            deadline,
            set: [None, None],
        }
    }

    /// Sets the read (0) or write (1) timeout to the current limit if the one set
    /// is off by more than [`SLACK`].
    fn bound(&mut self, which: usize) -> io::Result<()> {
        let limit = self.limit()?;
        let stale = self.set[which].is_none_or(|set| set.abs_diff(limit) > SLACK);
        if stale {
            if which == 0 {
                self.tcp.set_read_timeout(Some(limit))?;
            } else {
                self.tcp.set_write_timeout(Some(limit))?;
            }
            self.set[which] = Some(limit);
        }
        Ok(())
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.bound(0)?;
        self.io.read(buf)
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bound(1)?;
        self.io.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}

/// How the destination listens.
#[derive(Clone)]
pub struct ListenOptions {
    /// The longest a connection may take to send its whole header (and finish its
    /// TLS handshake).
    pub header_timeout: Duration,
    /// The longest the destination waits for a peer's next bytes, and for a
    /// migration's further streams.
    pub idle_timeout: Duration,
    /// When the destination gives up on the whole migration, listening included.
    pub deadline: Option<Instant>,
    /// Go on listening after a refusal (a stray or junk connection, a refused
    /// migration) until the deadline, instead of returning the refusal.
    pub keep_listening: bool,
    /// Secure channel over each connection (TLS); `None`: plain TCP.
    pub wrap: Option<Wrap>,
}

impl core::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ListenOptions")
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("deadline", &self.deadline)
            .field("keep_listening", &self.keep_listening)
            .field("tls", &self.wrap.is_some())
            .finish()
    }
}

impl ListenOptions {
    /// Plain TCP, `timeout` for headers and idle peers, no deadline, the first
    /// refusal returned.
    pub fn new(timeout: Duration) -> Self {
        ListenOptions {
            header_timeout: timeout,
            idle_timeout: timeout,
            deadline: None,
            keep_listening: false,
            wrap: None,
        }
    }
}

/// Most connections whose header is being read at once; more are closed at once.
const MAX_PENDING: usize = 1024;

/// A connection's first steps: (TLS and) the header, or why not.
type Opened = (
    SocketAddr,
    Result<(Timed, StreamHeader, Vec<u8>), RuntimeError>,
);

/// Opens an accepted connection on its own thread: the secure channel, then the
/// header, within the header deadline. A connection whose header cannot be read is
/// told why here.
fn open(
    conn: TcpStream,
    options: &ListenOptions,
) -> Result<(Timed, StreamHeader, Vec<u8>), RuntimeError> {
    let setup = |e| RuntimeError::io("setting up the connection", e);
    conn.set_nodelay(true).map_err(setup)?;
    let tcp = conn.try_clone().map_err(setup)?;
    let io: Box<dyn ConnIo> = match &options.wrap {
        Some(wrap) => wrap(conn).map_err(|e| RuntimeError::io("starting TLS", e))?,
        None => Box::new(conn),
    };
    let header_deadline = Instant::now() + options.header_timeout;
    let deadline = options
        .deadline
        .map_or(header_deadline, |d| d.min(header_deadline));
    let mut timed = Timed::new(io, tcp, options.header_timeout, Some(deadline));
    match read_header(&mut timed) {
        Ok((header, bytes)) => {
            timed.idle = options.idle_timeout;
            timed.deadline = options.deadline;
            Ok((timed, header, bytes))
        }
        Err(e) => {
            timed.refuse(&e);
            Err(e)
        }
    }
}

/// Listens on `listener` (and takes `first`, already accepted, if given) until a
/// migration has all its streams: see the module docs. `refused` hears of every
/// connection refused on the way (its peer and why). Errors when the deadline
/// passes, or at the first refusal unless `keep_listening`.
pub fn listen_streams(
    listener: &TcpListener,
    first: Option<(TcpStream, SocketAddr)>,
    limits: &Limits,
    options: &ListenOptions,
    refused: &mut dyn FnMut(&str, &RuntimeError),
) -> Result<IncomingStreams, RuntimeError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| RuntimeError::io("listening", e))?;
    let result = (|| {
        let (tx, rx) = mpsc::channel::<Opened>();
        // Header readers are detached: one still reading when the migration starts
        // ends by its own header deadline, its connection closed unanswered.
        let pending = Arc::new(AtomicUsize::new(0));
        let spawn = |conn: TcpStream, addr: SocketAddr| {
            let _ = conn.set_nonblocking(false);
            if pending.load(Ordering::Relaxed) >= MAX_PENDING {
                return; // dropped: closed at once
            }
            pending.fetch_add(1, Ordering::Relaxed);
            let (tx, count, options) = (tx.clone(), pending.clone(), options.clone());
            let spawned = std::thread::Builder::new()
                .name("precopy-accept".into())
                .spawn(move || {
                    let _ = tx.send((addr, open(conn, &options)));
                    count.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                pending.fetch_sub(1, Ordering::Relaxed);
            }
        };
        if let Some((conn, addr)) = first {
            spawn(conn, addr);
        }
        let mut gathering: Option<Gathering> = None;
        loop {
            // Accept everything waiting.
            loop {
                match listener.accept() {
                    Ok((conn, addr)) => spawn(conn, addr),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // A connection that went away before it was accepted, or a
                    // shortage of descriptors: not the listener's end.
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if options.deadline.is_some_and(|d| now >= d) {
                let e = RuntimeError::io(
                    "waiting for a migration",
                    io::Error::new(ErrorKind::TimedOut, "the deadline passed"),
                );
                if let Some(g) = gathering.take() {
                    g.refuse(&e);
                }
                return Err(e);
            }
            if let Some(g) = &gathering {
                if now >= g.wait_until {
                    let missing = g.streams.iter().position(Option::is_none).unwrap_or(0);
                    let e = RuntimeError::io(
                        format!(
                            "waiting for stream {missing} of {} of the migration",
                            g.streams.len()
                        ),
                        io::Error::new(
                            ErrorKind::TimedOut,
                            "timed out: the source did not open it",
                        ),
                    );
                    let peer = g.peer.clone();
                    if let Some(g) = gathering.take() {
                        g.refuse(&e);
                    }
                    refused(&peer, &e);
                    if !options.keep_listening {
                        return Err(e);
                    }
                }
            }
            let (addr, opened) = match rx.recv_timeout(Duration::from_millis(2)) {
                Ok(o) => o,
                Err(_) => continue,
            };
            let peer = addr.to_string();
            let (mut conn, header, header_bytes) = match opened {
                Ok(o) => o,
                Err(e) => {
                    log::warn!("refused {peer}: {e}");
                    refused(&peer, &e);
                    if !options.keep_listening && gathering.is_none() {
                        return Err(e);
                    }
                    continue;
                }
            };
            let stream = |conn| Stream {
                conn,
                peer: peer.clone(),
                header_bytes,
            };
            match &mut gathering {
                None => {
                    if let Err(e) = limits.check(&header) {
                        conn.refuse(&e);
                        refused(&peer, &e);
                        if !options.keep_listening {
                            return Err(e);
                        }
                        continue;
                    }
                    let count = usize::from(header.stream.count());
                    let mut streams: Vec<Option<Stream>> = (0..count).map(|_| None).collect();
                    streams[usize::from(header.stream.index())] = Some(stream(conn));
                    gathering = Some(Gathering {
                        header,
                        streams,
                        peer: peer.clone(),
                        wait_until: Instant::now() + options.idle_timeout,
                    });
                }
                Some(g) => {
                    if let Err(problem) = g.fits(&header) {
                        let e = RuntimeError::Peer(format!(
                            "{peer} connected as stream {} of the migration, but {problem}",
                            header.stream.index()
                        ));
                        conn.refuse(&e);
                        refused(&peer, &e);
                        continue;
                    }
                    g.streams[usize::from(header.stream.index())] = Some(stream(conn));
                    g.wait_until = Instant::now() + options.idle_timeout;
                }
            }
            if let Some(g) = gathering.take() {
                if g.streams.iter().all(Option::is_some) {
                    return Ok(IncomingStreams::new(
                        g.header,
                        g.streams.into_iter().flatten().collect(),
                    ));
                }
                gathering = Some(g);
            }
        }
    })();
    let _ = listener.set_nonblocking(false);
    result
}

/// A migration whose streams are arriving.
struct Gathering {
    header: StreamHeader,
    /// By stream index.
    streams: Vec<Option<Stream>>,
    /// The first stream's peer.
    peer: String,
    /// When the next stream must have arrived.
    wait_until: Instant,
}

impl Gathering {
    /// Whether a further stream's header belongs to this migration.
    fn fits(&self, header: &StreamHeader) -> Result<(), String> {
        let first = &self.header;
        let index = usize::from(header.stream.index());
        if header.session_id != first.session_id {
            Err(
                "it belongs to another migration (session id differs), while one is in progress"
                    .to_string(),
            )
        } else if header.layout != first.layout || header.features != first.features {
            Err("its guest layout or features differ from the first stream's".to_string())
        } else if header.stream.count() != first.stream.count() {
            Err(format!(
                "it says the migration has {} streams, the first stream said {}",
                header.stream.count(),
                first.stream.count()
            ))
        } else if self.streams.get(index).is_some_and(Option::is_some) {
            Err(format!("stream {index} already arrived"))
        } else {
            Ok(())
        }
    }

    /// Tells every stream that arrived why the migration is refused.
    fn refuse(self, e: &RuntimeError) {
        for mut s in self.streams.into_iter().flatten() {
            s.conn.refuse(e);
        }
    }
}
