//! A migration stream written to a file (a snapshot to restore later with
//! [`receive`](super::session::receive) and no replies).

use std::format;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::RuntimeError;
use crate::engine::Transport;

/// A file as the sending end of a migration: every `send` goes straight to the file
/// (the engine already hands over large pieces), [`finish`](Self::finish) makes it
/// durable.
#[derive(Debug)]
pub struct FileSink {
    file: File,
    path: PathBuf,
    written: u64,
}

impl FileSink {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, RuntimeError> {
        let file = File::create(path)
            .map_err(|e| RuntimeError::io(format!("creating {}", path.display()), e))?;
        Ok(FileSink {
            file,
            path: path.to_path_buf(),
            written: 0,
        })
    }

    /// A sink over an open `file` (e.g. standard output), named `path` in errors.
    pub fn from_file(file: File, path: &Path) -> Self {
        FileSink {
            file,
            path: path.to_path_buf(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the file to stable storage (regular files; a device such as
    /// `/dev/null` has nothing to sync). Returns the bytes written.
    pub fn finish(&mut self) -> Result<u64, RuntimeError> {
        let what = || format!("writing {}", self.path.display());
        self.file.flush().map_err(|e| RuntimeError::io(what(), e))?;
        let regular = self
            .file
            .metadata()
            .map_err(|e| RuntimeError::io(what(), e))?
            .is_file();
        if regular {
            self.file
                .sync_all()
                .map_err(|e| RuntimeError::io(what(), e))?;
        }
        Ok(self.written)
    }
}

impl Transport for FileSink {
    type Error = RuntimeError;

    fn send(&mut self, bytes: &[u8]) -> Result<(), RuntimeError> {
        self.file.write_all(bytes).map_err(|e| {
            RuntimeError::io(
                format!(
                    "writing {} after {} bytes",
                    self.path.display(),
                    self.written
                ),
                e,
            )
        })?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// A file sink has nothing to receive.
    fn recv(&mut self, _buf: &mut [u8]) -> Result<usize, RuntimeError> {
        Err(RuntimeError::io(
            format!("reading from {}", self.path.display()),
            io::Error::new(
                io::ErrorKind::Unsupported,
                "a stream file is write-only here",
            ),
        ))
    }
}
