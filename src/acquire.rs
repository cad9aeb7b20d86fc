//! [`Acquire`], the future of [`ConcurrencyLimiter::acquire`]: an [`Acquisition`] that waits
//! with the task's waker and opens a wait span at each level it queues at.

use crate::acquisition::{Acquisition, Stage};
use crate::error::AcquireError;
use crate::limiter::ConcurrencyLimiter;
use crate::permit::Permit;
use crate::telemetry::WaitSpan;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

impl ConcurrencyLimiter {
    /// Waits for a slot, in FIFO order. See [`acquire_for`](Self::acquire_for).
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_for("unnamed")
    }

    /// Waits for a slot in FIFO order; `source` names the caller in the wait span and errors.
    ///
    /// A free slot is taken on the first poll without any lock. A caller that has to wait opens
    /// one OpenTelemetry span (see the crate docs) that ends when it gets a slot or gives up.
    ///
    /// With a parent, the caller then waits for the parent's slot in the same way (its own FIFO,
    /// its own wait span with the same `source`), holding this limiter's slot meanwhile.
    ///
    /// # Errors
    ///
    /// The future resolves to [`AcquireError::QueueFull`] when `max_queued` waiters are
    /// already queued (here, or at the parent; then this limiter's slot is given back).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up the wait and loses nothing: if a slot had been handed to
    /// it at that instant, the slot passes on to the next waiter. Dropped while it waits for the
    /// parent, it also gives back this limiter's slot.
    pub fn acquire_for<'a>(&'a self, source: &'a str) -> Acquire<'a> {
        Acquire {
            acquisition: Acquisition::new(self),
            source,
            span: None,
        }
    }
}

/// Future returned by [`ConcurrencyLimiter::acquire`] and [`ConcurrencyLimiter::acquire_for`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a> {
    /// Gives back whatever it holds if the future is dropped unfinished.
    acquisition: Acquisition<&'a ConcurrencyLimiter>,
    source: &'a str,
    /// The wait span of the level it is queued at; it ends when the wait there does.
    span: Option<WaitSpan>,
}

impl Future for Acquire<'_> {
    type Output = Result<Permit, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match this.acquisition.stage() {
                Stage::Queued { .. } => {
                    if !this.acquisition.poll_granted(cx.waker()) {
                        return Poll::Pending;
                    }
                    this.span = None;
                }
                Stage::Arriving | Stage::Climbing => match this.acquisition.advance() {
                    Stage::Held => return Poll::Ready(Ok(Permit::held(this.acquisition.base()))),
                    _ => match this.acquisition.enqueue(cx.waker()) {
                        Ok(Stage::Queued { waiting, .. }) => {
                            let fields = this.acquisition.level().wait_span_fields(this.source, waiting);
                            this.span = Some(WaitSpan::start(fields));
                            return Poll::Pending;
                        }
                        Ok(_) => {}
                        Err(err) => return Poll::Ready(Err(err)),
                    },
                },
                Stage::Held | Stage::Cancelled => panic!("`Acquire` polled after completion"),
            }
        }
    }
}
