//! [`Rate`] and its budgets: requests and tokens per period, as LLM providers enforce them.
//!
//! # The buckets
//!
//! Each amount of a rate (its requests, its tokens) is a bucket that holds at most one period's
//! amount and refills continuously, at `amount / per`. An admission needs every bucket of every
//! rate to hold what it spends (one request, and its tokens) and takes it from all of them at
//! once, or from none ([`Budget::try_spend`]), so a burst of up to one period's amount passes at
//! once, and the rest follows at the refill rate.
//!
//! A continuously refilled bucket rather than GCRA: for unit costs the two admit the same
//! arrivals (GCRA's theoretical arrival time is the bucket's level seen from the other side), but
//! an admission's token count varies, and a settled estimate ([`Budget::adjust_tokens`]) can
//! charge more than was there: the bucket then holds a *debt*, a negative level that later
//! admissions wait out, which a level states directly. A refund never fills a bucket beyond one
//! period's amount.
//!
//! The arithmetic is exact: a level is kept in amount x nanoseconds (an amount of `a` in a
//! bucket of `per` is `a x per`), so refilling for `d` nanoseconds adds `amount x d`, with no
//! rounding, however long the limiter lives. The clock is injected (every method takes `now`).

use crate::error::LimitError;
use std::time::{Duration, Instant};

/// A rate limit: at most `requests` admissions and `tokens` tokens per `per`, each refilled
/// continuously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    requests: Option<u64>,
    tokens: Option<u64>,
    per: Duration,
}

impl Rate {
    /// A rate of `requests` and/or `tokens` per `per`.
    ///
    /// # Errors
    ///
    /// [`LimitError::Rate`] if neither amount is given, an amount is 0, or `per` is zero.
    pub fn new(requests: Option<u64>, tokens: Option<u64>, per: Duration) -> Result<Self, LimitError> {
        let bad = |what: &str| Err(LimitError::Rate(what.to_owned()));
        if requests.is_none() && tokens.is_none() {
            return bad("a Rate needs requests or tokens (or both)");
        }
        if requests == Some(0) || tokens == Some(0) {
            return bad("a Rate's requests and tokens must be >= 1");
        }
        if per.is_zero() {
            return bad("a Rate's period must be > 0");
        }
        Ok(Self { requests, tokens, per })
    }

    /// Admissions per period, if limited.
    #[must_use]
    pub const fn requests(&self) -> Option<u64> {
        self.requests
    }

    /// Tokens per period, if limited.
    #[must_use]
    pub const fn tokens(&self) -> Option<u64> {
        self.tokens
    }

    /// The period.
    #[must_use]
    pub const fn per(&self) -> Duration {
        self.per
    }
}

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Admissions.
    Requests,
    /// Tokens.
    Tokens,
}

/// One bucket: `amount` per `per`, refilled continuously; its level in amount x nanoseconds.
#[derive(Debug, Clone)]
struct Bucket {
    counted: Counted,
    amount: u64,
    per_ns: u128,
    /// What the bucket holds (negative: a debt), as of `at`.
    level: i128,
    at: Instant,
}

impl Bucket {
    fn new(counted: Counted, amount: u64, per: Duration, now: Instant) -> Self {
        let per_ns = per.as_nanos().max(1);
        Self {
            counted,
            amount,
            per_ns,
            level: Self::scaled(amount, per_ns),
            at: now,
        }
    }

    fn scaled(amount: u64, per_ns: u128) -> i128 {
        i128::try_from(u128::from(amount) * per_ns).unwrap_or(i128::MAX)
    }

    fn full(&self) -> i128 {
        Self::scaled(self.amount, self.per_ns)
    }

    /// Brings the level up to `now` (an instant before the last one changes nothing).
    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.at) else {
            return;
        };
        let added = i128::try_from(u128::from(self.amount) * elapsed.as_nanos()).unwrap_or(i128::MAX);
        self.level = self.level.saturating_add(added).min(self.full());
        self.at = now;
    }

    /// How long until the bucket holds `spend` (zero: it does now), after `refill`.
    fn wait(&self, spend: u64) -> Duration {
        let needed = Self::scaled(spend, self.per_ns);
        let deficit = needed.saturating_sub(self.level);
        if deficit <= 0 {
            return Duration::ZERO;
        }
        // Refilling adds `amount` per nanosecond: round up, so the wait is never short.
        let ns = (deficit.unsigned_abs()).div_ceil(u128::from(self.amount));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// What the bucket holds now, in whole units (negative: a debt).
    fn remaining(&self) -> i64 {
        let per_ns = i128::try_from(self.per_ns).unwrap_or(i128::MAX);
        i64::try_from(self.level.div_euclid(per_ns)).unwrap_or(i64::MIN)
    }
}

