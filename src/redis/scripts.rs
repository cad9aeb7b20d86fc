//! The server-side Lua scripts (`lua/*.lua`), each prefixed with the shared `lua/prelude.lua`.
//!
//! Every state change runs as one script, so it is atomic on the server: purging expired leases,
//! admitting the head of the queue, enforcing `max_queued` and fencing releases by token never
//! interleave with another process's step.

use redis::Script;
use std::sync::LazyLock;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/prelude.lua"), include_str!($file))))
    };
}

/// Admits at once, queues, or rejects an arrival.
pub(super) static ACQUIRE: LazyLock<Script> = script!("lua/acquire.lua");
/// A waiter's heartbeat: tells it whether it was admitted.
pub(super) static POLL: LazyLock<Script> = script!("lua/poll.lua");
/// Releases slots or leaves the queue, by token only.
pub(super) static LEAVE: LazyLock<Script> = script!("lua/leave.lua");
/// Extends the leases still held.
pub(super) static RENEW: LazyLock<Script> = script!("lua/renew.lua");
/// Fleet-wide running and waiting counts.
pub(super) static COUNTS: LazyLock<Script> = script!("lua/counts.lua");
/// Sets the fleet's limit.
pub(super) static RESIZE: LazyLock<Script> = script!("lua/resize.lua");
