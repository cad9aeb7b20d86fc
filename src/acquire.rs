//! [`Acquire`], the future of [`ConcurrencyLimiter::acquire`]: an [`Acquisition`] that waits
//! with the task's waker and opens a wait span at each level it queues at.

use crate::acquisition::{Acquisition, Stage};
use crate::error::AcquireError;
use crate::limiter::ConcurrencyLimiter;
use crate::permit::Permit;
use crate::telemetry::WaitSpan;
use crate::waiters::Request;
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
            acquisition: Acquisition::new(self, Request::ONE),
            source,
            span: None,
            invalid: None,
        }
    }

    /// Waits for `weight` slots at once (tokio's `acquire_many`): for a budget counted in units,
    /// such as tokens or GPU memory. See [`Acquire::weight`].
    pub fn acquire_many(&self, weight: u32) -> Acquire<'_> {
        self.acquire().weight(weight)
    }
}

impl Acquire<'_> {
    /// Asks for `weight` slots at once, of this limiter and of every ancestor. The queue stays
    /// FIFO with head-of-line blocking: a heavy waiter at the head is never overtaken by a
    /// lighter, later one; the permit gives all `weight` slots back when it drops.
    ///
    /// The future resolves to [`AcquireError::ZeroWeight`] for 0 and to
    /// [`AcquireError::WeightTooLarge`] for more than `max_running` (which could never be
    /// served).
    ///
    /// # Panics
    ///
    /// If the future was already polled.
    pub fn weight(self, weight: u32) -> Self {
        self.with_request(|request| request.weight = weight)
    }

    /// Serves this caller by `priority`: higher first, FIFO within one priority (the default is
    /// 0). Priority only orders the queue, and holders are never pre-empted: a newcomer never
    /// overtakes a queued caller of its own or a higher priority (it takes free slots at once
    /// only if it outranks everyone queued and they fit, as beside a heavy head that waits for
    /// more). Strict priorities can starve the lower ones for as long as higher ones keep
    /// coming.
    ///
    /// # Panics
    ///
    /// If the future was already polled.
    pub fn priority(self, priority: i32) -> Self {
        self.with_request(|request| request.priority = priority)
    }

    fn with_request(mut self, change: impl FnOnce(&mut Request)) -> Self {
        assert!(self.span.is_none(), "`Acquire` changed after it was polled");
        let mut request = self.acquisition.request();
        change(&mut request);
        // Only a weight of 0 is certain to stay invalid: `max_running` may grow before the poll.
        self.invalid = request.check(u32::MAX).err();
        self.acquisition.set_request(request);
        self
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
    /// A request that can never be served, returned by the first poll.
    invalid: Option<AcquireError>,
}

impl Future for Acquire<'_> {
    type Output = Result<Permit, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(err) = this.invalid.take() {
            this.acquisition.cancel();
            return Poll::Ready(Err(err));
        }
        loop {
            match this.acquisition.stage() {
                Stage::Queued { .. } => match this.acquisition.poll_granted(cx.waker()) {
                    Ok(false) => return Poll::Pending,
                    Ok(true) => this.span = None,
                    Err(err) => {
                        this.span = None;
                        return Poll::Ready(Err(err));
                    }
                },
                Stage::Arriving | Stage::Climbing => match this.acquisition.advance() {
                    Stage::Held => return Poll::Ready(Ok(Permit::held(&this.acquisition))),
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
