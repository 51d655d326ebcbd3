//! The delivery use case: for each queued event, apply it to the ledger, then deliver it to
//! every target its routes select, exactly once per target. Generic over its ports, so the
//! Lambda function and the local worker run this code.

pub mod breaker;
mod call;
mod document;
mod identify;
pub mod mapping;
mod order;
pub mod replay;
pub mod retry;
pub mod routes;
mod settle;
mod turns;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tracing::{Span, field, instrument, warn};

use call::TargetOutcome;
pub use document::{Document, EntityView};
use identify::{Application, Hold};
use order::processing_order;
use settle::refusal_class;

use crate::config::{Config, DeliverySettings, LedgerSettings, Route};
use crate::contract::Envelope;
use crate::ingress::QueueMessage;
use crate::ledger::{Applied, Effect, Ownership};
use crate::ports::{
    Clock, DeadLetters, DeliveryLog, EventKey, EventStatus, EventStore, Known, LedgerStore,
    QueueControl, ReplayTally, StoreError, Target, distinct_keys,
};
use crate::telemetry::{Metric, Metrics};

/// The variable that tells the delivery function its queue's `maxReceiveCount`.
pub const MAX_RECEIVES_VAR: &str = "PLUMBLINE_MAX_RECEIVES";

/// A `PLUMBLINE_MAX_RECEIVES` value: a count of receives, at least one.
pub fn parse_max_receives(value: &str) -> Option<u32> {
    value.parse().ok().filter(|n| *n >= 1)
}

/// Entity locks a process keeps (`turns`): enough that unrelated entities rarely share one.
const ENTITY_STRIPES: usize = 1024;

/// One message off the delivery queue, as the worker got it.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// How many times the queue has handed this message out (1 on the first delivery).
    pub receive_count: u32,
    /// Set on messages moved back from the dead-letter queue by a replay.
    pub replay: bool,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished: delivered everywhere, dead-lettered with a reason, or nothing to do. Delete it.
    Done(EventStatus),
    /// Some target must be tried again; the message's visibility was set to this delay.
    Retry(Duration),
}

/// The delivery worker and everything it needs, built once.
#[derive(Debug)]
pub struct Delivery<S, Q, D, T, C, M> {
    store: S,
    queue: Q,
    dead_letters: D,
    targets: BTreeMap<String, T>,
    clock: C,
    metrics: M,
    routes: Vec<Route>,
    ownership: Ownership,
    settings: DeliverySettings,
    ledger: LedgerSettings,
    breakers: Mutex<HashMap<String, breaker::Breaker>>,
    turns: turns::Turns,
    /// The queue's `maxReceiveCount`, when known: a message received this many times is on its
    /// last receive, and a target still failing then is dead-lettered here, with its reason.
    max_receives: Option<u32>,
}

