//! The destination of a migration over TCP, with one or more streams: the first
//! connection's header says how many streams the migration has; the others must
//! follow with the same session id and layout and the remaining stream indices. Each
//! stream is applied on its own thread onto its view of one guest memory (the caller's,
//! [`IncomingStreams::apply_into`], or a fresh one, [`receive_streams`]); the migration
//! is verified only when every stream's digest matched.

use std::format;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::string::{String, ToString};
use std::sync::Mutex;
use std::time::Duration;
use std::vec::Vec;

use super::listen::{ListenOptions, Timed};
use super::session::{apply_from, check_memory, write_reply, ApplyState, Limits, Reply};
use super::RuntimeError;
use crate::engine::{ApplyStats, OwnedDeviceState};
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
    /// The device state the streams carried (stream 0's, in the order sent), given
    /// out only because every stream verified.
    pub device_state: Vec<OwnedDeviceState>,
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
    /// The device state the streams carried (stream 0's, in the order sent: the
    /// guest's vCPU and device state), given out only because every stream verified.
    pub device_state: Vec<OwnedDeviceState>,
}

/// One stream's connection, its header and the header's bytes.
pub(crate) struct Stream {
    pub(crate) conn: Timed,
    pub(crate) peer: String,
    pub(crate) header_bytes: Vec<u8>,
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
/// `listener` (waiting at most `timeout` for each); a connection that is not one of
/// them is refused alone. Every connection gets `timeout` as its read and write
/// timeout. A refusal is sent to every connection with the error's text; acceptance
/// waits for [`IncomingStreams::apply_into`]. [`listen_streams`](super::listen_streams)
/// does the same with deadlines, TLS and a listener that outlives refusals.
pub fn accept_streams(
    listener: &TcpListener,
    first: TcpStream,
    peer: &str,
    limits: &Limits,
    timeout: Duration,
) -> Result<IncomingStreams, RuntimeError> {
    let addr = first
        .peer_addr()
        .map_err(|e| RuntimeError::io(format!("accepting {peer}"), e))?;
    super::listen_streams(
        listener,
        Some((first, addr)),
        limits,
        &ListenOptions::new(timeout),
        &mut |_, _| {},
    )
}

impl IncomingStreams {
    /// A migration whose streams (in stream order) all arrived.
    pub(crate) fn new(header: StreamHeader, streams: Vec<Stream>) -> Self {
        IncomingStreams { header, streams }
    }

    /// The first stream's validated header: the guest layout the memory must have,
    /// and the stream count (the views [`apply_into`](Self::apply_into) needs).
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// The first stream's peer (its address).
    pub fn peer(&self) -> &str {
        self.streams.first().map_or("", |s| s.peer.as_str())
    }

    /// Tells every stream's source why this destination does not take the migration.
    pub fn refuse(mut self, reason: &RuntimeError) {
        for s in &mut self.streams {
            let _ = write_reply(&mut s.conn, &Reply::Refused(reason.to_string()));
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
        let mut streams = self.streams;
        let header = self.header;
        let count = streams.len();
        let mut refuse_all = |e: RuntimeError| {
            for s in &mut streams {
                let _ = write_reply(&mut s.conn, &Reply::Refused(e.to_string()));
            }
            e
        };
        if views.len() != count {
            return Err(refuse_all(RuntimeError::WrongViewCount {
                views: views.len(),
                streams: header.stream.count(),
            }));
        }
        if let Some(e) = views.iter().find_map(|v| check_memory(&header, v).err()) {
            return Err(refuse_all(e));
        }
        // Sockets to shut down from another stream's thread when one fails.
        let mut sockets = Vec::with_capacity(streams.len());
        for s in &mut streams {
            let cloned = s.conn.tcp.try_clone();
            let answered = cloned.and_then(|c| {
                sockets.push(c);
                write_reply(&mut s.conn, &Reply::Ok)
            });
            answered
                .map_err(|e| RuntimeError::io(format!("answering the source {}", s.peer), e))?;
        }
        let first_error: Mutex<Option<String>> = Mutex::new(None);
        type StreamResult = Result<(ApplyStats, u64, u128, Vec<OwnedDeviceState>), RuntimeError>;
        // Each stream's applier state, dropped once the verdicts are written.
        let mut states = Vec::with_capacity(count);
        let results: Vec<StreamResult> = std::thread::scope(|s| {
            let handles: Vec<_> = streams
                .iter_mut()
                .zip(views)
                .enumerate()
                .map(|(i, (stream, view))| {
                    let (sockets, first_error) = (&sockets, &first_error);
                    let name = format!("precopy-recv{i}");
                    std::thread::Builder::new()
                        .name(name)
                        .spawn_scoped(s, move || {
                            let mut state = ApplyState::new(view);
                            let result = apply_from(
                                &mut stream.conn,
                                &mut state,
                                &stream.header_bytes,
                                true,
                            )
                            .map(|(bytes, digest, device)| {
                                (state.applier.stats(), bytes, digest, device)
                            });
                            if let Err(e) = &result {
                                // Every source stream is told the first failure.
                                let reason = fail_all(sockets, first_error, e);
                                let _ = write_reply(&mut stream.conn, &Reply::Refused(reason));
                            }
                            // Freed after the verdicts, not before them.
                            (result, state)
                        })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| match h.map(|h| h.join()) {
                    Ok(Ok((result, state))) => {
                        states.push(state);
                        result
                    }
                    Ok(Err(_)) => Err(RuntimeError::ThreadPanicked {
                        thread: format!("the thread receiving stream {i}"),
                    }),
                    Err(e) => Err(RuntimeError::io("starting a stream's thread", e)),
                })
                .collect()
        });
        if let Some(reason) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            // A stream that applied all of its frames before another failed waits for
            // its verdict: it is told the reason too, not left to see the close.
            for (s, r) in streams.iter_mut().zip(&results) {
                if r.is_ok() {
                    let _ = write_reply(&mut s.conn, &Reply::Refused(reason.clone()));
                }
            }
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
            device_state: Vec::new(),
        };
        for r in results {
            let (stats, bytes, digest, device) = r?;
            applied.stats.add(&stats);
            applied.stream_bytes += bytes;
            applied.digests.push(digest);
            applied.device_state.extend(device);
        }
        for (s, &digest) in streams.iter_mut().zip(&applied.digests) {
            // The verdict names what it verified: this session, this stream's digest.
            let verdict = Reply::Verified {
                session: header.session_id,
                digest,
            };
            write_reply(&mut s.conn, &verdict).map_err(|e| {
                RuntimeError::io(
                    format!("telling the source {} the memory is verified", s.peer),
                    e,
                )
            })?;
        }
        drop(states);
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
    receive_into_fresh(accept_streams(listener, first, peer, limits, timeout)?)
}

/// Allocates a [`FreshMemory`] for `incoming`'s validated layout (refusing the
/// sources when this host cannot give it) and applies every stream into it.
pub fn receive_into_fresh(incoming: IncomingStreams) -> Result<ReceivedStreams, RuntimeError> {
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
        device_state: applied.device_state,
    })
}

/// The first failure of any stream: the other streams' sockets are shut down for
/// reading, which ends their reads (each then tells its source this first reason).
/// Returns the first failure's text.
fn fail_all(
    sockets: &[TcpStream],
    first_error: &Mutex<Option<String>>,
    e: &RuntimeError,
) -> String {
    let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(reason) = &*first {
        return reason.clone();
    }
    let reason = e.to_string();
    *first = Some(reason.clone());
    for s in sockets {
        let _ = s.shutdown(Shutdown::Read);
    }
    reason
}
