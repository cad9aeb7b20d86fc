//! [`SessionLimiter`]: idempotent slots for sessions and their runs, taken without waiting.
//!
//! This is the seed's `AgentSessionManager.Concurrency.ConcurrencyLimiter`: a cap on parallel
//! sessions, a global cap on parallel runs, and slots named by ID so that acquiring twice counts
//! once and releasing what is not held does nothing.
//!
//! # Implementation details
//!
//! Writers (`acquire_*`, `release_*`) go through one mutex guarding two maps: each held session
//! with the set of its runs, and each held run with its session. The check against a limit and
//! the insert happen under that lock, so a limit is exact and two threads acquiring the same ID
//! take one slot between them. No Python, I/O or user code runs under the lock.
//!
//! Readers never take the lock (the seed reads its ETS tables without going through its
//! server). Before unlocking, a writer that changed the maps publishes both counts, taken from
//! the maps' lengths, packed in one `AtomicU64`: sessions in the high half, runs in the low half.
//! [`SessionLimiter::status`] is a single load of that word, so a status is one instant: it
//! never shows a run without the session it belongs to, as two separate counters could. The
//! packing is why a limit is at most [`MAX_SESSION_LIMIT`](crate::MAX_SESSION_LIMIT), and why
//! "unlimited" stops at that many active sessions or runs (far beyond what memory can hold).
//! [`SessionLimiter::limits`] reads fields fixed at construction.

use crate::error::{LimitError, MAX_SESSION_LIMIT, SessionError, check_max_parallel_runs, check_max_parallel_sessions};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use std::collections::{HashMap, HashSet};

/// A [`SessionLimiter`]'s configured limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Maximum sessions holding a slot at once.
    pub max_parallel_sessions: Option<usize>,
    /// Maximum runs holding a slot at once, across all sessions.
    pub max_parallel_runs: Option<usize>,
}

/// A [`SessionLimiter`]'s counts and capacity at one instant; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStatus {
    /// Sessions holding a slot.
    pub active_sessions: usize,
    /// Runs holding a slot, across all sessions.
    pub active_runs: usize,
    /// The limit on sessions.
    pub max_parallel_sessions: Option<usize>,
    /// The limit on runs.
    pub max_parallel_runs: Option<usize>,
    /// Session slots free, `None` when sessions are unlimited.
    pub available_session_slots: Option<usize>,
    /// Run slots free, `None` when runs are unlimited.
    pub available_run_slots: Option<usize>,
}

/// What is held, guarded by the writers' lock.
#[derive(Debug, Default)]
struct Held {
    /// Each session holding a slot, with the runs it holds.
    sessions: HashMap<String, HashSet<String>>,
    /// Each run holding a slot, with its session.
    runs: HashMap<String, String>,
}

#[derive(Debug)]
struct Shared {
    limits: SessionLimits,
    held: Mutex<Held>,
    /// `active_sessions << 32 | active_runs`, stored only under `held`'s lock.
    counts: AtomicU64,
}

impl Shared {
    /// The largest count each limit admits; unlimited is the packing's bound.
    fn session_cap(&self) -> usize {
        self.limits.max_parallel_sessions.unwrap_or(MAX_SESSION_LIMIT as usize)
    }

    fn run_cap(&self) -> usize {
        self.limits.max_parallel_runs.unwrap_or(MAX_SESSION_LIMIT as usize)
    }

    /// Publishes the counts of `held`; called with the lock held, after every change.
    fn publish(&self, held: &Held) {
        // Both lengths fit 32 bits: every insert is checked against a cap of at most u32::MAX.
        let counts = ((held.sessions.len() as u64) << 32) | held.runs.len() as u64;
        // Release: a reader that sees these counts also sees everything the writer did before.
        self.counts.store(counts, Ordering::Release);
    }
}

/// Slots for sessions and their runs: at most `max_parallel_sessions` sessions and at most
/// `max_parallel_runs` runs (across all sessions) hold one at once.
///
/// Slots are named by ID and never waited for:
///
/// * acquiring takes a slot at once or fails with [`SessionError::MaxSessionsExceeded`] /
///   [`SessionError::MaxRunsExceeded`];
/// * acquiring an ID that already holds a slot succeeds and counts once;
/// * releasing an ID that holds no slot does nothing, and releasing a session releases its runs;
/// * a run needs its session to hold a slot ([`SessionError::SessionNotHeld`] otherwise), and a
///   run ID held under one session cannot be acquired under another
///   ([`SessionError::RunHeldByOtherSession`]) until it is released.
///
/// [`status`](Self::status) and [`limits`](Self::limits) never wait for an acquire or release
/// in progress. The limiter is a cheap handle: clones share the same slots. It is `Send + Sync`.
///
/// # Examples
///
/// ```
/// use ferrolimit::{SessionError, SessionLimiter};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = SessionLimiter::new(Some(10), Some(1))?;
/// limiter.acquire_session("chat-1")?;
/// limiter.acquire_run("chat-1", "run-1")?;
/// assert_eq!(
///     limiter.acquire_run("chat-1", "run-2"),
///     Err(SessionError::MaxRunsExceeded { max_parallel_runs: 1 })
/// );
/// limiter.release_session("chat-1"); // releases run-1 too
/// assert_eq!(limiter.status().active_runs, 0);
/// # Ok(())
/// # }
/// ```
///
/// # Memory ordering
///
/// A [`status`](Self::status) read after an acquire or release returned (in happens-before
/// order) reflects it, or a later state.
#[derive(Debug, Clone)]
pub struct SessionLimiter {
    shared: Arc<Shared>,
}

