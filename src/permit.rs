//! [`Permit`], a held slot of a limiter and of each ancestor, and the two calls that take or give
//! back slots without waiting: [`ConcurrencyLimiter::try_acquire`] and
//! [`ConcurrencyLimiter::release`]. Both drive an [`Acquisition`] and its release accounting.

use crate::acquisition::{self, Acquisition, Stage};
use crate::error::{AcquireError, ReleaseError};
use crate::limiter::ConcurrencyLimiter;
use crate::waiters::Request;
use std::borrow::Borrow;

/// Held slots (one, or the weight asked for); dropping the permit releases them to the waiters
/// served next.
///
/// The permit of a limiter with a parent also holds the parent's slots (its
/// [`parent`](Self::parent) permit); dropping it releases this limiter's slots, then the
/// parent's.
#[derive(Debug)]
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit {
    limiter: ConcurrencyLimiter,
    /// The parent's slots; `None` only for a limiter without a parent.
    parent: Option<Box<Permit>>,
    /// The slots it holds at each level.
    weight: u32,
    /// `false` once [`forget`](Self::forget) let go of the slot.
    held: bool,
}

impl Permit {
    /// The permit of an acquisition that reached [`Stage::Held`]: its weight at every level,
    /// counted as fully held where the level has a parent.
    pub(crate) fn held<L: Borrow<ConcurrencyLimiter>>(acquisition: &Acquisition<L>) -> Self {
        Self::of(acquisition.base(), acquisition.request().weight)
    }

    fn of(limiter: &ConcurrencyLimiter, weight: u32) -> Self {
        Self {
            limiter: limiter.clone(),
            parent: limiter.parent().map(|parent| Box::new(Self::of(parent, weight))),
            weight,
            held: true,
        }
    }

    /// How many slots it holds (of its limiter, and of each ancestor).
    #[must_use]
    pub const fn weight(&self) -> u32 {
        self.weight
    }

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

    /// Keeps the slots (this limiter's and every ancestor's) held after the permit is gone; give
    /// them back with [`ConcurrencyLimiter::release`].
    ///
    /// # Examples
    ///
    /// ```
    /// use ferrolimit::ConcurrencyLimiter;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = ConcurrencyLimiter::new(1)?;
    /// limiter.try_acquire().expect("a slot is free").forget();
    /// assert_eq!(limiter.running_count(), 1);
    /// limiter.release()?;
    /// assert_eq!(limiter.running_count(), 0);
    /// assert!(limiter.release().is_err(), "nothing is held any more");
    /// # Ok(())
    /// # }
    /// ```
    pub fn forget(mut self) {
        let mut permit = Some(&mut self);
        while let Some(level) = permit {
            level.held = false;
            permit = level.parent.as_deref_mut();
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // The parent's slot is released after this one, when the `parent` field drops.
        if self.held {
            acquisition::release_held_level(&self.limiter, self.weight);
        }
    }
}

impl ConcurrencyLimiter {
    /// Takes a slot if one is free and nobody is queued; never waits.
    ///
    /// With a parent, takes this limiter's slot and then the parent's; if the parent has none
    /// free, this limiter's slot is given straight back (it still counts in
    /// [`LimiterStats::acquired_total`](crate::LimiterStats::acquired_total)) and the result is
    /// `None`.
    #[must_use]
    pub fn try_acquire(&self) -> Option<Permit> {
        self.try_acquire_request(Request::ONE)
    }

    /// Takes `weight` slots at once if they are free and nobody is queued; never waits. `None`
    /// as for [`try_acquire`](Self::try_acquire), and once the limiter is closed.
    ///
    /// # Errors
    ///
    /// [`AcquireError::ZeroWeight`] for 0 and [`AcquireError::WeightTooLarge`] for more than
    /// `max_running` (this limiter's or an ancestor's).
    pub fn try_acquire_many(&self, weight: u32) -> Result<Option<Permit>, AcquireError> {
        let request = Request { weight, priority: 0 };
        if let Some((_, err)) = self.unservable(request) {
            return Err(err);
        }
        Ok(self.try_acquire_request(request))
    }

    /// The first level, counted up from this limiter (0) through its ancestors, that could
    /// never serve `request` as its `max_running` stands now, and why.
    pub(crate) fn unservable(&self, request: Request) -> Option<(usize, AcquireError)> {
        let mut level = Some(self);
        let mut depth = 0;
        while let Some(limiter) = level {
            let max_running = u32::try_from(limiter.max_running()).unwrap_or(u32::MAX);
            if let Err(err) = request.check(max_running) {
                return Some((depth, err));
            }
            level = limiter.parent();
            depth += 1;
        }
        None
    }

    #[inline]
    fn try_acquire_request(&self, request: Request) -> Option<Permit> {
        let mut acquisition = Acquisition::new(self, request);
        // On `Arriving` the acquisition drops here, giving back the slots it took.
        (acquisition.advance() == Stage::Held).then(|| Permit::held(&acquisition))
    }

    /// Gives back a slot of this limiter and of every ancestor that a [forgotten](Permit::forget)
    /// permit kept; the oldest waiter gets it. Like a semaphore's release it is not tied to a
    /// permit: a release while a live permit holds the slot lets one caller more run than the
    /// limit, and that permit then gives back somebody else's slot (or nothing) when it drops.
    ///
    /// # Errors
    ///
    /// [`ReleaseError`] when no caller holds a slot of this limiter and of every ancestor:
    /// nothing changes then. A caller that holds only this limiter's slot while it waits for the
    /// parent's does not count, so a release too many never takes a waiter's slot away.
    pub fn release(&self) -> Result<(), ReleaseError> {
        acquisition::release(self, 1)
    }

    /// Gives back `weight` slots at once, as [`release`](Self::release) does one.
    ///
    /// # Errors
    ///
    /// [`ReleaseError`] when fewer than `weight` slots are held (a weight of 0 releases
    /// nothing and succeeds).
    pub fn release_many(&self, weight: u32) -> Result<(), ReleaseError> {
        acquisition::release(self, weight)
    }
}
