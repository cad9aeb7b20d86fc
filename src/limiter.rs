//! [`ConcurrencyLimiter`], its RAII [`Permit`] and the [`Acquire`] future: the public Rust API.
//!
//! A limiter may have a parent ([`Builder::parent`]): each of its slots is then a slot of its own
//! and one of the parent's. The layering lives here; `queue.rs` knows one level only. A caller
//! takes the child's slot first (fast path or the child's FIFO queue) and only then the parent's
//! (fast path or the parent's FIFO queue), holding the child's slot meanwhile. So a caller queued
//! for the child holds nothing of the parent: a burst on one child never sits on parent slots
//! that a sibling could use.

use crate::error::{AcquireError, LimitError, ReleaseError, check_max_queued, check_max_running};
use crate::queue::{Enqueued, Semaphore};
use crate::stats::LimiterStats;
use crate::sync::{Arc, AtomicUsize, Ordering};
use crate::telemetry::{WaitSpan, WaitSpanFields, wait_span_fields};
use crate::waiters::WaiterId;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
/// * a waiter that gives up (its [`Acquire`] future is dropped) neither takes nor loses a slot,
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
/// * dropping a permit releases both slots, and dropping an [`Acquire`] future at either stage
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

    /// Takes a slot if one is free and nobody is queued; never waits.
    ///
    /// With a parent, takes this limiter's slot and then the parent's; if the parent has none
    /// free, this limiter's slot is given straight back (it still counts in
    /// [`LimiterStats::acquired_total`]) and the result is `None`.
    #[must_use]
    pub fn try_acquire(&self) -> Option<Permit> {
        if !self.semaphore().try_acquire() {
            return None;
        }
        let permit = Permit {
            limiter: self.clone(),
            parent: None,
        };
        match self.parent() {
            None => Some(permit),
            // On `None` the child-only permit drops here, giving its slot back.
            Some(parent) => parent.try_acquire().map(|parent| permit.with_parent(parent)),
        }
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
            limiter: self,
            source,
            state: AcquireState::Start,
        }
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

    /// Takes a slot of this limiter and of every ancestor without a permit (the Python layer
    /// pairs it with [`release_raw`](Self::release_raw)); all or nothing, never waits.
    // Only the pyo3 layer calls the raw operations.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn try_acquire_raw(&self) -> bool {
        if !self.semaphore().try_acquire() {
            return false;
        }
        let Some(parent) = self.parent() else {
            return true;
        };
        if parent.try_acquire_raw() {
            self.shared.full_holders.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            let released = self.semaphore().release();
            debug_assert!(released.is_ok(), "giving back a slot just taken failed");
            false
        }
    }

    /// Records that a caller now holds a slot of this limiter and of every ancestor, taken level
    /// by level through [`semaphore`](Self::semaphore) (the Python slow and blocking paths).
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn acquired_raw(&self) {
        let mut level = self;
        while let Some(parent) = level.parent() {
            level.shared.full_holders.fetch_add(1, Ordering::AcqRel);
            level = parent;
        }
    }

    /// Releases a slot of this limiter and of every ancestor, taken by
    /// [`try_acquire_raw`](Self::try_acquire_raw) or level by level.
    ///
    /// # Errors
    ///
    /// [`ReleaseError`] when nobody holds a slot of this limiter and its ancestors; nothing
    /// changes then. (A caller that holds only this limiter's slot while it waits for the
    /// parent's does not count.)
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn release_raw(&self) -> Result<(), ReleaseError> {
        let Some(parent) = self.parent() else {
            return self.semaphore().release();
        };
        // Claim one full holder first, then release the ancestors' slots, and this level's only
        // once they are gone: a release too many at any level changes nothing at all.
        let full = &self.shared.full_holders;
        let mut n = full.load(Ordering::Acquire);
        loop {
            if n == 0 {
                return Err(ReleaseError);
            }
            match full.compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => n = actual,
            }
        }
        if let Err(err) = parent.release_raw() {
            full.fetch_add(1, Ordering::AcqRel);
            return Err(err);
        }
        // The claimed full holder holds one of this level's slots, which no other release can
        // take: this cannot fail.
        self.semaphore().release()
    }

    /// [`release_raw`](Self::release_raw) when it needs no lock and wakes nobody: a limiter
    /// without a parent and nobody queued. `None` otherwise; then nothing has changed.
    #[cfg_attr(not(feature = "python"), allow(dead_code))]
    pub(crate) fn release_raw_uncontended(&self) -> Option<Result<(), ReleaseError>> {
        if self.parent().is_some() {
            return None;
        }
        self.semaphore().release_uncontended()
    }

    /// The wait span of a caller that was queued with `waiting` callers in the queue.
    pub(crate) fn wait_span_fields<'a>(&'a self, source: &'a str, waiting: usize) -> WaitSpanFields<'a> {
        wait_span_fields(self.name(), source, waiting, self.max_running(), self.max_queued())
    }
}

