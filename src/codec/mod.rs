//! How a page is sent cheaply: zero-page elision, LZ4, and XBZRLE-style deltas against
//! a bounded cache of the version last sent, chosen per page.
//!
//! Every codec works over caller buffers and never allocates; the [`PageCache`] (and
//! so the [`PageEncoder`] that owns one) keeps its pages in `u64` words it allocates
//! once when built with `new` (feature `alloc`), or in caller words (`over`, no
//! allocator).
//!
//! | codec | encode | decode |
//! | --- | --- | --- |
//! | zero | [`is_zero_page`] | fill with zeros |
//! | LZ4 | [`Lz4Compressor::compress`] | [`lz4_decompress_page`] |
//! | delta | [`delta_encode`] | [`delta_apply`] |
//! | raw | copy | copy |
//!
//! [`decode_page`] undoes any of them.

mod cache;
mod choose;
mod delta;
mod error;
mod lz4;
mod lz4_decode;
mod stats;
mod varint;
mod zero;

pub use cache::{CacheStats, CachedBase, PageCache, SLOT_OVERHEAD};
pub use choose::{EncodedPage, EncoderConfig, PageEncoder};
pub use delta::{delta_apply, delta_encode};
pub use error::{CodecError, DeltaFault, Lz4Fault};
pub use lz4::{lz4_decompress_page, lz4_max_output_len, Lz4Compressor};
pub use stats::{Clock, CodecCounters, CodecStats, Encoding, NoClock};
pub use zero::is_zero_page;

/// Checks a page size by the one rule ([`PageSize`](crate::layout::PageSize): a
/// power of two from 512 B to 64 KiB), as a codec error.
pub fn check_page_size(page_size: usize) -> Result<(), CodecError> {
    crate::layout::PageSize::new(page_size as u64)
        .map(drop)
        .map_err(|_| CodecError::BadPageSize { page_size })
}

/// The hash that names a delta base (XXH3, 64 bits): a delta frame carries the hash
/// of the base it was made against and the destination applies it only onto a page
/// with the same hash.
#[inline]
pub fn base_hash(page: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(page)
}

/// Decodes a payload of `encoding` into `page` (one page). For [`Encoding::Delta`],
/// `page` must hold the base the delta was made against; the caller checks
/// [`base_hash`] first. On error `page` may be partly written.
///
/// ```
/// use precopy::codec::{decode_page, Encoding};
/// let mut page = [1u8; 512];
/// decode_page(Encoding::Zero, &[], &mut page).unwrap();
/// assert!(page.iter().all(|&b| b == 0));
/// ```
pub fn decode_page(encoding: Encoding, payload: &[u8], page: &mut [u8]) -> Result<(), CodecError> {
    match encoding {
        Encoding::Zero => {
            page.fill(0);
            Ok(())
        }
        Encoding::Raw => {
            if payload.len() != page.len() {
                return Err(CodecError::BadPageLength {
                    len: payload.len(),
                    page_size: page.len(),
                });
            }
            page.copy_from_slice(payload);
            Ok(())
        }
        Encoding::Lz4 => lz4_decompress_page(payload, page),
        Encoding::Delta => delta_apply(page, payload),
    }
}
