//! A simulated stream's destination on its own thread: the real [`Applier`] over a
//! [`DestMemory`], fed the bytes the link delivered, in order. It runs beside the
//! event loop (the destination's work is a third of a simulation's), and the event
//! loop waits for it only at the stream's last buffer, for the verdict: virtual time
//! never depends on how fast the thread runs, so a simulation stays deterministic.

use std::format;
use std::string::String;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::vec::Vec;

use crate::engine::{Applier, Progress};

use super::pages::DestMemory;
use super::SimError;

/// Buffers queued for a destination thread before the event loop waits for it.
const QUEUE: usize = 64;

/// One stream's destination thread.
pub(super) struct DestWorker {
    tx: Option<SyncSender<(Vec<u8>, bool)>>,
    verdicts: Receiver<Result<(), String>>,
    /// Buffers the thread is done with, for the encoder to fill again (fresh 256 KiB
    /// buffers cost page faults and zeroing).
    spare: Receiver<Vec<u8>>,
    handle: Option<JoinHandle<DestMemory>>,
}

impl DestWorker {
    /// Starts stream `index`'s destination over `memory`.
    pub(super) fn spawn(index: usize, memory: DestMemory) -> Result<Self, SimError> {
        let (tx, rx) = sync_channel::<(Vec<u8>, bool)>(QUEUE);
        let (verdict_tx, verdicts) = sync_channel(1);
        let (spare_tx, spare) = sync_channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name(format!("sim-dest{index}"))
            .spawn(move || {
                let mut applier = Applier::with_memory(memory);
                let mut error: Option<String> = None;
                let mut complete = false;
                while let Ok((bytes, last)) = rx.recv() {
                    if error.is_none() {
                        match applier.feed(&bytes) {
                            Ok(Progress::Complete) => complete = true,
                            Ok(Progress::InProgress) => {}
                            Err(e) => error = Some(format!("destination stream {index}: {e}")),
                        }
                    }
                    let _ = spare_tx.try_send(bytes);
                    if last {
                        let verdict = match (&error, complete) {
                            (Some(e), _) => Err(e.clone()),
                            (None, true) => Ok(()),
                            (None, false) => Err(format!(
                                "destination stream {index}: the stream ended before its \
                                 completion frame"
                            )),
                        };
                        let _ = verdict_tx.send(verdict);
                    }
                }
                applier.into_memory()
            })
            .map_err(|e| SimError::Config(format!("starting a destination thread: {e}")))?;
        Ok(DestWorker {
            tx: Some(tx),
            verdicts,
            spare,
            handle: Some(handle),
        })
    }

    /// Hands the thread the next bytes of the stream; with `last` (the buffer that
    /// carries the completion frame) waits for and returns the stream's verdict.
    pub(super) fn deliver(&mut self, bytes: Vec<u8>, last: bool) -> Option<Result<(), String>> {
        let gone = || {
            Err(String::from(
                "a destination thread ended early (it panicked)",
            ))
        };
        let Some(tx) = &self.tx else {
            return last.then(gone);
        };
        if tx.send((bytes, last)).is_err() {
            return last.then(gone);
        }
        last.then(|| self.verdicts.recv().unwrap_or_else(|_| gone()))
    }

    /// A buffer the thread is done with, if any.
    pub(super) fn spare(&self) -> Option<Vec<u8>> {
        self.spare.try_recv().ok()
    }

    /// Ends the thread and takes its memory back (`None`: it panicked).
    pub(super) fn finish(mut self) -> Option<DestMemory> {
        self.tx = None;
        self.handle.take()?.join().ok()
    }
}
