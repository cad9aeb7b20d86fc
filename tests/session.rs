//! `SessionLimiter` through its public API: the seed's documented behaviours, the decisions on
//! runs without a session and run IDs reused across sessions, and randomized checks against a
//! model, single-threaded (exact after every step) and on many threads (invariants at every
//! step, exact after joining).

use ferrolimit::{LimitError, SessionError, SessionLimiter, SessionLimits, SessionStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::thread;

fn limiter(max_sessions: Option<usize>, max_runs: Option<usize>) -> SessionLimiter {
    SessionLimiter::new(max_sessions, max_runs).expect("valid limits")
}

fn status(active_sessions: usize, active_runs: usize, max_sessions: usize, max_runs: usize) -> SessionStatus {
    SessionStatus {
        active_sessions,
        active_runs,
        max_parallel_sessions: Some(max_sessions),
        max_parallel_runs: Some(max_runs),
        available_session_slots: Some(max_sessions - active_sessions),
        available_run_slots: Some(max_runs - active_runs),
    }
}

#[test]
fn bounds() {
    fn send_sync_unpin_clone<T: Send + Sync + Unpin + Clone + 'static>() {}
    send_sync_unpin_clone::<SessionLimiter>();
    send_sync_unpin_clone::<SessionStatus>();
    send_sync_unpin_clone::<SessionLimits>();
    send_sync_unpin_clone::<SessionError>();
}

#[test]
fn defaults_are_the_seeds() {
    let expected = SessionLimits {
        max_parallel_sessions: Some(100),
        max_parallel_runs: Some(50),
    };
    assert_eq!(SessionLimiter::with_defaults().limits(), expected);
    assert_eq!(SessionLimiter::default().limits(), expected);
    assert_eq!(SessionLimiter::with_defaults().status(), status(0, 0, 100, 50));
}

#[test]
fn zero_limits_are_rejected() {
    let err = SessionLimiter::new(Some(0), None).unwrap_err();
    assert_eq!(err, LimitError::MaxParallelSessionsTooSmall(0));
    assert_eq!(
        err.to_string(),
        "max_parallel_sessions must be >= 1, got 0. Use None for unlimited."
    );
    let err = SessionLimiter::new(None, Some(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_parallel_runs must be >= 1, got 0. Use None for unlimited."
    );
    assert!(err.is_below_minimum());
}

#[test]
fn limits_above_the_maximum_are_rejected() {
    let too_many = usize::try_from(ferrolimit::MAX_SESSION_LIMIT).unwrap().checked_add(1);
    // On a 32-bit target no usize is above the maximum.
    if let Some(too_many) = too_many {
        let err = SessionLimiter::new(Some(too_many), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("max_parallel_sessions must be <= 4294967295, got {too_many}")
        );
        assert!(!err.is_below_minimum());
    }
    assert!(SessionLimiter::new(Some(usize::try_from(ferrolimit::MAX_SESSION_LIMIT).unwrap()), None).is_ok());
}

#[test]
fn acquire_session_is_idempotent() {
    let limiter = limiter(Some(2), Some(2));
    assert_eq!(limiter.acquire_session("a"), Ok(true));
    assert_eq!(limiter.acquire_session("a"), Ok(false));
    assert_eq!(limiter.acquire_session("a"), Ok(false));
    assert_eq!(limiter.status().active_sessions, 1);
}

#[test]
fn acquire_run_is_idempotent() {
    let limiter = limiter(Some(2), Some(2));
    limiter.acquire_session("a").unwrap();
    assert_eq!(limiter.acquire_run("a", "r"), Ok(true));
    assert_eq!(limiter.acquire_run("a", "r"), Ok(false));
    assert_eq!(limiter.status().active_runs, 1);
}

#[test]
fn reacquiring_a_held_id_succeeds_at_the_limit() {
    let limiter = limiter(Some(1), Some(1));
    limiter.acquire_session("a").unwrap();
    limiter.acquire_run("a", "r").unwrap();
    assert_eq!(limiter.acquire_session("a"), Ok(false));
    assert_eq!(limiter.acquire_run("a", "r"), Ok(false));
}

#[test]
fn release_is_idempotent() {
    let limiter = limiter(Some(2), Some(2));
    limiter.acquire_session("a").unwrap();
    limiter.acquire_run("a", "r").unwrap();
    assert!(limiter.release_run("r"));
    assert!(!limiter.release_run("r"));
    assert!(limiter.release_session("a"));
    assert!(!limiter.release_session("a"));
    assert_eq!(limiter.status(), status(0, 0, 2, 2));
}

#[test]
fn releasing_unknown_ids_is_a_no_op() {
    let limiter = limiter(Some(2), Some(2));
    limiter.acquire_session("a").unwrap();
    limiter.acquire_run("a", "r").unwrap();
    assert!(!limiter.release_run("unknown"));
    assert!(!limiter.release_session("unknown"));
    assert!(!limiter.release_run(""));
    assert!(!limiter.release_session(""));
    // A session ID is not a run ID, and the other way round.
    assert!(!limiter.release_run("a"));
    assert!(!limiter.release_session("r"));
    assert_eq!(limiter.status(), status(1, 1, 2, 2));
}

#[test]
fn releasing_a_session_releases_its_runs() {
    let limiter = limiter(Some(2), Some(3));
    limiter.acquire_session("a").unwrap();
    limiter.acquire_session("b").unwrap();
    limiter.acquire_run("a", "a1").unwrap();
    limiter.acquire_run("a", "a2").unwrap();
    limiter.acquire_run("b", "b1").unwrap();
    assert!(limiter.release_session("a"));
    assert_eq!(limiter.status(), status(1, 1, 2, 3));
    // The released runs hold nothing: releasing them is a no-op, and they can be taken again.
    assert!(!limiter.release_run("a1"));
    assert_eq!(limiter.acquire_run("b", "a1"), Ok(true));
}

#[test]
fn max_sessions_exceeded() {
    let limiter = limiter(Some(2), None);
    limiter.acquire_session("a").unwrap();
    limiter.acquire_session("b").unwrap();
    let err = limiter.acquire_session("c").unwrap_err();
    assert_eq!(
        err,
        SessionError::MaxSessionsExceeded {
            max_parallel_sessions: 2
        }
    );
    assert_eq!(err.to_string(), "Maximum parallel sessions (2) reached");
    assert!(err.is_limit_exceeded());
    assert_eq!(limiter.status().active_sessions, 2);
    limiter.release_session("a");
    assert_eq!(limiter.acquire_session("c"), Ok(true));
}

#[test]
fn max_runs_exceeded_counts_runs_across_sessions() {
    let limiter = limiter(None, Some(2));
    limiter.acquire_session("a").unwrap();
    limiter.acquire_session("b").unwrap();
    limiter.acquire_run("a", "a1").unwrap();
    limiter.acquire_run("b", "b1").unwrap();
    let err = limiter.acquire_run("a", "a2").unwrap_err();
    assert_eq!(err, SessionError::MaxRunsExceeded { max_parallel_runs: 2 });
    assert_eq!(err.to_string(), "Maximum parallel runs (2) reached");
    assert!(err.is_limit_exceeded());
    assert_eq!(limiter.status().active_runs, 2);
    limiter.release_run("b1");
    assert_eq!(limiter.acquire_run("a", "a2"), Ok(true));
}

#[test]
fn unlimited_limits() {
    let limiter = limiter(None, None);
    assert_eq!(
        limiter.limits(),
        SessionLimits {
            max_parallel_sessions: None,
            max_parallel_runs: None
        }
    );
    for i in 0..1000 {
        let session = format!("s{i}");
        limiter.acquire_session(&session).unwrap();
        limiter.acquire_run(&session, &format!("r{i}")).unwrap();
    }
    let status = limiter.status();
    assert_eq!((status.active_sessions, status.active_runs), (1000, 1000));
    assert_eq!(status.max_parallel_sessions, None);
    assert_eq!(status.max_parallel_runs, None);
    assert_eq!(status.available_session_slots, None);
    assert_eq!(status.available_run_slots, None);
}

#[test]
fn one_limit_unlimited() {
    let limiter = limiter(Some(3), None);
    limiter.acquire_session("a").unwrap();
    let status = limiter.status();
    assert_eq!(status.available_session_slots, Some(2));
    assert_eq!(status.available_run_slots, None);
}

#[test]
fn status_through_a_lifecycle() {
    let limiter = limiter(Some(10), Some(20));
    assert_eq!(
        limiter.limits(),
        SessionLimits {
            max_parallel_sessions: Some(10),
            max_parallel_runs: Some(20)
        }
    );
    assert_eq!(limiter.status(), status(0, 0, 10, 20));
    limiter.acquire_session("s1").unwrap();
    assert_eq!(limiter.status(), status(1, 0, 10, 20));
    limiter.acquire_run("s1", "r1").unwrap();
    limiter.acquire_run("s1", "r2").unwrap();
    assert_eq!(limiter.status(), status(1, 2, 10, 20));
    limiter.acquire_session("s2").unwrap();
    limiter.acquire_run("s2", "r3").unwrap();
    assert_eq!(limiter.status(), status(2, 3, 10, 20));
    limiter.release_run("r1");
    assert_eq!(limiter.status(), status(2, 2, 10, 20));
    limiter.release_session("s1");
    assert_eq!(limiter.status(), status(1, 1, 10, 20));
    limiter.release_session("s2");
    assert_eq!(limiter.status(), status(0, 0, 10, 20));
}

/// Decision: a run needs its session to hold a slot.
#[test]
fn a_run_for_a_session_without_a_slot_is_rejected() {
    let limiter = limiter(Some(2), Some(2));
    let err = limiter.acquire_run("abc", "r").unwrap_err();
    assert_eq!(
        err,
        SessionError::SessionNotHeld {
            session_id: "abc".to_owned()
        }
    );
    assert_eq!(err.to_string(), "session 'abc' holds no slot: acquire_session first");
    assert!(!err.is_limit_exceeded());
    // Nor after the session was released.
    limiter.acquire_session("abc").unwrap();
    limiter.release_session("abc");
    assert!(matches!(
        limiter.acquire_run("abc", "r"),
        Err(SessionError::SessionNotHeld { .. })
    ));
    assert_eq!(limiter.status(), status(0, 0, 2, 2));
}

/// Decision: a run ID held under one session cannot be taken under another until released.
#[test]
fn a_run_id_held_under_another_session_is_rejected() {
    let limiter = limiter(Some(2), Some(2));
    limiter.acquire_session("a").unwrap();
    limiter.acquire_session("b").unwrap();
    limiter.acquire_run("a", "r").unwrap();
    let err = limiter.acquire_run("b", "r").unwrap_err();
    assert_eq!(
        err,
        SessionError::RunHeldByOtherSession {
            run_id: "r".to_owned(),
            session_id: "b".to_owned(),
            holder: "a".to_owned(),
        }
    );
    assert_eq!(
        err.to_string(),
        "run 'r' is held by session 'a', not 'b': release_run first"
    );
    // Nothing changed: the run still belongs to `a`, and goes with it.
    assert_eq!(limiter.status(), status(2, 1, 2, 2));
    limiter.release_session("a");
    assert_eq!(limiter.acquire_run("b", "r"), Ok(true));
}

#[test]
fn usage_errors_come_before_the_limit() {
    let limiter = limiter(Some(1), Some(1));
    limiter.acquire_session("a").unwrap();
    limiter.acquire_run("a", "r").unwrap();
    assert!(matches!(
        limiter.acquire_run("b", "x"),
        Err(SessionError::SessionNotHeld { .. })
    ));
}

#[test]
fn empty_ids_are_rejected() {
    let limiter = limiter(Some(2), Some(2));
    assert_eq!(limiter.acquire_session(""), Err(SessionError::EmptySessionId));
    assert_eq!(SessionError::EmptySessionId.to_string(), "session_id must not be empty");
    assert_eq!(limiter.acquire_run("", "r"), Err(SessionError::EmptySessionId));
    limiter.acquire_session("a").unwrap();
    assert_eq!(limiter.acquire_run("a", ""), Err(SessionError::EmptyRunId));
    assert_eq!(SessionError::EmptyRunId.to_string(), "run_id must not be empty");
    assert_eq!(limiter.status(), status(1, 0, 2, 2));
}

#[test]
fn clones_share_slots() {
    let limiter = limiter(Some(1), Some(1));
    let clone = limiter.clone();
    clone.acquire_session("a").unwrap();
    assert_eq!(limiter.status().active_sessions, 1);
    assert!(matches!(
        limiter.acquire_session("b"),
        Err(SessionError::MaxSessionsExceeded { .. })
    ));
}

/// A small deterministic generator (xorshift64*), so the randomized tests need no dependency
/// and replay the same way on every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 32) as usize) % n
    }
}

