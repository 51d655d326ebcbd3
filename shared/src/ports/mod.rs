//! The capabilities the use cases need, one narrow trait each. Adapters implement them for
//! DynamoDB + SQS and for the local stack; the domain never sees an SDK type.

mod delivery;
mod ledger;
mod reconcile;

pub use delivery::{
    Attempt, DeadLetterSource, DeadLetters, DeliveryLog, DeliveryRecord, DeliveryState, Letter,
    QueueConsumer, QueueControl, Received, Requeue, Target, TargetError, letter,
};
pub use ledger::{Alias, Known, LedgerStore, Saved, distinct_keys};
pub(crate) use reconcile::PendingPosition;
pub use reconcile::{
    CrmDrift, CrmLead, CrmReadBack, Depth, EntityPage, EntityScan, PendingCursor, PendingPage,
    ProviderError, ProviderEvents, ProviderPage, QueueStats, RUN_RETENTION_SECS, ReconcileStore,
    ReplayTally, Subscription, Unreadable, Watermark, Watermarks, change_entry, change_key,
    replay_minute,
};

use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::contract::{Envelope, EventId, SourceEventId, SourceName, Timestamp};
use crate::sources::PayloadHash;

/// The single source of "now", so every rule that depends on time can be tested.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::new(time::OffsetDateTime::now_utc())
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Timestamp>>);

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        Self(Arc::new(Mutex::new(t)))
    }

    pub fn advance_secs(&self, secs: i64) {
        let mut t = self.0.lock().expect("clock lock");
        *t = t.plus_secs(secs);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}

/// The table key of an event: `EVT#{source}#{source_event_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey(String);

impl EventKey {
    pub fn new(source: &SourceName, id: &SourceEventId) -> Self {
        Self(format!("EVT#{source}#{id}"))
    }

    /// Accepts only well-formed keys (e.g. from a queue message).
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("EVT#")?;
        let (source, id) = rest.split_once('#')?;
        SourceName::try_from(source).ok()?;
        SourceEventId::try_from(id).ok()?;
        Some(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an event stands. Only `Received` events are queued for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Claimed by the ingress and (about to be) on the delivery queue.
    Received,
    /// Verified, but its payload could not be read into the contract; kept with the reason.
    Quarantined,
    /// Verified, of a type no normalizer maps; kept, never delivered.
    Unrouted,
    /// Every target its routes select has it.
    Delivered,
    /// No route selects it: nothing to deliver, not an error.
    DeliveredToNone,
    /// Merged into an earlier submission (a lead form sent twice): recorded, not delivered.
    Suppressed,
    /// At least one target refused it for good; that target's copy is on the dead-letter queue.
    DeadLettered,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Quarantined => "quarantined",
            Self::Unrouted => "unrouted",
            Self::Delivered => "delivered",
            Self::DeliveredToNone => "delivered_to_none",
            Self::Suppressed => "suppressed",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// What the ingress writes when it claims an event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub key: EventKey,
    pub event_id: EventId,
    pub source: SourceName,
    pub source_event_id: SourceEventId,
    pub source_type: String,
    pub status: EventStatus,
    pub payload_hash: PayloadHash,
    /// When this claim was made (or last refreshed by a re-enqueue).
    pub claimed_at: Timestamp,
    pub received_at: Timestamp,
    /// The table deletes the record after this instant (TTL).
    pub expires_at: Timestamp,
    /// The contract envelope, for events that normalized.
    pub envelope: Option<Envelope>,
    /// The provider's JSON, for quarantined and unrouted events, so they can be replayed.
    pub raw: Option<serde_json::Value>,
    /// Why the event is quarantined.
    pub reason: Option<String>,
    /// A kept event's header time ([`crate::sources::SourceEvent::header_time`]), for reading
    /// its payload again; a normalized event's envelope already carries its occurrence time.
    pub header_time: Option<Timestamp>,
    /// How many times the claim was enqueued again while still awaiting delivery (by the stuck
    /// sweep, or a duplicate after the horizon): reconciliation gives up on it after
    /// `reconcile.max_requeues`.
    pub requeues: u32,
}

/// The result of trying to claim an event id.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This call made the claim.
    Claimed,
    /// The id was claimed before; here is the record as stored.
    Exists(Box<EventRecord>),
}

/// Why the store failed. Sources are kept so throttling is never confused with a bug.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is throttling requests")]
    Throttled(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a stored record cannot be read: {0}")]
    Corrupt(String),
    /// Too many concurrent writers to one item; retrying later succeeds.
    #[error("too many concurrent updates of {0}")]
    Contended(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Throttled(_) | Self::Unavailable(_) | Self::Contended(_)
        )
    }
}

/// Durable record of events, keyed by [`EventKey`], with a conditional claim.
pub trait EventStore: Send + Sync {
    /// Writes `record` only if no record has its key. A record with the key and this record's
    /// event id is this claim already (a write tried again after its answer was lost, which
    /// every arrival's fresh event id tells apart from a duplicate): `Claimed`.
    fn claim(&self, record: &EventRecord)
    -> impl Future<Output = Result<Claim, StoreError>> + Send;

