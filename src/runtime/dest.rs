//! The destination of a migration over TCP, with one or more streams: the first
//! connection's header says how many streams the migration has; the others must
//! follow with the same session id and layout and the remaining stream indices. Each
//! stream is applied on its own thread onto its view of one guest memory (the caller's,
//! [`IncomingStreams::apply_into`], or a fresh one, [`receive_streams`]); the migration
//! is verified only when every stream's digest matched.

use std::format;
use std::io::ErrorKind;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::string::{String, ToString};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use std::vec::Vec;

use super::session::{apply_from, check_memory, read_header, write_reply, Limits, Reply};
use super::RuntimeError;
use crate::engine::{Applier, ApplyStats};
use crate::memory::{FreshMemory, PageMemory, VecMemory};
use crate::wire::StreamHeader;

/// A migration the destination received and verified on every stream.
#[derive(Debug)]
pub struct ReceivedStreams {
    /// The first stream's header (session id, layout, stream count).
    pub header: StreamHeader,
    /// The guest memory, equal to the source's at switchover.
    pub memory: VecMemory,
    /// What was applied, all streams.
    pub stats: ApplyStats,
    /// Stream bytes received, all streams.
    pub stream_bytes: u64,
    /// Each stream's verified digest, in stream order.
    pub digests: Vec<u128>,
}

/// A multi-stream migration applied into the caller's memory and verified on every
/// stream ([`IncomingStreams::apply_into`]).
#[derive(Clone, Debug)]
pub struct AppliedStreams {
    /// The first stream's header (session id, layout, stream count).
    pub header: StreamHeader,
    /// What was applied, all streams.
    pub stats: ApplyStats,
    /// Stream bytes received, all streams.
    pub stream_bytes: u64,
    /// Each stream's verified digest, in stream order.
    pub digests: Vec<u128>,
}

/// One stream's connection, its header and the header's bytes.
struct Stream {
    conn: TcpStream,
    peer: String,
    header_bytes: Vec<u8>,
}

/// A multi-stream migration whose every stream connected with a header that was
/// checked (against the destination's [`Limits`], and the first stream's session,
/// layout and stream count); nothing answered yet and no guest memory taken. Made by
/// [`accept_streams`]; the destination now finds memory for
/// [`header`](Self::header)'s layout and calls [`apply_into`](Self::apply_into) with
/// one view of it per stream, or [`refuse`](Self::refuse)s.
pub struct IncomingStreams {
    header: StreamHeader,
    /// In stream order.
    streams: Vec<Stream>,
}

