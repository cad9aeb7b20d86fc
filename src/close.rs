//! Graceful shutdown: [`ConcurrencyLimiter::close`] stops admitting, and
//! [`ConcurrencyLimiter::wait_idle`] ([`WaitIdle`]) waits for the holders to finish.

use crate::limiter::ConcurrencyLimiter;
use crate::queue::IdleWait;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

impl ConcurrencyLimiter {
    /// Stops admitting: from now on every queued waiter and every new acquire fails with
    /// [`AcquireError::Closed`](crate::AcquireError::Closed), and
    /// [`try_acquire`](Self::try_acquire) returns `None`. Holders keep their slots and release
    /// them as usual. Idempotent. Closing does not close the parent.
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
        WaitIdle {
            limiter: self,
            registration: None,
        }
    }
}

/// Future returned by [`ConcurrencyLimiter::wait_idle`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct WaitIdle<'a> {
    limiter: &'a ConcurrencyLimiter,
    registration: Option<IdleWait>,
}

impl Future for WaitIdle<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.limiter.semaphore().poll_idle(&mut this.registration, cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for WaitIdle<'_> {
    fn drop(&mut self) {
        if let Some(registration) = self.registration.take() {
            self.limiter.semaphore().cancel_idle(registration);
        }
    }
}
