//! The scheduling layer's error type.

use core::fmt;

/// Why a migration cannot proceed under its policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScheduleError {
    /// The guest dirties memory faster than the link drains it, and a bound of the
    /// policy (rounds, bytes, time) was reached before the predicted downtime fell under
    /// the limit.
    NotConverging {
        /// Rounds completed.
        rounds: u32,
        /// Which bound was hit.
        bound: &'static str,
        /// Smoothed dirty rate, pages per second.
        dirty_pages_per_sec: f64,
        /// Smoothed link bandwidth, bytes per second.
        bandwidth_bytes_per_sec: f64,
        /// Downtime predicted if switching over now, ns.
        predicted_downtime_ns: u64,
        /// The downtime limit in force, ns.
        downtime_limit_ns: u64,
    },
    /// A policy value makes no sense (named, with the reason).
    BadPolicy {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The page size or guest size given to the scheduler is zero.
    BadGuest {
        /// Pages in the guest.
        total_pages: u64,
        /// Page size in bytes.
        page_size: u64,
    },
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ScheduleError::NotConverging {
                rounds,
                bound,
                dirty_pages_per_sec,
                bandwidth_bytes_per_sec,
                predicted_downtime_ns,
                downtime_limit_ns,
            } => write!(
                f,
                "migration is not converging: {bound} reached after {rounds} rounds; the guest \
                 dirties {dirty_pages_per_sec:.0} pages/s while the link moves {:.1} MB/s, so \
                 switching over now would take {} ms against a limit of {} ms (raise the \
                 downtime limit or the bandwidth, or let precopy throttle the guest)",
                bandwidth_bytes_per_sec / 1e6,
                predicted_downtime_ns / 1_000_000,
                downtime_limit_ns / 1_000_000
            ),
            ScheduleError::BadPolicy { field, reason } => {
                write!(f, "migration policy: {field} {reason}")
            }
            ScheduleError::BadGuest {
                total_pages,
                page_size,
            } => write!(
                f,
                "guest of {total_pages} pages of {page_size} bytes cannot be migrated (zero size)"
            ),
        }
    }
}

impl core::error::Error for ScheduleError {}
