//! [`ConcurrencyLimiter`], its RAII [`Permit`] and the [`Acquire`] future: the public Rust API.

use crate::error::{AcquireError, LimitError, check_max_queued, check_max_running};
use crate::queue::{Enqueued, Semaphore};
use crate::stats::LimiterStats;
use crate::sync::Arc;
use crate::telemetry::{WaitSpan, WaitSpanFields, wait_span_fields};
use crate::waiters::WaiterId;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Debug)]
struct Shared {
    semaphore: Semaphore,
    name: Option<String>,
}

/// Limits how many operations run at once, with a bounded FIFO queue for the rest.
///
/// Guarantees:
///
/// * never more than [`max_running`](Self::max_running) permits are held at once;
/// * a released slot goes to the oldest waiter (FIFO), and a newcomer never overtakes a waiter;
/// * with `max_queued` set, an arrival that finds that many waiters is rejected at once, and N
///   simultaneous arrivals admit exactly the free queue places;
/// * a waiter that gives up (its [`Acquire`] future is dropped) neither takes nor loses a slot,
///   even if a slot was handed to it at that very instant.
///
/// The limiter is a cheap handle: clones share the same slots. It is `Send + Sync` and may be
/// used from any number of threads and async runtimes at once.
///
/// # Examples
///
/// ```
/// use ferrolimit::ConcurrencyLimiter;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = ConcurrencyLimiter::builder(2).max_queued(10).name("llm").build()?;
/// let first = limiter.try_acquire().expect("a slot is free");
/// assert_eq!(limiter.running_count(), 1);
/// drop(first); // the slot goes back on drop
/// assert_eq!(limiter.available_count(), 2);
/// # Ok(())
/// # }
/// ```
///
/// # Memory ordering
///
/// Everything a permit holder did before dropping its permit happens-before everything the next
/// holder of that slot does after acquiring it.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimiter {
    shared: Arc<Shared>,
}

/// Builds a [`ConcurrencyLimiter`] with a queue bound or a name.
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder {
    max_running: usize,
    max_queued: Option<usize>,
    name: Option<String>,
}

impl Builder {
    /// Bounds the queue: an arrival that finds `max_queued` waiters fails with
    /// [`AcquireError::QueueFull`]. `0` means nobody may wait.
    pub const fn max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = Some(max_queued);
        self
    }

    /// Names the limiter in wait spans and errors.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Creates the limiter.
    ///
    /// # Errors
    ///
    /// [`LimitError`] when `max_running` is 0 or above [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT).
    pub fn build(self) -> Result<ConcurrencyLimiter, LimitError> {
        let max_running = check_max_running(self.max_running as i128)?;
        let max_queued = self.max_queued.map(|q| check_max_queued(q as i128)).transpose()?;
        Ok(ConcurrencyLimiter {
            shared: Arc::new(Shared {
                semaphore: Semaphore::new(max_running, max_queued),
                name: self.name,
            }),
        })
    }
}

impl ConcurrencyLimiter {
    /// A limiter of `max_running` slots with an unbounded queue.
    ///
    /// # Errors
    ///
    /// [`LimitError`] when `max_running` is 0 or above [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT).
    pub fn new(max_running: usize) -> Result<Self, LimitError> {
        Self::builder(max_running).build()
    }

    /// Starts a [`Builder`] for a limiter of `max_running` slots.
    pub const fn builder(max_running: usize) -> Builder {
        Builder {
            max_running,
            max_queued: None,
            name: None,
        }
    }

    /// Takes a slot if one is free and nobody is queued; never waits.
    #[must_use]
    pub fn try_acquire(&self) -> Option<Permit> {
        self.semaphore().try_acquire().then(|| Permit { limiter: self.clone() })
    }

