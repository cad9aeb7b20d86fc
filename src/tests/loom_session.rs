//! loom models of `SessionLimiter`: one slot for one ID however many threads acquire it, and a
//! status read racing writers is always one consistent instant.

use crate::session::SessionLimiter;
use loom::thread;

/// Two threads acquire the same session and run at once: exactly one of each takes the slot,
/// and the other finds it already held.
#[test]
fn loom_concurrent_acquires_of_one_id_count_once() {
    loom::model(|| {
        let limiter = SessionLimiter::new(Some(2), Some(2)).unwrap();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                thread::spawn(move || {
                    let session = limiter.acquire_session("s").unwrap();
                    let run = limiter.acquire_run("s", "r").unwrap();
                    (session, run)
                })
            })
            .collect();
        let taken: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(taken.iter().filter(|(session, _)| *session).count(), 1);
        assert_eq!(taken.iter().filter(|(_, run)| *run).count(), 1);
        let status = limiter.status();
        assert_eq!((status.active_sessions, status.active_runs), (1, 1));
    });
}

/// A reader races a writer that takes a session and a run and then releases the session: the
/// reader never sees a run without its session, nor a count above its limit.
#[test]
fn loom_status_is_one_instant() {
    loom::model(|| {
        let limiter = SessionLimiter::new(Some(1), Some(1)).unwrap();
        let writer = {
            let limiter = limiter.clone();
            thread::spawn(move || {
                limiter.acquire_session("s").unwrap();
                limiter.acquire_run("s", "r").unwrap();
                limiter.release_session("s");
            })
        };
        for _ in 0..2 {
            let status = limiter.status();
            assert!(status.active_runs == 0 || status.active_sessions == 1, "{status:?}");
            assert!(status.active_sessions <= 1 && status.active_runs <= 1, "{status:?}");
        }
        writer.join().unwrap();
        let status = limiter.status();
        assert_eq!((status.active_sessions, status.active_runs), (0, 0));
    });
}