#[derive(Debug, Clone)]
enum Op {
    AcquireSession(String),
    AcquireRun(String, String),
    ReleaseRun(String),
    ReleaseSession(String),
}

impl Op {
    fn random(rng: &mut Rng, sessions: &[String], runs: &[String]) -> Self {
        let session = sessions[rng.below(sessions.len())].clone();
        let run = runs[rng.below(runs.len())].clone();
        match rng.below(4) {
            0 => Self::AcquireSession(session),
            1 => Self::AcquireRun(session, run),
            2 => Self::ReleaseRun(run),
            _ => Self::ReleaseSession(session),
        }
    }
}

/// What a limiter should hold: the plain maps the seed keeps in ETS.
#[derive(Debug, Default, Clone)]
struct Model {
    sessions: BTreeSet<String>,
    runs: BTreeMap<String, String>,
}

/// An op's result as a bool for all four methods (`Ok(taken)` for acquires, `Ok(released)`
/// for releases).
type Outcome = Result<bool, SessionError>;

impl Model {
    /// Applies `op` as a limiter with these limits must, and returns the expected outcome.
    fn apply(&mut self, op: &Op, limits: SessionLimits) -> Outcome {
        match op {
            Op::AcquireSession(s) => {
                if self.sessions.contains(s) {
                    return Ok(false);
                }
                if let Some(max) = limits.max_parallel_sessions
                    && self.sessions.len() >= max
                {
                    return Err(SessionError::MaxSessionsExceeded {
                        max_parallel_sessions: max,
                    });
                }
                self.sessions.insert(s.clone());
                Ok(true)
            }
            Op::AcquireRun(s, r) => {
                if !self.sessions.contains(s) {
                    return Err(SessionError::SessionNotHeld { session_id: s.clone() });
                }
                if let Some(holder) = self.runs.get(r) {
                    if holder == s {
                        return Ok(false);
                    }
                    return Err(SessionError::RunHeldByOtherSession {
                        run_id: r.clone(),
                        session_id: s.clone(),
                        holder: holder.clone(),
                    });
                }
                if let Some(max) = limits.max_parallel_runs
                    && self.runs.len() >= max
                {
                    return Err(SessionError::MaxRunsExceeded { max_parallel_runs: max });
                }
                self.runs.insert(r.clone(), s.clone());
                Ok(true)
            }
            Op::ReleaseRun(r) => Ok(self.runs.remove(r).is_some()),
            Op::ReleaseSession(s) => {
                let held = self.sessions.remove(s);
                self.runs.retain(|_, holder| holder != s);
                Ok(held)
            }
        }
    }