/// The buckets of a limiter's rates, spent together.
#[derive(Debug, Clone)]
pub struct Budget {
    buckets: Vec<Bucket>,
}

/// What one bucket holds, for `stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    /// What the bucket counts.
    pub counted: Counted,
    /// Its period.
    pub per: Duration,
    /// What it holds now, in whole requests or tokens (negative: a debt).
    pub remaining: i64,
    /// What it holds when full: one period's amount.
    pub capacity: u64,
}

impl Budget {
    /// Full buckets for `rates`, at `now`.
    #[must_use]
    pub fn new(rates: &[Rate], now: Instant) -> Self {
        let mut buckets = Vec::new();
        for rate in rates {
            if let Some(requests) = rate.requests {
                buckets.push(Bucket::new(Counted::Requests, requests, rate.per, now));
            }
            if let Some(tokens) = rate.tokens {
                buckets.push(Bucket::new(Counted::Tokens, tokens, rate.per, now));
            }
        }
        Self { buckets }
    }

    /// The most tokens one admission may ask for: the smallest token bucket's capacity (`None`
    /// if no rate counts tokens). More could never be admitted.
    #[must_use]
    pub fn max_tokens(&self) -> Option<u64> {
        self.buckets
            .iter()
            .filter(|b| b.counted == Counted::Tokens)
            .map(|b| b.amount)
            .min()
    }

