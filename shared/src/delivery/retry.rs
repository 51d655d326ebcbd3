//! How long a failed delivery waits before the next attempt. Pure: the random draw comes in.

use std::time::Duration;

use crate::config::DeliverySettings;

/// Exponential backoff with full jitter: uniform in `[1 s, min(cap, base · 2^(attempt-1))]`.
/// `unit` is a uniform draw in `[0, 1)`.
pub fn backoff(settings: &DeliverySettings, attempt: u32, unit: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let ceiling = settings
        .backoff_base_secs
        .saturating_mul(1_u64 << exp)
        .min(settings.backoff_cap_secs)
        .max(1);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let secs = ((ceiling as f64) * unit.clamp(0.0, 1.0)).ceil() as u64;
    Duration::from_secs(secs.clamp(1, ceiling))
}

/// A target's `Retry-After`, clamped to `[1 s, retry_after_cap]`.
pub fn honour_retry_after(settings: &DeliverySettings, asked: Duration) -> Duration {
    Duration::from_secs(asked.as_secs().clamp(1, settings.retry_after_cap_secs))
}

/// The pause after losing a versioned write to another process, before reading the entity
/// again: full jitter under `min(100 ms, 2 ms · 2^lost)`, so writers that collided spread out
/// instead of colliding again. `unit` is a uniform draw in `[0, 1)`.
pub fn conflict_pause(lost: u32, unit: f64) -> Duration {
    let ceiling = Duration::from_millis((2_u64 << lost.min(10)).min(100));
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_write_pauses_under_a_doubling_ceiling_of_at_most_100_ms() {
        let ceiling = |lost| conflict_pause(lost, 0.999_999).as_millis();
        assert_eq!(
            (0..8).map(ceiling).collect::<Vec<_>>(),
            [1, 3, 7, 15, 31, 63, 99, 99]
        );
        assert_eq!(conflict_pause(3, 0.0), Duration::ZERO);
        assert_eq!(conflict_pause(3, 0.5).as_millis(), 8);
        assert_eq!(conflict_pause(u32::MAX, 1.0).as_millis(), 100);
    }

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let s = DeliverySettings {
            backoff_base_secs: 2,
            backoff_cap_secs: 60,
            ..DeliverySettings::default()
        };
        let max = |attempt| backoff(&s, attempt, 0.999_999).as_secs();
        assert_eq!(
            [max(1), max(2), max(3), max(4), max(5), max(6), max(40)],
            [2, 4, 8, 16, 32, 60, 60]
        );
        assert_eq!(
            backoff(&s, 5, 0.0).as_secs(),
            1,
            "never zero: the message would spin"
        );
        let mid = backoff(&s, 4, 0.5).as_secs();
        assert_eq!(mid, 8);
    }

    #[test]
    fn retry_after_is_clamped() {
        let s = DeliverySettings {
            retry_after_cap_secs: 120,
            ..DeliverySettings::default()
        };
        assert_eq!(
            honour_retry_after(&s, Duration::from_secs(30)).as_secs(),
            30
        );
        assert_eq!(honour_retry_after(&s, Duration::from_secs(0)).as_secs(), 1);
        assert_eq!(
            honour_retry_after(&s, Duration::from_secs(86_400)).as_secs(),
            120
        );
    }
}