    /// [`EventStore::claim`], given the record's envelope already encoded (as
    /// [`crate::contract::Envelope::to_json`] writes it): the ingress encodes each envelope
    /// once, for the claim and the message both. A store that writes no JSON ignores it.
    fn claim_encoded(
        &self,
        record: &EventRecord,
        envelope_json: Option<&str>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        let _ = envelope_json;
        self.claim(record)
    }

    /// Deletes a claim this caller made (`event_id` matches) while it is still `Received`.
    fn release(
        &self,
        key: &EventKey,
        event_id: &EventId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves a `Received` claim's `claimed_at` from `seen` to `now` and counts one more
    /// re-enqueue; false when another caller (or delivery) changed it first. Only the winner
    /// re-enqueues.
    fn refresh_claim(
        &self,
        key: &EventKey,
        seen: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Notes that the id arrived again with a different payload.
    fn record_conflict(
        &self,
        key: &EventKey,
        hash: &PayloadHash,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads one record (consistent read).
    fn get(
        &self,
        key: &EventKey,
    ) -> impl Future<Output = Result<Option<EventRecord>, StoreError>> + Send;

    /// Reads several records (consistent reads), in the order of `keys`. A store that can
    /// batch reads answers a page of them in one request, not one per event.
    fn get_many(
        &self,
        keys: &[EventKey],
    ) -> impl Future<Output = Result<Vec<Option<EventRecord>>, StoreError>> + Send {
        async move {
            let mut records = Vec::with_capacity(keys.len());
            for key in keys {
                records.push(self.get(key).await?);
            }
            Ok(records)
        }
    }

    /// Replaces a kept record (`was`: quarantined or unrouted) with `record`, the same event
    /// read again (`plumbline events reprocess`), while it is still kept as `was` under
    /// `record.event_id`; false when something changed it first. A `Received` record enters
    /// the pending index as a claim does, so reconciliation re-enqueues it if the send after
    /// this write never happens.
    fn promote(
        &self,
        was: EventStatus,
        record: &EventRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records where delivery left the event; a final status takes it out of the pending index.
    fn set_status(
        &self,
        key: &EventKey,
        status: EventStatus,
        detail: Option<&str>,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Why the queue failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is throttling requests")]
    Throttled(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the queue is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the queue refused the message: {0}")]
    Refused(String),
}

impl QueueError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled(_) | Self::Unavailable(_))
    }
}

/// The delivery queue.
pub trait EventQueue: Send + Sync {
    fn enqueue(
        &self,
        message: &crate::ingress::Outgoing,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Claiming an event and putting it on the delivery queue `Q`: the ingress's one write. On AWS
/// it is two requests (the conditional write, then the send, and a release of the claim if the
/// send fails); a store that is also the queue does both in one transaction, one commit.
pub trait Intake<Q: EventQueue>: EventStore {
    /// Claims `record` and, when the claim is new and the event awaits delivery, enqueues it.
    /// `Claimed` only once both are durable.
    fn claim_and_enqueue(
        &self,
        queue: &Q,
        record: &EventRecord,
    ) -> impl Future<Output = Result<Claim, crate::ingress::IngressError>> + Send {
        crate::ingress::claim_then_enqueue(self, queue, record)
    }
}

impl<T: EventStore> EventStore for Arc<T> {
    fn claim(
        &self,
        record: &EventRecord,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        (**self).claim(record)
    }
    fn claim_encoded(
        &self,
        record: &EventRecord,
        envelope_json: Option<&str>,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        (**self).claim_encoded(record, envelope_json)
    }
    fn release(
        &self,
        key: &EventKey,
        event_id: &EventId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).release(key, event_id)
    }
    fn refresh_claim(
        &self,
        key: &EventKey,
        seen: Timestamp,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).refresh_claim(key, seen, now)
    }
    fn record_conflict(
        &self,
        key: &EventKey,
        hash: &PayloadHash,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).record_conflict(key, hash, at)
    }
    fn get(
        &self,
        key: &EventKey,
    ) -> impl Future<Output = Result<Option<EventRecord>, StoreError>> + Send {
        (**self).get(key)
    }
    fn get_many(
        &self,
        keys: &[EventKey],
    ) -> impl Future<Output = Result<Vec<Option<EventRecord>>, StoreError>> + Send {
        (**self).get_many(keys)
    }
    fn promote(
        &self,
        was: EventStatus,
        record: &EventRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).promote(was, record)
    }
    fn set_status(
        &self,
        key: &EventKey,
        status: EventStatus,
        detail: Option<&str>,
        at: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).set_status(key, status, detail, at)
    }
}

impl<T: EventQueue> EventQueue for Arc<T> {
    fn enqueue(
        &self,
        message: &crate::ingress::Outgoing,
    ) -> impl Future<Output = Result<(), QueueError>> + Send {
        (**self).enqueue(message)
    }
}