    /// Spends one request and `tokens` tokens from every bucket at `now`, or, if some bucket
    /// does not hold its share, nothing: then `Err` with how long until all of them would (the
    /// longest wait; an arrival that waits that long is admitted if nothing else spends
    /// meanwhile).
    ///
    /// # Errors
    ///
    /// The wait, as above.
    pub fn try_spend(&mut self, tokens: u64, now: Instant) -> Result<(), Duration> {
        let spend = |bucket: &Bucket| match bucket.counted {
            Counted::Requests => 1,
            Counted::Tokens => tokens,
        };
        let mut wait = Duration::ZERO;
        for bucket in &mut self.buckets {
            bucket.refill(now);
            wait = wait.max(bucket.wait(spend(bucket)));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        for bucket in &mut self.buckets {
            bucket.level -= Bucket::scaled(spend(bucket), bucket.per_ns);
        }
        Ok(())
    }

    /// Settles a token estimate: a positive `delta` charges more tokens (a bucket may go into
    /// debt), a negative one refunds them (never beyond a full bucket). Never waits.
    pub fn adjust_tokens(&mut self, delta: i64, now: Instant) {
        for bucket in self.buckets.iter_mut().filter(|b| b.counted == Counted::Tokens) {
            bucket.refill(now);
            let amount = Bucket::scaled(delta.unsigned_abs(), bucket.per_ns);
            bucket.level = if delta >= 0 {
                bucket.level.saturating_sub(amount)
            } else {
                bucket.level.saturating_add(amount).min(bucket.full())
            };
        }
    }

    /// What every bucket holds at `now`.
    #[must_use]
    pub fn remaining(&mut self, now: Instant) -> Vec<Remaining> {
        self.buckets
            .iter_mut()
            .map(|bucket| {
                bucket.refill(now);
                Remaining {
                    counted: bucket.counted,
                    per: Duration::from_nanos(u64::try_from(bucket.per_ns).unwrap_or(u64::MAX)),
                    remaining: bucket.remaining(),
                    capacity: bucket.amount,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn budget(rates: &[Rate], now: Instant) -> Budget {
        Budget::new(rates, now)
    }

    #[test]
    fn bad_rates_are_refused() {
        for (requests, tokens, per, message) in [
            (None, None, SECOND, "a Rate needs requests or tokens"),
            (Some(0), None, SECOND, "a Rate's requests and tokens must be >= 1"),
            (None, Some(0), SECOND, "a Rate's requests and tokens must be >= 1"),
            (Some(1), None, Duration::ZERO, "a Rate's period must be > 0"),
        ] {
            let err = Rate::new(requests, tokens, per).expect_err("invalid");
            assert!(err.to_string().starts_with(message), "{err}");
        }
    }

    #[test]
    fn a_burst_of_one_period_passes_then_the_refill_paces_the_rest() {
        let start = Instant::now();
        let mut b = budget(&[Rate::new(Some(10), None, SECOND).expect("rate")], start);
        for _ in 0..10 {
            assert_eq!(b.try_spend(0, start), Ok(()));
        }
        assert_eq!(
            b.try_spend(0, start),
            Err(Duration::from_millis(100)),
            "one request per 100 ms"
        );
        assert_eq!(
            b.try_spend(0, start + Duration::from_millis(99)),
            Err(Duration::from_millis(1))
        );
        assert_eq!(b.try_spend(0, start + Duration::from_millis(100)), Ok(()));
        // Idle for an hour: still one period's amount, no more.
        let later = start + Duration::from_secs(3600);
        for _ in 0..10 {
            assert_eq!(b.try_spend(0, later), Ok(()));
        }
        assert!(b.try_spend(0, later).is_err());
    }

    #[test]
    fn every_rate_must_hold_its_share_and_a_refusal_spends_nothing() {
        let start = Instant::now();
        let per_second = Rate::new(Some(5), Some(1000), SECOND).expect("rate");
        let per_minute = Rate::new(Some(100), Some(3000), Duration::from_secs(60)).expect("rate");
        let mut b = budget(&[per_second, per_minute], start);
        assert_eq!(b.max_tokens(), Some(1000));
        assert_eq!(b.try_spend(600, start), Ok(()));
        // 400 tokens left this second: 600 more wait 200 ms (1000 per second refill).
        assert_eq!(b.try_spend(600, start), Err(Duration::from_millis(200)));
        let left = b.remaining(start);
        assert_eq!(
            left.iter().map(|r| r.remaining).collect::<Vec<_>>(),
            vec![4, 400, 99, 2400],
            "the refusal spent nothing"
        );
        // The per-minute token bucket becomes the bound: 2400 left, refilled at 50 per second.
        let mut now = start;
        for _ in 0..4 {
            now += SECOND;
            assert_eq!(b.try_spend(600, now), Ok(()));
        }
        now += SECOND;
        let wait = b.try_spend(600, now).expect_err("the minute's tokens are spent");
        assert!(wait > SECOND, "{wait:?}: waits for the per-minute bucket");
    }

    #[test]
    fn a_settled_estimate_can_leave_a_debt_that_later_admissions_wait_out() {
        let start = Instant::now();
        let mut b = budget(&[Rate::new(None, Some(1000), SECOND).expect("rate")], start);
        assert_eq!(b.try_spend(800, start), Ok(()));
        b.adjust_tokens(700, start); // the call used 1500 tokens, not 800
        assert_eq!(b.remaining(start)[0].remaining, -500);
        // 500 of debt and 100 wanted: 600 tokens to refill at 1000 per second.
        assert_eq!(b.try_spend(100, start), Err(Duration::from_millis(600)));
        // A refund never fills beyond one period's amount.
        b.adjust_tokens(-5000, start);
        assert_eq!(b.remaining(start)[0].remaining, 1000);
        // Requests are not refunded by a token adjustment.
        let mut r = budget(&[Rate::new(Some(1), Some(10), SECOND).expect("rate")], start);
        assert_eq!(r.try_spend(1, start), Ok(()));
        r.adjust_tokens(-1, start);
        assert_eq!(r.remaining(start)[0].remaining, 0);
    }

    #[test]
    fn the_arithmetic_is_exact_over_odd_periods_and_long_lives() {
        let start = Instant::now();
        let mut b = budget(
            &[Rate::new(Some(3), None, Duration::from_millis(7)).expect("rate")],
            start,
        );
        for _ in 0..3 {
            assert_eq!(b.try_spend(0, start), Ok(()));
        }
        // One request per 7/3 ms = 2333333.33 ns: the wait rounds up, and is then enough.
        let wait = b.try_spend(0, start).expect_err("empty");
        assert_eq!(wait, Duration::from_nanos(2_333_334));
        assert!(b.try_spend(0, start + Duration::from_nanos(2_333_333)).is_err());
        assert_eq!(b.try_spend(0, start + wait), Ok(()));
        // A year later, in many small steps: exactly one period's amount, never more.
        let mut now = start;
        for _ in 0..1000 {
            now += Duration::from_secs(31_536);
            let _ = b.remaining(now);
        }
        assert_eq!(b.remaining(now)[0].remaining, 3);
    }
}
