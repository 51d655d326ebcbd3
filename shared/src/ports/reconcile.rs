use serde::{Deserialize, Serialize};
use std::future::Future;

use super::{EventKey, EventRecord, QueueError, StoreError};
use crate::contract::Timestamp;
use crate::reconcile::Report;

/// Where a walk of the pending index stopped: the next page starts after it. A claim the walk
/// could not repair stays in the index, so without this each page would start with it again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingCursor {
    /// The last claim read from each part of the index the store keeps. A store with one
    /// ordered index keeps one.
    pub(crate) positions: Vec<PendingPosition>,
}

/// A claim's place in the pending index, its fields exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingPosition {
    /// The index partition (a shard), where the store has several.
    pub part: String,
    pub since: String,
    pub key: String,
}

/// A stuck claim whose record the store holds but cannot read (written by another version, or
/// damaged): still reported, with its key, so an operator can look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub key: EventKey,
    pub reason: String,
}

/// One page of the pending index, oldest claim first.
#[derive(Debug, Default)]
pub struct PendingPage {
    pub claims: Vec<Result<EventRecord, Unreadable>>,
    /// Where the next page starts; `None` when no older claim is left after this page.
    pub next: Option<PendingCursor>,
}

/// What reconciliation reads and writes in the store.
pub trait ReconcileStore: Send + Sync {
    /// Events still awaiting delivery whose claim is older than `cutoff`, oldest first, after
    /// `after` (a previous page's `next`), found through the sparse pending index (never a
    /// scan).
    fn pending_before(
        &self,
        cutoff: Timestamp,
        after: Option<&PendingCursor>,
        limit: usize,
    ) -> impl Future<Output = Result<PendingPage, StoreError>> + Send;

    /// Settles a stuck claim as dead-lettered with `detail`, while it is still `Received` with
    /// claim time `seen`; false when delivery (or another run) moved it first. It leaves the
    /// pending index, so no run re-enqueues it again.
    fn give_up_stuck(
        &self,
        key: &EventKey,
        seen: Timestamp,
        detail: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Keeps a run's report for [`RUN_RETENTION_SECS`].
    fn save_run(&self, report: &Report) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The runs kept, newest first, at most `limit` of them.
    fn recent_runs(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Report>, StoreError>> + Send;

    fn last_run(&self) -> impl Future<Output = Result<Option<Report>, StoreError>> + Send {
        async move { Ok(self.recent_runs(1).await?.into_iter().next()) }
    }
}

/// How long a run's report is kept: long enough to see when a drift began, and the record of a
/// quarter's runs.
pub const RUN_RETENTION_SECS: i64 = 90 * 86_400;

/// A queue's depth, and the age of its oldest message where the queue can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    /// Every message on the queue: waiting, and in flight.
    pub messages: u64,
    /// Of those, the ones not visible: received by a consumer and not yet deleted, or held
    /// back by a retry's visibility timeout.
    pub in_flight: u64,
    pub oldest_age_secs: Option<u64>,
    /// How long the queue keeps a message, taken or not, before it deletes it (SQS's
    /// `MessageRetentionPeriod`); `None` for a queue that keeps every message until it is taken.
    pub retention_secs: Option<u64>,
}

impl Depth {
    /// Messages wait and none is in flight: nothing is reading the queue (delivery held back,
    /// its event source mapping disabled), or nothing has for a while.
    pub fn unread(&self) -> bool {
        self.in_flight == 0 && self.messages > 0
    }

    /// Messages visible, waiting for a consumer to take them.
    pub fn waiting(&self) -> u64 {
        self.messages.saturating_sub(self.in_flight)
    }

    /// Whether a message sent at `sent` may still be on the queue at `now`: false only once the
    /// queue's retention has passed since then, when the queue has deleted it whoever held it.
    pub fn may_hold(&self, sent: Timestamp, now: Timestamp) -> bool {
        self.retention_secs.is_none_or(|retention| {
            let retention = i64::try_from(retention).unwrap_or(i64::MAX / 2);
            now.unix() <= sent.unix().saturating_add(retention)
        })
    }
}

pub trait QueueStats: Send + Sync {
    fn depth(&self) -> impl Future<Output = Result<Depth, QueueError>> + Send;
}

/// Where a source's missed-webhook check stands: events created at or after `since` are still to
/// check; `cursor` (a provider event id) resumes a walk that a run's budget cut short, and
/// `until` is when that walk started.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    pub since: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// The cursor is a position in the list of what the provider failed to deliver
    /// (`reconcile.failed_only`), not in its list of events: a position in one means nothing
    /// in the other.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_only: bool,
}

