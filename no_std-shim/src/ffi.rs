//! Checked conversions from C arguments: pointers to references and slices, state blobs
//! to the Rust state they hold, and Rust messages into caller buffers.
//!
//! Everything a C caller can get wrong that can be checked is checked here (NULL,
//! alignment, byte sizes that overflow, blobs never initialized); the rest is the
//! documented contract of each function (a pointer really points at as many elements as
//! its length says, and stays valid for the call).

use core::ffi::{c_char, c_int};
use core::fmt;
use core::mem::{align_of, size_of};

use crate::error::{
    PRECOPY_ERR_BAD_LENGTH, PRECOPY_ERR_BUFFER_TOO_SMALL, PRECOPY_ERR_MISALIGNED, PRECOPY_ERR_NULL,
    PRECOPY_ERR_UNINITIALIZED, PRECOPY_OK,
};

/// Checks that `ptr` is non-NULL and aligned for `T`.
pub(crate) fn check_ptr<T>(ptr: *const T) -> Result<(), c_int> {
    if ptr.is_null() {
        Err(PRECOPY_ERR_NULL)
    } else if ptr as usize % align_of::<T>() != 0 {
        Err(PRECOPY_ERR_MISALIGNED)
    } else {
        Ok(())
    }
}

/// Checks that `len` elements of `T` span at most `isize::MAX` bytes.
fn check_len<T>(len: usize) -> Result<(), c_int> {
    match len.checked_mul(size_of::<T>()) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(()),
        _ => Err(PRECOPY_ERR_BAD_LENGTH),
    }
}

/// A shared reference from a C pointer.
///
/// # Safety
/// When non-NULL and aligned, `ptr` points at an initialized `T` valid for `'a`, not
/// written through any other pointer meanwhile (other than through atomics inside `T`).
pub(crate) unsafe fn as_ref<'a, T>(ptr: *const T) -> Result<&'a T, c_int> {
    check_ptr(ptr)?;
    // SAFETY: non-NULL and aligned (checked above); valid and initialized per the
    // caller's contract.
    Ok(unsafe { &*ptr })
}

/// An exclusive reference from a C pointer.
///
/// # Safety
/// When non-NULL and aligned, `ptr` points at an initialized `T` valid for `'a` that
/// nothing else reads or writes meanwhile.
pub(crate) unsafe fn as_mut<'a, T>(ptr: *mut T) -> Result<&'a mut T, c_int> {
    check_ptr(ptr)?;
    // SAFETY: non-NULL and aligned (checked above); valid, initialized and unaliased
    // per the caller's contract.
    Ok(unsafe { &mut *ptr })
}

/// A shared slice from a C pointer and element count. NULL is accepted with count 0.
///
/// # Safety
/// When `len > 0` and `ptr` is non-NULL and aligned, `ptr` points at `len` initialized
/// elements valid for `'a` and not written through other pointers meanwhile (other than
/// through atomics inside `T`).
pub(crate) unsafe fn as_slice<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], c_int> {
    if len == 0 {
        return Ok(&[]);
    }
    check_ptr(ptr)?;
    check_len::<T>(len)?;
    // SAFETY: non-NULL, aligned, at most isize::MAX bytes (checked above); `len`
    // initialized elements valid for 'a per the caller's contract.
    Ok(unsafe { core::slice::from_raw_parts(ptr, len) })
}

