//! The stream header: magic, format version, features, page size, session id and the
//! guest layout, closed by a CRC-32.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "PRECOPY\0"
//!      8     2  format version (u16 LE), checked before anything after it
//!     10     2  header length in bytes, 44 + 16 x regions (u16 LE)
//!     12     4  feature flags (u32 LE, see Features)
//!     16     4  page size (u32 LE)
//!     20    16  session id
//!     36     2  region count (u16 LE, 1..=64)
//!     38     1  stream index (format 2; 0 in format 1)
//!     39     1  stream count, 1..=255 (format 2; 0 in format 1, meaning 1)
//!     40  16xN  regions: guest address (u64 LE), pages (u64 LE)
//!  40+16N    4  CRC-32 (IEEE) of all bytes before it
//! ```

use crate::layout::{GuestLayout, PageSize, Shard, MAX_REGIONS};

use super::{crc32, get_u16, get_u32, get_u64, WireErrorKind, FORMAT_VERSION};

/// The stream's first eight bytes.
pub const MAGIC: [u8; 8] = *b"PRECOPY\0";
/// Bytes of the header before the regions.
pub const HEADER_FIXED_LEN: usize = 40;
/// Bytes the decoder needs to learn the header's length.
pub const HEADER_PREFIX_LEN: usize = 12;
/// Bytes per region.
pub const REGION_LEN: usize = 16;
/// The longest header: [`MAX_REGIONS`] regions.
pub const MAX_HEADER_LEN: usize = header_len(MAX_REGIONS);

/// Header length for `regions` regions.
pub const fn header_len(regions: usize) -> usize {
    HEADER_FIXED_LEN + REGION_LEN * regions + 4
}

/// Feature flags: the codecs a stream may use beyond zero runs and raw pages, and
/// whether it carries device state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Features(pub u32);

impl Features {
    /// LZ4 page frames may appear.
    pub const LZ4: Features = Features(1);
    /// Delta page frames may appear.
    pub const DELTA: Features = Features(2);
    /// Device-state frames may appear (kind 9, after the final round). A reader that
    /// does not know the frame refuses the stream at its header, before any memory
    /// is sent.
    pub const DEVICE_STATE: Features = Features(4);
    /// Every feature this version knows.
    pub const ALL: Features = Features(7);
    /// The codecs a source engine announces: [`LZ4`](Self::LZ4) and
    /// [`DELTA`](Self::DELTA) (device state only when it carries some).
    pub const CODECS: Features = Features(3);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        Features(self.0 | rhs.0)
    }
}

/// A checked view of the header's first [`HEADER_PREFIX_LEN`] bytes, enough to
/// validate the magic and version and learn the header's length.
#[derive(Clone, Copy, Debug)]
pub struct HeaderPrefix<'a> {
    bytes: &'a [u8; HEADER_PREFIX_LEN],
}

impl<'a> HeaderPrefix<'a> {
    /// Views `bytes` if it is at least [`HEADER_PREFIX_LEN`] long.
    pub fn new_checked(bytes: &'a [u8]) -> Option<Self> {
        Some(HeaderPrefix {
            bytes: bytes.get(..HEADER_PREFIX_LEN)?.try_into().ok()?,
        })
    }

    /// The magic, version and length checked, in that order; returns the length.
    pub fn header_len(&self) -> Result<usize, WireErrorKind> {
        let magic: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| self.bytes[i]);
        if magic != MAGIC {
            return Err(WireErrorKind::BadMagic { found: magic });
        }
        let version = get_u16(self.bytes, 8);
        if version == 0 {
            return Err(WireErrorKind::ZeroVersion);
        }
        if version > FORMAT_VERSION {
            return Err(WireErrorKind::NewerVersion { version });
        }
        let len = usize::from(get_u16(self.bytes, 10));
        let regions_bytes = len.wrapping_sub(header_len(0));
        if !(header_len(1)..=MAX_HEADER_LEN).contains(&len) || regions_bytes % REGION_LEN != 0 {
            return Err(WireErrorKind::BadHeaderLength { len });
        }
        Ok(len)
    }
}

/// The validated stream header (the `Repr` of smoltcp's style).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// Codecs the stream may use.
    pub features: Features,
    /// Identifies the migration (chosen by the source, echoed in logs).
    pub session_id: [u8; 16],
    /// Guest layout; also gives the page size.
    pub layout: GuestLayout,
    /// Which stream of the migration this is, and so which pages it carries
    /// ([`Shard::WHOLE`] for a single-stream migration).
    pub stream: Shard,
}

