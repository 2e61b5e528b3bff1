//! The destination applier: stream bytes in, guest memory out, success only when the
//! memory's digest equals the source's.

use core::fmt;

use crate::codec::{base_hash, delta_apply, lz4_decompress_page, CodecError};
use crate::layout::Shard;
use crate::memory::digest_stream;
use crate::memory::{MemoryError, PageMemory};
use crate::wire::{Decoder, Event, Frame, Location, WireError, WireErrorKind};

use super::device::{store, DeviceStateStore, DeviceStates, NoDeviceState};

/// Why the destination stopped applying a stream. Guest memory is never written with
/// bytes that failed a check: a failed page is left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// The stream is malformed, corrupt or truncated.
    Wire(WireError),
    /// The stream's guest layout differs from the destination's memory.
    LayoutMismatch {
        /// Page size in the stream.
        stream_page_size: u64,
        /// Pages in the stream's layout.
        stream_pages: u64,
        /// Page size of the destination memory.
        memory_page_size: u64,
        /// Pages of the destination memory.
        memory_pages: u64,
    },
    /// A page's payload does not decode.
    Codec {
        /// Frame number.
        frame: u64,
        /// Page number.
        page: u64,
        /// What is wrong.
        error: CodecError,
    },
    /// A delta was made against a base other than the page the destination holds.
    BaseMismatch {
        /// Frame number.
        frame: u64,
        /// Page number.
        page: u64,
        /// Hash of the base the delta was made against.
        expected: u64,
        /// Hash of the page the destination holds.
        found: u64,
    },
    /// Guest memory could not be read or written.
    Memory {
        /// Frame number.
        frame: u64,
        /// What the memory said.
        error: MemoryError,
    },
    /// All frames applied, but the memory's digest differs from the source's.
    DigestMismatch {
        /// The source's digest.
        expected: u128,
        /// The digest of the destination's memory.
        computed: u128,
    },
    /// The stream carries more device state than the applier's store holds (none at
    /// all for an applier without one).
    DeviceStateTooLarge {
        /// Frame number.
        frame: u64,
        /// Bytes the store holds.
        capacity: usize,
    },
    /// The page buffer given to the applier is shorter than a page.
    PageBufferTooSmall {
        /// Bytes given.
        len: usize,
        /// The page size.
        page_size: usize,
    },
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ApplyError::Wire(e) => e.fmt(f),
            ApplyError::LayoutMismatch {
                stream_page_size,
                stream_pages,
                memory_page_size,
                memory_pages,
            } => write!(
                f,
                "the stream is for {stream_pages} pages of {stream_page_size} bytes but the \
                 destination has {memory_pages} pages of {memory_page_size} bytes: size the \
                 destination guest like the source"
            ),
            ApplyError::Codec { frame, page, error } => {
                write!(f, "frame {frame}: page {page}: {error}")
            }
            ApplyError::BaseMismatch {
                frame,
                page,
                expected,
                found,
            } => write!(
                f,
                "frame {frame}: delta for page {page} was made against base {expected:#018x} \
                 but the destination holds {found:#018x}: source and destination disagree"
            ),
            ApplyError::Memory { frame, error } => write!(f, "frame {frame}: {error}"),
            ApplyError::DigestMismatch { expected, computed } => write!(
                f,
                "memory digest {computed:#034x} differs from the source's {expected:#034x}: \
                 the destination's memory is not a copy of the source's"
            ),
            ApplyError::DeviceStateTooLarge { frame, capacity: 0 } => write!(
                f,
                "frame {frame}: the stream carries device state but this destination keeps \
                 none (give the applier a device-state store)"
            ),
            ApplyError::DeviceStateTooLarge { frame, capacity } => write!(
                f,
                "frame {frame}: the stream's device state exceeds the destination's store \
                 of {capacity} bytes"
            ),
            ApplyError::PageBufferTooSmall { len, page_size } => write!(
                f,
                "page buffer of {len} bytes is smaller than a page ({page_size} bytes)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ApplyError {}

impl From<WireError> for ApplyError {
    fn from(e: WireError) -> Self {
        ApplyError::Wire(e)
    }
}

/// Where the migration stands after [`Applier::feed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// More stream is expected.
    InProgress,
    /// The completion frame arrived and the memory's digest equals the source's.
    Complete,
}

/// Counts of what was applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ApplyStats {
    /// Pages written as zero (by zero runs).
    pub zero_pages: u64,
    /// Raw pages written.
    pub raw_pages: u64,
    /// LZ4 pages written.
    pub lz4_pages: u64,
    /// Delta pages written.
    pub delta_pages: u64,
    /// Rounds ended.
    pub rounds: u64,
}

impl ApplyStats {
    /// Adds another stream's counts (a multi-stream total): pages add up, rounds are
    /// the most any stream ended.
    pub fn add(&mut self, other: &ApplyStats) {
        self.zero_pages += other.zero_pages;
        self.raw_pages += other.raw_pages;
        self.lz4_pages += other.lz4_pages;
        self.delta_pages += other.delta_pages;
        self.rounds = self.rounds.max(other.rounds);
    }
}

