//! Event items: the ingress's claim, and the status delivery leaves them in.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use serde::{Deserialize, Serialize};

use super::{
    DynamoStore, applied, applied_or_own, classify, condition_failed, key, packed, refused_item,
    text_is,
};
use crate::contract::{EventId, SourceEventId, SourceName, Timestamp};
use crate::ports::{
    Claim, DeliveryLog, EventKey, EventQueue, EventRecord, EventStatus, EventStore, Intake,
    StoreError,
};
use crate::sources::PayloadHash;

/// The sort key of an event's own item (its delivery records are attributes of it).
pub const EVENT_SK: &str = "EVENT";
/// The sparse index of claims not yet delivered, for the stuck sweep.
pub const PENDING_INDEX: &str = "pending";
pub(super) const PENDING_SHARDS: u64 = 8;
/// The sparse index of kept events (quarantined, unrouted), for operators' listings and
/// `events reprocess`.
pub const KEPT_INDEX: &str = "kept";
/// Kept events are few, but a provider's format change can quarantine every event it sends:
/// sharded like the pending index, so such a flood does not throttle the claims.
pub(super) const KEPT_SHARDS: u64 = 8;

/// The item as stored. Envelope and raw payload are JSON text: exact round trips, and one
/// attribute to size.
#[derive(Debug, Serialize, Deserialize)]
struct EventItem {
    pk: String,
    sk: String,
    event_id: String,
    source: String,
    source_event_id: String,
    source_type: String,
    status: EventStatus,
    payload_hash: String,
    claimed_at: String,
    received_at: String,
    /// TTL attribute: seconds since the epoch.
    expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    envelope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header_time: Option<String>,
    /// Present only while the event awaits delivery: the sparse index's partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_since: Option<String>,
    /// Present only while the event is kept (quarantined, unrouted): the kept index's partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept_at: Option<String>,
    /// Absent until the claim is first enqueued again: a claim's item stays as small as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    requeues: u32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn hash_of(key: &EventKey) -> u64 {
    key.as_str().bytes().fold(0_u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    })
}

/// The `kept` index shard an event of `status` is written under.
pub(super) fn kept_shard_of(key: &EventKey, status: EventStatus) -> String {
    kept_shard(status, hash_of(key) % KEPT_SHARDS)
}

fn shard_of(key: &EventKey) -> String {
    pending_shard(hash_of(key) % PENDING_SHARDS)
}

pub(super) fn pending_shard(n: u64) -> String {
    format!("PENDING#{n}")
}

/// The kept index's partition `n` for events kept with `status`.
pub(super) fn kept_shard(status: EventStatus, n: u64) -> String {
    format!("KEPT#{}#{n}", status.as_str())
}

impl EventItem {
    fn from_record(r: &EventRecord) -> Self {
        let pending = r.status == EventStatus::Received;
        let kept = matches!(r.status, EventStatus::Quarantined | EventStatus::Unrouted);
        Self {
            pk: r.key.as_str().to_owned(),
            sk: EVENT_SK.to_owned(),
            event_id: r.event_id.to_string(),
            source: r.source.to_string(),
            source_event_id: r.source_event_id.to_string(),
            source_type: r.source_type.clone(),
            status: r.status,
            payload_hash: r.payload_hash.as_str().to_owned(),
            claimed_at: r.claimed_at.to_string(),
            received_at: r.received_at.to_string(),
            expires_at: r.expires_at.unix(),
            event_type: r.envelope.as_ref().map(|e| e.event_type.to_string()),
            // Packed separately by `to_item`, from JSON encoded once.
            envelope: None,
            raw: r.raw.as_ref().map(ToString::to_string),
            reason: r.reason.clone(),
            header_time: r.header_time.map(|t| t.to_string()),
            pending_shard: pending.then(|| shard_of(&r.key)),
            pending_since: pending.then(|| r.claimed_at.sort_key()),
            kept_shard: kept.then(|| kept_shard_of(&r.key, r.status)),
            kept_at: kept.then(|| r.received_at.to_string()),
            requeues: r.requeues,
        }
    }