    /// Waits for a slot, in FIFO order. See [`acquire_for`](Self::acquire_for).
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_for("unnamed")
    }

    /// Waits for a slot in FIFO order; `source` names the caller in the wait span and errors.
    ///
    /// A free slot is taken on the first poll without any lock. A caller that has to wait opens
    /// one OpenTelemetry span (see the crate docs) that ends when it gets a slot or gives up.
    ///
    /// # Errors
    ///
    /// The future resolves to [`AcquireError::QueueFull`] when `max_queued` waiters are
    /// already queued.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up the wait and loses nothing: if a slot had been handed to
    /// it at that instant, the slot passes on to the next waiter.
    pub fn acquire_for<'a>(&'a self, source: &'a str) -> Acquire<'a> {
        Acquire {
            limiter: self,
            source,
            state: AcquireState::Start,
        }
    }

    /// Changes the number of slots at run time. Growing hands new slots to waiters at once;
    /// shrinking lets current holders finish and admits nobody until they are below the limit.
    ///
    /// # Errors
    ///
    /// [`LimitError`] for 0 or a value above [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT).
    pub fn set_max_running(&self, max_running: usize) -> Result<(), LimitError> {
        let max_running = check_max_running(max_running as i128)?;
        self.semaphore().set_max_running(max_running);
        Ok(())
    }

    /// The limiter's name, if it has one.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.shared.name.as_deref()
    }

    /// The current limit on holders.
    #[must_use]
    pub fn max_running(&self) -> usize {
        self.semaphore().max_running()
    }

    /// The queue bound, `None` when unbounded.
    #[must_use]
    pub fn max_queued(&self) -> Option<usize> {
        self.semaphore().max_queued()
    }

    /// Slots held right now.
    #[must_use]
    pub fn running_count(&self) -> usize {
        self.semaphore().running()
    }

    /// Free slots right now.
    #[must_use]
    pub fn available_count(&self) -> usize {
        self.semaphore().available()
    }

    /// Callers queued right now.
    #[must_use]
    pub fn waiting_count(&self) -> usize {
        self.semaphore().waiting()
    }

    /// A consistent snapshot of all counts and totals.
    #[must_use]
    pub fn stats(&self) -> LimiterStats {
        self.semaphore().stats()
    }

    pub(crate) fn semaphore(&self) -> &Semaphore {
        &self.shared.semaphore
    }

    /// The wait span of a caller that was queued with `waiting` callers in the queue.
    pub(crate) fn wait_span_fields<'a>(&'a self, source: &'a str, waiting: usize) -> WaitSpanFields<'a> {
        wait_span_fields(self.name(), source, waiting, self.max_running(), self.max_queued())
    }
}

/// A held slot; dropping it releases the slot to the oldest waiter.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit {
    limiter: ConcurrencyLimiter,
}

impl Permit {
    /// The limiter this permit belongs to.
    #[must_use]
    pub const fn limiter(&self) -> &ConcurrencyLimiter {
        &self.limiter
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // A permit always stands for one held slot, so this release cannot fail.
        let released = self.limiter.semaphore().release();
        debug_assert!(released.is_ok(), "a permit's release found no holder");
    }
}

#[derive(Debug)]
enum AcquireState {
    Start,
    Waiting { id: WaiterId, _span: WaitSpan },
    Done,
}

/// Future returned by [`ConcurrencyLimiter::acquire`] and [`ConcurrencyLimiter::acquire_for`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a> {
    limiter: &'a ConcurrencyLimiter,
    source: &'a str,
    state: AcquireState,
}

impl Future for Acquire<'_> {
    type Output = Result<Permit, AcquireError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let limiter = self.limiter;
        let semaphore = limiter.semaphore();
        let granted = match &self.state {
            AcquireState::Start => {
                if semaphore.try_acquire() {
                    true
                } else {
                    match semaphore.enqueue(cx.waker()) {
                        Ok(Enqueued::Acquired) => true,
                        Ok(Enqueued::Queued { id, waiting }) => {
                            let span = WaitSpan::start(limiter.wait_span_fields(self.source, waiting));
                            self.state = AcquireState::Waiting { id, _span: span };
                            false
                        }
                        Err(err) => {
                            self.state = AcquireState::Done;
                            return Poll::Ready(Err(err));
                        }
                    }
                }
            }
            AcquireState::Waiting { id, .. } => semaphore.poll_granted(*id, cx.waker()),
            AcquireState::Done => panic!("`Acquire` polled after completion"),
        };
        if granted {
            self.state = AcquireState::Done;
            Poll::Ready(Ok(Permit {
                limiter: limiter.clone(),
            }))
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if let AcquireState::Waiting { id, .. } = self.state {
            self.limiter.semaphore().cancel(id);
        }
    }
}