/// A held slot; dropping it releases the slot to the oldest waiter.
///
/// The permit of a limiter with a parent also holds the parent's slot (its
/// [`parent`](Self::parent) permit); dropping it releases this limiter's slot, then the
/// parent's.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit {
    limiter: ConcurrencyLimiter,
    /// The parent's slot; `None` only for a limiter without a parent, or inside [`Acquire`]
    /// while it waits for the parent.
    parent: Option<Box<Permit>>,
}

impl Permit {
    /// The limiter this permit belongs to.
    #[must_use]
    pub const fn limiter(&self) -> &ConcurrencyLimiter {
        &self.limiter
    }

    /// The permit of the parent limiter held with this one, if the limiter has a parent.
    #[must_use]
    pub fn parent(&self) -> Option<&Self> {
        self.parent.as_deref()
    }

    /// Completes a permit of a limiter with a parent.
    fn with_parent(mut self, parent: Self) -> Self {
        self.limiter.shared.full_holders.fetch_add(1, Ordering::AcqRel);
        self.parent = Some(Box::new(parent));
        self
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.parent.is_some() {
            self.limiter.shared.full_holders.fetch_sub(1, Ordering::AcqRel);
        }
        // A permit always stands for one held slot, so this release cannot fail. The parent's
        // slot is released after this one, when the `parent` field drops.
        let released = self.limiter.semaphore().release();
        debug_assert!(released.is_ok(), "a permit's release found no holder");
    }
}

#[derive(Debug)]
enum AcquireState<'a> {
    Start,
    Waiting {
        id: WaiterId,
        _span: WaitSpan,
    },
    /// This limiter's slot is held (by `child`, which gives it back if dropped) and the parent's
    /// is being acquired. Boxed: the parent's future has the same type, one level up.
    Parent {
        parent: Box<Acquire<'a>>,
        child: Permit,
    },
    Done,
}

/// Future returned by [`ConcurrencyLimiter::acquire`] and [`ConcurrencyLimiter::acquire_for`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a> {
    limiter: &'a ConcurrencyLimiter,
    source: &'a str,
    state: AcquireState<'a>,
}

impl<'a> Acquire<'a> {
    /// Goes on from holding this limiter's slot: done without a parent or when the parent has a
    /// free slot, else on to waiting for the parent's slot.
    fn climb(&mut self, child: Permit, cx: &mut Context<'_>) -> Poll<Result<Permit, AcquireError>> {
        let limiter: &'a ConcurrencyLimiter = self.limiter;
        let Some(parent) = limiter.parent() else {
            self.state = AcquireState::Done;
            return Poll::Ready(Ok(child));
        };
        if let Some(parent) = parent.try_acquire() {
            self.state = AcquireState::Done;
            return Poll::Ready(Ok(child.with_parent(parent)));
        }
        self.state = AcquireState::Parent {
            parent: Box::new(parent.acquire_for(self.source)),
            child,
        };
        self.poll_parent(cx)
    }

    fn poll_parent(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, AcquireError>> {
        let AcquireState::Parent { parent, .. } = &mut self.state else {
            unreachable!("not waiting for the parent")
        };
        let result = std::task::ready!(Pin::new(parent.as_mut()).poll(cx));
        let AcquireState::Parent { child, .. } = std::mem::replace(&mut self.state, AcquireState::Done) else {
            unreachable!("not waiting for the parent")
        };
        // On an error `child` drops here and gives this limiter's slot back.
        Poll::Ready(result.map(|parent| child.with_parent(parent)))
    }
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
            AcquireState::Parent { .. } => return self.poll_parent(cx),
            AcquireState::Done => panic!("`Acquire` polled after completion"),
        };
        if granted {
            // Ends this level's wait span, if any.
            self.state = AcquireState::Done;
            let child = Permit {
                limiter: limiter.clone(),
                parent: None,
            };
            self.climb(child, cx)
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
