//! The ingress use case: verify, normalize, claim, enqueue. Generic over its ports, so the
//! Lambda function and the local stack run exactly this code.

mod error;
mod message;
mod record;
mod reply;
mod reprocess;

use std::collections::BTreeMap;

use tracing::{info, instrument, warn};

pub use error::IngressError;
pub use message::{MAX_MESSAGE_BYTES, Outgoing, QueueMessage};
pub use record::build_record;
pub use reply::{Reply, reply};
pub use reprocess::{ReprocessError, Reprocessed, reprocess};

use crate::config::IngressSettings;
use crate::contract::{Envelope, EventId, Origin, SourceName, Timestamp, Trace};
use crate::ports::{Claim, Clock, EventQueue, EventRecord, EventStatus, EventStore, Intake};
use crate::sources::{Inbound, SourceEvent, SourceKind, Verifier};
use crate::telemetry::{Metric, Metrics};

/// One webhook request as the ingress sees it.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub method: &'a http::Method,
    /// The `{source}` path segment, not yet validated.
    pub source: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
    pub request_id: Option<&'a str>,
}

/// What happened to one event of an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    Accepted,
    Duplicate,
    /// The id was seen before with a different payload; kept as a conflict, not re-delivered.
    Conflict,
    Quarantined(String),
    Unrouted,
}

impl EventOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Conflict => "conflict",
            Self::Quarantined(_) => "quarantined",
            Self::Unrouted => "unrouted",
        }
    }
}

/// A request the ingress took: every event in it is durably recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub kind: SourceKind,
    pub events: Vec<(EventId, EventOutcome)>,
}

/// The ingress and everything it needs, built once at cold start.
#[derive(Debug)]
pub struct Ingress<S, Q, C, M> {
    store: S,
    queue: Q,
    clock: C,
    metrics: M,
    verifiers: BTreeMap<SourceName, Verifier>,
    settings: IngressSettings,
}

