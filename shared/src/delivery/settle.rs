//! How a message ends: settled with the event's status, put back for a retry, or
//! dead-lettered with its reason.

use std::time::Duration;

use tracing::warn;

use super::call::TargetOutcome;
use super::{Delivery, Document, InboundMessage, Outcome, retry};
use crate::ports::{
    Clock, DeadLetters, DeliveryLog, EventKey, EventStatus, EventStore, Letter, QueueControl,
    StoreError,
};
use crate::telemetry::{Metric, Metrics};

impl<S, Q, D, T, C, M> Delivery<S, Q, D, T, C, M>
where
    S: EventStore + DeliveryLog,
    Q: QueueControl,
    D: DeadLetters,
    C: Clock,
    M: Metrics,
{
    /// Puts the message back on the queue for `delay`, with what was delivered meanwhile.
    pub(super) async fn retry_later(
        &self,
        message: &InboundMessage,
        key: &EventKey,
        delivered: &[&str],
        delay: Duration,
    ) -> Outcome {
        self.record_delivered(key, delivered).await;
        // The message is alive: the stuck sweep and a late duplicate count from its return, or
        // a long `Retry-After` would see it enqueued again, and the target called early. Delays
        // are whole seconds. The two writes do not depend on each other; both in flight at once
        // are boxed, off the message's future, on this path only.
        let secs = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX / 2);
        let due = self.clock.now().plus_secs(secs);
        let (hidden, noted) = Box::pin(futures_util::future::join(
            self.queue.retry_after(&message.receipt_handle, delay),
            self.store.retrying_until(key, due),
        ))
        .await;
        if let Err(err) = hidden {
            warn!(error = %err, "could not set the retry delay; the queue's visibility timeout applies");
        }
        if let Err(err) = noted {
            warn!(error = %err, "could not note the retry on the claim");
        }
        Outcome::Retry(delay)
    }

    /// Records deliveries on their own, when the message goes back on the queue for another
    /// target. A record that cannot be written is not lost work: its lease runs out and the
    /// retry calls the target again with the same idempotency key.
    pub(super) async fn record_delivered(&self, key: &EventKey, delivered: &[&str]) {
        for name in delivered {
            if let Err(err) = self.store.delivered(key, name, self.clock.now()).await {
                warn!(error = %err, target = name, "delivered, but could not record it");
            }
        }
    }

    /// Sends a copy of the message to the dead-letter queue with the reason, then records the
    /// target as failed for good. If the dead-letter queue cannot be written, the failure is
    /// recorded as retryable instead, so nothing is dropped without a reason. `class` is the
    /// reason's bounded name for the metric: an HTTP status, `refused` or `exhausted`.
    pub(super) async fn dead_letter_target(
        &self,
        message: &InboundMessage,
        key: &EventKey,
        target: &str,
        document: &Document,
        reason: &str,
        class: &str,
    ) -> TargetOutcome {
        let now = self.clock.now();
        let attributes = Letter {
            reason: reason.to_owned(),
            failed_at: now,
            event_key: Some(key),
            event_type: Some(&document.event.event_type),
            target: Some(target),
        }
        .attributes();
        if let Err(err) = self
            .dead_letters
            .dead_letter(&message.body, &attributes)
            .await
        {
            warn!(error = %err, "could not dead-letter; will retry instead");
            let _ = self.store.failed(key, target, reason, false, now).await;
            return TargetOutcome::retry(retry::backoff(
                &self.settings,
                message.receive_count,
                fastrand::f64(),
            ));
        }
        if let Err(err) = self.store.failed(key, target, reason, true, now).await {
            warn!(error = %err, "dead-lettered, but could not record it");
        }
        self.count_delivery(target, "dead_lettered");
        self.count_dead_letter(target, class);
        warn!(target, reason, class, "dead-lettered");
        TargetOutcome::Permanent(reason.to_owned())
    }

    /// A message that cannot be processed at all goes to the dead-letter queue whole.
    pub(super) async fn dead_letter_message(
        &self,
        message: &InboundMessage,
        key: Option<&EventKey>,
        label: &str,
        reason: &str,
    ) -> Outcome {
        let attributes = Letter {
            reason: format!("{label}: {reason}"),
            failed_at: self.clock.now(),
            event_key: key,
            event_type: None,
            target: None,
        }
        .attributes();
        match self
            .dead_letters
            .dead_letter(&message.body, &attributes)
            .await
        {
            Ok(()) => {
                self.metrics.emit(Metric::count(
                    "DeliveryMessages",
                    vec![("Outcome", label.to_owned())],
                ));
                self.count_dead_letter("-", label);
                warn!(reason = label, "message dead-lettered");
                Outcome::Done(EventStatus::DeadLettered)
            }
            Err(err) => {
                warn!(error = %err, "could not dead-letter; leaving the message on the queue");
                Outcome::Retry(retry::backoff(
                    &self.settings,
                    message.receive_count,
                    fastrand::f64(),
                ))
            }
        }
    }

    pub(super) async fn retry_store(&self, message: &InboundMessage, err: &StoreError) -> Outcome {
        warn!(error = %err, "store unavailable; will retry");
        let delay = retry::backoff(&self.settings, message.receive_count, fastrand::f64());
        let _ = self.queue.retry_after(&message.receipt_handle, delay).await;
        Outcome::Retry(delay)
    }

    /// Records the delivered targets and the event's final status in one write.
    pub(super) async fn settle(
        &self,
        message: &InboundMessage,
        key: &EventKey,
        delivered: &[&str],
        status: EventStatus,
        detail: Option<&str>,
    ) -> Outcome {
        if let Err(err) = self
            .store
            .settle(key, delivered, status, detail, self.clock.now())
            .await
        {
            // Nothing of it was written. The targets have the event; the retry finds their
            // leases live (or run out) and calls them again with the same idempotency key,
            // which they deduplicate, then writes this again.
            return self.retry_store(message, &err).await;
        }
        self.metrics.emit(Metric::count(
            "DeliveryMessages",
            vec![("Outcome", status.as_str().to_owned())],
        ));
        Outcome::Done(status)
    }

    pub(super) fn count_dead_letter(&self, target: &str, reason: &str) {
        self.metrics.emit(Metric::count(
            "DeadLetterSends",
            vec![("Target", target.to_owned()), ("Reason", reason.to_owned())],
        ));
    }
}

/// A permanent refusal's name for the metric: an HTTP status is a bounded dimension; other
/// reasons (a mapping's) are free text.
pub(super) fn refusal_class(reason: &str) -> &str {
    if reason.starts_with("HTTP ") {
        reason
    } else {
        "refused"
    }
}
