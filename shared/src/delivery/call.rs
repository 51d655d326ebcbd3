//! One target, one event: the lease, the call through the target's circuit breaker, and what
//! it came to.

use std::time::{Duration, Instant};

use tracing::{info, instrument, warn};

use super::identify::Hold;
use super::{Delivery, Document, InboundMessage, breaker, retry};
use crate::contract::Timestamp;
use crate::ports::{Attempt, Clock, DeliveryLog, EventKey, Target, TargetError};
use crate::telemetry::{Metric, Metrics, Unit};

/// What one target did with one event.
pub(super) enum TargetOutcome {
    Delivered,
    Skipped,
    /// Refused for good on an earlier receive, for the recorded reason.
    FailedBefore(Option<String>),
    /// Try again after `delay`. `failure` is the target's own failure (an error, an open
    /// circuit); `None` when the event is in flight elsewhere or the store could not be asked,
    /// which says nothing against the target.
    Retry {
        delay: Duration,
        failure: Option<String>,
    },
    Permanent(String),
}

impl TargetOutcome {
    pub(super) fn retry(delay: Duration) -> Self {
        Self::Retry {
            delay,
            failure: None,
        }
    }
}

impl<S, Q, D, T, C, M> Delivery<S, Q, D, T, C, M>
where
    S: DeliveryLog,
    T: Target,
    C: Clock,
    M: Metrics,
{
    /// One target, one event: lease (unless the entity's write holds this first attempt),
    /// call, record.
    #[instrument(skip_all, fields(target = %name))]
    pub(super) async fn deliver(
        &self,
        key: &EventKey,
        name: &str,
        document: &Document,
        message: &InboundMessage,
        hold: Hold,
    ) -> TargetOutcome {
        let Some(target) = self.targets.get(name) else {
            return TargetOutcome::Permanent(format!("no target named {name}"));
        };
        let now = self.clock.now();
        if let Some(held_back) = self.circuit_open(key, name, hold, now).await {
            return held_back;
        }
        let lease = Duration::from_secs(self.settings.lease_secs);
        let begun = match hold {
            Hold::Taken(_) => Ok(Attempt::Go { attempt: 1 }),
            Hold::Earlier(_) | Hold::Nobody => {
                let (replay, earlier) = (message.replay, hold.earlier());
                self.store
                    .begin(key, name, now, lease, replay, earlier)
                    .await
            }
        };
        match begun {
            Ok(Attempt::Go { .. }) => {}
            Ok(Attempt::AlreadyDelivered) => return TargetOutcome::Skipped,
            Ok(Attempt::FailedBefore { reason }) => return TargetOutcome::FailedBefore(reason),
            Ok(Attempt::Leased { until }) => {
                let secs = u64::try_from(until.unix() - now.unix()).unwrap_or(1).max(1);
                return TargetOutcome::retry(Duration::from_secs(secs));
            }
            Err(err) => {
                warn!(error = %err, "could not take the delivery lease");
                return TargetOutcome::retry(retry::backoff(
                    &self.settings,
                    message.receive_count,
                    fastrand::f64(),
                ));
            }
        }
        let started = Instant::now();
        let result = target
            .deliver(document, document.event.idempotency_key.as_str())
            .await;
        let elapsed = started.elapsed();
        self.metrics.emit(Metric {
            name: "DeliveryLatency",
            dimensions: vec![("Target", name.to_owned())],
            value: elapsed.as_secs_f64() * 1000.0,
            unit: Unit::Milliseconds,
        });
        let now = self.clock.now();
        match result {
            Ok(()) => {
                if self.breaker(name, breaker::Breaker::success) {
                    info!("circuit closed");
                    self.breaker_state(name, false);
                }
                // Recorded by `settle` with the event's status, under the lease taken above.
                self.count_delivery(name, "delivered");
                info!(elapsed_ms = elapsed.as_millis(), "delivered");
                TargetOutcome::Delivered
            }
            Err(TargetError::Retryable {
                reason,
                retry_after,
            }) => {
                let cooldown = Duration::from_secs(self.settings.breaker_cooldown_secs);
                if self.breaker(name, |b| {
                    b.failure(now, self.settings.breaker_threshold, cooldown, &reason)
                }) {
                    warn!("circuit opened");
                    self.count_delivery(name, "circuit_opened");
                    self.breaker_state(name, true);
                }
                self.record_failure(key, name, &reason, now).await;
                self.count_delivery(name, "retry");
                self.metrics.emit(Metric::count(
                    "DeliveryRetries",
                    vec![("Target", name.to_owned())],
                ));
                let delay = retry_after.map_or_else(
                    || retry::backoff(&self.settings, message.receive_count, fastrand::f64()),
                    |asked| retry::honour_retry_after(&self.settings, asked),
                );
                info!(reason = %reason, delay_secs = delay.as_secs(), "will retry");
                TargetOutcome::Retry {
                    delay,
                    failure: Some(reason),
                }
            }
            Err(TargetError::Permanent { reason }) => TargetOutcome::Permanent(reason),
        }
    }

    /// `Some` retry when the target's circuit is open: the message waits out the cool-down,
    /// and the failure names what opened it.
    pub(super) async fn circuit_open(
        &self,
        key: &EventKey,
        name: &str,
        hold: Hold,
        now: Timestamp,
    ) -> Option<TargetOutcome> {
        let (wait, last) = self
            .breaker(name, |b| {
                b.check(now)
                    .map_err(|wait| (wait, b.last_failure().map(str::to_owned)))
            })
            .err()?;
        self.count_delivery(name, "circuit_open");
        if let Hold::Taken(_) = hold {
            // The held attempt is not made: a record lets the retry go ahead after `wait`
            // rather than after the hold.
            self.record_failure(key, name, "circuit open", now).await;
        }
        Some(TargetOutcome::Retry {
            delay: wait,
            failure: Some(match last {
                Some(last) => format!("circuit open; last failure: {last}"),
                None => "circuit open".to_owned(),
            }),
        })
    }

    /// Records a retryable failure; one that cannot be written leaves the lease to run out.
    pub(super) async fn record_failure(
        &self,
        key: &EventKey,
        target: &str,
        reason: &str,
        now: Timestamp,
    ) {
        if let Err(err) = self.store.failed(key, target, reason, false, now).await {
            warn!(error = %err, "could not record the failure");
        }
    }
}

/// The breakers, and the count every part of delivery keeps.
impl<S, Q, D, T, C, M: Metrics> Delivery<S, Q, D, T, C, M> {
    fn breaker<R>(&self, target: &str, f: impl FnOnce(&mut breaker::Breaker) -> R) -> R {
        let mut breakers = self.breakers.lock().expect("breaker lock");
        f(breakers.entry(target.to_owned()).or_default())
    }

    /// The circuit breaker's state as a gauge: 1 when it opens, 0 when it closes again.
    fn breaker_state(&self, target: &str, open: bool) {
        self.metrics.emit(Metric {
            name: "CircuitBreakerOpen",
            dimensions: vec![("Target", target.to_owned())],
            value: if open { 1.0 } else { 0.0 },
            unit: Unit::Count,
        });
    }

    pub(super) fn count_delivery(&self, target: &str, outcome: &str) {
        self.metrics.emit(Metric::count(
            "Deliveries",
            vec![
                ("Target", target.to_owned()),
                ("Outcome", outcome.to_owned()),
            ],
        ));
    }
}