impl<S: Intake<Q>, Q: EventQueue, C: Clock, M: Metrics> Ingress<S, Q, C, M> {
    pub fn new(
        store: S,
        queue: Q,
        clock: C,
        metrics: M,
        verifiers: BTreeMap<SourceName, Verifier>,
        settings: IngressSettings,
    ) -> Self {
        Self {
            store,
            queue,
            clock,
            metrics,
            verifiers,
            settings,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Verifies a request for `source` without taking it.
    pub fn verify(
        &self,
        source: &SourceName,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Vec<SourceEvent>, IngressError> {
        let verifier = self
            .verifiers
            .get(source)
            .ok_or(IngressError::UnknownSource)?;
        Ok(verifier.accept(Inbound { headers, body }, self.clock.now())?)
    }

    /// Handles one request. `Ok` only once every event in it is durably claimed and, where it
    /// is to be delivered, enqueued.
    #[instrument(skip_all, fields(source = %req.source, request_id = req.request_id.unwrap_or("-")))]
    pub async fn handle(&self, req: WebhookRequest<'_>) -> Result<Accepted, IngressError> {
        let started = std::time::Instant::now();
        let result = self.handle_inner(req).await;
        self.metrics.emit(Metric {
            name: "IngressLatency",
            dimensions: vec![("Source", self.known_source_label(req.source))],
            value: started.elapsed().as_secs_f64() * 1000.0,
            unit: crate::telemetry::Unit::Milliseconds,
        });
        if let Err(err) = &result {
            let source = self.known_source_label(req.source);
            self.metrics.emit(Metric::count(
                if err.is_client_error() {
                    "IngressRejected"
                } else {
                    "IngressFailed"
                },
                vec![
                    ("Source", source.clone()),
                    ("Reason", err.label().to_owned()),
                ],
            ));
            if let IngressError::Rejected(rejection) = err
                && rejection.is_unauthorized()
            {
                self.metrics.emit(Metric::count(
                    "SignatureFailures",
                    vec![("Source", source), ("Reason", rejection.label().to_owned())],
                ));
            }
            if err.is_client_error() {
                info!(
                    reason = err.label(),
                    status = err.status(),
                    "request refused"
                );
            } else {
                warn!(
                    reason = err.label(),
                    error = %crate::telemetry::Chain(err),
                    "request failed; the provider will retry"
                );
            }
        }
        result
    }

    /// Unknown sources are counted under one label, so a scanner cannot create dimensions.
    fn known_source_label(&self, source: &str) -> String {
        SourceName::try_from(source)
            .ok()
            .filter(|s| self.verifiers.contains_key(s))
            .map_or_else(|| "(unknown)".to_owned(), |s| s.to_string())
    }

    async fn handle_inner(&self, req: WebhookRequest<'_>) -> Result<Accepted, IngressError> {
        if req.method != http::Method::POST {
            return Err(IngressError::MethodNotAllowed);
        }
        let source = SourceName::try_from(req.source).map_err(|_| IngressError::UnknownSource)?;
        let verifier = self
            .verifiers
            .get(&source)
            .ok_or(IngressError::UnknownSource)?;
        if req.body.len() > self.settings.max_body_bytes {
            return Err(IngressError::TooLarge {
                limit: self.settings.max_body_bytes,
            });
        }
        if !is_json_or_absent(req.headers.get(http::header::CONTENT_TYPE)) {
            return Err(IngressError::UnsupportedMediaType);
        }
        let now = self.clock.now();
        let events = verifier.accept(
            Inbound {
                headers: req.headers,
                body: req.body,
            },
            now,
        )?;
        let mut outcomes = Vec::with_capacity(events.len());
        for event in events {
            outcomes.push(self.take(&source, event, now, req.request_id).await?);
        }
        Ok(Accepted {
            kind: verifier.kind,
            events: outcomes,
        })
    }

    #[instrument(skip_all, fields(event_key = tracing::field::Empty, source_type = %event.source_type))]
    async fn take(
        &self,
        source: &SourceName,
        event: SourceEvent,
        now: Timestamp,
        request_id: Option<&str>,
    ) -> Result<(EventId, EventOutcome), IngressError> {
        let record = self.record(source, event, now, request_id);
        tracing::Span::current().record("event_key", tracing::field::display(&record.key));
        let (id, outcome) = match self.store.claim_and_enqueue(&self.queue, &record).await? {
            Claim::Claimed => {
                let outcome = match (&record.status, &record.reason) {
                    (EventStatus::Quarantined, Some(reason)) => {
                        EventOutcome::Quarantined(reason.clone())
                    }
                    (EventStatus::Unrouted, _) => EventOutcome::Unrouted,
                    _ => EventOutcome::Accepted,
                };
                (record.event_id.clone(), outcome)
            }
            // Answer with the id the first arrival got, so every retry sees one id.
            Claim::Exists(existing) => (
                existing.event_id.clone(),
                self.duplicate(&record, &existing, now).await?,
            ),
        };
        let event_type = record
            .envelope
            .as_ref()
            .map_or("-", |e| e.event_type.as_str());
        self.metrics.emit(Metric::count(
            "IngressEvents",
            vec![
                ("Source", source.to_string()),
                ("Outcome", outcome.label().to_owned()),
            ],
        ));
        // Types are canonical (a bounded set), so they can be a dimension.
        self.metrics.emit(Metric::count(
            "IngressEventTypes",
            vec![
                ("EventType", event_type.to_owned()),
                ("Source", source.to_string()),
                ("Outcome", outcome.label().to_owned()),
            ],
        ));
        info!(event_id = %id, event_type, outcome = outcome.label(), "event taken");
        Ok((id, outcome))
    }

    /// Builds the record `handle` claims for one verified event (public so that a claim can be
    /// made without its enqueue, as a crash between the two would leave it).
    pub fn record(
        &self,
        source: &SourceName,
        event: SourceEvent,
        now: Timestamp,
        request_id: Option<&str>,
    ) -> EventRecord {
        let trace = Trace {
            request_id: request_id.map(str::to_owned),
            origin: Origin::Webhook,
        };
        build_record(source, event, now, trace, self.settings.retention_days)
    }

    /// A second arrival of a claimed id.
    async fn duplicate(
        &self,
        record: &EventRecord,
        existing: &EventRecord,
        now: Timestamp,
    ) -> Result<EventOutcome, IngressError> {
        if existing.payload_hash != record.payload_hash {
            self.store
                .record_conflict(&record.key, &record.payload_hash, now)
                .await?;
            warn!(existing_event_id = %existing.event_id, "event id reused with a different payload");
            return Ok(EventOutcome::Conflict);
        }
        let stale = now.unix() - existing.claimed_at.unix() > self.settings.duplicate_horizon_secs;
        // One enqueued again `max_requeues` times already is reconciliation's to dead-letter.
        let spent = existing.requeues >= self.settings.max_requeues;
        if existing.status == EventStatus::Received && stale && !spent {
            // A claim older than the horizon that delivery has not kept alive (a retry moves the
            // claim to when its message is due back): the enqueue after it may have been lost
            // to a crash. Exactly one concurrent duplicate wins the refresh.
            if self
                .store
                .refresh_claim(&existing.key, existing.claimed_at, now)
                .await?
                && let Some(envelope) = &existing.envelope
            {
                self.queue
                    .enqueue(&Outgoing::new(&existing.key, envelope))
                    .await?;
                self.metrics.emit(Metric::count(
                    "IngressRequeued",
                    vec![("Source", existing.source.to_string())],
                ));
                info!(event_id = %existing.event_id, "stale claim re-enqueued by a duplicate");
            }
        }
        Ok(EventOutcome::Duplicate)
    }
}

/// Claims `record`, then enqueues it through [`enqueue_or_release`]: [`Intake`] as two steps.
pub async fn claim_then_enqueue(
    store: &(impl EventStore + ?Sized),
    queue: &impl EventQueue,
    record: &EventRecord,
) -> Result<Claim, IngressError> {
    // Encoded once, for the item and the message.
    let json = record.envelope.as_ref().map(Envelope::to_json);
    let claim = store.claim_encoded(record, json.as_deref()).await?;
    if claim == Claim::Claimed {
        send_or_release(store, queue, record, json.as_deref()).await?;
    }
    Ok(claim)
}

/// Enqueues a fresh claim awaiting delivery; if that fails, releases the claim so the sender's
/// retry (or the next reconciliation) starts clean, and answers with the queue's error. The
/// ingress and reconciliation both take events through this.
pub async fn enqueue_or_release(
    store: &(impl EventStore + ?Sized),
    queue: &impl EventQueue,
    record: &EventRecord,
) -> Result<(), IngressError> {
    send_or_release(store, queue, record, None).await
}

/// [`enqueue_or_release`], with the envelope's JSON when the caller has it already.
async fn send_or_release(
    store: &(impl EventStore + ?Sized),
    queue: &impl EventQueue,
    record: &EventRecord,
    envelope_json: Option<&str>,
) -> Result<(), IngressError> {
    let (EventStatus::Received, Some(envelope)) = (record.status, &record.envelope) else {
        return Ok(());
    };
    let message = match envelope_json {
        Some(json) => Outgoing::encoded(&record.key, envelope, json),
        None => Outgoing::new(&record.key, envelope),
    };
    if let Err(err) = queue.enqueue(&message).await {
        if let Err(release) = store.release(&record.key, &record.event_id).await {
            // The claim stays; a later duplicate after the horizon or the stuck sweep heals it.
            warn!(error = %release, "could not release the claim after a failed enqueue");
        }
        return Err(err.into());
    }
    Ok(())
}

/// Every supported provider sends JSON; a sender that names another type is not one of them.
/// A missing type is let through: some senders omit it, and the signature decides.
fn is_json_or_absent(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(value) = content_type else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
