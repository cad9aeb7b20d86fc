//! [`AdaptiveLimit`] and its controller: a concurrency limit that finds the capacity of what it
//! protects (an LLM provider's, say) from the outcomes of the calls it admits, instead of being
//! guessed.
//!
//! # The algorithm
//!
//! Three signals come back with each released slot: whether the call was an *overload* (the
//! provider answered 429/503/529, or the caller said so), the provider's `Retry-After` if it
//! gave one, and the call's latency (slot taken to slot released). Anything else (a
//! cancellation, an error of the caller's own) is *neutral*: it moves nothing.
//!
//! * **Decrease, once per burst (AIMD).** An overload multiplies the limit by
//!   [`decrease_factor`](AdaptiveLimit::decrease_factor) (0.75), never below `min_running`. Each
//!   admission is stamped with the number of decreases so far; an overload of a caller admitted
//!   before the last decrease cuts nothing more, since the cut already answered the load it was
//!   part of. So a burst of N 429s from the calls in flight cuts once, not N times (the classic
//!   AIMD failure, where a burst collapses the limit to its minimum).
//! * **Cooldown.** A `Retry-After` starts a cooldown: nobody is admitted until it ends. It is
//!   capped at [`max_cooldown`](AdaptiveLimit::max_cooldown) (30 s), so a provider that keeps
//!   answering with long `Retry-After`s cannot stop the limiter for good, and a cooldown leaves
//!   no state behind: once it ends, the limit grows again as before (a sustained Retry-After
//!   froze Inspect AI's limit for a whole run, their #5138). A `Retry-After` of 0 starts none.
//! * **Increase, only when used, gated by latency.** A success grows the limit only if its caller
//!   was admitted while the limit was *saturated* (it took the last free slot, or others were
//!   queued): two callers on a limit of eight never grow it. Growth is additive, one slot per
//!   `limit` saturated successes (about one per round trip of the whole window), and stops while
//!   the recent latency (a fast EWMA) is above the baseline by more than
//!   [`latency_tolerance`](AdaptiveLimit::latency_tolerance) (50 %). The baseline follows
//!   faster latencies within about ten calls and slower ones only over hundreds, so it stays
//!   near the latency of the unloaded provider, and accepts a slower one only once it lasts (a
//!   provider that got slower for good: growth then resumes). A provider that slows down
//!   is at its knee, and more load would only queue there (the gradient idea of Netflix's
//!   Gradient2, Envoy's adaptive concurrency filter and Vector's ARC, used to stop growth rather
//!   than to cut: only overloads cut, so noisy latency never collapses the limit).
//! * **Slow start.** Until the first overload, each saturated success adds a slot (the limit
//!   doubles per window, as TCP's slow start), so a limit that starts far below the capacity
//!   gets there in a few round trips; the first overload ends it.
//!
//! The controller is plain arithmetic on the instants it is given (an injected clock), so the
//! tests drive it deterministically; it knows nothing of slots or queues. (The limiters do not
//! use it yet: wiring it into `ConcurrencyLimiter`, the Python API and Redis comes next.)
//!
//! ```
//! use ferrolimit::{AdaptiveController, AdaptiveLimit, Outcome};
//! use std::time::{Duration, Instant};
//!
//! let mut limit = AdaptiveController::new(AdaptiveLimit::new(1, 64))?;
//! let now = Instant::now();
//! let call = limit.admitted(now, true); // it took the last free slot
//! limit.released(call, now + Duration::from_millis(80), Outcome::Success);
//! assert_eq!(limit.limit(), 2); // slow start: one more slot per saturated success
//! let call = limit.admitted(now, true);
//! let retry_after = Some(Duration::from_secs(2));
//! limit.released(call, now, Outcome::Overload { retry_after });
//! assert_eq!(limit.limit(), 1);
//! assert_eq!(limit.cooldown_until(now), Some(now + Duration::from_secs(2)));
//! # Ok::<(), ferrolimit::LimitError>(())
//! ```

use crate::error::LimitError;
use std::time::{Duration, Instant};

/// How fast the recent-latency EWMA follows the samples.
const FAST_ALPHA: f64 = 0.3;
/// How fast the baseline follows a sample below it: within about ten.
const BASELINE_DOWN_ALPHA: f64 = 0.1;
/// How fast the baseline follows a sample above it: slowly (half-way in about 350 samples), so
/// that a provider past its knee does not make its slow latency the new normal at once.
const BASELINE_UP_ALPHA: f64 = 0.002;