    fn into_record(self) -> Result<EventRecord, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("{}: {what}", self.pk));
        let ts = |s: &str| Timestamp::parse(s).ok_or_else(|| corrupt("bad timestamp"));
        Ok(EventRecord {
            key: EventKey::parse(&self.pk).ok_or_else(|| corrupt("bad key"))?,
            event_id: EventId::try_from(self.event_id.as_str())
                .map_err(|_| corrupt("bad event id"))?,
            source: SourceName::try_from(self.source.as_str())
                .map_err(|_| corrupt("bad source"))?,
            source_event_id: SourceEventId::try_from(self.source_event_id.as_str())
                .map_err(|_| corrupt("bad id"))?,
            source_type: self.source_type.clone(),
            status: self.status,
            payload_hash: PayloadHash::from_hex(self.payload_hash.clone()),
            claimed_at: ts(&self.claimed_at)?,
            received_at: ts(&self.received_at)?,
            expires_at: Timestamp::from_unix(self.expires_at).ok_or_else(|| corrupt("bad ttl"))?,
            envelope: self
                .envelope
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("bad envelope"))?,
            raw: self
                .raw
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("bad raw payload"))?,
            reason: self.reason.clone(),
            header_time: self.header_time.as_deref().map(ts).transpose()?,
            requeues: self.requeues,
        })
    }
}

/// What gives an event its final status: the SET and REMOVE clauses, and the values they name
/// but `:at` (the caller's time, which its other clauses use too).
pub(super) struct FinalStatus {
    pub(super) set: Vec<String>,
    pub(super) remove: Vec<String>,
    pub(super) values: Vec<(&'static str, AttributeValue)>,
}

/// `status` (with `detail`, or none) for `event`. Every status delivery sets is final: the
/// event leaves the pending index. A dead-lettered event enters the kept index, at its receipt
/// time, so that operators list it without a scan; any other final status takes it out again
/// (a replay that delivered it). Neither costs a write on the way of an event that was never
/// dead-lettered: removing attributes it does not have changes no index.
pub(super) fn final_status(
    event: &EventKey,
    status: EventStatus,
    detail: Option<&str>,
) -> FinalStatus {
    let mut set = vec!["#status = :status".to_owned(), "status_at = :at".to_owned()];
    let mut remove = vec!["pending_shard".to_owned(), "pending_since".to_owned()];
    let mut values = vec![(":status", AttributeValue::S(status.as_str().to_owned()))];
    match detail {
        Some(detail) => {
            set.push("status_detail = :detail".to_owned());
            values.push((":detail", AttributeValue::S(detail.to_owned())));
        }
        None => remove.push("status_detail".to_owned()),
    }
    if status == EventStatus::DeadLettered {
        set.push("kept_shard = :kept_shard".to_owned());
        set.push("kept_at = received_at".to_owned());
        values.push((
            ":kept_shard",
            AttributeValue::S(kept_shard_of(event, status)),
        ));
    } else {
        remove.push("kept_shard".to_owned());
        remove.push("kept_at".to_owned());
    }
    FinalStatus {
        set,
        remove,
        values,
    }
}

impl DynamoStore {
    /// Moves a `Received` claim's time, and its `pending` index entry with it, to `to`; given
    /// `seen`, only while the claim time is still that. False when the condition failed.
    pub(super) async fn move_claim(
        &self,
        key: &EventKey,
        to: Timestamp,
        seen: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        // Only a re-enqueue names the claim time it read, and only it counts.
        let update = if seen.is_some() {
            "SET claimed_at = :to, pending_since = :since ADD requeues :one"
        } else {
            "SET claimed_at = :to, pending_since = :since"
        };
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key)))
            .update_expression(update)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":to", AttributeValue::S(to.to_string()))
            .expression_attribute_values(":since", AttributeValue::S(to.sort_key()))
            .expression_attribute_values(
                ":received",
                AttributeValue::S(EventStatus::Received.as_str().into()),
            );
        let request = match seen {
            Some(seen) => request
                .condition_expression("#status = :received AND claimed_at = :seen")
                .expression_attribute_values(":seen", AttributeValue::S(seen.to_string()))
                .expression_attribute_values(":one", AttributeValue::N("1".into())),
            None => request.condition_expression("#status = :received"),
        };
        let result = request
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        // A claim found at `to`, still awaiting delivery, was moved by this very write. Another
        // caller moving it at the same instant would also count it as theirs, which costs one
        // more copy of the message, not an event.
        applied_or_own(result, |item| {
            text_is(item, "claimed_at", &to.to_string())
                && text_is(item, "status", EventStatus::Received.as_str())
        })
    }
}

