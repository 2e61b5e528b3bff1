//! Device state at the destination: where an [`Applier`](super::Applier) keeps the
//! device-state frames it received until the stream verified, and how the caller reads
//! them back.
//!
//! A store holds the items as records, one after the other: id (u32 LE), version (u16
//! LE), length (u32 LE), the bytes. It grows by at most one frame body per frame, and
//! never past its capacity, whatever the stream says: [`NoDeviceState`] (capacity 0,
//! the default of a no-allocator applier), [`DeviceStateBuf`] (a caller buffer) or,
//! with `alloc`, a `Vec<u8>` of at most [`MAX_DEVICE_STATE_BYTES`].

use crate::wire::DeviceState;

/// Bytes of a record's head in a store: id, version, length.
const RECORD_HEAD: usize = 10;

/// The most device-state bytes (records included) a `Vec<u8>` store takes from one
/// stream: 16 MiB, a few hundred vCPUs with their XSAVE areas and the devices of a
/// VMM. A stream that sends more fails with
/// [`ApplyError::DeviceStateTooLarge`](super::ApplyError::DeviceStateTooLarge).
pub const MAX_DEVICE_STATE_BYTES: usize = 16 << 20;

/// Where an applier keeps received device state.
pub trait DeviceStateStore {
    /// The records stored so far.
    fn records(&self) -> &[u8];
    /// Appends one record (`parts` concatenated); `Err(capacity)` when it does not
    /// fit, the store unchanged.
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), usize>;
}

/// A store that takes no device state: a stream carrying some fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoDeviceState;

impl DeviceStateStore for NoDeviceState {
    fn records(&self) -> &[u8] {
        &[]
    }
    fn append(&mut self, _: &[&[u8]]) -> Result<(), usize> {
        Err(0)
    }
}

/// A store over caller bytes (no allocator): holds as many records as fit.
#[derive(Clone, Debug)]
pub struct DeviceStateBuf<T> {
    buf: T,
    len: usize,
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DeviceStateBuf<T> {
    /// An empty store over `buf`.
    pub fn new(buf: T) -> Self {
        DeviceStateBuf { buf, len: 0 }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DeviceStateStore for DeviceStateBuf<T> {
    fn records(&self) -> &[u8] {
        &self.buf.as_ref()[..self.len]
    }
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), usize> {
        let buf = self.buf.as_mut();
        let capacity = buf.len();
        let need: usize = parts.iter().map(|p| p.len()).sum();
        if need > capacity - self.len {
            return Err(capacity);
        }
        for p in parts {
            buf[self.len..self.len + p.len()].copy_from_slice(p);
            self.len += p.len();
        }
        Ok(())
    }
}

#[cfg(feature = "alloc")]
impl DeviceStateStore for alloc::vec::Vec<u8> {
    fn records(&self) -> &[u8] {
        self
    }
    fn append(&mut self, parts: &[&[u8]]) -> Result<(), usize> {
        let need: usize = parts.iter().map(|p| p.len()).sum();
        if need > MAX_DEVICE_STATE_BYTES - self.len() {
            return Err(MAX_DEVICE_STATE_BYTES);
        }
        // Bounded by the check above, and each part by the frame body bound.
        self.try_reserve(need).map_err(|_| self.len())?;
        for p in parts {
            self.extend_from_slice(p);
        }
        Ok(())
    }
}

/// Stores `item` in `store` as one record.
pub(super) fn store<D: DeviceStateStore>(
    store: &mut D,
    item: &DeviceState<'_>,
) -> Result<(), usize> {
    let len = item.data.len() as u32;
    store.append(&[
        &item.id.to_le_bytes(),
        &item.version.to_le_bytes(),
        &len.to_le_bytes(),
        item.data,
    ])
}

/// The device-state items of a verified stream, in the order they arrived
/// ([`Applier::device_state`](super::Applier::device_state)).
#[derive(Clone, Debug)]
pub struct DeviceStates<'a> {
    records: &'a [u8],
}

impl<'a> DeviceStates<'a> {
    pub(super) fn new(records: &'a [u8]) -> Self {
        DeviceStates { records }
    }
}

impl<'a> Iterator for DeviceStates<'a> {
    type Item = DeviceState<'a>;

    fn next(&mut self) -> Option<DeviceState<'a>> {
        let r = self.records;
        let head = r.get(..RECORD_HEAD)?;
        let id = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let version = u16::from_le_bytes([head[4], head[5]]);
        let len = u32::from_le_bytes([head[6], head[7], head[8], head[9]]) as usize;
        let data = r.get(RECORD_HEAD..RECORD_HEAD.checked_add(len)?)?;
        self.records = &r[RECORD_HEAD + len..];
        Some(DeviceState { id, version, data })
    }
}

/// One item of device state with its bytes owned: what the std runtime hands from the
/// guest to the stream, and from the destination to the caller.
#[cfg(feature = "alloc")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedDeviceState {
    /// Which state (the VMM's numbering).
    pub id: u32,
    /// The version of its format.
    pub version: u16,
    /// Its bytes.
    pub data: alloc::vec::Vec<u8>,
}

#[cfg(feature = "alloc")]
impl OwnedDeviceState {
    /// A copy of `item`.
    pub fn from_item(item: &DeviceState<'_>) -> Self {
        OwnedDeviceState {
            id: item.id,
            version: item.version,
            data: item.data.to_vec(),
        }
    }

    /// A borrowed view, as frames carry it.
    pub fn item(&self) -> DeviceState<'_> {
        DeviceState {
            id: self.id,
            version: self.version,
            data: &self.data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_capacity_holds() {
        let mut buf = DeviceStateBuf::new([0u8; 40]);
        let a = DeviceState {
            id: 7,
            version: 2,
            data: &[1, 2, 3],
        };
        store(&mut buf, &a).unwrap();
        let b = DeviceState {
            id: 8,
            version: 1,
            data: &[9; 20],
        };
        // 13 + 30 > 40: refused, nothing written.
        assert_eq!(store(&mut buf, &b), Err(40));
        assert_eq!(buf.records().len(), 13);
        let c = DeviceState {
            id: 9,
            version: 1,
            data: &[],
        };
        store(&mut buf, &c).unwrap();
        let items: alloc::vec::Vec<_> = DeviceStates::new(buf.records()).collect();
        assert_eq!(items, [a, c]);
        assert_eq!(store(&mut NoDeviceState, &c), Err(0));
    }
}