/// Applies a precopy stream to guest memory.
///
/// Feed it the stream in pieces of any size with [`feed`](Self::feed); it decodes
/// ([`Decoder`]), checks, decodes each page into its page buffer and only then writes
/// it to memory. A delta is applied only onto a page whose hash equals the delta's
/// base hash. [`Progress::Complete`] is reported only after the completion frame, once
/// the digest of all of memory equals the one the source sent. The first error is
/// final.
///
/// Device-state frames (the VMM's vCPU and device state, after the final round) go
/// into the applier's [`DeviceStateStore`] (`D`: a `Vec<u8>` for
/// [`with_memory`](Self::with_memory), none for [`new`](Applier::new) until
/// [`with_device_store`](Self::with_device_store)); [`device_state`](Self::device_state)
/// gives them out only once the stream verified.
///
/// ```
/// use precopy::engine::{Applier, Progress};
/// use precopy::memory::VecMemory;
///
/// let mut applier = Applier::with_memory(VecMemory::new(4096, 16));
/// // Not a stream: the magic is wrong.
/// let err = applier.feed(b"GARBAGE-BYTES-HERE").unwrap_err();
/// assert!(err.to_string().starts_with("stream header: not a precopy stream"));
/// ```
#[derive(Debug)]
pub struct Applier<M, B, S, D = NoDeviceState> {
    memory: M,
    decoder: Decoder<B>,
    page_buf: S,
    device: D,
    stats: ApplyStats,
    complete: bool,
    /// The digest the source sent, once memory was verified against it.
    digest: Option<u128>,
    failed: Option<ApplyError>,
}

/// The applier [`Applier::with_memory`] makes: its buffers and device-state store
/// allocated.
#[cfg(feature = "alloc")]
pub type OwnedApplier<M> =
    Applier<M, alloc::vec::Vec<u8>, alloc::vec::Vec<u8>, alloc::vec::Vec<u8>>;

#[cfg(feature = "alloc")]
impl<M: PageMemory> OwnedApplier<M> {
    /// An applier that allocates its two buffers for `memory`'s page size, and keeps
    /// device state in a `Vec` (at most
    /// [`MAX_DEVICE_STATE_BYTES`](super::MAX_DEVICE_STATE_BYTES)).
    pub fn with_memory(memory: M) -> Self {
        let page_size = memory.page_size();
        let frame_buf = alloc::vec![0; crate::wire::decoder_buffer_len(page_size)];
        let page_buf = alloc::vec![0; page_size];
        match Applier::new(memory, frame_buf, page_buf) {
            Ok(applier) => applier.with_device_store(alloc::vec::Vec::new()),
            Err(_) => unreachable!("a page buffer of the page size is large enough"),
        }
    }
}

impl<M, B, S> Applier<M, B, S>
where
    M: PageMemory,
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsMut<[u8]>,
{
    /// An applier over caller buffers: `frame_buf` for the decoder
    /// ([`decoder_buffer_len`](crate::wire::decoder_buffer_len) of the page size) and
    /// `page_buf` (at least one page) for decoding pages. It keeps no device state (a
    /// stream carrying some fails) until [`with_device_store`](Self::with_device_store).
    pub fn new(memory: M, frame_buf: B, mut page_buf: S) -> Result<Self, ApplyError> {
        let page_size = memory.page_size();
        let len = page_buf.as_mut().len();
        if len < page_size {
            return Err(ApplyError::PageBufferTooSmall { len, page_size });
        }
        Ok(Applier {
            memory,
            decoder: Decoder::new(frame_buf),
            page_buf,
            device: NoDeviceState,
            stats: ApplyStats::default(),
            complete: false,
            digest: None,
            failed: None,
        })
    }
}

