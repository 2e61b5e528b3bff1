//! The incremental stream decoder: bytes in, in pieces of any size; header and frames
//! out, or a typed error that says what is wrong and where.

use super::header::{HeaderPrefix, StreamHeader, HEADER_PREFIX_LEN, MAX_HEADER_LEN};
use super::{
    max_frame_len, Features, Frame, FrameHeaderView, Location, WireError, WireErrorKind,
    FRAME_HEADER_LEN,
};

/// Bytes of buffer a [`Decoder`] needs for streams of pages up to `max_page_size`.
pub const fn decoder_buffer_len(max_page_size: usize) -> usize {
    let frame = max_frame_len(max_page_size);
    if frame > MAX_HEADER_LEN {
        frame
    } else {
        MAX_HEADER_LEN
    }
}

/// What the decoder produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The stream header (always first).
    Header(&'a StreamHeader),
    /// A frame that passed its checksum and the stream rules.
    Frame(Frame<'a>),
}

/// The stream rules the decoder enforces beyond each frame's own bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Rules {
    header: Option<StreamHeader>,
    frames: u64,
    round: Option<(u32, u64)>,
    next_round: u32,
    switched_over: bool,
    complete: bool,
}

impl Rules {
    fn check(&mut self, frame: &Frame<'_>, header: &StreamHeader) -> Result<(), WireErrorKind> {
        let total = header.layout.total_pages();
        let feature = |f: Features, name| {
            if header.features.contains(f) {
                Ok(())
            } else {
                Err(WireErrorKind::FeatureNotAnnounced { feature: name })
            }
        };
        let pages = match *frame {
            Frame::ZeroRun { first_page, count } => {
                if count == 0 || first_page.checked_add(count).is_none_or(|end| end > total) {
                    return Err(WireErrorKind::BadZeroRun {
                        first: first_page,
                        count,
                        total,
                    });
                }
                if !header.stream.owns_range(first_page, count) {
                    return Err(other_stream(first_page, header));
                }
                count
            }
            Frame::Raw { page, .. } | Frame::Lz4 { page, .. } | Frame::Delta { page, .. } => {
                match frame {
                    Frame::Lz4 { .. } => feature(Features::LZ4, "LZ4")?,
                    Frame::Delta { .. } => feature(Features::DELTA, "delta")?,
                    _ => {}
                }
                if page >= total {
                    return Err(WireErrorKind::PageOutOfRange { page, total });
                }
                if !header.stream.owns(page) {
                    return Err(other_stream(page, header));
                }
                1
            }
            Frame::RoundBegin { round, .. } => {
                self.not_in_round()?;
                if round != self.next_round {
                    return Err(WireErrorKind::UnexpectedRound {
                        expected: self.next_round,
                        found: round,
                    });
                }
                self.round = Some((round, 0));
                self.next_round = round.wrapping_add(1);
                return Ok(());
            }
            Frame::RoundEnd { round, pages } => {
                let (open, carried) = self.round.ok_or(WireErrorKind::RoundNotBegun { round })?;
                if round != open {
                    return Err(WireErrorKind::UnexpectedRound {
                        expected: open,
                        found: round,
                    });
                }
                if pages != carried {
                    return Err(WireErrorKind::RoundCountMismatch {
                        round,
                        stated: pages,
                        carried,
                    });
                }
                self.round = None;
                return Ok(());
            }
            Frame::Switchover { .. } => {
                self.not_in_round()?;
                if self.switched_over {
                    return Err(WireErrorKind::DuplicateSwitchover);
                }
                self.switched_over = true;
                return Ok(());
            }
            Frame::DeviceState(_) => {
                feature(Features::DEVICE_STATE, "device state")?;
                self.not_in_round()?;
                if !self.switched_over {
                    return Err(WireErrorKind::DeviceStateBeforeSwitchover);
                }
                return Ok(());
            }
            Frame::Complete { total_pages, .. } => {
                self.not_in_round()?;
                if !self.switched_over {
                    return Err(WireErrorKind::CompleteBeforeSwitchover);
                }
                if total_pages != total {
                    return Err(WireErrorKind::TotalPagesMismatch {
                        stated: total_pages,
                        layout: total,
                    });
                }
                self.complete = true;
                return Ok(());
            }
        };
        let (_, carried) = self.round.as_mut().ok_or(WireErrorKind::PageOutsideRound)?;
        *carried += pages;
        Ok(())
    }

