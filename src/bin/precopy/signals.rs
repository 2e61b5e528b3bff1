//! Ending on a signal without leaving damage: SIGINT, SIGTERM, SIGHUP and SIGPIPE (a
//! reader such as `head` that went away) remove the temporary stream file being
//! written, if any, then end the process as the signal does by default (a broken pipe
//! ends it quietly, as it ends `cat`, instead of a panic in `println!`).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

/// The temporary file to remove on a signal (a leaked `CString`, or null).
static TEMP_FILE: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE];

extern "C" fn on_signal(sig: libc::c_int) {
    let path = TEMP_FILE.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: unlink, signal and raise are async-signal-safe; `path` is null or a
    // NUL-terminated string leaked by `TempFile::new` and never freed while set.
    unsafe {
        if !path.is_null() {
            libc::unlink(path);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the handler for the signals above. Called once, first thing in `main`.
pub fn install() {
    for sig in SIGNALS {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only calls
        // async-signal-safe functions; installing it replaces Rust's SIG_IGN for
        // SIGPIPE, so writes to a closed pipe end the process instead of failing.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// A temporary file beside a target, removed on drop or on a signal unless it was
/// [`persist`](Self::persist)ed (renamed over the target).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    target: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// Names a temporary file beside `target` (same directory, so the rename is
    /// atomic) and registers it for removal on a signal. The file is not created here.
    pub fn new(target: &Path) -> Result<Self, String> {
        let name = target
            .file_name()
            .ok_or_else(|| format!("--output {}: not a file name", target.display()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".precopy-{}.tmp", std::process::id()));
        let path = target.with_file_name(temp_name);
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| format!("--output {}: the path holds a NUL byte", target.display()))?;
        let old = TEMP_FILE.swap(c.into_raw(), Ordering::SeqCst);
        free(old);
        Ok(TempFile {
            path,
            target: target.to_path_buf(),
            persisted: false,
        })
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temporary file over the target.
    pub fn persist(mut self) -> Result<(), String> {
        free(TEMP_FILE.swap(std::ptr::null_mut(), Ordering::SeqCst));
        std::fs::rename(&self.path, &self.target).map_err(|e| {
            format!(
                "renaming {} to {}: {e}",
                self.path.display(),
                self.target.display()
            )
        })?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        free(TEMP_FILE.swap(std::ptr::null_mut(), Ordering::SeqCst));
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Frees a path taken out of [`TEMP_FILE`].
fn free(p: *mut libc::c_char) {
    if !p.is_null() {
        // SAFETY: every non-null pointer stored in TEMP_FILE came from
        // `CString::into_raw`, and swapping it out made this the only owner.
        drop(unsafe { CString::from_raw(p) });
    }
}
