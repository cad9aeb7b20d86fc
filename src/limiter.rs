//! [`ConcurrencyLimiter`] and its [`Builder`]: a limiter's configuration, counts and chain of
//! parents.
//!
//! Taking and giving back slots is elsewhere: every acquire drives one
//! [`Acquisition`](crate::acquisition) (the state machine, with the release accounting), which
//! [`Permit`](crate::Permit), `try_acquire` and `release` (`permit.rs`) and the
//! [`Acquire`](crate::Acquire) future (`acquire.rs`) wrap. A limiter may have a parent
//! ([`Builder::parent`]): each of its slots is then a slot of its own and one of the parent's;
//! `queue.rs` knows one level only.

use crate::error::{LimitError, check_max_queued, check_max_running};
use crate::queue::Semaphore;
use crate::stats::LimiterStats;
use crate::sync::{Arc, AtomicUsize};
use crate::telemetry::{WaitSpanFields, wait_span_fields};

#[derive(Debug)]
struct Shared {
    semaphore: Semaphore,
    name: Option<String>,
    parent: Option<ConcurrencyLimiter>,
    /// Callers holding this limiter's slot and every ancestor's (kept only with a parent). The
    /// semaphore's holders also count callers that hold this slot while they wait for the
    /// parent's, so a release without a matching acquire is caught here instead.
    full_holders: AtomicUsize,
}

/// Limits how many operations run at once, with a bounded FIFO queue for the rest.
///
/// Guarantees:
///
/// * never more than [`max_running`](Self::max_running) permits are held at once;
/// * a released slot goes to the oldest waiter (FIFO), and a newcomer never overtakes a waiter;
/// * with `max_queued` set, an arrival that finds that many waiters is rejected at once, and N
///   simultaneous arrivals admit exactly the free queue places;
/// * a waiter that gives up (its [`Acquire`](crate::Acquire) future is dropped) neither takes nor loses a slot,
///   even if a slot was handed to it at that very instant.
///
/// With a [parent](Builder::parent), every permit holds a slot of this limiter and one of the
/// parent (and so on up), and:
///
/// * the parent's slot is taken only once this limiter's is held: a caller waiting for this
///   limiter holds no parent slot, so callers queued here never keep a sibling of this limiter
///   from the parent's free slots;
/// * a caller waiting for the parent's slot holds this limiter's slot meanwhile; it counts in
///   this limiter's [`running_count`](Self::running_count) and in the parent's
///   [`waiting_count`](Self::waiting_count);
/// * dropping a permit releases both slots, and dropping an [`Acquire`](crate::Acquire) future at either stage
///   gives back whatever it held.
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
    parent: Option<ConcurrencyLimiter>,
}

impl Builder {
    /// Bounds the queue: an arrival that finds `max_queued` waiters fails with
    /// [`AcquireError::QueueFull`](crate::AcquireError::QueueFull). `0` means nobody may wait.
    pub const fn max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = Some(max_queued);
        self
    }

    /// Names the limiter in wait spans and errors.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Nests the limiter under `parent`: each of its slots is also a slot of `parent`, taken
    /// only once the limiter's own is held and released with it. Several limiters may share a
    /// parent (three limiters make a [`ConcurrencyGovernor`](crate::ConcurrencyGovernor)), and a
    /// parent may have a parent of its own.
    ///
    /// The parent keeps its own limit, queue bound, name and wait span; resizing either leaves
    /// the other alone.
    ///
    /// # Examples
    ///
    /// ```
    /// use ferrolimit::ConcurrencyLimiter;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let all = ConcurrencyLimiter::builder(3).name("all").build()?;
    /// let tools = ConcurrencyLimiter::builder(2).name("tools").parent(all.clone()).build()?;
    /// let permit = tools.try_acquire().expect("both have a free slot");
    /// assert_eq!((tools.running_count(), all.running_count()), (1, 1));
    /// drop(permit); // releases both
    /// assert_eq!((tools.running_count(), all.running_count()), (0, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn parent(mut self, parent: ConcurrencyLimiter) -> Self {
        self.parent = Some(parent);
        self
    }

    /// The same settings with `max_running` slots (a keyed limiter's template for its keys).
    pub(crate) const fn with_max_running(mut self, max_running: usize) -> Self {
        self.max_running = max_running;
        self
    }

    pub(crate) const fn max_running_setting(&self) -> usize {
        self.max_running
    }

    pub(crate) const fn max_queued_setting(&self) -> Option<usize> {
        self.max_queued
    }

    pub(crate) fn name_setting(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) const fn parent_setting(&self) -> Option<&ConcurrencyLimiter> {
        self.parent.as_ref()
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
                parent: self.parent,
                full_holders: AtomicUsize::new(0),
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
            parent: None,
        }
    }

    /// Makes this limiter as if built anew with `max_running` slots (all free, nobody queued,
    /// no totals, not closed; its name, queue bound and parent kept), if no other clone of it is
    /// alive; returns whether it did. Lets a keyed limiter give an unused key's limiter to a new
    /// key without a new allocation.
    pub(crate) fn reset(&mut self, max_running: u32) -> bool {
        let Some(shared) = Arc::get_mut(&mut self.shared) else {
            return false;
        };
        shared.semaphore = Semaphore::new(max_running, shared.semaphore.max_queued());
        shared.full_holders = AtomicUsize::new(0);
        true
    }

    /// Changes the number of slots at run time. Growing hands new slots to waiters at once;
    /// shrinking lets current holders finish and admits nobody until they are below the limit.
    /// A parent's limit is not changed.
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

    /// The limiter this one is nested under, if any (see [`Builder::parent`]).
    #[must_use]
    pub fn parent(&self) -> Option<&Self> {
        self.shared.parent.as_ref()
    }

    /// Slots held right now. With a parent, this includes callers that hold this limiter's slot
    /// and are waiting for the parent's.
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

    /// Callers holding this limiter's slot and every ancestor's (kept only with a parent; see
    /// [`acquisition`](crate::acquisition)).
    pub(crate) fn full_holders(&self) -> &AtomicUsize {
        &self.shared.full_holders
    }

    /// The wait span of a caller that was queued with `waiting` callers in the queue.
    pub(crate) fn wait_span_fields<'a>(&'a self, source: &'a str, waiting: usize) -> WaitSpanFields<'a> {
        wait_span_fields(self.name(), source, waiting, self.max_running(), self.max_queued())
    }
}
