//! The stream decoder over a caller buffer: a stream in pieces of any size, header
//! and frames out.

use super::frame::{c_frame, NO_FRAME};
use super::header::c_header;
use super::*;

/// Storage for a stream decoder: opaque, 8-byte aligned, valid after
/// `precopy_decoder_init`. Not for concurrent use, and not to be copied: it refers to
/// its buffer, which two copies would share.
#[repr(C)]
pub struct PrecopyDecoder {
    /// Opaque.
    pub opaque: [u64; PRECOPY_DECODER_SIZE / 8],
}

/// What the decoder produced.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrecopyEvent {
    /// `PRECOPY_EVENT_HEADER` or `PRECOPY_EVENT_FRAME`.
    pub kind: u32,
    /// Zero.
    pub reserved: u32,
    /// The frame (`PRECOPY_EVENT_FRAME`); its payload points into the input or into the
    /// decoder's buffer, valid until the next call on the decoder.
    pub frame: PrecopyFrame,
}

type StreamDecoder = Decoder<&'static mut [u8]>;

assert_fits!(PrecopyDecoder, StreamDecoder);

// SAFETY: `assert_fits!` above checks size and alignment.
unsafe impl Blob for PrecopyDecoder {
    type State = StreamDecoder;
    const MAGIC: u64 = u64::from_le_bytes(*b"pcDECODR");
}

/// Sets `*len_out` to the buffer a decoder needs for streams of pages up to
/// `max_page_size` bytes (the largest frame, or the largest header).
///
/// # Safety
/// `len_out` points at a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_buffer_len(
    max_page_size: usize,
    len_out: *mut usize,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let out = unsafe { as_mut(len_out) }?;
        *out = decoder_buffer_len(supported(max_page_size)?);
        Ok(())
    })())
}

/// Initializes `decoder` for a new stream, gathering split frames in the caller's
/// `buf` (`len` bytes, at least `precopy_decoder_buffer_len` of the largest page size
/// expected; a stream whose page size needs more fails with
/// `PRECOPY_ERR_BUFFER_TOO_SMALL` when its header arrives).
///
/// # Safety
/// `decoder` points at writable storage for a `precopy_decoder_t`; `buf` at `len`
/// writable bytes that stay valid, and are used by nothing else, while the decoder is.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_init(
    decoder: *mut PrecopyDecoder,
    buf: *mut u8,
    len: usize,
) -> c_int {
    status((|| {
        if len < decoder_buffer_len(MIN_PAGE_SIZE) {
            return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
        }
        // SAFETY: per this function's contract; the buffer outlives every use of the
        // decoder, which the 'static lifetime stands for.
        let buf: &'static mut [u8] = unsafe { as_slice_mut(buf, len) }?;
        // SAFETY: per this function's contract.
        match unsafe { PrecopyDecoder::init(decoder, Decoder::new(buf)) } {
            PRECOPY_OK => Ok(()),
            code => Err(code),
        }
    })())
}

/// Decodes the next header or frame from `*input` (`*input_len` bytes, untrusted, split
/// anywhere), advancing `*input` and `*input_len` past the bytes used. Returns
/// `PRECOPY_OK` with `*event` filled, or `PRECOPY_MORE` when the input is used up (feed
/// the next piece). Besides each frame's own checks, the stream's rules are enforced:
/// header first, pages in range and inside rounds, rounds in order with matching page
/// counts, codecs announced in the header, switchover before completion, nothing after
/// it. The first error is final: every later call returns it again;
/// `precopy_decoder_error_message` says what and where.
///
/// # Safety
/// `decoder` points at a `precopy_decoder_t` nothing else uses during the call; `input`
/// and `input_len` at writable values, `*input` at `*input_len` readable bytes (NULL
/// allowed when 0); `event` at a writable `precopy_event_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_next(
    decoder: *mut PrecopyDecoder,
    input: *mut *const u8,
    input_len: *mut usize,
    event: *mut PrecopyEvent,
) -> c_int {
    let r = (|| {
        // SAFETY: per this function's contract.
        let (d, input, input_len, event) = unsafe {
            (
                PrecopyDecoder::state_mut(decoder)?,
                as_mut(input)?,
                as_mut(input_len)?,
                as_mut(event)?,
            )
        };
        // SAFETY: per this function's contract.
        let bytes: &[u8] = unsafe { as_slice(*input, *input_len) }?;
        let mut rest = bytes;
        let next = d.next(&mut rest);
        let used = bytes.len() - rest.len();
        if used > 0 {
            // SAFETY: `used <= *input_len`: the result stays within (or one past the
            // end of) the caller's input buffer.
            *input = unsafe { (*input).add(used) };
            *input_len -= used;
        }
        let frame = match next.map_err(|e| wire_code_at(e.kind, e.location))? {
            None => return Ok(PRECOPY_MORE),
            Some(Event::Header(_)) => None,
            Some(Event::Frame(f)) => Some(c_frame(&f)),
        };
        *event = PrecopyEvent {
            kind: if frame.is_some() {
                PRECOPY_EVENT_FRAME
            } else {
                PRECOPY_EVENT_HEADER
            },
            reserved: 0,
            frame: frame.unwrap_or(NO_FRAME),
        };
        Ok(PRECOPY_OK)
    })();
    r.unwrap_or_else(|code| code)
}

/// Copies the stream header, once decoded, to `*header`; `PRECOPY_ERR_TRUNCATED`
/// before it has arrived.
///
/// # Safety
/// `decoder` points at a `precopy_decoder_t`; `header` at a writable
/// `precopy_stream_header_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_header(
    decoder: *const PrecopyDecoder,
    header: *mut PrecopyStreamHeader,
) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let (d, out) = unsafe { (PrecopyDecoder::state(decoder)?, as_mut(header)?) };
        *out = c_header(d.header().ok_or(PRECOPY_ERR_TRUNCATED)?);
        Ok(())
    })())
}

/// Checks that the stream ended where it may: right after the completion frame.
/// `PRECOPY_OK`, or the decoder's error, or `PRECOPY_ERR_TRUNCATED` (it ends inside a
/// header or frame) or `PRECOPY_ERR_STREAM` (before the completion frame).
///
/// # Safety
/// `decoder` points at a `precopy_decoder_t`.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_finish(decoder: *const PrecopyDecoder) -> c_int {
    status((|| {
        // SAFETY: per this function's contract.
        let d = unsafe { PrecopyDecoder::state(decoder) }?;
        d.finish().map_err(|e| wire_code_at(e.kind, e.location))
    })())
}

/// Writes what `precopy_decoder_finish` would report, for an operator ("frame 1832
/// (byte 7405568): checksum mismatch ..."; empty when the stream is complete), into
/// `buf` (`*len` bytes, NUL-terminated) and sets `*len` to its full length.
/// `PRECOPY_ERR_BUFFER_TOO_SMALL` if truncated (`buf` NULL: a length query).
///
/// # Safety
/// `decoder` points at a `precopy_decoder_t`; `len` at a writable `size_t`; `buf` is
/// NULL or points at `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn precopy_decoder_error_message(
    decoder: *const PrecopyDecoder,
    buf: *mut c_char,
    len: *mut usize,
) -> c_int {
    // SAFETY: per this function's contract.
    let d = match unsafe { PrecopyDecoder::state(decoder) } {
        Ok(d) => d,
        Err(code) => return code,
    };
    match d.finish() {
        // SAFETY: per this function's contract.
        Ok(()) => unsafe { write_message(buf, len, "") },
        // SAFETY: per this function's contract.
        Err(e) => unsafe { write_message(buf, len, e) },
    }
}