impl Watermark {
    /// A walk that reached its end: the next one starts over from `until`.
    pub fn finished(until: Timestamp) -> Self {
        Self {
            since: until,
            cursor: None,
            until: None,
            failed_only: false,
        }
    }

    /// A walk cut short at `cursor`: the next run continues it, up to `until`.
    pub fn resume(since: Timestamp, cursor: Option<String>, until: Timestamp) -> Self {
        Self {
            since,
            cursor,
            until: Some(until),
            failed_only: false,
        }
    }
}

/// Persisted watermarks, one per source.
pub trait Watermarks: Send + Sync {
    fn load_watermark(
        &self,
        source: &str,
    ) -> impl Future<Output = Result<Option<Watermark>, StoreError>> + Send;
    fn save_watermark(
        &self,
        source: &str,
        watermark: &Watermark,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Several watermarks, in the order of `names`: one request where the store batches reads.
    fn load_watermarks(
        &self,
        names: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<Watermark>>, StoreError>> + Send {
        async move {
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                found.push(self.load_watermark(name).await?);
            }
            Ok(found)
        }
    }
}

/// One page of a provider's event list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderPage {
    /// Each event's JSON, as the provider's webhooks would carry it.
    pub events: Vec<Vec<u8>>,
    /// The id of the last (oldest) event on the page: where the next page starts.
    pub last_id: Option<String>,
    pub has_more: bool,
}

/// The event types a walk of a provider's list asks for: those plumbline reads that the
/// source's webhook endpoint is sent (all of them when no endpoint is named), and what an
/// operator should hear of the endpoint: switched off, so every event it lists goes missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    pub types: Vec<&'static str>,
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the provider is rate limiting us")]
    RateLimited,
    #[error("the provider's API is unavailable: {0}")]
    Unavailable(String),
    #[error("the provider refused the request: {0}")]
    Refused(String),
}

/// A provider's API listing the events it sent (or failed to send).
pub trait ProviderEvents: Send + Sync {
    /// The types to list, read once per walk: a subscription changed meanwhile counts from
    /// the next run on.
    fn subscription(&self) -> impl Future<Output = Result<Subscription, ProviderError>> + Send;

    /// Events of `types` (not empty) created at or after `since`, newest first, continuing
    /// after `starting_after`; `failed_only` asks only for the ones the provider could not
    /// deliver.
    fn list(
        &self,
        since: Timestamp,
        starting_after: Option<&str>,
        page_size: usize,
        failed_only: bool,
        types: &[&str],
    ) -> impl Future<Output = Result<ProviderPage, ProviderError>> + Send;
}

/// One page of entities in change order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityPage {
    pub entities: Vec<crate::ledger::Entity>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<String>,
}

/// The ledger's entities in the order they last changed, through an index (never a scan).
pub trait EntityScan: Send + Sync {
    /// Entities of `kind` whose change entry ([`change_entry`]: the time they were last
    /// written, rounded up to the minute) is in `[from, to)`, ordered by it then id, after
    /// `cursor` (a previous page's `next`).
    fn changed_entities(
        &self,
        kind: crate::contract::EntityKind,
        from: Timestamp,
        to: Timestamp,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<EntityPage, StoreError>> + Send;
}

/// The change index's sort key: fixed-width milliseconds, so it sorts as text, then the id.
/// The bounds and cursors of a walk are written with it.
pub fn change_key(at: Timestamp, id: &str) -> String {
    change_key_at(unix_millis(at), id)
}

/// How far an entity's change-index time is rounded up. An entity written again within the
/// same minute keeps its index entry where it was (a payment's events mostly come seconds
/// apart), which DynamoDB bills as no index write at all instead of a delete and a put. The
/// sweep sees a change at most this much later than it happened, well inside
/// `reconcile.settle_secs` (10 minutes unless configured), and never misses one: an entry is
/// never dated earlier than the write that put it there.
pub const CHANGE_BUCKET_MILLIS: u64 = 60_000;

/// The change index's entry for an entity written at `at`: its time rounded up to
/// `CHANGE_BUCKET_MILLIS`.
pub fn change_entry(at: Timestamp, id: &str) -> String {
    let bucketed = unix_millis(at).div_ceil(CHANGE_BUCKET_MILLIS) * CHANGE_BUCKET_MILLIS;
    change_key_at(bucketed, id)
}

/// One format for the entries and the bounds a walk compares them with.
fn change_key_at(millis: u64, id: &str) -> String {
    format!("{millis:015}#{id}")
}

/// Milliseconds since the epoch; an earlier time counts as the epoch.
fn unix_millis(at: Timestamp) -> u64 {
    u64::try_from(at.unix_millis()).unwrap_or(0)
}

/// One field where a CRM record differs from what plumbline would write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrmDrift {
    pub field: String,
    pub expected: Option<String>,
    /// `None` when the CRM has no such value (or no such record).
    pub actual: Option<String>,
}