impl SessionLimiter {
    /// The seed's default limit on sessions.
    pub const DEFAULT_MAX_PARALLEL_SESSIONS: usize = 100;
    /// The seed's default limit on runs.
    pub const DEFAULT_MAX_PARALLEL_RUNS: usize = 50;

    /// A limiter with the given limits; `None` is unlimited.
    ///
    /// # Errors
    ///
    /// [`LimitError`] when a limit is `Some(0)` or above
    /// [`MAX_SESSION_LIMIT`](crate::MAX_SESSION_LIMIT).
    ///
    /// # Examples
    ///
    /// ```
    /// use ferrolimit::SessionLimiter;
    ///
    /// let unlimited_runs = SessionLimiter::new(Some(10), None).unwrap();
    /// assert_eq!(unlimited_runs.status().available_run_slots, None);
    /// assert!(SessionLimiter::new(Some(0), None).is_err());
    /// ```
    pub fn new(max_parallel_sessions: Option<usize>, max_parallel_runs: Option<usize>) -> Result<Self, LimitError> {
        let limits = SessionLimits {
            max_parallel_sessions: max_parallel_sessions
                .map(|n| check_max_parallel_sessions(n as i128))
                .transpose()?,
            max_parallel_runs: max_parallel_runs
                .map(|n| check_max_parallel_runs(n as i128))
                .transpose()?,
        };
        Ok(Self::from_limits(limits))
    }

    /// A limiter with the seed's defaults: 100 sessions and 50 runs.
    #[must_use]
    pub fn with_defaults() -> Self {
        Self::from_limits(SessionLimits {
            max_parallel_sessions: Some(Self::DEFAULT_MAX_PARALLEL_SESSIONS),
            max_parallel_runs: Some(Self::DEFAULT_MAX_PARALLEL_RUNS),
        })
    }

