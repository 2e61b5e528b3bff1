//! Migration sessions over byte streams (a TCP connection, a file): the source's link
//! with its handshake, and the destination's side of a migration.
//!
//! A destination that receives into its own guest memory splits the session: [`accept`]
//! reads and validates the header, then [`Incoming::apply_into`] applies into the memory
//! the caller gives; [`receive`] does both into a [`FreshMemory`].
//!
//! The stream header already carries what a handshake needs (magic, format version,
//! features, session id, guest layout), so a session adds only the destination's
//! replies, which let a source report *why* a destination refused it:
//!
//! ```text
//! source                                    destination
//!   stream header ────────────────────────►  checks magic, version, features, and
//!                                            the layout against its Limits, and only
//!                                            then allocates guest memory
//!   ◄───────────────── reply: accepted | refused(reason)
//!   frames ... completion frame ──────────►  applies, verifies the memory digest
//!   ◄───────────────── reply: verified | refused(reason)
//! ```
//!
//! A reply is a status byte (1 = accepted or verified, 0 = refused), a `u16` LE length
//! and that many bytes of UTF-8 reason (at most [`MAX_REASON_LEN`]). A stream file
//! holds the stream alone, without replies, and is read to its end.

use std::format;
use std::io::{self, ErrorKind, Read, Write};
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use super::RuntimeError;
use crate::engine::{Applier, ApplyError, ApplyStats, Progress, Transport};
use crate::layout::GuestLayout;
use crate::memory::{FreshMemory, PageMemory, VecMemory};
use crate::wire::header::HEADER_PREFIX_LEN;
use crate::wire::{HeaderPrefix, Location, StreamHeader, WireErrorKind};

/// The longest reason a reply carries, bytes.
pub const MAX_REASON_LEN: usize = 1024;

const STATUS_OK: u8 = 1;
const STATUS_REFUSED: u8 = 0;
const STATUS_VERIFIED: u8 = 2;
/// A verdict's body: the session id and the stream's digest (u128 LE).
const VERDICT_LEN: usize = 32;

/// A destination's answer to the stream header or to the whole stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Header accepted.
    Ok,
    /// The whole stream verified: the verdict names the session and the digest the
    /// destination computed, so only a destination that received this stream can
    /// give it.
    Verified {
        /// The session id of the stream's header.
        session: [u8; 16],
        /// The stream's memory digest, as the destination computed it.
        digest: u128,
    },
    /// Refused, and why.
    Refused(String),
}

/// Writes `reply` (the reason cut to [`MAX_REASON_LEN`] bytes) and flushes.
pub fn write_reply<W: Write + ?Sized>(w: &mut W, reply: &Reply) -> io::Result<()> {
    let mut verdict = [0u8; VERDICT_LEN];
    let (status, body) = match reply {
        Reply::Ok => (STATUS_OK, &b""[..]),
        Reply::Verified { session, digest } => {
            verdict[..16].copy_from_slice(session);
            verdict[16..].copy_from_slice(&digest.to_le_bytes());
            (STATUS_VERIFIED, &verdict[..])
        }
        Reply::Refused(r) => (STATUS_REFUSED, r.as_bytes()),
    };
    let reason = body;
    let text = core::str::from_utf8(reason).unwrap_or("");
    let mut end = reason.len().min(MAX_REASON_LEN);
    while status == STATUS_REFUSED && !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut msg = Vec::with_capacity(3 + end);
    msg.push(status);
    msg.extend_from_slice(&(end as u16).to_le_bytes());
    msg.extend_from_slice(&reason[..end]);
    w.write_all(&msg)?;
    w.flush()
}