impl StreamHeader {
    /// Page size in bytes.
    pub fn page_size(&self) -> usize {
        self.layout.page_size() as usize
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn encoded_len(&self) -> usize {
        header_len(self.layout.regions().len())
    }

    /// Parses and validates a whole header (its length from [`HeaderPrefix`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireErrorKind> {
        let prefix = HeaderPrefix::new_checked(bytes).ok_or(WireErrorKind::Truncated {
            have: bytes.len(),
            need: HEADER_PREFIX_LEN,
        })?;
        let len = prefix.header_len()?;
        let bytes = bytes.get(..len).ok_or(WireErrorKind::Truncated {
            have: bytes.len(),
            need: len,
        })?;
        let stored = get_u32(bytes, len - 4);
        let computed = crc32(&[&bytes[..len - 4]]);
        if stored != computed && !cfg!(fuzzing) {
            return Err(WireErrorKind::ChecksumMismatch { stored, computed });
        }
        let features = Features(get_u32(bytes, 12));
        if features.0 & !Features::ALL.0 != 0 {
            return Err(WireErrorKind::UnknownFeatures {
                bits: features.0 & !Features::ALL.0,
            });
        }
        let page_size = get_u32(bytes, 16);
        PageSize::new(page_size.into()).map_err(|_| WireErrorKind::BadPageSize {
            page_size: page_size.into(),
        })?;
        let mut session_id = [0u8; 16];
        session_id.copy_from_slice(&bytes[20..36]);
        let count = usize::from(get_u16(bytes, 36));
        if header_len(count) != len {
            return Err(WireErrorKind::BadHeaderLength { len });
        }
        let stream = match (get_u16(bytes, 8), bytes[38], bytes[39]) {
            (1, 0, 0) => Shard::WHOLE,
            (1, _, _) => return Err(WireErrorKind::ReservedNotZero),
            (_, index, count) => {
                Shard::new(index, count).ok_or(WireErrorKind::BadStream { index, count })?
            }
        };
        let mut ranges = [(0u64, 0u64); MAX_REGIONS];
        for (i, range) in ranges.iter_mut().enumerate().take(count) {
            let at = HEADER_FIXED_LEN + i * REGION_LEN;
            let (addr, pages) = (get_u64(bytes, at), get_u64(bytes, at + 8));
            let len = pages
                .checked_mul(page_size.into())
                .ok_or(WireErrorKind::BadLayout(
                    crate::layout::LayoutError::BadRegion {
                        addr,
                        len: u64::MAX,
                    },
                ))?;
            *range = (addr, len);
        }
        let layout = GuestLayout::new(page_size.into(), &ranges[..count])
            .map_err(WireErrorKind::BadLayout)?;
        Ok(StreamHeader {
            features,
            session_id,
            layout,
            stream,
        })
    }

    /// Writes the header into `out`; returns the bytes written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireErrorKind> {
        let len = self.encoded_len();
        let got = out.len();
        let out = out
            .get_mut(..len)
            .ok_or(WireErrorKind::OutputTooSmall { needed: len, got })?;
        PageSize::new(self.layout.page_size()).map_err(|_| WireErrorKind::BadPageSize {
            page_size: self.layout.page_size(),
        })?;
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[10..12].copy_from_slice(&(len as u16).to_le_bytes());
        out[12..16].copy_from_slice(&self.features.0.to_le_bytes());
        out[16..20].copy_from_slice(&(self.page_size() as u32).to_le_bytes());
        out[20..36].copy_from_slice(&self.session_id);
        let regions = self.layout.regions();
        out[36..38].copy_from_slice(&(regions.len() as u16).to_le_bytes());
        out[38] = self.stream.index();
        out[39] = self.stream.count();
        for (i, r) in regions.iter().enumerate() {
            let at = HEADER_FIXED_LEN + i * REGION_LEN;
            out[at..at + 8].copy_from_slice(&r.guest_addr.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&r.pages.to_le_bytes());
        }
        let crc = crc32(&[&out[..len - 4]]);
        out[len - 4..].copy_from_slice(&crc.to_le_bytes());
        Ok(len)
    }
}