/// The settings of an adaptive limit: its bounds, where it starts, and the tuning knobs (see the
/// module docs for what each does). [`AdaptiveLimit::new`] gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveLimit {
    /// The limit never goes below this (at least 1).
    pub min_running: usize,
    /// The limit never goes above this.
    pub max_running: usize,
    /// The limit to start from; `None` starts at `min_running`, and slow start takes it up.
    pub initial: Option<usize>,
    /// The longest cooldown a `Retry-After` starts (30 s).
    pub max_cooldown: Duration,
    /// What an overload multiplies the limit by, in `(0, 1)` (0.75).
    pub decrease_factor: f64,
    /// How far above its baseline the recent latency may be while the limit still grows (0.5:
    /// 50 %).
    pub latency_tolerance: f64,
}

impl AdaptiveLimit {
    /// A limit between `min_running` and `max_running`, with the default knobs.
    #[must_use]
    pub const fn new(min_running: usize, max_running: usize) -> Self {
        Self {
            min_running,
            max_running,
            initial: None,
            max_cooldown: Duration::from_secs(30),
            decrease_factor: 0.75,
            latency_tolerance: 0.5,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`LimitError::MaxRunningTooLarge`] for a `max_running` above
    /// [`MAX_RUNNING_LIMIT`](crate::MAX_RUNNING_LIMIT), and [`LimitError::Adaptive`] for a
    /// `min_running` below 1 or above `max_running`, an `initial` outside the bounds, or a knob
    /// out of its range.
    pub fn check(&self) -> Result<(), LimitError> {
        let bad = |what: &str| Err(LimitError::Adaptive(what.to_owned()));
        if self.min_running < 1 {
            return bad(&format!("min_running must be >= 1, got {}", self.min_running));
        }
        crate::error::check_max_running(i128::try_from(self.max_running).unwrap_or(i128::MAX))?;
        if self.min_running > self.max_running {
            return bad(&format!(
                "min_running ({}) must not exceed max_running ({})",
                self.min_running, self.max_running
            ));
        }
        if let Some(initial) = self.initial
            && !(self.min_running..=self.max_running).contains(&initial)
        {
            return bad(&format!(
                "initial ({initial}) must be between min_running ({}) and max_running ({})",
                self.min_running, self.max_running
            ));
        }
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return bad(&format!(
                "decrease_factor must be in (0, 1), got {}",
                self.decrease_factor
            ));
        }
        if !(self.latency_tolerance >= 0.0 && self.latency_tolerance.is_finite()) {
            return bad(&format!(
                "latency_tolerance must be >= 0, got {}",
                self.latency_tolerance
            ));
        }
        Ok(())
    }
}

/// What a released slot's call came to, for the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call was refused for load (429/503/529, or the caller said so), with the provider's
    /// `Retry-After` if it gave one.
    Overload {
        /// How long the provider asked to wait.
        retry_after: Option<Duration>,
    },
    /// Neither: a cancellation, or an error of the caller's own. Moves nothing.
    Neutral,
}

/// What the controller noted at an admission, handed back with the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    at: Instant,
    /// The number of decreases before this admission.
    generation: u64,
    saturated: bool,
}

/// The state of an adaptive limit: the current limit, the cooldown, the latency averages.
#[derive(Debug, Clone)]
pub struct AdaptiveController {
    settings: AdaptiveLimit,
    limit: usize,
    /// Decreases so far: an admission's stamp.
    decreases: u64,
    increases: u64,
    /// Saturated successes since the limit last changed.
    credit: usize,
    slow_start: bool,
    cooldown_until: Option<Instant>,
    /// Recent and baseline latency, in seconds (`None` before the first sample).
    recent: Option<f64>,
    baseline: Option<f64>,
}

impl AdaptiveController {
    /// A controller for `settings`, at its initial limit.
    ///
    /// # Errors
    ///
    /// As [`AdaptiveLimit::check`].
    pub fn new(settings: AdaptiveLimit) -> Result<Self, LimitError> {
        settings.check()?;
        Ok(Self {
            limit: settings.initial.unwrap_or(settings.min_running),
            settings,
            decreases: 0,
            increases: 0,
            credit: 0,
            slow_start: true,
            cooldown_until: None,
            recent: None,
            baseline: None,
        })
    }

    /// The current limit, always within `[min_running, max_running]`.
    #[must_use]
    pub const fn limit(&self) -> usize {
        self.limit
    }

    /// The settings.
    #[must_use]
    pub const fn settings(&self) -> &AdaptiveLimit {
        &self.settings
    }

    /// When the current cooldown ends, if one is on at `now`.
    #[must_use]
    pub fn cooldown_until(&self, now: Instant) -> Option<Instant> {
        self.cooldown_until.filter(|&until| until > now)
    }

    /// How many times the limit went up, and down.
    #[must_use]
    pub const fn changes(&self) -> (u64, u64) {
        (self.increases, self.decreases)
    }