/// Reads a reply. Anything that is not one is an `InvalidData` error.
pub fn read_reply<R: Read + ?Sized>(r: &mut R) -> io::Result<Reply> {
    let mut head = [0u8; 3];
    r.read_exact(&mut head)?;
    let len = usize::from(u16::from_le_bytes([head[1], head[2]]));
    let bad_verdict = head[0] == STATUS_VERIFIED && len != VERDICT_LEN;
    if head[0] > STATUS_VERIFIED || len > MAX_REASON_LEN || bad_verdict {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "the answer starts with {:02x?}, which is not a precopy reply",
                head
            ),
        ));
    }
    let mut reason = vec![0u8; len];
    r.read_exact(&mut reason)?;
    Ok(if head[0] == STATUS_OK {
        Reply::Ok
    } else if head[0] == STATUS_VERIFIED {
        let mut session = [0u8; 16];
        session.copy_from_slice(&reason[..16]);
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&reason[16..]);
        Reply::Verified {
            session,
            digest: u128::from_le_bytes(digest),
        }
    } else {
        // One line, whatever the peer sent.
        let text: String = String::from_utf8_lossy(&reason)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Reply::Refused(text)
    })
}

/// What a destination accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest guest it allocates memory for, bytes.
    pub max_memory: u64,
    /// The layout its guest has, if it was sized beforehand: a stream for another
    /// page size or page count is refused.
    pub expect: Option<GuestLayout>,
}

impl Limits {
    /// Refuses a header whose guest this destination cannot take.
    pub fn check(&self, header: &StreamHeader) -> Result<(), RuntimeError> {
        let (page_size, pages) = (header.layout.page_size(), header.layout.total_pages());
        if let Some(expect) = self.expect {
            if (expect.page_size(), expect.total_pages()) != (page_size, pages) {
                return Err(RuntimeError::Apply(ApplyError::LayoutMismatch {
                    stream_page_size: page_size,
                    stream_pages: pages,
                    memory_page_size: expect.page_size(),
                    memory_pages: expect.total_pages(),
                }));
            }
        }
        let too_large = RuntimeError::GuestTooLarge {
            pages,
            page_size,
            max_memory: self.max_memory,
        };
        match pages.checked_mul(page_size) {
            Some(bytes) if bytes <= self.max_memory && usize::try_from(bytes).is_ok() => Ok(()),
            _ => Err(too_large),
        }
    }
}

/// A read of `what` that failed: timeouts say so in words.
pub(crate) fn read_error(what: &str, e: io::Error) -> RuntimeError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => RuntimeError::io(
            what,
            io::Error::new(ErrorKind::TimedOut, "timed out waiting for the peer"),
        ),
        _ => RuntimeError::io(what, e),
    }
}

/// Reads into all of `buf`; the end of input is a truncated header.
fn read_header_bytes<R: Read + ?Sized>(
    r: &mut R,
    buf: &mut [u8],
    already: usize,
    need: usize,
) -> Result<(), RuntimeError> {
    let mut have = 0;
    while have < buf.len() {
        match r.read(&mut buf[have..]) {
            Ok(0) => {
                return Err(RuntimeError::Apply(ApplyError::Wire(
                    WireErrorKind::Truncated {
                        have: already + have,
                        need,
                    }
                    .at(Location::Header),
                )))
            }
            Ok(n) => have += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error("reading the stream header", e)),
        }
    }
    Ok(())
}

/// Why the first bytes are not a stream: an HTTP request or a TLS handshake is named
/// as one.
fn not_a_stream(first: &[u8], kind: WireErrorKind) -> RuntimeError {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
        b"TRACE ",
    ];
    if matches!(kind, WireErrorKind::BadMagic { .. })
        && METHODS.iter().any(|m| first.starts_with(m))
    {
        let shown: String = first
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        return RuntimeError::Peer(format!(
            "an HTTP request (\"{shown}...\") arrived instead of a precopy stream: \
             this port takes a migration from a precopy source, not a web client"
        ));
    }
    if matches!(kind, WireErrorKind::BadMagic { .. }) && first.starts_with(&[0x16, 0x03]) {
        return RuntimeError::Peer(
            "a TLS handshake arrived instead of a precopy stream: precopy streams are plain \
             TCP (put TLS in front of both ends, or connect without it)"
                .to_string(),
        );
    }
    RuntimeError::Apply(ApplyError::Wire(kind.at(Location::Header)))
}

