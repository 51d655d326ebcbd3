//! Puts the events an older build left out of the sparse `kept` index into it: dead-lettered
//! events settled before they entered it, and any kept event written without its entry. Their
//! listing (`events list --aws --status …`) reads the index, so without this they are found
//! only by `--scan`. One scan of the table, by an operator, once after an upgrade; safe to run
//! again, since it touches only events still missing their entry.

use aws_sdk_dynamodb::types::AttributeValue;

use super::events::{EVENT_SK, kept_shard_of};
use super::{DynamoStore, applied, classify, key, s};
use crate::ports::{EventKey, EventStatus, StoreError};

/// What a reindex found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reindexed {
    /// Events of a kept status without their index entry.
    pub missing: u64,
    /// Of those, the ones given it (none in a dry run). The others moved meanwhile: a replay
    /// delivered them, or the entry was written by then.
    pub indexed: u64,
}

const KEPT: [EventStatus; 3] = [
    EventStatus::Quarantined,
    EventStatus::Unrouted,
    EventStatus::DeadLettered,
];

impl DynamoStore {
    /// Finds every event of a kept status without its `kept` entry and, unless `dry_run`,
    /// writes the entry (at the event's receipt time, as a settle writes it), on the condition
    /// that the event still has that status and no entry.
    pub async fn index_kept_events(&self, dry_run: bool) -> Result<Reindexed, StoreError> {
        let mut done = Reindexed::default();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(
                    "sk = :event AND #status IN (:s0, :s1, :s2) AND attribute_not_exists(kept_shard)",
                )
                .projection_expression("pk, #status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":event", s(EVENT_SK))
                .set_exclusive_start_key(start.take());
            for (i, status) in KEPT.iter().enumerate() {
                request = request.expression_attribute_values(format!(":s{i}"), s(status.as_str()));
            }
            let out = request.send().await.map_err(classify)?;
            for item in out.items.unwrap_or_default() {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
                let (Some(pk), Some(status)) = (text("pk"), text("status")) else {
                    continue;
                };
                let (Some(event), Some(status)) = (
                    EventKey::parse(pk),
                    KEPT.into_iter().find(|k| k.as_str() == status),
                ) else {
                    continue;
                };
                done.missing += 1;
                if !dry_run && self.index_kept(&event, status).await? {
                    done.indexed += 1;
                }
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(done),
            }
        }
    }

    async fn index_kept(&self, event: &EventKey, status: EventStatus) -> Result<bool, StoreError> {
        let shard = kept_shard_of(event, status);
        applied(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(event.as_str(), EVENT_SK)))
                .update_expression("SET kept_shard = :shard, kept_at = received_at")
                .condition_expression("#status = :status AND attribute_not_exists(kept_shard)")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":shard", AttributeValue::S(shard))
                .expression_attribute_values(":status", s(status.as_str()))
                .send()
                .await,
        )
    }
}
