//! The CLI's JSON lines, one `Serialize` type per kind, written by serde_json (the
//! library's report types serialize themselves with the `serde` feature).

use serde::Serialize;

/// Prints `value` as one JSON line on stdout.
pub fn line<T: Serialize>(value: &T) {
    match serde_json::to_string(value) {
        Ok(s) => println!("{s}"),
        // Only a map with non-string keys or a failing Serialize impl can fail: none
        // of the types here has either.
        Err(e) => eprintln!("precopy: JSON output: {e}"),
    }
}

/// Milliseconds of `ns`, to a tenth.
pub fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e5).round() / 10.0
}

/// `{"kind":"listening","addr":...}`: where `recv` listens.
#[derive(Serialize)]
pub struct Listening<'a> {
    /// "listening".
    pub kind: &'static str,
    /// HOST:PORT.
    pub addr: &'a str,
}

/// `{"kind":"refused",...}`: a connection `recv` refused while it listens on.
#[derive(Serialize)]
pub struct Refused<'a> {
    /// "refused".
    pub kind: &'static str,
    /// The connection's address.
    pub peer: &'a str,
    /// Why.
    pub error: &'a str,
}

/// `recv`'s summary of a verified migration.
#[derive(Serialize)]
pub struct RecvSummary {
    /// "summary".
    pub kind: &'static str,
    /// Always true here.
    pub verified: bool,
    /// Session id, hex.
    pub session: String,
    /// Streams of the migration.
    pub streams: u8,
    /// Guest memory size.
    pub memory_bytes: u64,
    /// Page size.
    pub page_size: u64,
    /// Rounds applied.
    pub rounds: u64,
    /// Pages by how they arrived.
    pub zero: u64,
    /// Raw pages.
    pub raw: u64,
    /// LZ4 pages.
    pub lz4: u64,
    /// Delta pages.
    pub delta: u64,
    /// Stream bytes received.
    pub stream_bytes: u64,
    /// The migration's digest, `0x` and 32 hex digits.
    pub digest: String,
}

/// A summary of a failure: `{"kind":"summary","verified":false,"error":...}`.
#[derive(Serialize)]
pub struct Failed<'a> {
    /// "summary".
    pub kind: &'static str,
    /// Always false here.
    pub verified: bool,
    /// Why.
    pub error: &'a str,
}

/// One live round of the source's table.
#[derive(Serialize)]
pub struct Round {
    /// "round".
    pub kind: &'static str,
    /// Round number (the bulk round is 1).
    pub round: u32,
    /// Pages dirty at the round's start.
    pub dirty_pages: u64,
    /// Pages sent.
    pub pages: u64,
    /// Pages sent as zero runs.
    pub zero: u64,
    /// Delta pages.
    pub delta: u64,
    /// LZ4 pages.
    pub lz4: u64,
    /// Raw pages.
    pub raw: u64,
    /// Pages deferred to the next round.
    pub deferred: u64,
    /// Stream bytes.
    pub wire_bytes: u64,
    /// Duration, ms.
    pub duration_ms: f64,
    /// Measured bandwidth.
    pub bandwidth_bytes_per_sec: f64,
    /// Measured dirty rate.
    pub dirty_pages_per_sec: f64,
    /// Predicted downtime, ms (`null`: none yet).
    pub predicted_downtime_ms: Option<f64>,
    /// Throttle applied.
    pub throttle_percent: u8,
    /// Streams compressing with LZ4.
    pub lz4_streams: u8,
}

/// The final round (guest paused).
#[derive(Serialize)]
pub struct FinalRound {
    /// "round".
    pub kind: &'static str,
    /// Round number.
    pub round: u32,
    /// Always true.
    pub r#final: bool,
    /// Pages sent.
    pub pages: u64,
    /// Zero pages.
    pub zero: u64,
    /// Delta pages.
    pub delta: u64,
    /// LZ4 pages.
    pub lz4: u64,
    /// Raw pages.
    pub raw: u64,
    /// Stream bytes.
    pub wire_bytes: u64,
}

/// The source's summary (`send`, `demo`).
#[derive(Serialize)]
pub struct SourceSummary {
    /// "summary".
    pub kind: &'static str,
    /// Whether the destination verified and the source's check passed.
    pub verified: bool,
    /// Rounds, the final one included.
    pub rounds: u32,
    /// The whole migration, ms.
    pub total_ms: f64,
    /// Downtime, ms (`null`: never paused).
    pub downtime_ms: Option<f64>,
    /// `--downtime-ms`.
    pub downtime_limit_ms: f64,
    /// Whether the downtime was over the limit.
    pub downtime_over_limit: bool,
    /// The scheduler's last prediction, ms.
    pub predicted_downtime_ms: Option<f64>,
    /// `--verify`.
    pub verify: &'static str,
    /// The source's part of the check inside the downtime, ms.
    pub verify_in_downtime_ms: Option<f64>,
    /// The source's re-read after the destination verified, ms.
    pub verify_after_ms: Option<f64>,
    /// Its verdict: not_run, in_downtime, matched, mismatch.
    pub source_check: &'static str,
    /// Stream bytes.
    pub wire_bytes: u64,
    /// Guest memory size.
    pub memory_bytes: u64,
    /// Stream bytes over memory size.
    pub wire_over_memory: f64,
    /// Page writes by the guest.
    pub guest_writes: u64,
    /// Pages that differ (a lost write).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub differing_pages: Option<u64>,
    /// The first of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_differing_pages: Option<Vec<u64>>,
    /// The migration's digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Page writes in the 200 ms after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writes_after_failure: Option<u64>,
    /// The session id (`send`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}
