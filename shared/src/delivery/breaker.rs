//! A circuit breaker per target: after `threshold` consecutive retryable failures the target is
//! skipped for a cool-down (its messages wait instead of burning retries); after the cool-down
//! one call is let through, and its outcome closes or re-opens the circuit. Pure: `now` comes in.
//!
//! The state lives in each worker's memory (each Lambda instance, the local worker), so a broken
//! target is detected per instance; that is enough to stop the retry storm, and needs no shared
//! write on the hot path.

use std::time::Duration;

use crate::contract::Timestamp;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Timestamp>,
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

    /// Closes the circuit; returns true when it had been opened.
    pub fn success(&mut self) -> bool {
        let was_open = self.open_until.is_some();
        *self = Self::default();
        was_open
    }

    /// Counts a retryable failure; returns true when this failure opened the circuit.
    pub fn failure(&mut self, now: Timestamp, threshold: u32, cooldown: Duration) -> bool {
        self.consecutive_failures += 1;
        let half_open = self.open_until.is_some_and(|until| until <= now);
        if self.consecutive_failures >= threshold || half_open {
            let secs = i64::try_from(cooldown.as_secs()).unwrap_or(i64::MAX);
            self.open_until = Some(now.plus_secs(secs));
            return true;
        }
        false
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
        assert!(!b.failure(t0, 3, cooldown));
        assert!(!b.failure(t0, 3, cooldown));
        assert!(b.check(t0).is_ok());
        assert!(b.failure(t0, 3, cooldown), "the third failure opens it");
        assert_eq!(b.check(t0.plus_secs(10)), Err(Duration::from_secs(20)));
        // Half-open after the cool-down: one trial; a failure re-opens at once.
        assert!(b.check(t0.plus_secs(30)).is_ok());
        assert!(b.failure(t0.plus_secs(30), 3, cooldown));
        assert!(b.is_open(t0.plus_secs(31)));
        // A successful trial closes it and resets the count.
        b.success();
        assert!(b.check(t0.plus_secs(31)).is_ok());
        assert!(!b.failure(t0.plus_secs(31), 3, cooldown));
    }
}