impl<S, Q, D, T, C, M> Delivery<S, Q, D, T, C, M>
where
    S: EventStore + LedgerStore + DeliveryLog + ReplayTally,
    Q: QueueControl,
    D: DeadLetters,
    T: Target,
    C: Clock,
    M: Metrics,
{
    pub fn new(
        store: S,
        queue: Q,
        dead_letters: D,
        targets: BTreeMap<String, T>,
        clock: C,
        metrics: M,
        config: &Config,
    ) -> Self {
        Self {
            store,
            queue,
            dead_letters,
            targets,
            clock,
            metrics,
            routes: config.routes.clone(),
            ownership: Ownership(config.ownership.clone()),
            settings: config.delivery,
            ledger: config.ledger,
            breakers: Mutex::new(HashMap::new()),
            turns: turns::Turns::new(ENTITY_STRIPES),
            max_receives: None,
        }
    }

    /// Tells the delivery the queue's `maxReceiveCount`. Without it, a message whose target
    /// keeps failing is moved to the dead-letter queue by the queue's redrive alone: with no
    /// reason attached, and its event left as received, for the stuck sweep to enqueue again.
    #[must_use]
    pub fn with_max_receives(mut self, max_receives: u32) -> Self {
        self.max_receives = Some(max_receives);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Processes a batch; returns the ids of the messages to leave on the queue. One record's
    /// failure never affects another's. The records go one after another, in the order
    /// `processing_order` gives.
    pub async fn process_batch(&self, messages: &[InboundMessage]) -> Vec<String> {
        let order = processing_order(messages, &mut fastrand::Rng::new());
        let messages: Vec<&InboundMessage> = order.iter().map(|&i| &messages[i]).collect();
        let decoded: Vec<_> = messages
            .iter()
            .map(|m| QueueMessage::decode(&m.body))
            .collect();
        let mut known = self.read_ahead(&decoded).await;
        let mut failed = Vec::new();
        for (message, decoded) in messages.into_iter().zip(decoded) {
            // Boxed: one record's state (its envelope and document) stays off the batch's future.
            let outcome = Box::pin(self.process_decoded(message, decoded, &mut known)).await;
            if let Outcome::Retry(_) = outcome {
                failed.push(message.message_id.clone());
            }
        }
        failed
    }

    /// Applies the event to its entity; `hold` asks the same write to hold the event's first
    /// delivery attempt for a lease's length.
    async fn apply(
        &self,
        envelope: &Envelope,
        hold: bool,
        known: &mut Known,
    ) -> Result<Application, StoreError> {
        let _turn = self
            .turns
            .take(envelope.entity.kind, &envelope.entity.id)
            .await;
        let now = self.clock.now();
        let lease = i64::try_from(self.settings.lease_secs).unwrap_or(i64::MAX / 2);
        identify::apply(
            &self.store,
            envelope,
            &self.ownership,
            &self.ledger,
            now,
            hold.then(|| now.plus_secs(lease)),
            known,
        )
        .await
    }

    /// Reads the entities a batch's events are about in one request. Only worth it for more
    /// than one; a failure here costs nothing but the single reads it was meant to save.
    async fn read_ahead(&self, decoded: &[Result<QueueMessage, String>]) -> Known {
        let keys = distinct_keys(
            decoded
                .iter()
                .filter_map(|m| m.as_ref().ok()?.event.as_ref())
                .map(|e| (e.entity.kind, e.entity.id.clone())),
        );
        if keys.len() < 2 {
            return Known::new();
        }
        self.store.load_entities(&keys).await.unwrap_or_else(|err| {
            warn!(error = %err, "could not read the batch's entities ahead");
            Known::new()
        })
    }

    /// Tallies a replayed message's outcome, for reconciliation's replay success rate.
    async fn count_replay(&self, message: &InboundMessage, delivered: bool) {
        if !message.replay {
            return;
        }
        if let Err(err) = self.store.count_replay(self.clock.now(), delivered).await {
            warn!(error = %err, "could not count the replay's outcome");
        }
    }

    /// Processes one message.
    pub async fn process(&self, message: &InboundMessage) -> Outcome {
        let decoded = QueueMessage::decode(&message.body);
        self.process_decoded(message, decoded, &mut Known::new())
            .await
    }

    /// The message's envelope: carried in it, or read from the stored event when the message
    /// carries only the key. A message whose event cannot be found is dead-lettered, and a
    /// failed read retried: the outcome to answer with.
    async fn envelope_of(
        &self,
        message: &InboundMessage,
        key: &EventKey,
        carried: Option<Envelope>,
    ) -> Result<Envelope, Outcome> {
        if let Some(envelope) = carried {
            return Ok(envelope);
        }
        let (reason, detail) = match self.store.get(key).await {
            Ok(Some(record)) => match record.envelope {
                Some(envelope) => return Ok(envelope),
                None => ("no_envelope", "the stored event has no envelope"),
            },
            Ok(None) => ("event_not_found", "no stored event has this key"),
            Err(err) => return Err(self.retry_store(message, &err).await),
        };
        Err(self
            .dead_letter_message(message, Some(key), reason, detail)
            .await)
    }

    /// Processes one message, decoded, with the entities read ahead of its batch.
    #[instrument(skip_all, fields(message_id = %message.message_id, event_id = field::Empty, event_type = field::Empty))]
    async fn process_decoded(
        &self,
        message: &InboundMessage,
        decoded: Result<QueueMessage, String>,
        known: &mut Known,
    ) -> Outcome {
        let decoded = match decoded {
            Ok(m) => m,
            Err(reason) => {
                return self
                    .dead_letter_message(message, None, "undecodable_message", &reason)
                    .await;
            }
        };
        let key = EventKey::parse(&decoded.key).expect("decode checks the key");
        let envelope = match self.envelope_of(message, &key, decoded.event).await {
            Ok(envelope) => envelope,
            Err(outcome) => return outcome,
        };
        Span::current().record("event_id", field::display(&envelope.id));
        Span::current().record("event_type", field::display(&envelope.event_type));
        // Route filters are paths into the envelope (docs/delivery.md), not the document. Known
        // before the entity's write, so that write can hold the first attempt for the targets.
        let routed = serde_json::to_value(&envelope).expect("an envelope serializes");
        let targets = routes::targets_for(&self.routes, envelope.event_type.as_str(), &routed);
        // Only a message's first receive holds. A later one (a retry, a replay) asks each
        // target's record, which also answers for an event its entity's history, bounded, has
        // since let go of and would apply again.
        let first = message.receive_count <= 1 && !message.replay;
        let hold = first && !targets.is_empty();
        let Application {
            applied,
            hold,
            repeated,
        } = match self.apply(&envelope, hold, known).await {
            Ok(application) => application,
            Err(err) => return self.retry_store(message, &err).await,
        };
        if !repeated {
            self.count_ledger(&envelope, &applied);
        }
        if applied.effect == Effect::DuplicateSubmission {
            let detail = format!(
                "duplicate submission of {} {}",
                applied.entity.kind.as_str(),
                applied.entity.id
            );
            return self
                .settle(message, &key, &[], EventStatus::Suppressed, Some(&detail))
                .await;
        }
        let document = Document::new(envelope, &applied.entity, applied.effect);
        if targets.is_empty() {
            return self
                .settle(message, &key, &[], EventStatus::DeliveredToNone, None)
                .await;
        }
        self.deliver_to_targets(message, &key, &targets, &document, hold)
            .await
    }

    /// Delivers the event to each of its targets, then settles it (delivered, or dead-lettered
    /// with the refusals), or puts it back for the targets still to retry.
    async fn deliver_to_targets(
        &self,
        message: &InboundMessage,
        key: &EventKey,
        targets: &BTreeSet<String>,
        document: &Document,
        hold: Hold,
    ) -> Outcome {
        let mut retry: Option<Duration> = None;
        // The targets that refused the event for good, now or on an earlier receive, with why
        // where it is known.
        let mut refused: Vec<(&str, Option<String>)> = Vec::new();
        // Recorded with the event's final status in one write (`settle`), or on their own when
        // another target must be retried.
        let mut delivered: Vec<&str> = Vec::new();
        // The queue will not hand this message out again: a target still failing now is
        // dead-lettered with its reason rather than left to the queue's redrive.
        let last = self
            .max_receives
            .is_some_and(|max| message.receive_count >= max);
        for name in targets {
            let outcome = match self.deliver(key, name, document, message, hold).await {
                TargetOutcome::Permanent(reason) => {
                    let class = refusal_class(&reason);
                    self.dead_letter_target(message, key, name, document, &reason, class)
                        .await
                }
                TargetOutcome::Retry {
                    failure: Some(failure),
                    ..
                } if last => {
                    let reason = format!(
                        "{failure} (gave up after {} receives)",
                        message.receive_count
                    );
                    self.dead_letter_target(message, key, name, document, &reason, "exhausted")
                        .await
                }
                other => other,
            };
            match outcome {
                TargetOutcome::Retry { delay, .. } => {
                    retry = Some(retry.map_or(delay, |d| d.max(delay)));
                }
                TargetOutcome::FailedBefore(reason) => refused.push((name, reason)),
                TargetOutcome::Permanent(reason) => refused.push((name, Some(reason))),
                TargetOutcome::Delivered => delivered.push(name),
                TargetOutcome::Skipped => {}
            }
        }
        if let Some(delay) = retry {
            return self.retry_later(message, key, &delivered, delay).await;
        }
        self.count_replay(message, refused.is_empty()).await;
        if refused.is_empty() {
            return self
                .settle(message, key, &delivered, EventStatus::Delivered, None)
                .await;
        }
        // The refusals with a reason are the event's detail: why `events list` shows it
        // dead-lettered, without a look at each target's record. Each reason is bounded (an
        // HTTP status, never a body), and so is an event's list of targets.
        let reasons: Vec<String> = refused
            .iter()
            .filter_map(|(name, reason)| Some(format!("{name}: {}", reason.as_ref()?)))
            .collect();
        let detail = (!reasons.is_empty()).then(|| reasons.join("; "));
        self.settle(
            message,
            key,
            &delivered,
            EventStatus::DeadLettered,
            detail.as_deref(),
        )
        .await
    }

    fn count_ledger(&self, envelope: &Envelope, applied: &Applied) {
        let kind = applied.entity.kind.as_str();
        // A sender's clock running fast: the ledger ordered the event by a bounded time;
        // operators should hear of the clock.
        if crate::ledger::ordering_time(envelope) < envelope.occurred_at {
            self.metrics.emit(Metric::count(
                "OccurrenceAhead",
                vec![("Source", envelope.source.to_string())],
            ));
            let seconds_ahead = envelope.occurred_at.unix() - envelope.received_at.unix();
            warn!(source = %envelope.source, seconds_ahead, "event occurred after its receipt; ordered by a bounded time");
        }
        for field in &applied.ownership_conflicts {
            self.metrics.emit(Metric::count(
                "OwnershipConflicts",
                vec![
                    ("Field", format!("{kind}.{field}")),
                    ("Source", envelope.source.to_string()),
                ],
            ));
            warn!(field = %format!("{kind}.{field}"), source = %envelope.source, "ownership conflict: write not applied");
        }
        let effect = serde_json::to_value(applied.effect)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.metrics.emit(Metric::count(
            "LedgerEffects",
            vec![("Entity", kind.to_owned()), ("Effect", effect)],
        ));
    }
}
