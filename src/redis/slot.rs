//! One slot held by this process: a lease on the server, or, failing open, no slot at all.

/// One slot held by this process: a lease (its token) on the server, or, when Redis was
/// unreachable and the limiter fails open, no slot at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    Leased(String),
    Unlimited,
}