/// An exclusive slice from a C pointer and element count. NULL is accepted with count 0.
///
/// # Safety
/// When `len > 0` and `ptr` is non-NULL and aligned, `ptr` points at `len` elements
/// (initialized: every `T` used here is a plain integer or byte) valid for `'a` that
/// nothing else reads or writes meanwhile.
pub(crate) unsafe fn as_slice_mut<'a, T>(ptr: *mut T, len: usize) -> Result<&'a mut [T], c_int> {
    if len == 0 {
        return Ok(&mut []);
    }
    check_ptr(ptr)?;
    check_len::<T>(len)?;
    // SAFETY: non-NULL, aligned, at most isize::MAX bytes (checked above); `len`
    // elements valid for 'a and unaliased per the caller's contract.
    Ok(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}

/// The caller's output buffer of `*out_len` bytes at `out`, once it holds `needed`
/// bytes; otherwise `*out_len` gets `needed` and the call fails with
/// `PRECOPY_ERR_BUFFER_TOO_SMALL`, so the caller can retry with that size.
///
/// # Safety
/// `out` points at `*out_len` writable bytes, valid and unaliased for `'a`.
pub(crate) unsafe fn out_buffer<'a>(
    out: *mut u8,
    out_len: &mut usize,
    needed: usize,
) -> Result<&'a mut [u8], c_int> {
    if *out_len < needed {
        *out_len = needed;
        return Err(PRECOPY_ERR_BUFFER_TOO_SMALL);
    }
    // SAFETY: per this function's contract.
    unsafe { as_slice_mut(out, *out_len) }
}

/// Writes `value` through an optional output pointer (NULL: not wanted).
///
/// # Safety
/// When non-NULL and aligned, `ptr` points at writable memory for a `T`.
pub(crate) unsafe fn write_opt<T>(ptr: *mut T, value: T) -> Result<(), c_int> {
    if ptr.is_null() {
        return Ok(());
    }
    check_ptr(ptr)?;
    // SAFETY: non-NULL, aligned (checked above), writable per the caller's contract;
    // `T` is a plain integer here, so nothing is dropped.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Rust state kept in a fixed-size, caller-allocated C blob: a magic number first, so
/// blobs that were never initialized (zeroed, or garbage) are refused.
#[repr(C)]
pub(crate) struct Tagged<S> {
    magic: u64,
    state: S,
}

/// A C blob type `Self` that holds a [`Tagged`]`<Self::State>`.
///
/// # Safety
/// Implementors guarantee `Tagged<Self::State>` fits in `Self` (size and alignment);
/// each implementation asserts it at compile time.
pub(crate) unsafe trait Blob: Sized {
    /// The Rust state the blob holds.
    type State;
    /// Marks an initialized blob of this type (different for every blob type).
    const MAGIC: u64;

    /// Stores `state` in the blob at `blob`, which is then initialized.
    ///
    /// # Safety
    /// When non-NULL and aligned, `blob` points at writable memory for a `Self` that
    /// nothing else reads or writes during the call.
    unsafe fn init(blob: *mut Self, state: Self::State) -> c_int {
        if let Err(code) = check_ptr(blob) {
            return code;
        }
        let tagged = blob.cast::<Tagged<Self::State>>();
        // SAFETY: `blob` is non-NULL and aligned for `Self`, whose size and alignment
        // cover `Tagged<State>` (the trait's contract); it is writable per ours. The
        // old contents are not dropped (they may be garbage; `State` owns nothing).
        unsafe {
            tagged.write(Tagged {
                magic: Self::MAGIC,
                state,
            })
        };
        PRECOPY_OK
    }

    /// Checks the blob at `blob` and returns a pointer to its state.
    ///
    /// # Safety
    /// When non-NULL and aligned, `blob` points at readable memory for a `Self`.
    unsafe fn state_ptr(blob: *const Self) -> Result<*mut Self::State, c_int> {
        check_ptr(blob)?;
        let tagged = blob.cast::<Tagged<Self::State>>().cast_mut();
        // SAFETY: non-NULL, aligned and readable (checked / per the contract); the magic
        // is a plain u64 at offset 0 of the repr(C) `Tagged`, within `Self`.
        let magic = unsafe { core::ptr::addr_of!((*tagged).magic).read() };
        if magic != Self::MAGIC {
            return Err(PRECOPY_ERR_UNINITIALIZED);
        }
        // SAFETY: in bounds of the blob, as above; no reference is created here.
        Ok(unsafe { core::ptr::addr_of_mut!((*tagged).state) })
    }

    /// The state of an initialized blob, shared.
    ///
    /// # Safety
    /// As [`Blob::state_ptr`]; an initialized blob is valid for `'a` and only accessed
    /// through shared references (or atomics) meanwhile.
    unsafe fn state<'a>(blob: *const Self) -> Result<&'a Self::State, c_int> {
        // SAFETY: the magic says `init` wrote a valid `State` here; shared access per
        // the caller's contract.
        unsafe { Self::state_ptr(blob).map(|p| &*p) }
    }

    /// The state of an initialized blob, exclusive.
    ///
    /// # Safety
    /// As [`Blob::state_ptr`]; nothing else accesses the blob during `'a`.
    unsafe fn state_mut<'a>(blob: *mut Self) -> Result<&'a mut Self::State, c_int> {
        // SAFETY: the magic says `init` wrote a valid `State` here; exclusive access per
        // the caller's contract.
        unsafe { Self::state_ptr(blob).map(|p| &mut *p) }
    }
}

/// Asserts at compile time that `Tagged<$state>` fits in blob type `$blob`.
macro_rules! assert_fits {
    ($blob:ty, $state:ty) => {
        const _: () = {
            assert!(
                core::mem::size_of::<$crate::ffi::Tagged<$state>>()
                    <= core::mem::size_of::<$blob>()
            );
            assert!(
                core::mem::align_of::<$crate::ffi::Tagged<$state>>()
                    <= core::mem::align_of::<$blob>()
            );
        };
    };
}
pub(crate) use assert_fits;

/// A `fmt::Write` into a byte buffer that always leaves room for the NUL, truncates, and
/// counts the full length.
struct Truncating<'a> {
    buf: &'a mut [u8],
    written: usize,
    needed: usize,
}