/// Reads and validates the stream header (magic and version first, then the rest);
/// returns it with its bytes.
pub fn read_header<R: Read + ?Sized>(r: &mut R) -> Result<(StreamHeader, Vec<u8>), RuntimeError> {
    let mut bytes = vec![0u8; HEADER_PREFIX_LEN];
    read_header_bytes(r, &mut bytes, 0, HEADER_PREFIX_LEN)?;
    let prefix = HeaderPrefix::new_checked(&bytes).ok_or(RuntimeError::Apply(ApplyError::Wire(
        WireErrorKind::Truncated {
            have: bytes.len(),
            need: HEADER_PREFIX_LEN,
        }
        .at(Location::Header),
    )))?;
    let len = prefix
        .header_len()
        .map_err(|kind| not_a_stream(&bytes, kind))?;
    bytes.resize(len, 0);
    read_header_bytes(r, &mut bytes[HEADER_PREFIX_LEN..], HEADER_PREFIX_LEN, len)?;
    let header = StreamHeader::parse(&bytes)
        .map_err(|kind| RuntimeError::Apply(ApplyError::Wire(kind.at(Location::Header))))?;
    Ok((header, bytes))
}

/// A migration the destination received and verified.
#[derive(Debug)]
pub struct Received {
    /// The stream header (session id, layout).
    pub header: StreamHeader,
    /// The guest memory, equal to the source's at switchover.
    pub memory: VecMemory,
    /// What was applied.
    pub stats: ApplyStats,
    /// Stream bytes received.
    pub stream_bytes: u64,
    /// The memory digest both sides agreed on.
    pub digest: u128,
    /// The device state the stream carried (in the order sent), given out only
    /// because the digest verified.
    pub device_state: Vec<crate::engine::OwnedDeviceState>,
}

/// A stream applied into the caller's memory and verified ([`Incoming::apply_into`]).
#[derive(Clone, Debug)]
pub struct Applied {
    /// The stream header (session id, layout).
    pub header: StreamHeader,
    /// What was applied.
    pub stats: ApplyStats,
    /// Stream bytes received.
    pub stream_bytes: u64,
    /// The memory digest both sides agreed on.
    pub digest: u128,
    /// The device state the stream carried (in the order sent), given out only
    /// because the digest verified.
    pub device_state: Vec<crate::engine::OwnedDeviceState>,
}

/// A migration whose stream header was read and checked against the destination's
/// [`Limits`]; nothing answered yet and no guest memory taken. Made by [`accept`]; the
/// destination now finds memory for [`header`](Self::header)'s layout (its own guest
/// RAM, or a [`FreshMemory`] sized from the validated header) and calls
/// [`apply_into`](Self::apply_into), or [`refuse`](Self::refuse)s.
pub struct Incoming<'a, R: ?Sized> {
    input: &'a mut R,
    replies: Option<&'a mut dyn Write>,
    header: StreamHeader,
    header_bytes: Vec<u8>,
}

impl<R: ?Sized> core::fmt::Debug for Incoming<'_, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Incoming")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// The destination's first step: reads the stream header from `input` and checks it
/// against `limits`. With `replies` (a connection) a refusal is sent to the source
/// with the error's text; the acceptance is sent by [`Incoming::apply_into`], once the
/// memory is there.
pub fn accept<'a, R: Read + ?Sized>(
    input: &'a mut R,
    mut replies: Option<&'a mut dyn Write>,
    limits: &Limits,
) -> Result<Incoming<'a, R>, RuntimeError> {
    let checked = read_header(input).and_then(|(header, bytes)| {
        limits.check(&header)?;
        Ok((header, bytes))
    });
    match checked {
        Ok((header, header_bytes)) => Ok(Incoming {
            input,
            replies,
            header,
            header_bytes,
        }),
        Err(e) => {
            if let Some(w) = replies.as_mut() {
                let _ = write_reply(w, &Reply::Refused(e.to_string()));
            }
            Err(e)
        }
    }
}