impl<M, B, S, D> Applier<M, B, S, D>
where
    M: PageMemory,
    B: AsRef<[u8]> + AsMut<[u8]>,
    S: AsMut<[u8]>,
    D: DeviceStateStore,
{
    /// The same applier keeping received device state in `store` (before the first
    /// [`feed`](Self::feed); what the old store held is dropped).
    pub fn with_device_store<E: DeviceStateStore>(self, store: E) -> Applier<M, B, S, E> {
        Applier {
            memory: self.memory,
            decoder: self.decoder,
            page_buf: self.page_buf,
            device: store,
            stats: self.stats,
            complete: self.complete,
            digest: self.digest,
            failed: self.failed,
        }
    }

    /// The device state the stream carried, in the order it arrived, once the stream
    /// completed and its digest verified (`None` before: device state is only valid
    /// with the memory it belongs to).
    pub fn device_state(&self) -> Option<DeviceStates<'_>> {
        self.complete
            .then(|| DeviceStates::new(self.device.records()))
    }

    /// The guest memory.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// Gives the guest memory back.
    pub fn into_memory(self) -> M {
        self.memory
    }

    /// What was applied so far.
    pub fn stats(&self) -> ApplyStats {
        self.stats
    }

    /// Whether the stream completed with matching digests.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The memory digest the source sent, once the destination's memory was verified
    /// to match it (`None` before the stream completed).
    pub fn digest(&self) -> Option<u128> {
        self.digest
    }

    /// Applies every frame in `input` (the next piece of the stream).
    pub fn feed(&mut self, mut input: &[u8]) -> Result<Progress, ApplyError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.feed_inner(&mut input);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    /// Checks that the stream ended complete (call at end of input).
    pub fn finish(&self) -> Result<(), ApplyError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.decoder.finish()?;
        // The decoder saw the completion frame, so `feed` verified the digest; checked
        // again so that success can only ever follow a matching digest.
        if !self.complete {
            return Err(ApplyError::Wire(WireErrorKind::EndedBeforeCompletion.at(
                Location::End {
                    offset: self.decoder.offset(),
                },
            )));
        }
        Ok(())
    }

    fn feed_inner(&mut self, input: &mut &[u8]) -> Result<Progress, ApplyError> {
        let page_size = self.memory.page_size();
        let Applier {
            memory,
            decoder,
            page_buf,
            device,
            stats,
            complete,
            digest: verified,
            ..
        } = self;
        let page_buf = &mut page_buf.as_mut()[..page_size];
        loop {
            // The number the next frame will have (the decoder counts frames it passed).
            let frame_no = decoder.frames();
            let event = match decoder.next(input)? {
                Some(event) => event,
                None => break,
            };
            match event {
                Event::Header(h) => {
                    let (sp, sn) = (h.layout.page_size(), h.layout.total_pages());
                    let (mp, mn) = (page_size as u64, memory.total_pages());
                    if (sp, sn) != (mp, mn) {
                        return Err(ApplyError::LayoutMismatch {
                            stream_page_size: sp,
                            stream_pages: sn,
                            memory_page_size: mp,
                            memory_pages: mn,
                        });
                    }
                }
                Event::Frame(Frame::DeviceState(item)) => {
                    // Kept, not given out, until the completion frame verified.
                    store(device, &item).map_err(|capacity| ApplyError::DeviceStateTooLarge {
                        frame: frame_no,
                        capacity,
                    })?;
                }
                Event::Frame(frame) => {
                    apply_frame(memory, page_buf, stats, frame, frame_no)?;
                    if let Frame::Complete { digest, .. } = frame {
                        let shard = decoder.header().map_or(Shard::WHOLE, |h| h.stream);
                        let computed = digest_stream(memory, shard, page_buf).map_err(|error| {
                            ApplyError::Memory {
                                frame: frame_no,
                                error,
                            }
                        })?;
                        if computed != digest {
                            return Err(ApplyError::DigestMismatch {
                                expected: digest,
                                computed,
                            });
                        }
                        *complete = true;
                        *verified = Some(digest);
                    }
                }
            }
        }
        Ok(if *complete {
            Progress::Complete
        } else {
            Progress::InProgress
        })
    }
}

/// Applies one page-carrying or bookkeeping frame; each page is decoded into
/// `page_buf` and written only when it decoded cleanly.
fn apply_frame<M: PageMemory>(
    memory: &mut M,
    page_buf: &mut [u8],
    stats: &mut ApplyStats,
    frame: Frame<'_>,
    frame_no: u64,
) -> Result<(), ApplyError> {
    let mem_err = |error| ApplyError::Memory {
        frame: frame_no,
        error,
    };
    let codec_err = |page, error| ApplyError::Codec {
        frame: frame_no,
        page,
        error,
    };
    match frame {
        Frame::ZeroRun { first_page, count } => {
            // The decoder checked first_page + count <= total pages.
            memory.zero_pages(first_page, count).map_err(mem_err)?;
            stats.zero_pages += count;
        }
        Frame::Raw { page, data } => {
            memory.write_page(page, data).map_err(mem_err)?;
            stats.raw_pages += 1;
        }
        Frame::Lz4 { page, data } => {
            lz4_decompress_page(data, page_buf).map_err(|e| codec_err(page, e))?;
            memory.write_page(page, page_buf).map_err(mem_err)?;
            stats.lz4_pages += 1;
        }
        Frame::Delta {
            page,
            base_hash: expected,
            data,
        } => {
            memory.read_page(page, page_buf).map_err(mem_err)?;
            let found = base_hash(page_buf);
            if found != expected {
                return Err(ApplyError::BaseMismatch {
                    frame: frame_no,
                    page,
                    expected,
                    found,
                });
            }
            delta_apply(page_buf, data).map_err(|e| codec_err(page, e))?;
            memory.write_page(page, page_buf).map_err(mem_err)?;
            stats.delta_pages += 1;
        }
        Frame::RoundEnd { .. } => stats.rounds += 1,
        Frame::RoundBegin { .. }
        | Frame::Switchover { .. }
        | Frame::Complete { .. }
        | Frame::DeviceState(_) => {}
    }
    Ok(())
}
