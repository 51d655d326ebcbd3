//! Operator reads on the table: an event's timeline (listings are in `listing`).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{DynamoStore, text};
use crate::inspect::{LedgerEffect, Timeline};
use crate::ports::{EventKey, LedgerStore, StoreError};

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
}
