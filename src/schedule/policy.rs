//! Migration policies: the downtime target and the bounds that end a migration.

use super::ScheduleError;

/// What to do when a bound (rounds, bytes, time) is reached before convergence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLimit {
    /// End the migration with [`ScheduleError::NotConverging`]; the source keeps running.
    Fail,
    /// Switch over anyway, accepting a downtime above the limit (Xen's behaviour,
    /// cloud-hypervisor's timeout "switch over" option). Reported as a forced switchover.
    SwitchOver,
}

/// Throttling advice (QEMU's auto-converge): when the guest dirties memory faster than
/// `threshold` times what the link moves, for `trigger_rounds` rounds in a row, advise
/// the VMM to throttle the vCPUs, starting at `initial_percent` and adding
/// `step_percent` each further round, up to `max_percent`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    /// Dirty bytes per second over bandwidth that counts as "not draining".
    pub threshold: f64,
    /// Consecutive such rounds before throttling starts or steps up.
    pub trigger_rounds: u32,
    /// First throttle percentage advised.
    pub initial_percent: u8,
    /// Added on each further step.
    pub step_percent: u8,
    /// Never advised above this.
    pub max_percent: u8,
}

impl Default for Throttle {
    /// QEMU's auto-converge defaults: 50% threshold, 2 rounds, 20% then +10% up to 99%.
    fn default() -> Self {
        Throttle {
            threshold: 0.5,
            trigger_rounds: 2,
            initial_percent: 20,
            step_percent: 10,
            max_percent: 99,
        }
    }
}

/// A downtime limit that rises when a migration does not converge: after
/// `after_rounds` rounds, each further round adds `step_ns`, up to `max_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DowntimeRamp {
    /// Rounds at the base limit before ramping starts.
    pub after_rounds: u32,
    /// Added to the limit each round after that.
    pub step_ns: u64,
    /// The limit never rises above this.
    pub max_ns: u64,
}

/// Keep iterating past the first round whose predicted downtime meets the limit while
/// more rounds still shrink the dirty set, so that the final round (the downtime) is
/// smaller: a guest that dirties pages fast, over a link that drains them faster,
/// converges geometrically, and switching over at the first prediction under the limit
/// leaves most of that on the table.
///
/// After a round that meets the downtime rule, the scheduler runs another live round
/// only when all of these hold, and switches over otherwise:
/// - the memory part of the prediction (the prediction less the fixed non-memory
///   allowance, which no round can lower) is above `target_fraction` of the limit
///   in force;
/// - the next round's prediction, extrapolated from this round's shrink (the memory
///   part scaled by this round's dirty pages over the previous round's), times
///   `headroom` is still within the limit (a next round that comes out that much worse
///   than the trend can still switch over);
/// - the round shrank the dirty set by at least `min_shrink` against the round before;
/// - fewer than `max_extra_rounds` rounds ran since the limit was first met this way,
///   and the bytes of those rounds plus the next one's (predicted) stay within
///   `max_extra_bytes_ratio` of guest memory;
/// - the next round reaches none of the policy's bounds (rounds, bytes, time).
///
/// A round whose prediction is above the limit after shrinking started ends the
/// shrinking: the ordinary rule decides from then on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shrink {
    /// Keep iterating only while the memory part of the prediction is above this
    /// share of the downtime limit in force, in (0, 1) (default 0.002: 0.6 ms of a
    /// 300 ms limit, a few hundred pages on loopback, on top of the fixed non-memory
    /// allowance). Rounds stop anyway once they no longer shrink by `min_shrink`.
    pub target_fraction: f64,
    /// Least share by which a round must shrink the dirty set against the round before
    /// for another to run, in (0, 1) (default 0.1).
    pub min_shrink: f64,
    /// The next round's extrapolated prediction times this must still be within the
    /// limit, at least 1.0 (default 1.25).
    pub headroom: f64,
    /// Most rounds after the first one that met the limit (default 8).
    pub max_extra_rounds: u32,
    /// Most bytes in those rounds, as a multiple of guest memory, above zero
    /// (default 0.5).
    pub max_extra_bytes_ratio: f64,
}

impl Default for Shrink {
    fn default() -> Self {
        Shrink {
            target_fraction: 0.002,
            min_shrink: 0.1,
            headroom: 1.25,
            max_extra_rounds: 8,
            max_extra_bytes_ratio: 0.5,
        }
    }
}

/// Everything that decides when a migration switches over, throttles or gives up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// Maximum downtime for the final round, ns (default 300 ms, QEMU's default).
    pub downtime_limit_ns: u64,
    /// Fixed part of downtime that is not guest memory: device state, the final harvest,
    /// resuming on the destination (default 10 ms). Added to every prediction.
    pub non_memory_downtime_ns: u64,
    /// Bandwidth to predict the final round with, bytes/s; `None` uses the measured one.
    pub switchover_bandwidth: Option<u64>,
    /// The link's bandwidth cap, bytes/s (enforced by the runtime); predictions never
    /// assume more.
    pub bandwidth_cap: Option<u64>,
    /// Switch over as soon as no more than this many pages are dirty, whatever the
    /// prediction (Xen: 50; default 0 = off).
    pub switch_below_pages: u64,
    /// Fewest live rounds before a switchover on the downtime rule (default 2: the
    /// bulk round, mostly zero pages, says little about the rates of the final one).
    /// `max_rounds` wins where the two disagree.
    pub min_rounds: u32,
    /// Most rounds, counting the bulk round (default 30).
    pub max_rounds: u32,
    /// Most bytes on the wire, as a multiple of guest memory (default 3.0, as Xen).
    pub max_bytes_ratio: Option<f64>,
    /// Longest migration, ns, from the scheduler's creation (default none).
    pub timeout_ns: Option<u64>,
    /// What to do when a bound is reached (default: fail).
    pub on_limit: OnLimit,
    /// Throttling advice (default on, QEMU's auto-converge numbers).
    pub throttle: Option<Throttle>,
    /// Downtime limit ramp (default off).
    pub ramp: Option<DowntimeRamp>,
    /// Weight of a new round in the smoothed rates, in (0, 1] (default 0.5).
    pub smoothing: f64,
    /// Keep iterating while rounds still shrink the dirty set, for a smaller final
    /// round (default on, see [`Shrink`]; the QEMU, Xen and cloud-hypervisor presets
    /// leave it off: they switch over at the first prediction within the limit).
    pub shrink: Option<Shrink>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            downtime_limit_ns: 300_000_000,
            non_memory_downtime_ns: 10_000_000,
            switchover_bandwidth: None,
            bandwidth_cap: None,
            switch_below_pages: 0,
            min_rounds: 2,
            max_rounds: 30,
            max_bytes_ratio: Some(3.0),
            timeout_ns: None,
            on_limit: OnLimit::Fail,
            throttle: Some(Throttle::default()),
            ramp: None,
            smoothing: 0.5,
            shrink: Some(Shrink::default()),
        }
    }
}

