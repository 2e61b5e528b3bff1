//! LZ4 page compression over caller buffers: `lz4_flex`'s block compressor, and our
//! own safe block decoder (`lz4_decode`).

use lz4_flex::block::{self, CompressTable};

use super::{CodecError, Lz4Fault};

/// Bytes an LZ4 output buffer needs for a page of `page_size` bytes (LZ4's worst case
/// for incompressible input). Only the encoder needs this much room: a page that does
/// not shrink is sent raw, so no LZ4 payload on the wire is longer than a page.
pub const fn lz4_max_output_len(page_size: usize) -> usize {
    block::get_maximum_output_size(page_size)
}

/// An LZ4 compressor that keeps its hash table between pages (8 KiB, no allocation).
///
/// ```
/// use precopy::codec::{lz4_decompress_page, lz4_max_output_len, Lz4Compressor};
/// let page: Vec<u8> = (0..4096).map(|i| (i % 7) as u8).collect();
/// let mut out = vec![0; lz4_max_output_len(4096)];
/// let n = Lz4Compressor::new().compress(&page, &mut out).unwrap();
/// assert!(n < 200);
/// let mut back = vec![0; 4096];
/// lz4_decompress_page(&out[..n], &mut back).unwrap();
/// assert_eq!(back, page);
/// ```
pub struct Lz4Compressor {
    table: CompressTable,
}

impl core::fmt::Debug for Lz4Compressor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Lz4Compressor")
    }
}

impl Default for Lz4Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Lz4Compressor {
    /// A compressor with a fresh table.
    pub fn new() -> Self {
        Lz4Compressor {
            table: CompressTable::small(),
        }
    }

    /// Compresses `page` into `out`, which must hold [`lz4_max_output_len`] of the
    /// page's length; returns the compressed length (which may exceed the page's).
    pub fn compress(&mut self, page: &[u8], out: &mut [u8]) -> Result<usize, CodecError> {
        let needed = lz4_max_output_len(page.len());
        if out.len() < needed {
            return Err(CodecError::OutputTooSmall {
                needed,
                got: out.len(),
            });
        }
        block::compress_into_with_table(page, out, &mut self.table).map_err(|_| {
            CodecError::OutputTooSmall {
                needed,
                got: out.len(),
            }
        })
    }
}

/// Decompresses an LZ4 block into `page`, which it must fill exactly. The block is
/// untrusted: any malformation is an error, never a read or write out of bounds.
pub fn lz4_decompress_page(data: &[u8], page: &mut [u8]) -> Result<(), CodecError> {
    match super::lz4_decode::decode_block(data, page) {
        Some(n) if n == page.len() => Ok(()),
        Some(decoded) => Err(CodecError::Lz4Corrupt {
            reason: Lz4Fault::ShortPage { decoded },
        }),
        None => Err(CodecError::Lz4Corrupt {
            reason: Lz4Fault::Malformed,
        }),
    }
}