impl core::fmt::Debug for IncomingStreams {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IncomingStreams")
            .field("header", &self.header)
            .field(
                "peers",
                &self.streams.iter().map(|s| &s.peer).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Takes a migration whose first connection is `first` (from `peer`): reads its
/// header, checks it against `limits`, and accepts the migration's other streams on
/// `listener` (waiting at most `timeout` for each). Every connection gets `timeout` as
/// its read and write timeout. A refusal is sent to every connection with the error's
/// text; acceptance waits for [`IncomingStreams::apply_into`].
pub fn accept_streams(
    listener: &TcpListener,
    first: TcpStream,
    peer: &str,
    limits: &Limits,
    timeout: Duration,
) -> Result<IncomingStreams, RuntimeError> {
    let (header, header_bytes) = match read_header_from(&first, timeout) {
        Ok(h) => h,
        Err(e) => return Err(refuse(&first, e)),
    };
    if let Err(e) = limits.check(&header) {
        return Err(refuse(&first, e));
    }
    let count = usize::from(header.stream.count());
    let mut streams: Vec<Option<Stream>> = (0..count).map(|_| None).collect();
    streams[usize::from(header.stream.index())] = Some(Stream {
        conn: first,
        peer: peer.to_string(),
        header_bytes,
    });
    if let Err(e) = accept_rest(listener, &header, &mut streams, timeout) {
        for s in streams.iter().flatten() {
            let _ = write_reply(&mut &s.conn, &Reply::Refused(e.to_string()));
        }
        return Err(e);
    }
    Ok(IncomingStreams {
        header,
        streams: streams.into_iter().flatten().collect(),
    })
}

impl IncomingStreams {
    /// The first stream's validated header: the guest layout the memory must have,
    /// and the stream count (the views [`apply_into`](Self::apply_into) needs).
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// Tells every stream's source why this destination does not take the migration.
    pub fn refuse(self, reason: &RuntimeError) {
        for s in &self.streams {
            let _ = write_reply(&mut &s.conn, &Reply::Refused(reason.to_string()));
        }
    }

    /// Applies every stream on its own thread into its view of the destination's
    /// memory and verifies every stream's digest: `views[i]` takes stream `i` (e.g.
    /// [`FreshMemory::views`], copies of a `&`[`VmMemory`](crate::memory::VmMemory) or
    /// of a `&AtomicMemory`); each must have the header's page size and page count,
    /// and there must be one per stream, else every source is refused. The memory is
    /// written only through the views. The first failure of any stream ends all of
    /// them; on error the memory holds a partial migration.
    pub fn apply_into<M: PageMemory + Send>(
        self,
        views: Vec<M>,
    ) -> Result<AppliedStreams, RuntimeError> {
        let streams = self.streams;
        let header = self.header;
        let refuse_all = |e: RuntimeError| {
            for s in &streams {
                let _ = write_reply(&mut &s.conn, &Reply::Refused(e.to_string()));
            }
            e
        };
        if views.len() != streams.len() {
            return Err(refuse_all(RuntimeError::WrongViewCount {
                views: views.len(),
                streams: header.stream.count(),
            }));
        }
        if let Some(e) = views.iter().find_map(|v| check_memory(&header, v).err()) {
            return Err(refuse_all(e));
        }
        for s in &streams {
            write_reply(&mut &s.conn, &Reply::Ok)
                .map_err(|e| RuntimeError::io(format!("answering the source {}", s.peer), e))?;
        }
        let first_error: Mutex<Option<String>> = Mutex::new(None);
        let results: Vec<Result<(ApplyStats, u64, u128), RuntimeError>> = std::thread::scope(|s| {
            let handles: Vec<_> = streams
                .iter()
                .zip(views)
                .enumerate()
                .map(|(i, (stream, view))| {
                    let (streams, first_error) = (&streams, &first_error);
                    let name = format!("precopy-recv{i}");
                    std::thread::Builder::new()
                        .name(name)
                        .spawn_scoped(s, move || {
                            let mut applier = Applier::with_memory(view);
                            let result = apply_from(
                                &mut &stream.conn,
                                &mut applier,
                                &stream.header_bytes,
                                true,
                            )
                            .map(|(bytes, digest)| (applier.stats(), bytes, digest));
                            if let Err(e) = &result {
                                fail_all(streams, first_error, e);
                            }
                            result
                        })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| match h {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        Err(RuntimeError::ThreadPanicked {
                            thread: format!("the thread receiving stream {i}"),
                        })
                    }),
                    Err(e) => Err(RuntimeError::io("starting a stream's thread", e)),
                })
                .collect()
        });
        if let Some(reason) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            // The first error, not the echo of it on the streams shut down after it.
            let e = results
                .into_iter()
                .find_map(|r| r.err().filter(|e| e.to_string() == reason));
            return Err(e.unwrap_or(RuntimeError::Peer(reason)));
        }
        let mut applied = AppliedStreams {
            header,
            stats: ApplyStats::default(),
            stream_bytes: 0,
            digests: Vec::with_capacity(streams.len()),
        };
        for r in results {
            let (stats, bytes, digest) = r?;
            applied.stats.add(&stats);
            applied.stream_bytes += bytes;
            applied.digests.push(digest);
        }
        for s in &streams {
            write_reply(&mut &s.conn, &Reply::Ok).map_err(|e| {
                RuntimeError::io(
                    format!("telling the source {} the memory is verified", s.peer),
                    e,
                )
            })?;
        }
        Ok(applied)
    }
}