impl Policy {
    /// QEMU's defaults: 300 ms downtime limit, no round or byte bound, no
    /// auto-converge, no allowance for device state (the classic underestimate).
    pub fn qemu() -> Self {
        Policy {
            non_memory_downtime_ns: 0,
            min_rounds: 1,
            max_rounds: u32::MAX,
            max_bytes_ratio: None,
            throttle: None,
            shrink: None,
            ..Policy::default()
        }
    }

    /// Xen's current rule: at most 5 rounds, or switch over below 50 dirty pages.
    pub fn xen() -> Self {
        Policy {
            switch_below_pages: 50,
            min_rounds: 1,
            max_rounds: 5,
            max_bytes_ratio: None,
            on_limit: OnLimit::SwitchOver,
            throttle: None,
            shrink: None,
            ..Policy::default()
        }
    }

    /// Older Xen: at most 30 rounds or 3x guest memory sent, then switch over.
    pub fn xen_legacy() -> Self {
        Policy {
            switch_below_pages: 50,
            min_rounds: 1,
            max_rounds: 30,
            max_bytes_ratio: Some(3.0),
            on_limit: OnLimit::SwitchOver,
            throttle: None,
            shrink: None,
            ..Policy::default()
        }
    }

    /// cloud-hypervisor: a timeout, then cancel (`switch_over = false`) or switch over.
    pub fn cloud_hypervisor(timeout_ns: u64, switch_over: bool) -> Self {
        Policy {
            min_rounds: 1,
            max_rounds: u32::MAX,
            max_bytes_ratio: None,
            timeout_ns: Some(timeout_ns),
            on_limit: if switch_over {
                OnLimit::SwitchOver
            } else {
                OnLimit::Fail
            },
            throttle: None,
            shrink: None,
            ..Policy::default()
        }
    }

    /// Checks that every field makes sense.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        let bad = |field, reason| Err(ScheduleError::BadPolicy { field, reason });
        if self.downtime_limit_ns == 0 {
            return bad("downtime_limit_ns", "must be above zero");
        }
        if self.max_rounds == 0 {
            return bad("max_rounds", "must be at least 1 (the bulk round)");
        }
        if self.switchover_bandwidth == Some(0) || self.bandwidth_cap == Some(0) {
            return bad("bandwidth", "must be above zero when set");
        }
        if let Some(r) = self.max_bytes_ratio {
            if !(r.is_finite() && r >= 1.0) {
                return bad(
                    "max_bytes_ratio",
                    "must be at least 1.0 (one copy of memory)",
                );
            }
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return bad("smoothing", "must be in (0, 1]");
        }
        if let Some(t) = self.throttle {
            if !(t.threshold.is_finite() && t.threshold > 0.0) {
                return bad("throttle.threshold", "must be above zero");
            }
            if t.max_percent > 99 || t.initial_percent > t.max_percent || t.initial_percent == 0 {
                return bad("throttle", "needs 0 < initial_percent <= max_percent <= 99");
            }
            if t.trigger_rounds == 0 {
                return bad("throttle.trigger_rounds", "must be at least 1");
            }
        }
        if let Some(r) = self.ramp {
            if r.max_ns < self.downtime_limit_ns {
                return bad("ramp.max_ns", "must be at least the downtime limit");
            }
        }
        if let Some(sh) = self.shrink {
            if !(sh.target_fraction > 0.0 && sh.target_fraction < 1.0) {
                return bad("shrink.target_fraction", "must be in (0, 1)");
            }
            if !(sh.min_shrink > 0.0 && sh.min_shrink < 1.0) {
                return bad("shrink.min_shrink", "must be in (0, 1)");
            }
            if !(sh.headroom.is_finite() && sh.headroom >= 1.0) {
                return bad("shrink.headroom", "must be at least 1.0");
            }
            if sh.max_extra_rounds == 0 {
                return bad(
                    "shrink.max_extra_rounds",
                    "must be at least 1 (turn shrinking off with `shrink: None`)",
                );
            }
            if !(sh.max_extra_bytes_ratio.is_finite() && sh.max_extra_bytes_ratio > 0.0) {
                return bad("shrink.max_extra_bytes_ratio", "must be above zero");
            }
        }
        let highest_limit = self.ramp.map_or(self.downtime_limit_ns, |r| r.max_ns);
        if self.non_memory_downtime_ns >= highest_limit {
            return bad(
                "non_memory_downtime_ns",
                "(device state, final harvest, digest) alone reaches the downtime limit: \
                 no round could ever switch over; raise the limit",
            );
        }
        Ok(())
    }
}
