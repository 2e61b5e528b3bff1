//! What a simulation reports: to an observer as it goes ([`SimObserver`]), and at the
//! end ([`SimReport`], with the destination compared page by page: [`DestCheck`]).

use std::string::String;
use std::vec::Vec;

use crate::engine::{FinalRound, StreamsRound};
use crate::layout::SHARD_CHUNK_PAGES;
use crate::memory::PageMemory;

use super::pages::{DestMemory, SourceMemory};

/// What the simulator tells its caller as the migration goes (all optional).
pub trait SimObserver {
    /// Every stream ended a live round (the per-round table's row).
    fn round_done(&mut self, round: &StreamsRound) {
        let _ = round;
    }
    /// The final round, summed over the streams.
    fn final_round(&mut self, round: &FinalRound) {
        let _ = round;
    }
    /// Now and then: virtual time, pages sent and planned in the round in progress.
    fn progress(&mut self, now_ns: u64, sent: u64, planned: u64) {
        let _ = (now_ns, sent, planned);
    }
}

/// An observer that wants nothing.
impl SimObserver for () {}

/// The end-to-end check the simulator adds: every page of the destination against
/// the source's page as it is at the end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DestCheck {
    /// Pages compared (all of memory; 0: not run, the migration failed first).
    pub pages: u64,
    /// Pages whose destination copy differs from the source's.
    pub differing: u64,
    /// The first few differing pages.
    pub first: Vec<u64>,
    /// Pages the destination received whose bytes were no version of the page.
    pub corrupt_writes: u64,
}

impl DestCheck {
    /// Whether the check ran and every page matched.
    pub fn passed(&self) -> bool {
        self.pages > 0 && self.differing == 0 && self.corrupt_writes == 0
    }
}

/// How a simulated migration went; times are virtual.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// All rounds, the final one included (0 if it never came).
    pub rounds: u32,
    /// From the start until every destination stream verified (or the failure), ns.
    pub total_ns: u64,
    /// From the pause until every destination stream verified, ns.
    pub downtime_ns: Option<u64>,
    /// The scheduler's last prediction, ns (`u64::MAX`: none).
    pub predicted_downtime_ns: u64,
    /// Stream bytes put out, all streams and rounds.
    pub wire_bytes: u64,
    /// Bytes on the line, framing of the link model's packets included.
    pub line_bytes: u64,
    /// Guest memory, bytes.
    pub memory_bytes: u64,
    /// Page writes by the guest.
    pub writes: u64,
    /// Every live round, as the per-round table shows it.
    pub rows: Vec<StreamsRound>,
    /// The final round.
    pub final_round: Option<FinalRound>,
    /// The first round whose decision throttled the guest.
    pub throttle_round: Option<u32>,
    /// Each stream's digest, once all completed.
    pub digests: Option<Vec<u128>>,
    /// The destination compared with the source.
    pub check: DestCheck,
    /// Why the migration failed (`None`: the destination verified every stream).
    pub error: Option<String>,
}

impl SimReport {
    /// Whether the destination verified every stream and holds the source's memory.
    pub fn verified(&self) -> bool {
        self.error.is_none() && self.check.passed()
    }
}

/// Every page of the destination (stream `s` holds the pages of its shard in
/// `dests[s]`) against the source's page as it is now.
pub(super) fn check(memory: &SourceMemory, dests: &[DestMemory]) -> DestCheck {
    let total = memory.total_pages();
    let n = dests.len() as u64;
    let mut c = DestCheck {
        pages: total,
        corrupt_writes: dests.iter().map(|d| d.corrupt_writes()).sum(),
        ..DestCheck::default()
    };
    for page in 0..total {
        let stream = ((page / SHARD_CHUNK_PAGES) % n) as usize;
        if dests[stream].state(page) != memory.expected_state(page) {
            c.differing += 1;
            if c.first.len() < 8 {
                c.first.push(page);
            }
        }
    }
    c
}
