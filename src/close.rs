//! Graceful shutdown: [`ConcurrencyLimiter::close`] stops admitting, and
//! [`ConcurrencyLimiter::wait_idle`] ([`WaitIdle`]) waits for the holders to finish.

use crate::limiter::ConcurrencyLimiter;
use crate::queue::IdleWait;
use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

impl ConcurrencyLimiter {
    /// Stops admitting: from now on every queued waiter and every new acquire fails with
    /// [`AcquireError::Closed`](crate::AcquireError::Closed), and
    /// [`try_acquire`](Self::try_acquire) returns `None`. A caller that holds this limiter's
    /// slot and waits at an ancestor's is never admitted either: it is refused (giving both
    /// back) when the ancestor's slot comes, so until then it still counts as running here.
    /// Holders keep their slots and release them as usual. Idempotent. Closing does not close the parent.
    ///
    /// ```
    /// use ferrolimit::{AcquireError, ConcurrencyLimiter};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = ConcurrencyLimiter::new(2)?;
    /// let permit = limiter.acquire().await?;
    /// limiter.close();
    /// assert_eq!(limiter.acquire().await.unwrap_err(), AcquireError::Closed);
    /// drop(permit);
    /// limiter.wait_idle().await; // every holder is done
    /// # Ok(())
    /// # }
    /// ```
    pub fn close(&self) {
        self.semaphore().close();
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.semaphore().is_closed()
    }

    /// Resolves once no slot of this limiter is held (at once if none is). It takes no slot, is
    /// not a waiter (not in [`waiting_count`](Self::waiting_count), not under `max_queued`), and
    /// a slot passed from one holder straight to a waiter does not make the limiter idle.
    /// Dropping the future gives up the wait. With [`close`](Self::close), a graceful shutdown.
    pub const fn wait_idle(&self) -> WaitIdle<'_> {
        WaitIdle(IdleWaiter::new(self))
    }
}

/// Future returned by [`ConcurrencyLimiter::wait_idle`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct WaitIdle<'a>(IdleWaiter<&'a ConcurrencyLimiter>);

impl Future for WaitIdle<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.poll(cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A wait for a limiter to be idle, over a borrowed or an owned limiter (the Python glue keeps
/// one in an object): registered by its first [`poll`](Self::poll), given up when it drops.
#[derive(Debug)]
pub(crate) struct IdleWaiter<L: Borrow<ConcurrencyLimiter>> {
    limiter: L,
    registration: Option<IdleWait>,
}

impl<L: Borrow<ConcurrencyLimiter>> IdleWaiter<L> {
    pub(crate) const fn new(limiter: L) -> Self {
        Self {
            limiter,
            registration: None,
        }
    }

    /// Whether the limiter is idle now or was since the last poll; if not, `waker` is woken
    /// when it becomes idle (spurious wake-ups are possible: poll again).
    pub(crate) fn poll(&mut self, waker: &Waker) -> bool {
        self.limiter
            .borrow()
            .semaphore()
            .poll_idle(&mut self.registration, waker)
    }

    /// Gives up the wait: the registered waker is dropped (a wake-up that a release already
    /// took out may still arrive).
    pub(crate) fn cancel(&mut self) {
        if let Some(registration) = self.registration.take() {
            self.limiter.borrow().semaphore().cancel_idle(registration);
        }
    }
}

impl<L: Borrow<ConcurrencyLimiter>> Drop for IdleWaiter<L> {
    fn drop(&mut self) {
        self.cancel();
    }
}
