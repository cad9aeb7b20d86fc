//! loom models of the [`Acquisition`] stages the Python layer drives without a future: taking a
//! handed-over slot by polling (a parked thread), withdrawing (trio), cancelling half-way up a
//! chain of parents, and a permit-less release racing a caller that is still climbing.

use crate::ConcurrencyLimiter;
use crate::acquisition::{Acquisition, Stage};
use crate::waiters::Request;
use loom::thread;
use std::task::Waker;

/// A caller of `child` that holds the child's slot and is queued at `parent` (whose only slot
/// is held elsewhere).
fn queued_at_parent(child: &ConcurrencyLimiter) -> Acquisition<&ConcurrencyLimiter> {
    let mut acquisition = Acquisition::new(child, Request::ONE);
    assert_eq!(acquisition.advance(), Stage::Arriving);
    assert_eq!(acquisition.depth(), 1, "stopped at the parent");
    let stage = acquisition.enqueue(Waker::noop()).unwrap();
    assert!(matches!(stage, Stage::Queued { .. }), "{stage:?}");
    acquisition
}

/// Spins until a queued acquisition is handed its slot, then climbs to `Held`.
fn take_spinning(acquisition: &mut Acquisition<&ConcurrencyLimiter>) {
    while !acquisition.take_granted().unwrap() {
        thread::yield_now();
    }
    assert_eq!(acquisition.advance(), Stage::Held);
}

/// trio's cancellation: a queued caller withdraws while the holder releases. Either it left the
/// queue before the handover (the slot is free) or it was handed the slot and must take it; never
/// both, never neither.
#[test]
fn loom_withdraw_racing_a_grant_loses_nothing() {
    loom::model(|| {
        let limiter = ConcurrencyLimiter::new(1).unwrap();
        let holder = limiter.try_acquire().unwrap();
        let mut acquisition = Acquisition::new(&limiter, Request::ONE);
        assert_eq!(acquisition.advance(), Stage::Arriving);
        assert!(matches!(acquisition.enqueue(Waker::noop()), Ok(Stage::Queued { .. })));
        let releaser = thread::spawn(move || drop(holder));
        if acquisition.withdraw() {
            assert_eq!(acquisition.stage(), Stage::Arriving);
        } else {
            assert!(
                acquisition.take_granted().unwrap(),
                "refused to withdraw, yet not handed the slot"
            );
            assert_eq!(acquisition.advance(), Stage::Held);
            assert_eq!(limiter.running_count(), 1);
            limiter.release().unwrap();
        }
        drop(acquisition);
        releaser.join().unwrap();
        assert_eq!((limiter.running_count(), limiter.available_count()), (0, 1));
        assert_eq!(limiter.waiting_count(), 0);
    });
}

/// A blocking caller holds the child's slot, is queued at the parent and gives up (a timeout)
/// while the parent's holder releases: whether the parent's slot was handed over first or not,
/// both levels end up free.
#[test]
fn loom_cancel_at_the_parent_gives_back_every_level() {
    loom::model(|| {
        let parent = ConcurrencyLimiter::new(1).unwrap();
        let child = ConcurrencyLimiter::builder(1).parent(parent.clone()).build().unwrap();
        let holder = parent.try_acquire().unwrap();
        let mut acquisition = queued_at_parent(&child);
        let releaser = thread::spawn(move || drop(holder));
        // Sometimes the slot was handed over already: the cancel must pass it on.
        let _ = acquisition.take_granted().unwrap();
        acquisition.cancel();
        assert_eq!(acquisition.stage(), Stage::Cancelled);
        releaser.join().unwrap();
        assert_eq!((child.running_count(), child.available_count()), (0, 1));
        assert_eq!((parent.running_count(), parent.available_count()), (0, 1));
        assert_eq!((child.waiting_count(), parent.waiting_count()), (0, 0));
    });
}

/// A permit-less release of the child races a caller that holds the child's slot and is still
/// waiting for the parent's (handed over by another thread meanwhile). The stray release only
/// succeeds once the caller holds both levels (it is then the caller's slot it gives back);
/// before that it fails and changes nothing. Either way exactly one release of the child
/// succeeds in the end, the one that does gives back both levels, and every count is back to
/// free.
#[test]
fn loom_stray_release_never_takes_a_climbing_callers_slot() {
    loom::model(|| {
        let parent = ConcurrencyLimiter::new(1).unwrap();
        let child = ConcurrencyLimiter::builder(2).parent(parent.clone()).build().unwrap();
        parent.try_acquire().unwrap().forget();
        let mut acquisition = queued_at_parent(&child);
        let releaser = {
            let parent = parent.clone();
            thread::spawn(move || parent.release().unwrap())
        };
        let stray = {
            let child = child.clone();
            thread::spawn(move || child.release().is_ok())
        };
        take_spinning(&mut acquisition);
        drop(acquisition);
        releaser.join().unwrap();
        let stray_released = stray.join().unwrap();
        // A successful stray release gave back the caller's slot at both levels, no less.
        let held = usize::from(!stray_released);
        assert_eq!(
            (child.running_count(), parent.running_count()),
            (held, held),
            "stray release succeeded: {stray_released}"
        );
        let cleanup_released = child.release().is_ok();
        assert!(
            stray_released != cleanup_released,
            "one caller held the slot: stray {stray_released}, cleanup {cleanup_released}"
        );
        assert_eq!((child.running_count(), child.available_count()), (0, 2));
        assert_eq!((parent.running_count(), parent.available_count()), (0, 1));
    });
}
