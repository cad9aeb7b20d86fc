//! Snapshots of a limiter's and a governor's counts.

/// A snapshot of a limiter: the counts are taken at a single instant; the totals are exact
/// whenever no release is halfway through (they may lag one in-flight release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// A snapshot of a [`ConcurrencyGovernor`](crate::ConcurrencyGovernor)'s free and total slots
/// (the fields of the governor's original API).
///
/// Each layer's count is read at its own instant, so under concurrent use the three may be a
/// few operations apart. A caller holding a stream or tool slot while it waits for a global slot
/// counts as using the stream or tool slot (`*_available` excludes it) but not a global one. For
/// everything else (waiting callers, totals) see each layer's [`LimiterStats`], through
/// [`ConcurrencyGovernor::stream_limiter`](crate::ConcurrencyGovernor::stream_limiter) and its
/// siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GovernorStats {
    /// Stream slots free right now.
    pub streams_available: usize,
    /// The limit on concurrent streams.
    pub streams_max: usize,
    /// Tool slots free right now.
    pub tools_available: usize,
    /// The limit on concurrent tool executions.
    pub tools_max: usize,
    /// Global slots free right now.
    pub global_available: usize,
    /// The limit on streams and tool executions together.
    pub global_max: usize,
}