/// The destination of a multi-stream migration into fresh memory: [`accept_streams`],
/// then a [`FreshMemory`] allocated for the validated layout (never for an unchecked
/// one), applied into through one view per stream ([`IncomingStreams::apply_into`]).
pub fn receive_streams(
    listener: &TcpListener,
    first: TcpStream,
    peer: &str,
    limits: &Limits,
    timeout: Duration,
) -> Result<ReceivedStreams, RuntimeError> {
    let incoming = accept_streams(listener, first, peer, limits, timeout)?;
    let header = *incoming.header();
    let mut memory = match FreshMemory::new(header.page_size(), header.layout.total_pages()) {
        Ok(m) => m,
        Err(e) => {
            let e = RuntimeError::Memory(e);
            incoming.refuse(&e);
            return Err(e);
        }
    };
    // Fresh memory: the views know every page is zero until they write it, so a
    // guest's zero memory is never faulted in, not even to be checked or hashed.
    let applied = incoming.apply_into(memory.views(header.stream.count()))?;
    Ok(ReceivedStreams {
        header: applied.header,
        memory: memory.into_memory(),
        stats: applied.stats,
        stream_bytes: applied.stream_bytes,
        digests: applied.digests,
    })
}

/// The first failure of any stream: every source connection is told why (a source
/// stream that fails to send reads the reason) and shut down, which ends the other
/// streams' reads.
fn fail_all(streams: &[Stream], first_error: &Mutex<Option<String>>, e: &RuntimeError) {
    let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
    if first.is_some() {
        return;
    }
    *first = Some(e.to_string());
    for s in streams {
        let _ = write_reply(&mut &s.conn, &Reply::Refused(e.to_string()));
        let _ = s.conn.shutdown(Shutdown::Both);
    }
}

/// Tells the source on `conn` why it is refused; returns the error.
fn refuse(conn: &TcpStream, e: RuntimeError) -> RuntimeError {
    let _ = write_reply(&mut &*conn, &Reply::Refused(e.to_string()));
    e
}

fn read_header_from(
    conn: &TcpStream,
    timeout: Duration,
) -> Result<(StreamHeader, Vec<u8>), RuntimeError> {
    let setup = |e| RuntimeError::io("setting up the connection", e);
    conn.set_read_timeout(Some(timeout)).map_err(setup)?;
    conn.set_write_timeout(Some(timeout)).map_err(setup)?;
    read_header(&mut &*conn)
}

/// Accepts the migration's other streams: same session, layout and stream count, each
/// index once.
fn accept_rest(
    listener: &TcpListener,
    first: &StreamHeader,
    streams: &mut [Option<Stream>],
    timeout: Duration,
) -> Result<(), RuntimeError> {
    while let Some(missing) = streams.iter().position(Option::is_none) {
        let (conn, addr) = accept_within(listener, timeout).map_err(|e| {
            RuntimeError::io(
                format!(
                    "waiting for stream {missing} of {} of the migration",
                    streams.len()
                ),
                e,
            )
        })?;
        let peer = addr.to_string();
        let (header, header_bytes) = match read_header_from(&conn, timeout) {
            Ok(h) => h,
            Err(e) => {
                let e = RuntimeError::Peer(format!(
                    "{peer} connected as a further stream of the migration but: {e}"
                ));
                return Err(refuse(&conn, e));
            }
        };
        let index = usize::from(header.stream.index());
        let problem = if header.session_id != first.session_id {
            Some("it belongs to another migration (session id differs)".to_string())
        } else if header.layout != first.layout || header.features != first.features {
            Some("its guest layout or features differ from the first stream's".to_string())
        } else if header.stream.count() != first.stream.count() {
            Some(format!(
                "it says the migration has {} streams, the first stream said {}",
                header.stream.count(),
                first.stream.count()
            ))
        } else if streams[index].is_some() {
            Some(format!("stream {index} already arrived"))
        } else {
            None
        };
        if let Some(problem) = problem {
            let e = RuntimeError::Peer(format!(
                "{peer} connected as stream {index} of the migration, but {problem}"
            ));
            return Err(refuse(&conn, e));
        }
        streams[index] = Some(Stream {
            conn,
            peer,
            header_bytes,
        });
    }
    Ok(())
}

/// `listener.accept()`, giving up after `timeout`.
fn accept_within(
    listener: &TcpListener,
    timeout: Duration,
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let result = loop {
        match listener.accept() {
            Ok((conn, addr)) => {
                conn.set_nonblocking(false)?;
                break Ok((conn, addr));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                break Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "timed out: the source did not open it",
                ))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    listener.set_nonblocking(false)?;
    result
}
