use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{EventKey, EventStatus, QueueError, StoreError};
use crate::contract::{EventType, Timestamp};

/// Where one target's delivery of one event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// A worker holds the lease and is calling the target.
    InFlight,
    Delivered,
    /// Failed and will be retried.
    Retrying,
    /// Refused for good; the message went to the dead-letter queue with this reason.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub target: String,
    pub state: DeliveryState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Timestamp>,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
}

/// The answer to "may I call this target for this event now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Yes: the lease is yours until it expires. `attempt` counts from 1.
    Go { attempt: u32 },
    /// It was delivered before: never call again.
    AlreadyDelivered,
    /// It failed for good before (and is on the dead-letter queue), for `reason` where it was
    /// recorded; only a replay retries it.
    FailedBefore { reason: Option<String> },
    /// Another worker holds the lease until then.
    Leased { until: Timestamp },
}

/// Per-event, per-target delivery records with a lease.
pub trait DeliveryLog: Send + Sync {
    /// Takes the lease unless the target already has the event or another lease is live.
    /// `replay` lets a delivery that failed for good be tried again. `held` is the lease the
    /// write that applied the event took for the first attempt (`HistoryEntry::held_until`):
    /// while it runs, a target with no record of its own is leased until then.
    fn begin(
        &self,
        key: &EventKey,
        target: &str,
        now: Timestamp,
        lease: Duration,
        replay: bool,
        held: Option<Timestamp>,
    ) -> impl Future<Output = Result<Attempt, StoreError>> + Send;

    /// Marks `target` delivered; a target with no record yet (its first attempt held by the
    /// entity's write) gets one, with one attempt.
    fn delivered(
        &self,
        key: &EventKey,
        target: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The end of an event's processing, in one write: marks `delivered` targets delivered
    /// (their leases end; a target without a record gets one, as `delivered` does) and sets
    /// the event's final `status`.
    fn settle(
        &self,
        key: &EventKey,
        delivered: &[&str],
        status: EventStatus,
        detail: Option<&str>,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a failure and releases the lease; `permanent` marks it failed for good. A
    /// target with no record yet gets one, with one attempt.
    fn failed(
        &self,
        key: &EventKey,
        target: &str,
        reason: &str,
        permanent: bool,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The event's message is due back on the queue at `until` (delivery will retry it): its
    /// claim counts as alive until then, so neither the stuck sweep nor a duplicate after the
    /// horizon enqueues it again meanwhile. An event no longer `Received` is left alone.
    fn retrying_until(
        &self,
        key: &EventKey,
        until: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn deliveries(
        &self,
        key: &EventKey,
    ) -> impl Future<Output = Result<Vec<DeliveryRecord>, StoreError>> + Send;
}

/// The names of a dead letter's attributes: written by [`Letter::attributes`], read back by
/// `plumbline dlq list` and by `replay`'s filters.
pub mod letter {
    pub const REASON: &str = "reason";
    pub const EVENT_KEY: &str = "event_key";
    pub const EVENT_TYPE: &str = "event_type";
    pub const TARGET: &str = "target";
    pub const FAILED_AT: &str = "failed_at";
}

/// Why a message goes to the dead-letter queue, as the attributes every writer gives it.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    pub reason: String,
    pub failed_at: Timestamp,
    pub event_key: Option<&'a EventKey>,
    pub event_type: Option<&'a EventType>,
    /// The target that refused it, when one did.
    pub target: Option<&'a str>,
}

impl Letter<'_> {
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (letter::REASON, self.reason.clone()),
            (letter::FAILED_AT, self.failed_at.to_string()),
        ];
        if let Some(key) = self.event_key {
            out.push((letter::EVENT_KEY, key.to_string()));
        }
        if let Some(event_type) = self.event_type {
            out.push((letter::EVENT_TYPE, event_type.to_string()));
        }
        if let Some(target) = self.target {
            out.push((letter::TARGET, target.to_owned()));
        }
        out
    }
}

/// The dead-letter queue, written directly for permanent failures.
pub trait DeadLetters: Send + Sync {
    fn dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Control over a message being processed.
pub trait QueueControl: Send + Sync {
    /// Makes the message visible again after `delay` (the retry backoff).
    fn retry_after(
        &self,
        receipt_handle: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Why a target call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Worth retrying: a timeout, a connection error, 5xx, 429. `retry_after` is what the target
    /// asked for, if it said.
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: a 4xx, or a mapping the event does not satisfy.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl TargetError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

/// One configured destination.
pub trait Target: Send + Sync {
    /// Delivers `document` (the envelope and the entity's state) with `idempotency_key`, which
    /// is the same on every retry of this event.
    fn deliver(
        &self,
        document: &crate::delivery::Document,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
}

/// A message as a queue hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub attributes: std::collections::BTreeMap<String, String>,
    /// How many times it has been handed out, this time included.
    pub receive_count: u32,
}

/// Consuming the delivery queue (the Lambda service does this on AWS; the local worker here).
pub trait QueueConsumer: Send + Sync {
    /// Up to `max` visible messages, each hidden for `hide`. A message handed out more than the
    /// queue's maximum receive count goes to the dead-letter queue instead.
    fn receive(
        &self,
        max: i32,
        hide: Duration,
    ) -> impl Future<Output = Result<Vec<Received>, QueueError>> + Send;
    /// Deletes a message that was processed.
    fn ack(&self, receipt_handle: &str) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Reading the dead-letter queue, for replay and inspection.
pub trait DeadLetterSource: Send + Sync {
    /// Up to `max` messages, hidden from other readers for `hide`.
    fn receive(
        &self,
        max: i32,
        hide: Duration,
    ) -> impl Future<Output = Result<Vec<Received>, QueueError>> + Send;
    fn delete(&self, receipt_handle: &str) -> impl Future<Output = Result<(), QueueError>> + Send;
    /// Makes a received message visible again at once.
    fn release(&self, receipt_handle: &str) -> impl Future<Output = Result<(), QueueError>> + Send;
}

/// Putting a message (back) on the delivery queue with its attributes.
pub trait Requeue: Send + Sync {
    fn requeue(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> impl Future<Output = Result<(), QueueError>> + Send;
}