/// Refuses, with `e`'s text, a destination memory whose layout differs from the
/// header's.
pub(crate) fn check_memory<M: PageMemory + ?Sized>(
    header: &StreamHeader,
    memory: &M,
) -> Result<(), RuntimeError> {
    let (page_size, pages) = (header.layout.page_size(), header.layout.total_pages());
    let (memory_page_size, memory_pages) = (memory.page_size() as u64, memory.total_pages());
    if (page_size, pages) != (memory_page_size, memory_pages) {
        return Err(RuntimeError::Apply(ApplyError::LayoutMismatch {
            stream_page_size: page_size,
            stream_pages: pages,
            memory_page_size,
            memory_pages,
        }));
    }
    Ok(())
}

impl<R: Read + ?Sized> Incoming<'_, R> {
    /// The validated stream header: the guest layout the memory must have.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// Tells the source why this destination does not take the migration.
    pub fn refuse(mut self, reason: &RuntimeError) {
        if let Some(w) = self.replies.as_mut() {
            let _ = write_reply(w, &Reply::Refused(reason.to_string()));
        }
    }

    /// Applies the stream into `memory` (the caller's guest RAM, e.g. a
    /// [`VmMemory`](crate::memory::VmMemory), or `&mut` any [`PageMemory`]) and
    /// verifies the digest: accepts the header (memory of another page size or page
    /// count is refused), applies every frame, and answers the verdict.
    ///
    /// With replies (a connection) it stops reading after the completion frame; without
    /// (a file) it reads the input to its end, so bytes after the completion frame are
    /// an error. On error the memory holds a partial migration.
    pub fn apply_into<M: PageMemory>(mut self, memory: M) -> Result<Applied, RuntimeError> {
        // The applier and its buffers are freed after the verdict: unmapping them
        // (megabytes of kept hashes) is not the source's downtime.
        let mut kept = None;
        let result = self.apply_inner(memory, &mut kept);
        if let Some(w) = self.replies.as_mut() {
            let reply = match &result {
                Ok(applied) => Reply::Verified {
                    session: applied.header.session_id,
                    digest: applied.digest,
                },
                Err(e) => Reply::Refused(e.to_string()),
            };
            let answered = write_reply(w, &reply);
            if result.is_ok() {
                answered.map_err(|e| {
                    RuntimeError::io("telling the source the memory is verified", e)
                })?;
            }
        }
        result
    }

    fn apply_inner<M: PageMemory>(
        &mut self,
        memory: M,
        kept: &mut Option<ApplyState<M>>,
    ) -> Result<Applied, RuntimeError> {
        check_memory(&self.header, &memory)?;
        if let Some(w) = self.replies.as_mut() {
            write_reply(w, &Reply::Ok).map_err(|e| RuntimeError::io("answering the source", e))?;
        }
        let state = kept.insert(ApplyState::new(memory));
        let (stream_bytes, digest, device_state) = apply_from(
            self.input,
            state,
            &self.header_bytes,
            self.replies.is_some(),
        )?;
        Ok(Applied {
            header: self.header,
            stats: state.applier.stats(),
            stream_bytes,
            digest,
            device_state,
        })
    }
}

/// The destination's side of a migration into fresh memory: [`accept`]s the header,
/// allocates a [`FreshMemory`] for the validated layout (never for an unchecked one),
/// applies the stream and verifies the digest ([`Incoming::apply_into`]).
///
/// With `replies` (a connection) it answers the header and then the whole stream (see
/// the module docs), a refusal carrying the error's text, and stops reading after the
/// completion frame. Without (a file) it reads `input` to its end, so bytes after the
/// completion frame are an error.
pub fn receive<R: Read + ?Sized>(
    input: &mut R,
    replies: Option<&mut dyn Write>,
    limits: &Limits,
) -> Result<Received, RuntimeError> {
    // The writer's object lifetime shortened to the input's (a coercion, per element).
    let replies = replies.map(|w| -> &mut dyn Write { w });
    let incoming = accept(input, replies, limits)?;
    let header = *incoming.header();
    let mut memory = match FreshMemory::new(header.page_size(), header.layout.total_pages()) {
        Ok(m) => m,
        Err(e) => {
            let e = RuntimeError::Memory(e);
            incoming.refuse(&e);
            return Err(e);
        }
    };
    // Fresh memory: pages stay untouched until written, and the digest folds the
    // hashes kept as pages were written.
    let applied = incoming.apply_into(memory.whole())?;
    Ok(Received {
        header,
        memory: memory.into_memory(),
        stats: applied.stats,
        stream_bytes: applied.stream_bytes,
        digest: applied.digest,
        device_state: applied.device_state,
    })
}

