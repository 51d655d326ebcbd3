//! Reconciliation on the table: stuck claims through the sparse `pending` index (one query per
//! shard, never a scan), and run reports under `RUN`.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::events::{
    EVENT_SK, PENDING_INDEX, PENDING_SHARDS, final_status, from_item, pending_shard,
};
use super::{DynamoStore, Item, applied_or_own, classify, key, query_each_shard, s, text_is};
use crate::contract::Timestamp;
use crate::ports::{
    EventKey, EventStatus, PendingCursor, PendingPage, PendingPosition, RUN_RETENTION_SECS,
    ReconcileStore, StoreError, Unreadable,
};
use crate::reconcile::Report;

const RUN_PK: &str = "RUN";
const WATERMARK_SK: &str = "WM";

fn watermark_pk(name: &str) -> String {
    format!("WM#{name}")
}

fn watermark_of(item: Option<&Item>) -> Result<Option<crate::ports::Watermark>, StoreError> {
    let Some(text) = item
        .and_then(|i| i.get("watermark"))
        .and_then(|v| v.as_s().ok())
    else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl ReconcileStore for DynamoStore {
    async fn pending_before(
        &self,
        cutoff: Timestamp,
        after: Option<&PendingCursor>,
        limit: usize,
    ) -> Result<PendingPage, StoreError> {
        let mut positions = after.map(|c| c.positions.clone()).unwrap_or_default();
        let answers = query_each_shard(PENDING_SHARDS, |shard| {
            let shard = pending_shard(shard);
            // Each shard resumes after the last claim this walk took from it.
            let start = positions.iter().find(|p| p.part == shard).map(|p| {
                let mut start = key(&p.key, EVENT_SK);
                start.insert("pending_shard".into(), s(p.part.clone()));
                start.insert("pending_since".into(), s(p.since.clone()));
                start
            });
            self.client
                .query()
                .table_name(&self.table)
                .index_name(PENDING_INDEX)
                .key_condition_expression("pending_shard = :shard AND pending_since < :cutoff")
                .expression_attribute_values(":shard", s(shard))
                .expression_attribute_values(":cutoff", s(cutoff.sort_key()))
                .set_exclusive_start_key(start)
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
        })
        .await?;
        let mut more = false;
        let mut found: Vec<PendingPosition> = Vec::new();
        for (items, shard_has_more) in answers {
            more |= shard_has_more;
            for item in items {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
                if let (Some(part), Some(since), Some(key)) =
                    (text("pending_shard"), text("pending_since"), text("pk"))
                {
                    found.push(PendingPosition { part, since, key });
                }
            }
        }
        // Stable: claims of the same instant keep their shard's order, so what is kept of each
        // shard is a prefix of its answer, and its position below is exact.
        found.sort_by(|a, b| a.since.cmp(&b.since));
        if found.len() > limit {
            more = true;
            found.truncate(limit);
        }
        for taken in &found {
            positions.retain(|p| p.part != taken.part);
            positions.push(taken.clone());
        }
        // One batch read, not a read per event: a backlog of stuck events is when this runs
        // long. An event DynamoDB left unprocessed is the next run's.
        let pks: Vec<String> = found.into_iter().map(|p| p.key).collect();
        let (mut items, _) = self.read_many(&pks, EVENT_SK).await?;
        let claims = pks
            .iter()
            .filter_map(|pk| Some((EventKey::parse(pk)?, items.remove(pk)?)))
            .map(|(key, item)| {
                from_item(item).map_err(|err| Unreadable {
                    key,
                    reason: err.to_string(),
                })
            })
            .collect();
        Ok(PendingPage {
            claims,
            next: more.then_some(PendingCursor { positions }),
        })
    }

    async fn give_up_stuck(
        &self,
        event: &EventKey,
        seen: Timestamp,
        detail: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let last = final_status(event, EventStatus::DeadLettered, Some(detail));
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(event.as_str(), EVENT_SK)))
            .update_expression(format!(
                "SET {} REMOVE {}",
                last.set.join(", "),
                last.remove.join(", ")
            ))
            .condition_expression("#status = :received AND claimed_at = :seen")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":received", s(EventStatus::Received.as_str()))
            .expression_attribute_values(":seen", s(seen.to_string()))
            .expression_attribute_values(":at", s(now.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (name, value) in last.values {
            request = request.expression_attribute_values(name, value);
        }
        // An event found dead-lettered at this run's time, with this reason, was given up on by
        // this very write.
        applied_or_own(request.send().await, |item| {
            text_is(item, "status", EventStatus::DeadLettered.as_str())
                && text_is(item, "status_at", &now.to_string())
                && text_is(item, "status_detail", detail)
        })
    }

    async fn save_run(&self, report: &Report) -> Result<(), StoreError> {
        let body = serde_json::to_string(report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Runs started in the same second must list in order: the key's time is fixed-width.
        let mut item = key(
            RUN_PK,
            &format!("{}#{}", report.started_at.sort_key(), report.id),
        );
        item.insert("report".into(), AttributeValue::S(body));
        item.insert(
            "expires_at".into(),
            AttributeValue::N(
                report
                    .started_at
                    .plus_secs(RUN_RETENTION_SECS)
                    .unix()
                    .to_string(),
            ),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn recent_runs(&self, limit: usize) -> Result<Vec<Report>, StoreError> {
        let mut runs = Vec::new();
        let mut start = None;
        // A page holds at most 1 MB: a long list of large reports takes more than one.
        while runs.len() < limit {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :run")
                .expression_attribute_values(":run", s(RUN_PK))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - runs.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in out.items.unwrap_or_default() {
                let text = item
                    .get("report")
                    .and_then(|v| v.as_s().ok())
                    .ok_or_else(|| StoreError::Corrupt("run report".into()))?;
                runs.push(
                    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(runs)
    }
}

impl crate::ports::Watermarks for DynamoStore {
    async fn load_watermark(
        &self,
        source: &str,
    ) -> Result<Option<crate::ports::Watermark>, StoreError> {
        let item = self.read(key(&watermark_pk(source), WATERMARK_SK)).await?;
        watermark_of(item.as_ref())
    }

    async fn load_watermarks(
        &self,
        names: &[&str],
    ) -> Result<Vec<Option<crate::ports::Watermark>>, StoreError> {
        let pks: Vec<String> = names.iter().map(|name| watermark_pk(name)).collect();
        let found = self.read_all(&pks, WATERMARK_SK).await?;
        pks.iter().map(|pk| watermark_of(found.get(pk))).collect()
    }

    async fn save_watermark(
        &self,
        source: &str,
        watermark: &crate::ports::Watermark,
    ) -> Result<(), StoreError> {
        let body =
            serde_json::to_string(watermark).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut item = key(&watermark_pk(source), WATERMARK_SK);
        item.insert("watermark".into(), AttributeValue::S(body));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

const REPLAY_PK: &str = "REPLAY";

impl crate::ports::ReplayTally for DynamoStore {
    async fn count_replay(&self, at: Timestamp, delivered: bool) -> Result<(), StoreError> {
        let counter = if delivered { "delivered" } else { "failed" };
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(REPLAY_PK, &crate::ports::replay_minute(at))))
            .update_expression("ADD #counter :one SET expires_at = :expires")
            .expression_attribute_names("#counter", counter)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(
                ":expires",
                AttributeValue::N(at.plus_secs(90 * 86_400).unix().to_string()),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn replays_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        let (mut delivered, mut failed) = (0, 0);
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(REPLAY_PK))
                .expression_attribute_values(":from", s(crate::ports::replay_minute(from)))
                .expression_attribute_values(":to", s(crate::ports::replay_minute(to)))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(classify)?;
            for item in out.items.unwrap_or_default() {
                let count = |name: &str| {
                    item.get(name)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                delivered += count("delivered");
                failed += count("failed");
            }
            match out.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok((delivered, failed)),
            }
        }
    }
}