    fn from_limits(limits: SessionLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                held: Mutex::new(Held::default()),
                counts: AtomicU64::new(0),
            }),
        }
    }

    /// Takes a slot for `session_id`, or does nothing if it already holds one. Never waits.
    ///
    /// Returns `true` if a slot was taken, `false` if the session already held one.
    ///
    /// # Errors
    ///
    /// * [`SessionError::MaxSessionsExceeded`] when `max_parallel_sessions` other sessions hold
    ///   a slot;
    /// * [`SessionError::EmptySessionId`] for `""`.
    pub fn acquire_session(&self, session_id: &str) -> Result<bool, SessionError> {
        if session_id.is_empty() {
            return Err(SessionError::EmptySessionId);
        }
        let mut held = self.shared.held.lock();
        if held.sessions.contains_key(session_id) {
            return Ok(false);
        }
        let cap = self.shared.session_cap();
        if held.sessions.len() >= cap {
            return Err(SessionError::MaxSessionsExceeded {
                max_parallel_sessions: cap,
            });
        }
        held.sessions.insert(session_id.to_owned(), HashSet::new());
        self.shared.publish(&held);
        Ok(true)
    }

    /// Takes a run slot for `run_id` under `session_id`, or does nothing if the run already
    /// holds one under that session. Never waits.
    ///
    /// Returns `true` if a slot was taken, `false` if the run already held one.
    ///
    /// # Errors
    ///
    /// Checked in this order, and nothing changes on any of them:
    ///
    /// * [`SessionError::EmptySessionId`] / [`SessionError::EmptyRunId`] for `""`;
    /// * [`SessionError::SessionNotHeld`] when `session_id` holds no slot (acquire the session
    ///   first);
    /// * [`SessionError::RunHeldByOtherSession`] when `run_id` holds a slot under another session
    ///   (release it first);
    /// * [`SessionError::MaxRunsExceeded`] when `max_parallel_runs` other runs hold a slot.
    pub fn acquire_run(&self, session_id: &str, run_id: &str) -> Result<bool, SessionError> {
        if session_id.is_empty() {
            return Err(SessionError::EmptySessionId);
        }
        if run_id.is_empty() {
            return Err(SessionError::EmptyRunId);
        }
        let mut guard = self.shared.held.lock();
        let held = &mut *guard;
        let Some(session_runs) = held.sessions.get_mut(session_id) else {
            return Err(SessionError::SessionNotHeld {
                session_id: session_id.to_owned(),
            });
        };
        if let Some(holder) = held.runs.get(run_id) {
            if holder == session_id {
                return Ok(false);
            }
            return Err(SessionError::RunHeldByOtherSession {
                run_id: run_id.to_owned(),
                session_id: session_id.to_owned(),
                holder: holder.clone(),
            });
        }
        let cap = self.shared.run_cap();
        if held.runs.len() >= cap {
            return Err(SessionError::MaxRunsExceeded { max_parallel_runs: cap });
        }
        session_runs.insert(run_id.to_owned());
        held.runs.insert(run_id.to_owned(), session_id.to_owned());
        self.shared.publish(held);
        Ok(true)
    }

    /// Releases `run_id`'s slot; does nothing if it holds none (an empty ID never does).
    ///
    /// Returns whether a slot was released.
    #[allow(
        clippy::must_use_candidate,
        reason = "a release is called for its effect; the result is a detail"
    )]
    pub fn release_run(&self, run_id: &str) -> bool {
        let mut guard = self.shared.held.lock();
        let held = &mut *guard;
        let Some(session_id) = held.runs.remove(run_id) else {
            return false;
        };
        // A held run's session always holds a slot: releasing a session releases its runs.
        if let Some(session_runs) = held.sessions.get_mut(&session_id) {
            session_runs.remove(run_id);
        }
        self.shared.publish(held);
        true
    }

    /// Releases `session_id`'s slot and the slots of all its runs; does nothing if it holds
    /// none (an empty ID never does).
    ///
    /// Returns whether a session slot was released.
    #[allow(
        clippy::must_use_candidate,
        reason = "a release is called for its effect; the result is a detail"
    )]
    pub fn release_session(&self, session_id: &str) -> bool {
        let mut guard = self.shared.held.lock();
        let held = &mut *guard;
        let Some(session_runs) = held.sessions.remove(session_id) else {
            return false;
        };
        for run_id in &session_runs {
            held.runs.remove(run_id);
        }
        self.shared.publish(held);
        // Free the run IDs after unlocking.
        drop(guard);
        drop(session_runs);
        true
    }

    /// The configured limits. Never waits.
    #[must_use]
    pub fn limits(&self) -> SessionLimits {
        self.shared.limits
    }

    /// The active counts and free slots at one instant. Never waits: it reads one atomic word
    /// and takes no lock.
    #[must_use]
    pub fn status(&self) -> SessionStatus {
        // Acquire: pairs with the writers' Release store in `publish`.
        let counts = self.shared.counts.load(Ordering::Acquire);
        let active_sessions = (counts >> 32) as usize;
        let active_runs = (counts & u64::from(u32::MAX)) as usize;
        let SessionLimits {
            max_parallel_sessions,
            max_parallel_runs,
        } = self.shared.limits;
        SessionStatus {
            active_sessions,
            active_runs,
            max_parallel_sessions,
            max_parallel_runs,
            available_session_slots: max_parallel_sessions.map(|max| max.saturating_sub(active_sessions)),
            available_run_slots: max_parallel_runs.map(|max| max.saturating_sub(active_runs)),
        }
    }
}

impl Default for SessionLimiter {
    /// The seed's defaults: see [`SessionLimiter::with_defaults`].
    fn default() -> Self {
        Self::with_defaults()
    }
}

#[cfg(all(test, not(ferrolimit_loom)))]
mod tests {
    use super::SessionLimiter;
    use std::sync::mpsc;
    use std::time::Duration;

    /// `status()` and `limits()` answer while a writer holds the lock.
    #[test]
    fn reads_do_not_wait_for_a_writer() {
        let limiter = SessionLimiter::new(Some(2), Some(3)).unwrap();
        limiter.acquire_session("a").unwrap();
        let writer = limiter.shared.held.lock();
        let (tx, rx) = mpsc::channel();
        let reader = limiter.clone();
        std::thread::spawn(move || tx.send((reader.status(), reader.limits())).unwrap());
        // Not a timing assertion: a read that took the lock would never answer at all.
        let (status, limits) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a read waited for the writer's lock");
        drop(writer);
        assert_eq!(status.active_sessions, 1);
        assert_eq!(limits.max_parallel_runs, Some(3));
    }
}