    /// Notes an admission at `now`; `saturated` if it took the last free slot or others were
    /// queued. Hand the result back to [`released`](Self::released).
    #[must_use]
    pub const fn admitted(&self, now: Instant, saturated: bool) -> Admission {
        Admission {
            at: now,
            generation: self.decreases,
            saturated,
        }
    }

    /// Notes the outcome of the call `admission` let in, its slot released at `now`; returns
    /// whether the limit changed.
    pub fn released(&mut self, admission: Admission, now: Instant, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Neutral => false,
            Outcome::Overload { retry_after } => self.overloaded(admission, now, retry_after),
            Outcome::Success => self.succeeded(admission, now),
        }
    }

    fn overloaded(&mut self, admission: Admission, now: Instant, retry_after: Option<Duration>) -> bool {
        if let Some(wait) = retry_after.filter(|w| !w.is_zero()) {
            let until = now + wait.min(self.settings.max_cooldown);
            self.cooldown_until = Some(self.cooldown_until.map_or(until, |current| current.max(until)));
        }
        self.slow_start = false;
        if admission.generation != self.decreases {
            return false; // the last decrease already answered the load this call was part of
        }
        self.decreases += 1;
        self.credit = 0;
        let limit = scaled(self.limit, self.settings.decrease_factor)
            .clamp(self.settings.min_running, self.settings.max_running);
        let changed = limit != self.limit;
        self.limit = limit;
        changed
    }

    fn succeeded(&mut self, admission: Admission, now: Instant) -> bool {
        let latency = now.saturating_duration_since(admission.at).as_secs_f64();
        let ewma = |average: Option<f64>, alpha: f64| Some(average.map_or(latency, |a| a + alpha * (latency - a)));
        self.recent = ewma(self.recent, FAST_ALPHA);
        let up = self.baseline.is_some_and(|baseline| latency > baseline);
        self.baseline = ewma(self.baseline, if up { BASELINE_UP_ALPHA } else { BASELINE_DOWN_ALPHA });
        if !admission.saturated || self.limit >= self.settings.max_running || !self.latency_ok() {
            return false;
        }
        self.credit += 1;
        if !self.slow_start && self.credit < self.limit {
            return false;
        }
        self.credit = 0;
        self.limit += 1;
        self.increases += 1;
        true
    }

    /// Whether the recent latency is within the tolerance of the baseline.
    fn latency_ok(&self) -> bool {
        match (self.recent, self.baseline) {
            (Some(recent), Some(baseline)) => recent <= baseline * (1.0 + self.settings.latency_tolerance),
            _ => true,
        }
    }
}