fn key_of(event: &EventKey) -> HashMap<String, AttributeValue> {
    key(event.as_str(), EVENT_SK)
}

/// The item a claim writes for `record`: everything the ingress builds for its first request
/// but the request itself. Public for the benchmark of the ingress's own work per event.
pub fn claim_item(
    record: &EventRecord,
    envelope_json: Option<&str>,
) -> Result<HashMap<String, AttributeValue>, StoreError> {
    to_item(record, envelope_json)
}

/// The item for a record, its envelope deflated; from `envelope_json` when given, the
/// envelope's JSON as [`crate::contract::Envelope::to_json`] wrote it.
fn to_item(
    record: &EventRecord,
    envelope_json: Option<&str>,
) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let mut item: HashMap<String, AttributeValue> =
        serde_dynamo::to_item(EventItem::from_record(record))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if let Some(envelope) = &record.envelope {
        let (name, value) = match envelope_json {
            Some(json) => packed::pack("envelope", json),
            None => packed::pack("envelope", &envelope.to_json()),
        };
        item.insert(name, value);
    }
    Ok(item)
}

pub(super) fn from_item(
    mut item: HashMap<String, AttributeValue>,
) -> Result<EventRecord, StoreError> {
    if let Some(json) = packed::unpack(&item, "envelope")? {
        item.insert("envelope".to_owned(), AttributeValue::S(json));
    }
    let item: EventItem =
        serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    item.into_record()
}

/// The table is not the queue: a conditional write, then the send (the default).
impl<Q: EventQueue> Intake<Q> for DynamoStore {}

impl EventStore for DynamoStore {
    async fn claim(&self, record: &EventRecord) -> Result<Claim, StoreError> {
        self.claim_encoded(record, None).await
    }