    fn status(&self, limits: SessionLimits) -> SessionStatus {
        SessionStatus {
            active_sessions: self.sessions.len(),
            active_runs: self.runs.len(),
            max_parallel_sessions: limits.max_parallel_sessions,
            max_parallel_runs: limits.max_parallel_runs,
            available_session_slots: limits.max_parallel_sessions.map(|m| m - self.sessions.len()),
            available_run_slots: limits.max_parallel_runs.map(|m| m - self.runs.len()),
        }
    }
}

fn perform(limiter: &SessionLimiter, op: &Op) -> Outcome {
    match op {
        Op::AcquireSession(s) => limiter.acquire_session(s),
        Op::AcquireRun(s, r) => limiter.acquire_run(s, r),
        Op::ReleaseRun(r) => Ok(limiter.release_run(r)),
        Op::ReleaseSession(s) => Ok(limiter.release_session(s)),
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn random_ops_match_a_model_after_every_step() {
    let configs = [
        (Some(2), Some(3)),
        (Some(3), Some(1)),
        (Some(1), Some(5)),
        (None, Some(2)),
        (Some(2), None),
        (None, None),
    ];
    let sessions = ids("s", 4);
    let runs = ids("r", 6);
    for (seed, (max_sessions, max_runs)) in configs.into_iter().enumerate() {
        let limiter = limiter(max_sessions, max_runs);
        let limits = limiter.limits();
        let mut model = Model::default();
        let mut rng = Rng::new(seed as u64 + 1);
        for step in 0..20_000 {
            let op = Op::random(&mut rng, &sessions, &runs);
            let expected = model.apply(&op, limits);
            assert_eq!(perform(&limiter, &op), expected, "step {step}: {op:?} with {limits:?}");
            assert_eq!(
                limiter.status(),
                model.status(limits),
                "step {step}: {op:?} with {limits:?}"
            );
        }
    }
}

/// Checks what must hold in every status, whatever other threads are doing.
fn check_invariants(status: &SessionStatus) {
    let max_sessions = status.max_parallel_sessions.unwrap_or(usize::MAX);
    let max_runs = status.max_parallel_runs.unwrap_or(usize::MAX);
    assert!(status.active_sessions <= max_sessions, "{status:?}");
    assert!(status.active_runs <= max_runs, "{status:?}");
    assert_eq!(
        status.available_session_slots,
        status.max_parallel_sessions.map(|m| m - status.active_sessions)
    );
    assert_eq!(
        status.available_run_slots,
        status.max_parallel_runs.map(|m| m - status.active_runs)
    );
    // Every run belongs to a held session, and a status is one instant.
    assert!(status.active_runs == 0 || status.active_sessions > 0, "{status:?}");
}

const THREADS: usize = 8;
const STEPS: usize = 20_000;

/// Every thread works on IDs of its own under limits shared by all, so each thread knows
/// exactly what it holds. A thread's result must be its model's, except that an acquire its
/// model allows may find the shared limit taken by others. Every status must obey the limits
/// and count at least what the reading thread holds; after joining, the counts are exactly
/// what the threads still hold.
#[test]
fn many_threads_with_their_own_ids_match_their_models() {
    let limiter = limiter(Some(10), Some(12));
    let limits = limiter.limits();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let limiter = limiter.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let sessions = ids(&format!("t{t}-s"), 3);
                let runs = ids(&format!("t{t}-r"), 4);
                let mut model = Model::default();
                let mut rng = Rng::new(100 + t as u64);
                barrier.wait();
                for step in 0..STEPS {
                    let op = Op::random(&mut rng, &sessions, &runs);
                    let mut hypothetical = model.clone();
                    let unlimited = SessionLimits {
                        max_parallel_sessions: None,
                        max_parallel_runs: None,
                    };
                    let expected = hypothetical.apply(&op, unlimited);
                    let outcome = perform(&limiter, &op);
                    // An acquire may find the shared slots held by others: then nothing changed.
                    let refused = expected == Ok(true) && outcome.as_ref().is_err_and(SessionError::is_limit_exceeded);
                    if !refused {
                        assert_eq!(outcome, expected, "thread {t} step {step}: {op:?}");
                        model = hypothetical;
                    }
                    let status = limiter.status();
                    check_invariants(&status);
                    assert!(status.active_sessions >= model.sessions.len(), "{status:?}");
                    assert!(status.active_runs >= model.runs.len(), "{status:?}");
                }
                model
            })
        })
        .collect();
    let mut total = Model::default();
    for handle in handles {
        let model = handle.join().expect("a stress thread panicked");
        total.sessions.extend(model.sessions);
        total.runs.extend(model.runs);
    }
    assert_eq!(limiter.status(), total.status(limits));
}