    fn not_in_round(&self) -> Result<(), WireErrorKind> {
        match self.round {
            Some((round, _)) => Err(WireErrorKind::RoundNotEnded { round }),
            None => Ok(()),
        }
    }
}

/// A page that travels on another stream: the first one not on this stream.
fn other_stream(first: u64, header: &StreamHeader) -> WireErrorKind {
    let s = header.stream;
    let page = if s.owns(first) {
        // A zero run that leaves its chunk: the first page past it.
        (first / crate::layout::SHARD_CHUNK_PAGES + 1) * crate::layout::SHARD_CHUNK_PAGES
    } else {
        first
    };
    WireErrorKind::PageOnOtherStream {
        page,
        index: s.index(),
        count: s.count(),
    }
}

/// Decodes a stream fed in pieces split at any byte boundary.
///
/// A frame that arrives whole in one piece is returned without copying; a frame split
/// across pieces is gathered in the decoder's buffer (at most one frame, at most
/// [`decoder_buffer_len`] bytes, never sized from the stream). The first error is
/// final: the decoder returns it again on every later call.
///
/// ```
/// use precopy::layout::GuestLayout;
/// use precopy::wire::{Decoder, Event, Features, Frame, StreamHeader};
///
/// let header = StreamHeader {
///     features: Features::ALL,
///     session_id: [7; 16],
///     layout: GuestLayout::flat(4096, 1 << 20).unwrap(),
///     stream: precopy::layout::Shard::WHOLE,
/// };
/// let mut stream = vec![0u8; 4096];
/// let mut n = header.emit(&mut stream).unwrap();
/// n += Frame::RoundBegin { round: 0, planned_pages: 256 }.emit(4096, &mut stream[n..]).unwrap();
///
/// let mut decoder = Decoder::with_max_page_size(4096);
/// let mut events = 0;
/// for piece in stream[..n].chunks(5) {
///     let mut input = piece;
///     while let Some(event) = decoder.next(&mut input).unwrap() {
///         events += 1;
///         if let Event::Frame(f) = event {
///             assert_eq!(f, Frame::RoundBegin { round: 0, planned_pages: 256 });
///         }
///     }
/// }
/// assert_eq!(events, 2);
/// // The stream stopped before its completion frame: finish() says so.
/// assert!(decoder.finish().unwrap_err().to_string().contains("before the completion"));
/// ```
#[derive(Clone, Debug)]
pub struct Decoder<B> {
    buf: B,
    /// Bytes of the current unit (header or frame) gathered in `buf`.
    filled: usize,
    /// Length of the current unit once its prefix is known, else 0.
    need: usize,
    /// Bytes taken from the input so far.
    consumed: u64,
    rules: Rules,
    failed: Option<WireError>,
}

