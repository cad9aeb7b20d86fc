//! Snapshots of a limiter's counts.

/// A snapshot of a limiter: the counts are taken at a single instant; the totals are exact
/// whenever no release is halfway through (they may lag one in-flight release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterStats {
    /// Slots held right now.
    pub running: usize,
    /// Callers queued for a slot right now.
    pub waiting: usize,
    /// Free slots right now.
    pub available: usize,
    /// The current limit on holders.
    pub max_running: usize,
    /// The queue bound, `None` when unbounded.
    pub max_queued: Option<usize>,
    /// Slots handed out since creation (free or by handoff).
    pub acquired_total: u64,
    /// Arrivals refused because the queue was full.
    pub rejected_total: u64,
    /// Waits given up (cancelled, timed out or dropped) before using a slot.
    pub cancelled_total: u64,
}
