//! Round scheduling for pre-copy migration: a pure state machine, fed measurements and
//! the time (`now_ns`) by the caller; it never reads a clock and never does I/O.
//!
//! After every round the engine reports what it sent, how long it took and how many
//! pages the guest dirtied meanwhile; the [`Scheduler`] smooths those into a bandwidth
//! and a dirty rate, predicts the downtime of switching over now, and decides:
//! continue (perhaps with throttling advice), switch over, or fail with a
//! [`ScheduleError::NotConverging`] that says the measured rates.
//!
//! ```
//! use precopy::schedule::{Decision, Policy, RoundMeasurement, Scheduler};
//!
//! // 1 GiB guest of 4 KiB pages, QEMU-like 300 ms downtime limit, 10 GbE.
//! let mut s = Scheduler::new(Policy::default(), 1 << 18, 4096, 0).unwrap();
//! let mut now = 0;
//! let mut to_send = 1 << 18; // the bulk round sends every page
//! loop {
//!     let wire_bytes = to_send * 4096;
//!     now += wire_bytes * 8 / 10; // 10 Gbit/s = 1.25 bytes per ns
//!     let dirty = to_send / 10; // the guest re-dirtied a tenth meanwhile
//!     let out = s.round_done(RoundMeasurement { now_ns: now, pages_sent: to_send, wire_bytes, dirty_pages: dirty, pending_pages: 0 });
//!     match out.decision {
//!         Decision::Continue { .. } => to_send = dirty,
//!         Decision::SwitchOver { predicted_downtime_ns, .. } => {
//!             assert!(predicted_downtime_ns <= 300_000_000);
//!             break;
//!         }
//!         Decision::Fail(e) => panic!("{e}"),
//!     }
//! }
//! assert!(s.rounds() <= 4);
//! ```

mod error;
mod estimator;
pub mod links;
mod policy;
mod scheduler;

pub use error::ScheduleError;
pub use estimator::Ewma;
pub use policy::{DowntimeRamp, OnLimit, Policy, Shrink, Throttle};
pub use scheduler::{
    Decision, DowntimeReport, RoundMeasurement, RoundOutcome, RoundStats, Scheduler, SwitchReason,
};

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;