/// Every thread works on the same few IDs, so acquires and releases of one ID race. Every
/// outcome must be a legal one and every status must obey the limits; after joining, the
/// counts must equal what the limiter reports holding when asked ID by ID.
#[test]
fn many_threads_on_shared_ids_keep_the_invariants() {
    let limiter = limiter(Some(2), Some(3));
    let sessions = ids("s", 3);
    let runs = ids("r", 5);
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let limiter = limiter.clone();
            let barrier = Arc::clone(&barrier);
            let (sessions, runs) = (sessions.clone(), runs.clone());
            thread::spawn(move || {
                let mut rng = Rng::new(200 + t as u64);
                barrier.wait();
                for _ in 0..STEPS {
                    let op = Op::random(&mut rng, &sessions, &runs);
                    match perform(&limiter, &op) {
                        Ok(_)
                        | Err(
                            SessionError::MaxSessionsExceeded {
                                max_parallel_sessions: 2,
                            }
                            | SessionError::MaxRunsExceeded { max_parallel_runs: 3 },
                        ) => {}
                        Err(SessionError::SessionNotHeld { .. }) => assert!(matches!(op, Op::AcquireRun(..))),
                        Err(SessionError::RunHeldByOtherSession { session_id, holder, .. }) => {
                            assert_ne!(session_id, holder);
                        }
                        Err(other) => panic!("unexpected {other:?} for {op:?}"),
                    }
                    check_invariants(&limiter.status());
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("a stress thread panicked");
    }

    // Read back what is held without changing it: an idempotent acquire of a held ID returns
    // `Ok(false)`, and a run's holder is named when asked for under another session.
    let final_status = limiter.status();
    let held_sessions: Vec<&String> = sessions
        .iter()
        .filter(|s| match limiter.acquire_session(s) {
            Ok(false) => true,
            Ok(true) => !limiter.release_session(s),
            Err(_) => false,
        })
        .collect();
    assert_eq!(limiter.status(), final_status, "probing took a slot");
    let mut held_runs = 0;
    for run in &runs {
        let mut holders = 0;
        for session in &held_sessions {
            match limiter.acquire_run(session, run) {
                Ok(false) => holders += 1,
                Ok(true) => assert!(limiter.release_run(run)),
                Err(_) => {}
            }
        }
        assert!(holders <= 1);
        held_runs += holders;
    }
    assert_eq!(limiter.status(), final_status, "probing changed the counts");
    assert_eq!(
        (final_status.active_sessions, final_status.active_runs),
        (held_sessions.len(), held_runs)
    );

    for session in &sessions {
        limiter.release_session(session);
    }
    assert_eq!(limiter.status(), status(0, 0, 2, 3));
}