/// `limit x factor`, rounded down, for a factor in `(0, 1)`.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the product is in [0, limit], and a limit is below 2^32 (MAX_RUNNING_LIMIT)"
)]
fn scaled(limit: usize, factor: f64) -> usize {
    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
    (f64::from(limit) * factor).floor() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn controller(min: usize, max: usize, initial: Option<usize>) -> AdaptiveController {
        AdaptiveController::new(AdaptiveLimit {
            initial,
            ..AdaptiveLimit::new(min, max)
        })
        .expect("valid")
    }

    /// `n` saturated calls of `latency`, one after another from `*now`.
    fn successes(c: &mut AdaptiveController, now: &mut Instant, n: usize, latency: Duration) {
        for _ in 0..n {
            let admission = c.admitted(*now, true);
            *now += latency;
            c.released(admission, *now, Outcome::Success);
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        for (settings, message) in [
            (AdaptiveLimit::new(0, 4), "min_running must be >= 1, got 0"),
            (AdaptiveLimit::new(1, usize::MAX), "max_running must be <="),
            (
                AdaptiveLimit::new(5, 4),
                "min_running (5) must not exceed max_running (4)",
            ),
            (
                AdaptiveLimit {
                    initial: Some(9),
                    ..AdaptiveLimit::new(1, 4)
                },
                "initial (9) must be between min_running (1) and max_running (4)",
            ),
            (
                AdaptiveLimit {
                    decrease_factor: 1.0,
                    ..AdaptiveLimit::new(1, 4)
                },
                "decrease_factor must be in (0, 1), got 1",
            ),
            (
                AdaptiveLimit {
                    latency_tolerance: f64::NAN,
                    ..AdaptiveLimit::new(1, 4)
                },
                "latency_tolerance must be >= 0, got NaN",
            ),
        ] {
            let err = AdaptiveController::new(settings).expect_err("invalid");
            assert!(err.to_string().starts_with(message), "{err} vs {message}");
        }
    }

    #[test]
    fn slow_start_doubles_per_window_until_the_first_overload() {
        let mut c = controller(1, 64, None);
        let mut now = Instant::now();
        assert_eq!(c.limit(), 1);
        successes(&mut c, &mut now, 15, 10 * MS);
        assert_eq!(c.limit(), 16, "one slot per saturated success");
        let admission = c.admitted(now, true);
        assert!(c.released(admission, now + MS, Outcome::Overload { retry_after: None }));
        assert_eq!(c.limit(), 12, "16 x 0.75");
        successes(&mut c, &mut now, 11, 10 * MS);
        assert_eq!(c.limit(), 12, "additive now: one slot per `limit` successes");
        successes(&mut c, &mut now, 1, 10 * MS);
        assert_eq!(c.limit(), 13);
        assert_eq!(c.changes(), (16, 1));
    }

    #[test]
    fn a_burst_of_overloads_cuts_once() {
        let mut c = controller(1, 64, Some(32));
        let now = Instant::now();
        let burst: Vec<Admission> = (0..20).map(|_| c.admitted(now, true)).collect();
        for admission in burst {
            c.released(admission, now + MS, Outcome::Overload { retry_after: None });
        }
        assert_eq!(c.limit(), 24, "one cut of 0.75, not twenty");
        // A caller admitted after the cut that is overloaded too cuts again: the load persists.
        let admission = c.admitted(now + MS, true);
        c.released(admission, now + 2 * MS, Outcome::Overload { retry_after: None });
        assert_eq!(c.limit(), 18);
        assert_eq!(c.changes(), (0, 2));
    }

    #[test]
    fn the_bounds_always_hold() {
        let mut c = controller(3, 5, Some(4));
        let mut now = Instant::now();
        for _ in 0..10 {
            let admission = c.admitted(now, true);
            c.released(admission, now, Outcome::Overload { retry_after: None });
            assert!((3..=5).contains(&c.limit()));
        }
        assert_eq!(c.limit(), 3);
        successes(&mut c, &mut now, 1000, MS);
        assert_eq!(c.limit(), 5);
    }

    #[test]
    fn an_unsaturated_limit_never_grows_and_neutral_outcomes_move_nothing() {
        let mut c = controller(1, 64, Some(8));
        let now = Instant::now();
        for _ in 0..100 {
            let admission = c.admitted(now, false);
            assert!(!c.released(admission, now + MS, Outcome::Success));
            let admission = c.admitted(now, true);
            assert!(!c.released(admission, now + MS, Outcome::Neutral));
        }
        assert_eq!((c.limit(), c.changes()), (8, (0, 0)));
    }

    #[test]
    fn retry_after_starts_a_capped_cooldown_that_freezes_nothing_afterwards() {
        let mut c = controller(1, 64, Some(8));
        let start = Instant::now();
        let admission = c.admitted(start, true);
        c.released(
            admission,
            start,
            Outcome::Overload {
                retry_after: Some(Duration::from_secs(3600)),
            },
        );
        assert_eq!(
            c.cooldown_until(start),
            Some(start + Duration::from_secs(30)),
            "capped at max_cooldown"
        );
        assert_eq!(c.cooldown_until(start + Duration::from_secs(31)), None);
        // A zero Retry-After starts none, and a shorter one does not shorten the current one.
        let admission = c.admitted(start, true);
        c.released(
            admission,
            start,
            Outcome::Overload {
                retry_after: Some(Duration::ZERO),
            },
        );
        let admission = c.admitted(start, true);
        c.released(
            admission,
            start,
            Outcome::Overload {
                retry_after: Some(Duration::from_secs(1)),
            },
        );
        assert_eq!(c.cooldown_until(start), Some(start + Duration::from_secs(30)));
        // After the cooldown the limit grows again as usual.
        let before = c.limit();
        let mut now = start + Duration::from_secs(31);
        successes(&mut c, &mut now, 100, 10 * MS);
        assert!(c.limit() > before, "{} after {before}", c.limit());
    }

    #[test]
    fn rising_latency_stops_growth_and_a_return_to_the_baseline_resumes_it() {
        let mut c = controller(1, 64, Some(10));
        let mut now = Instant::now();
        let admission = c.admitted(now, true);
        c.released(admission, now, Outcome::Overload { retry_after: None }); // out of slow start
        successes(&mut c, &mut now, 200, 10 * MS);
        let settled = c.limit();
        successes(&mut c, &mut now, 200, 40 * MS); // the provider slowed to 4x its baseline
        assert!(
            c.limit() <= settled + 1,
            "grew from {settled} to {} while slow",
            c.limit()
        );
        let slow = c.limit();
        successes(&mut c, &mut now, 400, 10 * MS);
        assert!(c.limit() > slow, "no growth after the latency came back");
        assert!((1..=64).contains(&c.limit()));
    }
}
