//! A [`Transport`] over a TCP connection.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::engine::Transport;

/// A TCP connection as a migration transport (Nagle off: frames go out as written).
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
}

impl TcpTransport {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(TcpTransport { stream })
    }

    /// The underlying stream (for the acknowledgement that ends a migration).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.stream
    }
}

impl Transport for TcpTransport {
    type Error = std::io::Error;

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}