impl fmt::Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self
            .buf
            .len()
            .saturating_sub(1)
            .saturating_sub(self.written);
        let n = room.min(s.len());
        self.buf[self.written..self.written + n].copy_from_slice(&s.as_bytes()[..n]);
        self.written += n;
        self.needed += s.len();
        Ok(())
    }
}

/// Formats `msg` into the caller's buffer `buf` of `*len` bytes, NUL-terminated, and
/// sets `*len` to the message's full length (without the NUL). When the buffer is too
/// small (including `*len == 0`, or `buf` NULL: a size query), the message is truncated
/// and `PRECOPY_ERR_BUFFER_TOO_SMALL` returned.
///
/// # Safety
/// `len` is NULL or points at a readable and writable `size_t`; `buf` is NULL or points
/// at `*len` writable bytes.
pub(crate) unsafe fn write_message(
    buf: *mut c_char,
    len: *mut usize,
    msg: impl fmt::Display,
) -> c_int {
    // SAFETY: per this function's contract.
    let len = match unsafe { as_mut(len) } {
        Ok(len) => len,
        Err(code) => return code,
    };
    // A NULL buffer asks for the length, whatever `*len` says.
    let capacity = if buf.is_null() { 0 } else { *len };
    // SAFETY: per this function's contract; `c_char` and `u8` have the same layout.
    let buf = match unsafe { as_slice_mut(buf.cast::<u8>(), capacity) } {
        Ok(buf) => buf,
        Err(code) => return code,
    };
    let mut w = Truncating {
        buf,
        written: 0,
        needed: 0,
    };
    // `Truncating` never fails; a `Display` impl that fails leaves what it wrote.
    let _ = fmt::write(&mut w, format_args!("{msg}"));
    let (written, needed) = (w.written, w.needed);
    if let Some(nul) = w.buf.get_mut(written) {
        *nul = 0;
    }
    *len = needed;
    if needed < w.buf.len() {
        PRECOPY_OK
    } else {
        PRECOPY_ERR_BUFFER_TOO_SMALL
    }
}