#[cfg(feature = "alloc")]
impl Decoder<alloc::vec::Vec<u8>> {
    /// A decoder with its own buffer, for streams of pages up to `max_page_size`.
    pub fn with_max_page_size(max_page_size: usize) -> Self {
        Decoder::new(alloc::vec![0; decoder_buffer_len(max_page_size)])
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Decoder<B> {
    /// A decoder over `buf` (see [`decoder_buffer_len`]; a buffer too small for the
    /// stream's page size is reported as an error when the header arrives).
    pub fn new(buf: B) -> Self {
        Decoder {
            buf,
            filled: 0,
            need: 0,
            consumed: 0,
            rules: Rules::default(),
            failed: None,
        }
    }

    /// The stream header, once decoded.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.rules.header.as_ref()
    }

    /// Whether the completion frame has been decoded.
    pub fn is_complete(&self) -> bool {
        self.rules.complete
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        self.rules.frames
    }

    /// Stream bytes taken so far.
    pub fn offset(&self) -> u64 {
        self.consumed
    }

    /// Decodes the next header or frame from `input`, advancing it past the bytes
    /// used. `Ok(None)` means `input` is used up and more bytes are needed.
    pub fn next<'s, 'a: 's>(
        &'s mut self,
        input: &mut &'a [u8],
    ) -> Result<Option<Event<'s>>, WireError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let Decoder {
            buf,
            filled,
            need,
            consumed,
            rules,
            failed,
        } = self;
        let location = match rules.header {
            None => Location::Header,
            Some(_) => Location::Frame {
                number: rules.frames,
                offset: *consumed - *filled as u64,
            },
        };
        let mut fail = |kind: WireErrorKind| {
            let e = kind.at(location);
            *failed = Some(e);
            e
        };
        if input.is_empty() {
            return Ok(None);
        }
        // Any header fits a buffer this large; checked before any byte is taken, so
        // the outcome does not depend on how the input is split.
        let capacity = buf.as_ref().len();
        if capacity < MAX_HEADER_LEN {
            return Err(fail(WireErrorKind::BufferTooSmall {
                needed: MAX_HEADER_LEN,
                capacity,
            }));
        }
        if rules.complete {
            return Err(fail(WireErrorKind::TrailingData));
        }
        let prefix = match rules.header {
            None => HEADER_PREFIX_LEN,
            Some(_) => FRAME_HEADER_LEN,
        };
        let page_size = rules.header.map_or(0, |h| h.page_size());
        let unit_len = |p: &[u8]| -> Result<usize, WireErrorKind> {
            let n = match (
                HeaderPrefix::new_checked(p),
                FrameHeaderView::new_checked(p),
            ) {
                (Some(h), _) if page_size == 0 => h.header_len()?,
                (_, Some(f)) => f.check(page_size)?.1,
                _ => 0,
            };
            if n > capacity {
                return Err(WireErrorKind::BufferTooSmall {
                    needed: n,
                    capacity,
                });
            }
            Ok(n)
        };

        let unit: &'s [u8] = if *filled == 0 && input.len() >= prefix {
            let n = unit_len(input).map_err(&mut fail)?;
            if input.len() >= n {
                let (unit, rest) = input.split_at(n);
                *input = rest;
                *consumed += n as u64;
                unit
            } else {
                gather(buf.as_mut(), filled, need, consumed, input, n, n);
                return Ok(None);
            }
        } else {
            let buf = buf.as_mut();
            if *filled < prefix {
                gather(buf, filled, need, consumed, input, prefix, 0);
                if *filled < prefix {
                    return Ok(None);
                }
                let n = unit_len(&buf[..prefix]).map_err(&mut fail)?;
                *need = n;
            }
            let n = *need;
            gather(buf, filled, need, consumed, input, n, n);
            if *filled < n {
                return Ok(None);
            }
            *filled = 0;
            *need = 0;
            let buf: &'s [u8] = buf;
            &buf[..n]
        };

        let Some(header) = rules.header else {
            let header = StreamHeader::parse(unit).map_err(&mut fail)?;
            let needed = decoder_buffer_len(header.page_size());
            if needed > capacity {
                return Err(fail(WireErrorKind::BufferTooSmall { needed, capacity }));
            }
            return Ok(Some(Event::Header(rules.header.insert(header))));
        };
        let frame = Frame::parse(unit, page_size).map_err(&mut fail)?;
        rules.check(&frame, &header).map_err(&mut fail)?;
        rules.frames += 1;
        Ok(Some(Event::Frame(frame)))
    }

    /// Checks that the stream ended where it may: right after the completion frame.
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let at_unit = if self.rules.header.is_none() {
            Location::Header
        } else {
            Location::Frame {
                number: self.rules.frames,
                offset: self.consumed - self.filled as u64,
            }
        };
        if self.filled > 0 {
            let need = if self.need > 0 {
                self.need
            } else if self.rules.header.is_none() {
                HEADER_PREFIX_LEN
            } else {
                FRAME_HEADER_LEN
            };
            return Err(WireErrorKind::Truncated {
                have: self.filled,
                need,
            }
            .at(at_unit));
        }
        if !self.rules.complete {
            return Err(WireErrorKind::EndedBeforeCompletion.at(Location::End {
                offset: self.consumed,
            }));
        }
        Ok(())
    }
}

/// Moves bytes from `input` into `buf` until `filled` reaches `upto`; records the
/// unit length `need` when it is known (non-zero).
fn gather(
    buf: &mut [u8],
    filled: &mut usize,
    need: &mut usize,
    consumed: &mut u64,
    input: &mut &[u8],
    upto: usize,
    known_len: usize,
) {
    if known_len > 0 {
        *need = known_len;
    }
    let take = upto.saturating_sub(*filled).min(input.len());
    buf[*filled..*filled + take].copy_from_slice(&input[..take]);
    *filled += take;
    *consumed += take as u64;
    *input = &input[take..];
}