    async fn claim_encoded(
        &self,
        record: &EventRecord,
        envelope_json: Option<&str>,
    ) -> Result<Claim, StoreError> {
        let item = to_item(record, envelope_json)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Claim::Claimed),
            Err(err) if condition_failed(&err) => {
                // The failed condition returns the existing item: no second read needed.
                let existing = match refused_item(&err) {
                    Some(item) => from_item(item.clone())?,
                    None => self
                        .get(&record.key)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("claimed item vanished".into()))?,
                };
                // The SDK tries a write again when its answer was lost (a 500, a connection
                // reset or an attempt timed out after the item was written): the retry then
                // meets the item this call wrote. Its event id is this request's own, so it is
                // a claim, not a duplicate to answer without enqueueing.
                if existing.event_id == record.event_id {
                    return Ok(Claim::Claimed);
                }
                Ok(Claim::Exists(Box::new(existing)))
            }
            Err(err) => Err(classify(err)),
        }
    }

    async fn release(&self, key: &EventKey, event_id: &EventId) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key)))
            .condition_expression("event_id = :id AND #status = :received")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":id", AttributeValue::S(event_id.to_string()))
            .expression_attribute_values(
                ":received",
                AttributeValue::S(EventStatus::Received.as_str().into()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not ours any more (or already gone): nothing to release.
            Err(err) if condition_failed(&err) => Ok(()),
            Err(err) => Err(classify(err)),
        }
    }

    async fn refresh_claim(
        &self,
        key: &EventKey,
        seen: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.move_claim(key, now, Some(seen)).await
    }

    async fn record_conflict(
        &self,
        key: &EventKey,
        hash: &PayloadHash,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(key)))
            .update_expression(
                "ADD conflicts :one SET last_conflict_hash = :hash, last_conflict_at = :at",
            )
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":hash", AttributeValue::S(hash.as_str().to_owned()))
            .expression_attribute_values(":at", AttributeValue::S(at.to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn promote(&self, was: EventStatus, record: &EventRecord) -> Result<bool, StoreError> {
        // An update rather than a put, so what the item holds besides the record (conflicts
        // counted while it was kept) stays.
        let mut item = to_item(record, None)?;
        item.remove("pk");
        item.remove("sk");
        let mut names = HashMap::from([("#status".to_owned(), "status".to_owned())]);
        let mut values = HashMap::from([
            (
                ":was".to_owned(),
                AttributeValue::S(was.as_str().to_owned()),
            ),
            (
                ":id".to_owned(),
                AttributeValue::S(record.event_id.to_string()),
            ),
        ]);
        let mut set = Vec::with_capacity(item.len());
        for (i, (name, value)) in item.into_iter().enumerate() {
            names.insert(format!("#a{i}"), name);
            values.insert(format!(":a{i}"), value);
            set.push(format!("#a{i} = :a{i}"));
        }
        let mut remove = Vec::new();
        for gone in ["raw", "reason", "header_time", "kept_shard", "kept_at"] {
            if !names.values().any(|n| n == gone) {
                names.insert(format!("#{gone}"), gone.to_owned());
                remove.push(format!("#{gone}"));
            }
        }
        let expression = if remove.is_empty() {
            format!("SET {}", set.join(", "))
        } else {
            format!("SET {} REMOVE {}", set.join(", "), remove.join(", "))
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_of(&record.key)))
            .update_expression(expression)
            .condition_expression("#status = :was AND event_id = :id")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        applied(result)
    }

    async fn set_status(
        &self,
        event: &EventKey,
        status: EventStatus,
        detail: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        // The same write as the end of a delivery, with no target to mark.
        DeliveryLog::settle(self, event, &[], status, detail, at).await
    }

    async fn get(&self, key: &EventKey) -> Result<Option<EventRecord>, StoreError> {
        let item = self.read(key_of(key)).await?;
        item.map(from_item).transpose()
    }

    async fn get_many(&self, keys: &[EventKey]) -> Result<Vec<Option<EventRecord>>, StoreError> {
        let pks: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        let found = self.read_all(&pks, EVENT_SK).await?;
        keys.iter()
            .map(|key| found.get(key.as_str()).cloned().map(from_item).transpose())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{EventId, SourceEventId, SourceName};

    fn claim(requeues: u32) -> EventRecord {
        let at = Timestamp::from_unix(1_764_000_000).expect("in range");
        let source = SourceName::try_from("stripe").expect("source");
        let id = SourceEventId::try_from("evt_1").expect("id");
        EventRecord {
            key: EventKey::new(&source, &id),
            event_id: EventId::generate(at),
            source,
            source_event_id: id,
            source_type: "payment_intent.succeeded".into(),
            status: EventStatus::Received,
            payload_hash: PayloadHash::from_hex("aa".into()),
            claimed_at: at,
            received_at: at,
            expires_at: at.plus_secs(86_400),
            envelope: None,
            raw: None,
            reason: None,
            header_time: None,
            requeues,
        }
    }

    #[test]
    fn a_claim_given_its_envelope_encoded_writes_the_item_it_would_encode_itself() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/contract/fixtures/v1/payment.succeeded.stripe.json"
        );
        let envelope: crate::contract::Envelope =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture"))
                .expect("envelope");
        let json = envelope.to_json();
        let record = EventRecord {
            envelope: Some(envelope),
            ..claim(0)
        };
        let given = claim_item(&record, Some(&json)).expect("item");
        assert!(given.contains_key("envelope_z"), "the envelope, packed");
        assert_eq!(given, claim_item(&record, None).expect("item"));
    }

    #[test]
    fn a_claim_carries_no_requeue_count_until_it_is_enqueued_again() {
        let first = claim_item(&claim(0), None).expect("item");
        assert!(
            !first.contains_key("requeues"),
            "a new claim's item is as small as before"
        );
        let again = claim_item(&claim(2), None).expect("item");
        assert_eq!(again.get("requeues"), Some(&AttributeValue::N("2".into())));
        assert_eq!(from_item(again).expect("record").requeues, 2);
        assert_eq!(from_item(first).expect("record").requeues, 0);
    }
}
