//! Operator reads on the table: an event's timeline, and a listing of events. The listing is a
//! Scan (read capacity grows with the table): meant for an operator's occasional look, never for
//! a hot path.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{DynamoStore, classify, s};
use crate::inspect::{EventRow, LedgerEffect, Timeline};
use crate::ports::{EventKey, LedgerStore, StoreError};

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> u32 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The table key for an event key (`EVT#…`) or an idempotency key (`source:id`).
pub fn key_for(id: &str) -> Option<EventKey> {
    EventKey::parse(id).or_else(|| {
        id.split_once(':')
            .and_then(|(source, rest)| EventKey::parse(&format!("EVT#{source}#{rest}")))
    })
}

impl DynamoStore {
    /// Everything known about one event, by its event key or idempotency key.
    pub async fn timeline(&self, id: &str) -> Result<Option<Timeline>, StoreError> {
        let Some(key) = key_for(id) else {
            return Ok(None);
        };
        // One read gives the record, the status fields it does not carry and the deliveries.
        let Some(item) = self.read(super::key(key.as_str(), super::EVENT_SK)).await? else {
            return Ok(None);
        };
        let record = super::events::from_item(item.clone())?;
        let ledger = match &record.envelope {
            Some(envelope) => self
                .load_entity(envelope.entity.kind, &envelope.entity.id)
                .await?
                .and_then(|entity| {
                    entity
                        .history
                        .iter()
                        .find(|h| h.event_id == record.event_id.as_str())
                        .map(|h| LedgerEffect {
                            entity_kind: entity.kind.as_str().to_owned(),
                            entity_id: entity.id.clone(),
                            effect: serde_json::to_value(h.effect)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default(),
                            ownership_conflicts: h.ownership_conflicts.clone(),
                            delivery_held_until: h.held_until.map(|t| t.to_string()),
                        })
                }),
            None => None,
        };
        let deliveries = super::deliveries::records_of(&item)?;
        Ok(Some(Timeline {
            status_detail: text(&item, "status_detail"),
            status_at: text(&item, "status_at"),
            conflicts: number(&item, "conflicts"),
            record,
            ledger,
            deliveries,
        }))
    }

    /// Events, newest first, filtered; scans the table.
    pub async fn list_events(
        &self,
        status: Option<&str>,
        event_type: Option<&str>,
        since: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRow>, StoreError> {
        let mut rows = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(if status.is_some() {
                    "sk = :event AND #status = :status"
                } else {
                    "sk = :event"
                })
                .expression_attribute_values(":event", s(super::EVENT_SK))
                .set_exclusive_start_key(start.take());
            if let Some(status) = status {
                request = request
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(status));
            }
            let out = request.send().await.map_err(classify)?;
            for item in out.items.unwrap_or_default() {
                let event_type_of = text(&item, "event_type");
                let wanted_type = event_type.is_none_or(|t| {
                    let t = t.strip_suffix('*').unwrap_or(t);
                    event_type_of.as_deref().is_some_and(|have| {
                        if t.ends_with('.') {
                            have.starts_with(t)
                        } else {
                            have == t
                        }
                    })
                });
                let received_at = text(&item, "received_at").unwrap_or_default();
                if wanted_type && since.is_none_or(|since| received_at.as_str() >= since) {
                    rows.push(EventRow {
                        event_id: text(&item, "event_id").unwrap_or_default(),
                        key: text(&item, "pk").unwrap_or_default(),
                        source: text(&item, "source").unwrap_or_default(),
                        source_type: text(&item, "source_type").unwrap_or_default(),
                        event_type: event_type_of,
                        status: text(&item, "status").unwrap_or_default(),
                        received_at,
                        detail: text(&item, "reason").or_else(|| text(&item, "status_detail")),
                        conflicts: number(&item, "conflicts"),
                    });
                }
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        rows.sort_by(|a, b| {
            b.received_at
                .cmp(&a.received_at)
                .then_with(|| b.event_id.cmp(&a.event_id))
        });
        rows.truncate(limit);
        Ok(rows)
    }
}