/// A destination stream's applier and its read buffer, kept by the caller until the
/// verdict is written: freeing them (the applier's memory view may hold megabytes of
/// kept hashes) takes time the source would wait through.
pub(crate) struct ApplyState<M: crate::memory::PageMemory> {
    pub(crate) applier: crate::engine::OwnedApplier<M>,
    buf: Vec<u8>,
}

impl<M: crate::memory::PageMemory> ApplyState<M> {
    /// An applier over `memory` and a 1 MiB read buffer.
    pub(crate) fn new(memory: M) -> Self {
        ApplyState {
            applier: Applier::with_memory(memory),
            buf: vec![0u8; 1 << 20],
        }
    }
}

/// Feeds `header_bytes` and then `input` to `state`'s applier until the completion
/// frame (with `stop_at_complete`, a connection) or the end of input (a file): returns
/// the stream bytes read, the verified digest and the device state the stream carried.
pub(crate) fn apply_from<R, M>(
    input: &mut R,
    state: &mut ApplyState<M>,
    header_bytes: &[u8],
    stop_at_complete: bool,
) -> Result<(u64, u128, Vec<crate::engine::OwnedDeviceState>), RuntimeError>
where
    R: Read + ?Sized,
    M: crate::memory::PageMemory,
{
    let ApplyState { applier, buf } = state;
    applier.feed(header_bytes)?;
    let mut stream_bytes = header_bytes.len() as u64;
    loop {
        let n = match input.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                let what = match e.kind() {
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
                        format!("the connection closed mid-stream, after {stream_bytes} bytes")
                    }
                    _ => format!("reading the stream after {stream_bytes} bytes"),
                };
                return Err(read_error(&what, e));
            }
        };
        if n == 0 {
            applier.finish()?;
            break;
        }
        stream_bytes += n as u64;
        if applier.feed(&buf[..n])? == Progress::Complete && stop_at_complete {
            // The source now waits for the verdict: nothing more comes.
            break;
        }
    }
    let digest = applier
        .digest()
        .ok_or(RuntimeError::Apply(ApplyError::Wire(
            WireErrorKind::EndedBeforeCompletion.at(Location::End {
                offset: stream_bytes,
            }),
        )))?;
    let device = applier
        .device_state()
        .map(|items| {
            items
                .map(|d| crate::engine::OwnedDeviceState::from_item(&d))
                .collect()
        })
        .unwrap_or_default();
    Ok((stream_bytes, digest, device))
}

/// The source's end of a connection to a destination, as a [`Transport`]: the first
/// send carries the stream header and waits for the destination to accept it; a
/// failed send reports the destination's reason when it sent one;
/// [`finish`](Self::finish) waits for the verdict.
#[derive(Debug)]
pub struct SourceLink<S> {
    stream: S,
    peer: String,
    accepted: bool,
    sent: u64,
    /// The header sent (its session id and page size bind the verdict).
    header: Option<StreamHeader>,
    /// The last bytes sent: after the completion frame, that frame.
    tail: [u8; COMPLETE_FRAME_LEN],
}

/// A completion frame's length: frame header and body (total pages, digest).
const COMPLETE_FRAME_LEN: usize = crate::wire::frame::FRAME_HEADER_LEN + 24;