/// A contact the CRM created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmLead {
    pub created_at: Timestamp,
    pub email: Option<String>,
    /// The CRM's lead-source property, when the target maps one.
    pub lead_source: Option<String>,
}

/// Reading back what a CRM target holds, for reconciliation.
pub trait CrmReadBack: Send + Sync {
    /// For each document, how the CRM's record differs from what delivering the document would
    /// write (empty: in step). A missing record is a drift of its id field.
    fn drift(
        &self,
        documents: &[crate::delivery::Document],
    ) -> impl Future<Output = Result<Vec<Vec<CrmDrift>>, super::TargetError>> + Send;

    /// Contacts created in `[from, to)`.
    fn contacts_created(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Future<Output = Result<Vec<CrmLead>, super::TargetError>> + Send;

    /// Which of `emails` (normalized) the CRM has as contacts.
    fn existing_contacts(
        &self,
        emails: &[String],
    ) -> impl Future<Output = Result<std::collections::BTreeSet<String>, super::TargetError>> + Send;

    /// Whether `contacts_created` reports a lead source.
    fn knows_lead_source(&self) -> bool;
}

/// Outcomes of replayed messages, per minute, so reconciliation can report the replay success
/// rate since its last run.
pub trait ReplayTally: Send + Sync {
    /// Counts one replayed message that delivery finished: delivered to every target, or not.
    fn count_replay(
        &self,
        at: Timestamp,
        delivered: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// (delivered, failed) replayed messages finished in the minutes from `from` to `to`.
    fn replays_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Future<Output = Result<(u64, u64), StoreError>> + Send;
}

/// The tally's bucket: the minute, as text that sorts.
pub fn replay_minute(at: Timestamp) -> String {
    let secs = at.unix();
    Timestamp::from_unix(secs - secs.rem_euclid(60))
        .unwrap_or(at)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).expect("timestamp")
    }

    fn depth(messages: u64, in_flight: u64) -> Depth {
        Depth {
            messages,
            in_flight,
            oldest_age_secs: None,
            retention_secs: None,
        }
    }

    #[test]
    fn a_queue_is_unread_when_messages_wait_and_none_is_in_flight() {
        assert!(depth(3, 0).unread());
        assert!(!depth(0, 0).unread(), "an empty queue");
        assert!(!depth(3, 1).unread(), "a consumer holds one");
        assert!(!depth(2, 2).unread(), "all in flight");
    }

    #[test]
    fn a_queue_holds_a_message_until_its_retention_has_passed() {
        let sent = at("2026-03-01T00:00:00Z");
        let kept = Depth {
            retention_secs: Some(60),
            ..depth(1, 0)
        };
        assert!(kept.may_hold(sent, sent.plus_secs(60)));
        assert!(!kept.may_hold(sent, sent.plus_secs(61)));
        assert!(
            depth(1, 0).may_hold(sent, sent.plus_secs(86_400 * 365)),
            "a queue without retention keeps it until it is taken"
        );
    }

    #[test]
    fn the_messages_waiting_are_those_not_in_flight() {
        assert_eq!(
            [depth(3, 1), depth(2, 2), depth(0, 0), depth(3, 0)].map(|d| d.waiting()),
            [2, 0, 0, 3]
        );
    }

    #[test]
    fn a_change_entry_is_its_write_rounded_up_to_the_minute() {
        let minute = change_key(at("2026-12-02T10:01:00Z"), "pi_1");
        assert_eq!(change_entry(at("2026-12-02T10:01:00Z"), "pi_1"), minute);
        assert_eq!(change_entry(at("2026-12-02T10:00:00.001Z"), "pi_1"), minute);
        assert_eq!(change_entry(at("2026-12-02T10:00:59.999Z"), "pi_1"), minute);
        assert_eq!(
            change_entry(at("2026-12-02T10:01:00.001Z"), "pi_1"),
            change_key(at("2026-12-02T10:02:00Z"), "pi_1")
        );
    }

    #[test]
    fn a_change_entry_is_never_dated_before_its_write() {
        let start = at("2026-12-02T10:00:00Z");
        for offset in [0, 1, 29, 59, 60, 61, 3_599] {
            let written = start.plus_secs(offset);
            assert!(
                change_entry(written, "pi_1") >= change_key(written, "pi_1"),
                "{offset}"
            );
            assert!(
                change_entry(written, "pi_1") < change_key(written.plus_secs(60), "pi_1"),
                "{offset}"
            );
        }
    }
}
