//! Byte-stream transports: the engines produce and consume bytes; a [`Transport`]
//! moves them (TCP, a file, a test pipe).

use core::fmt;

/// A reliable, ordered byte stream, as a migration needs one.
pub trait Transport {
    /// The transport's error (a closed connection, a full disk).
    type Error: fmt::Debug + fmt::Display;

    /// Sends all of `bytes`.
    fn send(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Receives at most `buf.len()` bytes; `Ok(0)` is the end of the stream.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

/// An in-memory transport (one direction, one thread): what is sent is received in
/// order, in pieces of at most `max_piece` bytes, so tests see arbitrary chunking.
#[cfg(feature = "alloc")]
#[derive(Debug, Default)]
pub struct MemoryTransport {
    queue: alloc::collections::VecDeque<u8>,
    max_piece: usize,
    closed: bool,
}

#[cfg(feature = "alloc")]
impl MemoryTransport {
    /// An empty transport that hands out pieces of at most `max_piece` bytes (at
    /// least 1).
    pub fn new(max_piece: usize) -> Self {
        MemoryTransport {
            queue: alloc::collections::VecDeque::new(),
            max_piece: max_piece.max(1),
            closed: false,
        }
    }

    /// Bytes sent and not yet received.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Closes the sending side: after the queued bytes, `recv` reports the end.
    pub fn close(&mut self) {
        self.closed = true;
    }
}

/// [`MemoryTransport`]'s error: sending after [`MemoryTransport::close`].
#[cfg(feature = "alloc")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportClosed;

#[cfg(feature = "alloc")]
impl fmt::Display for TransportClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the transport is closed")
    }
}

#[cfg(feature = "alloc")]
impl Transport for MemoryTransport {
    type Error = TransportClosed;

    fn send(&mut self, bytes: &[u8]) -> Result<(), TransportClosed> {
        if self.closed {
            return Err(TransportClosed);
        }
        self.queue.extend(bytes);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, TransportClosed> {
        let n = buf.len().min(self.max_piece).min(self.queue.len());
        for (dst, src) in buf.iter_mut().zip(self.queue.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }
}