impl<S: Read + Write> SourceLink<S> {
    /// A link over a connected `stream` to `peer` (named in errors, e.g. "the
    /// destination 10.0.0.2:7000").
    pub fn new(stream: S, peer: impl Into<String>) -> Self {
        SourceLink {
            stream,
            peer: peer.into(),
            accepted: false,
            sent: 0,
            header: None,
            tail: [0; COMPLETE_FRAME_LEN],
        }
    }

    /// The connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Stream bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Waits for the destination's verdict on the whole stream: `Ok` only when it
    /// verified the memory digest, and named this stream's session and the digest of
    /// the completion frame this link sent (a destination that did not receive the
    /// stream cannot answer so).
    pub fn finish(&mut self) -> Result<(), RuntimeError> {
        let sent = self.header.map(|h| {
            let digest = match crate::wire::Frame::parse(&self.tail, h.page_size()) {
                Ok(crate::wire::Frame::Complete { digest, .. }) => Some(digest),
                _ => None,
            };
            (h.session_id, digest)
        });
        let Some((session, Some(digest))) = sent else {
            return Err(RuntimeError::Peer(format!(
                "asked for the verdict of {} before the stream's completion frame was sent",
                self.peer
            )));
        };
        match self.await_reply("the verdict")? {
            Reply::Verified {
                session: s,
                digest: d,
            } if s == session && d == digest => Ok(()),
            Reply::Verified {
                session: s,
                digest: d,
            } => Err(RuntimeError::Peer(format!(
                "{} answered \"verified\" for another stream (session {}, digest {d:#034x}; \
                 this stream is session {}, digest {digest:#034x}): the verdict is not this \
                 migration's",
                self.peer,
                hex(&s),
                hex(&session)
            ))),
            _ => Err(RuntimeError::Peer(format!(
                "{} answered \"verified\" without naming the session and digest it verified: \
                 not a verdict on this stream",
                self.peer
            ))),
        }
    }

    fn await_reply(&mut self, what: &str) -> Result<Reply, RuntimeError> {
        match read_reply(&mut self.stream) {
            Ok(Reply::Refused(reason)) => Err(RuntimeError::Refused {
                peer: self.peer.clone(),
                reason,
            }),
            Ok(reply) => Ok(reply),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Err(RuntimeError::Peer(format!(
                "{} closed the connection before sending {what}",
                self.peer
            ))),
            Err(e) if e.kind() == ErrorKind::InvalidData => Err(RuntimeError::Peer(format!(
                "{} is not a precopy destination: {e}",
                self.peer
            ))),
            Err(e) => Err(read_error(
                &format!("waiting for {what} from {}", self.peer),
                e,
            )),
        }
    }

    /// Writes all of `bytes`, counting what the connection took.
    fn write_counted(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n as u64;
                    // Keep the last COMPLETE_FRAME_LEN bytes sent.
                    let took = &bytes[..n];
                    let keep = took.len().min(COMPLETE_FRAME_LEN);
                    self.tail.copy_within(keep.., 0);
                    self.tail[COMPLETE_FRAME_LEN - keep..]
                        .copy_from_slice(&took[took.len() - keep..]);
                    bytes = &bytes[n..];
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), RuntimeError> {
        match self.write_counted(bytes) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // A destination that takes nothing: no reason to wait for.
                Err(RuntimeError::io(
                    format!("sending to {} after {} bytes", self.peer, self.sent),
                    io::Error::new(
                        ErrorKind::TimedOut,
                        "timed out: the destination took no bytes within the timeout",
                    ),
                ))
            }
            Err(e) => {
                // A destination that refused the stream says why before it closes.
                if let Ok(Reply::Refused(reason)) = read_reply(&mut self.stream) {
                    return Err(RuntimeError::Refused {
                        peer: self.peer.clone(),
                        reason,
                    });
                }
                let closed = matches!(
                    e.kind(),
                    ErrorKind::BrokenPipe
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::UnexpectedEof
                );
                let what = if closed {
                    format!(
                        "{} closed the connection mid-stream, after {} bytes",
                        self.peer, self.sent
                    )
                } else {
                    format!("sending to {} after {} bytes", self.peer, self.sent)
                };
                Err(RuntimeError::io(what, e))
            }
        }
    }
}

