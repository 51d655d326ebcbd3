//! A circuit breaker per target. It opens when the target is failing, not merely unlucky: at
//! least `threshold` retryable failures, and at least half of the last [`WINDOW`] calls. A dead
//! target still opens the circuit after `threshold` failures in a row; a target that fails one
//! call in ten at random never does, where a run-of-failures rule paused it every minute or two
//! under load (docs/reliability.md, "Soak"). While open, the target is skipped for a cool-down
//! (its messages wait instead of burning retries); after it, one call is let through, and its
//! outcome closes or re-opens the circuit. Pure: `now` comes in.
//!
//! The state lives in each worker's memory (each Lambda instance, the local worker), so a broken
//! target is detected per instance; that is enough to stop the retry storm, and needs no shared
//! write on the hot path.

use std::time::Duration;

use crate::contract::Timestamp;

/// How many of the latest calls the failure rate is taken over.
pub const WINDOW: u32 = 50;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    /// The latest calls' outcomes, newest in the lowest bit: 1 a failure.
    outcomes: u64,
    /// How many calls `outcomes` holds, up to [`WINDOW`].
    calls: u32,
    open_until: Option<Timestamp>,
    /// The latest failure's reason, so that a message held back by the open circuit can still
    /// say what the target did.
    last_failure: Option<String>,
}

impl Breaker {
    /// `Err(wait)` while the circuit is open.
    pub fn check(&self, now: Timestamp) -> Result<(), Duration> {
        match self.open_until {
            Some(until) if until > now => {
                let secs = u64::try_from(until.unix() - now.unix()).unwrap_or(1).max(1);
                Err(Duration::from_secs(secs))
            }
            _ => Ok(()),
        }
    }

    pub fn is_open(&self, now: Timestamp) -> bool {
        self.check(now).is_err()
    }

    /// Counts a success; returns true when it closed an opened circuit (the trial call after a
    /// cool-down), which also forgets the failures that opened it.
    pub fn success(&mut self) -> bool {
        if self.open_until.is_some() {
            *self = Self::default();
            return true;
        }
        self.record(false);
        false
    }

    /// The reason of the latest failure counted.
    pub fn last_failure(&self) -> Option<&str> {
        self.last_failure.as_deref()
    }

    /// Counts a retryable failure; returns true when this failure opened the circuit.
    pub fn failure(
        &mut self,
        now: Timestamp,
        threshold: u32,
        cooldown: Duration,
        reason: &str,
    ) -> bool {
        self.record(true);
        self.last_failure = Some(reason.to_owned());
        let failures = self.outcomes.count_ones();
        let half_open = self.open_until.is_some_and(|until| until <= now);
        if half_open || (failures >= threshold && failures * 2 >= self.calls) {
            let secs = i64::try_from(cooldown.as_secs()).unwrap_or(i64::MAX);
            self.open_until = Some(now.plus_secs(secs));
            return true;
        }
        false
    }

    fn record(&mut self, failed: bool) {
        let window = (1u64 << WINDOW) - 1;
        self.outcomes = ((self.outcomes << 1) | u64::from(failed)) & window;
        self.calls = (self.calls + 1).min(WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_success() {
        let t0 = Timestamp::from_unix(1_700_000_000).expect("ok");
        let cooldown = Duration::from_secs(30);
        let mut b = Breaker::default();
        assert!(!b.failure(t0, 3, cooldown, "HTTP 503"));
        assert!(!b.failure(t0, 3, cooldown, "HTTP 503"));
        assert!(b.check(t0).is_ok());
        assert!(
            b.failure(t0, 3, cooldown, "HTTP 503"),
            "the third failure opens it"
        );
        assert_eq!(b.check(t0.plus_secs(10)), Err(Duration::from_secs(20)));
        // Half-open after the cool-down: one trial; a failure re-opens at once.
        assert!(b.check(t0.plus_secs(30)).is_ok());
        assert!(b.failure(t0.plus_secs(30), 3, cooldown, "connection failed"));
        assert!(b.is_open(t0.plus_secs(31)));
        assert_eq!(
            b.last_failure(),
            Some("connection failed"),
            "the latest reason"
        );
        // A successful trial closes it and resets the count.
        b.success();
        assert!(b.check(t0.plus_secs(31)).is_ok());
        assert_eq!(b.last_failure(), None);
        assert!(!b.failure(t0.plus_secs(31), 3, cooldown, "HTTP 503"));
    }

    #[test]
    fn a_target_failing_a_tenth_of_calls_at_random_never_opens_it() {
        let t0 = Timestamp::from_unix(1_700_000_000).expect("ok");
        let cooldown = Duration::from_secs(30);
        let mut b = Breaker::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut longest_run = (0, 0);
        for _ in 0..100_000 {
            if rng.f64() < 0.1 {
                longest_run.0 += 1;
                longest_run.1 = longest_run.1.max(longest_run.0);
                assert!(
                    !b.failure(t0, 5, cooldown, "HTTP 503"),
                    "opened on random failures"
                );
            } else {
                longest_run.0 = 0;
                b.success();
            }
        }
        // The old rule (five failures in a row) would have opened it on this sequence.
        assert!(
            longest_run.1 >= 5,
            "the sequence had a run of {}",
            longest_run.1
        );
    }

    #[test]
    fn a_target_that_starts_failing_most_calls_opens_it() {
        let t0 = Timestamp::from_unix(1_700_000_000).expect("ok");
        let cooldown = Duration::from_secs(30);
        let mut b = Breaker::default();
        for _ in 0..WINDOW {
            b.success();
        }
        // From a full window of successes, failures alternate with successes until half the
        // window has failed.
        let mut opened_after = None;
        for i in 1..=WINDOW {
            if b.failure(t0, 5, cooldown, "HTTP 503") {
                opened_after = Some(i);
                break;
            }
            b.success();
        }
        assert_eq!(opened_after, Some(WINDOW / 2));
        assert!(b.is_open(t0.plus_secs(1)));
    }
}