impl<S: Read + Write> Transport for SourceLink<S> {
    type Error = RuntimeError;

    fn send(&mut self, bytes: &[u8]) -> Result<(), RuntimeError> {
        if self.accepted {
            return self.write(bytes);
        }
        let len = HeaderPrefix::new_checked(bytes)
            .and_then(|p| p.header_len().ok())
            .filter(|&len| len <= bytes.len())
            .ok_or_else(|| {
                RuntimeError::io(
                    "starting the session",
                    io::Error::new(
                        ErrorKind::InvalidInput,
                        "the first bytes sent are not a whole stream header",
                    ),
                )
            })?;
        self.header = StreamHeader::parse(&bytes[..len]).ok();
        self.write(&bytes[..len])?;
        match self.await_reply("an answer to the stream header")? {
            Reply::Ok => {}
            _ => {
                return Err(RuntimeError::Peer(format!(
                    "{} answered the stream header with a verdict: not a precopy destination",
                    self.peer
                )))
            }
        }
        self.accepted = true;
        self.write(&bytes[len..])
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, RuntimeError> {
        self.stream
            .read(buf)
            .map_err(|e| read_error(&format!("reading from {}", self.peer), e))
    }
}

/// Hex of a session id.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_garbage_is_not_a_reply() {
        let mut buf = Vec::new();
        write_reply(&mut buf, &Reply::Ok).unwrap();
        write_reply(&mut buf, &Reply::Refused("no\nroom".into())).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_reply(&mut r).unwrap(), Reply::Ok);
        // Control characters become spaces: a reason stays one line.
        assert_eq!(
            read_reply(&mut r).unwrap(),
            Reply::Refused("no room".into())
        );
        let e = read_reply(&mut &b"HTTP/1.1 400"[..]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn http_and_tls_clients_are_named() {
        let e = |bytes: &[u8]| read_header(&mut &bytes[..]).unwrap_err().to_string();
        assert!(
            e(b"POST /migrate HTTP/1.1\r\n").starts_with("an HTTP request (\"POST /migrat...\")")
        );
        assert!(
            e(&[0x16, 0x03, 0x01, 0, 0xa5, 1, 0, 0, 0xa1, 3, 3, 0]).starts_with("a TLS handshake")
        );
        assert!(e(b"SSH-2.0-OpenSSH_9.6\r\n").starts_with("stream header: not a precopy stream"));
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let reason = "é".repeat(MAX_REASON_LEN);
        let mut buf = Vec::new();
        write_reply(&mut buf, &Reply::Refused(reason)).unwrap();
        let Reply::Refused(got) = read_reply(&mut &buf[..]).unwrap() else {
            panic!("not a refusal");
        };
        assert_eq!(got.len(), MAX_REASON_LEN);
        assert!(got.chars().all(|c| c == 'é'));
    }

    #[test]
    fn limits_refuse_large_and_mismatched_guests() {
        let header = |len| StreamHeader {
            features: crate::wire::Features::ALL,
            session_id: [0; 16],
            layout: GuestLayout::flat(4096, len).unwrap(),
            stream: crate::layout::Shard::WHOLE,
        };
        let limits = Limits {
            max_memory: 1 << 20,
            expect: None,
        };
        assert!(limits.check(&header(1 << 20)).is_ok());
        let e = limits.check(&header(2 << 20)).unwrap_err().to_string();
        assert!(
            e.contains("guest of 2 MiB (512 pages of 4096 bytes)"),
            "{e}"
        );
        assert!(e.contains("limit of 1 MiB"), "{e}");
        let sized = Limits {
            max_memory: u64::MAX,
            expect: Some(GuestLayout::flat(4096, 1 << 20).unwrap()),
        };
        let e = sized.check(&header(2 << 20)).unwrap_err().to_string();
        assert!(e.contains("the stream is for 512 pages"), "{e}");
    }
}
