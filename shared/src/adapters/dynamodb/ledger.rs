//! Entities (versioned, updated only on the version read), the `changed` index reconciliation
//! walks them by, and aliases.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{
    DynamoStore, applied, classify, condition_failed, key, n, packed, query_shards, refused_item,
    s, text_is, write_id,
};
use crate::contract::{EntityKind, Timestamp};
use crate::ledger::Entity;
use crate::ports::{
    Alias, EntityPage, EntityScan, Known, LedgerStore, Saved, StoreError, change_entry, change_key,
};

/// The index of entities by the time they last changed, sharded so that no one partition takes
/// every write of a kind.
pub const CHANGED_INDEX: &str = "changed";
const CHANGED_SHARDS: u64 = 8;

fn changed_shard(kind: EntityKind, id: &str) -> String {
    let sum = id.bytes().fold(0_u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    format!("{}#{}", kind.as_str(), sum % CHANGED_SHARDS)
}

const STATE_SK: &str = "STATE";

/// The attribute naming the write that stored an entity item: one [`write_id`] per call of
/// `save_entity`, the same for the SDK's retries of it.
const WRITER: &str = "writer";
const ALIAS_SK: &str = "ALIAS";

fn entity_pk(kind: EntityKind, id: &str) -> String {
    format!("ENT#{}#{id}", kind.as_str())
}

fn alias_pk(kind: EntityKind, alias: &str) -> String {
    format!("ALIAS#{}#{alias}", kind.as_str())
}

fn entity_of(
    kind: EntityKind,
    id: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<Entity, StoreError> {
    let text = packed::unpack(item, "entity")?
        .ok_or_else(|| StoreError::Corrupt(format!("{} {id}: no entity", kind.as_str())))?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("{} {id}: {e}", kind.as_str())))
}

impl LedgerStore for DynamoStore {
    async fn load_entity(&self, kind: EntityKind, id: &str) -> Result<Option<Entity>, StoreError> {
        let item = self.read(key(&entity_pk(kind, id), STATE_SK)).await?;
        item.map(|item| entity_of(kind, id, &item)).transpose()
    }

    async fn load_entities(&self, keys: &[(EntityKind, String)]) -> Result<Known, StoreError> {
        let by_pk: HashMap<String, &(EntityKind, String)> =
            keys.iter().map(|k| (entity_pk(k.0, &k.1), k)).collect();
        let pks: Vec<String> = by_pk.keys().cloned().collect();
        let (items, unprocessed) = self.read_many(&pks, STATE_SK).await?;
        let mut known = Known::new();
        for (pk, (kind, id)) in &by_pk {
            // Asked, answered, and not in the responses: the store has no such entity. A key
            // DynamoDB never processed stays unknown.
            let entity = match items.get(pk) {
                Some(item) => Some(entity_of(*kind, id, item)?),
                None if unprocessed.contains(pk) => continue,
                None => None,
            };
            known.insert((*kind, id.clone()), entity);
        }
        Ok(known)
    }

    async fn save_entity(&self, entity: &Entity) -> Result<Saved, StoreError> {
        let body = serde_json::to_string(entity).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (name, packed) = packed::pack("entity", &body);
        let writer = write_id();
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(entity_pk(entity.kind, &entity.id)))
            .item("sk", s(STATE_SK))
            .item("version", n(entity.version))
            .item(WRITER, s(writer.clone()))
            .item(name, packed);
        if let Some(at) = entity.updated_at {
            request = request
                .item("chg_shard", s(changed_shard(entity.kind, &entity.id)))
                .item("chg_at", s(change_entry(at, &entity.id)));
        }
        request = if entity.version <= 1 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("version = :previous")
                .expression_attribute_values(":previous", n(entity.version - 1))
        };
        // A refused write answers with the stored item: the retry, or a write that took the
        // entity for new, needs no read of its own.
        request = request
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match request.send().await {
            Ok(_) => Ok(Saved::Saved),
            Err(err) if condition_failed(&err) => {
                let refused = refused_item(&err);
                // The SDK tries a write again when its answer was lost (a 500, a connection
                // reset, an attempt timed out after the item was written); the retry is then
                // refused by the item this call wrote. That is this write landing, not a lost
                // race: the hold it took on the event's first attempt is this caller's.
                if refused.is_some_and(|item| text_is(item, WRITER, &writer)) {
                    return Ok(Saved::Saved);
                }
                let stored = refused
                    .map(|item| entity_of(entity.kind, &entity.id, item))
                    .transpose()?
                    .map(Box::new);
                Ok(Saved::VersionConflict { stored })
            }
            Err(err) => Err(classify(err)),
        }
    }

    async fn load_alias(&self, kind: EntityKind, alias: &str) -> Result<Option<Alias>, StoreError> {
        let item = self.read(key(&alias_pk(kind, alias), ALIAS_SK)).await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let field = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let corrupt = || StoreError::Corrupt(format!("alias {alias}"));
        let entity_id = field("entity_id").ok_or_else(corrupt)?;
        let at = field("at")
            .and_then(|t| Timestamp::parse(&t))
            .ok_or_else(corrupt)?;
        Ok(Some(Alias { entity_id, at }))
    }

    async fn save_alias(
        &self,
        kind: EntityKind,
        alias: &str,
        value: &Alias,
        previous: Option<&Alias>,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(alias_pk(kind, alias)))
            .item("sk", s(ALIAS_SK))
            .item("entity_id", s(value.entity_id.clone()))
            .item("at", s(value.at.to_string()));
        request = match previous {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(p) => request
                .condition_expression("entity_id = :id AND #at = :at")
                .expression_attribute_names("#at", "at")
                .expression_attribute_values(":id", AttributeValue::S(p.entity_id.clone()))
                .expression_attribute_values(":at", AttributeValue::S(p.at.to_string())),
        };
        applied(request.send().await)
    }
}

impl EntityScan for DynamoStore {
    /// One query per shard from the cursor, merged: each shard's first `limit` hold the page.
    async fn changed_entities(
        &self,
        kind: EntityKind,
        from: Timestamp,
        to: Timestamp,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<EntityPage, StoreError> {
        let low = cursor.map_or_else(|| change_key(from, ""), str::to_owned);
        let high = change_key(to, "");
        let items = query_shards(CHANGED_SHARDS, |shard| {
            self.client
                .query()
                .table_name(&self.table)
                .index_name(CHANGED_INDEX)
                .key_condition_expression("chg_shard = :shard AND chg_at BETWEEN :low AND :high")
                .expression_attribute_values(":shard", s(format!("{}#{shard}", kind.as_str())))
                .expression_attribute_values(":low", s(low.clone()))
                .expression_attribute_values(":high", s(high.clone()))
                .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
        })
        .await?;
        let mut keys = Vec::new();
        for item in items {
            let field = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            if let (Some(at), Some(pk)) = (field("chg_at"), field("pk"))
                && at != low
                && at < high
            {
                keys.push((at, pk));
            }
        }
        keys.sort();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let prefix = format!("ENT#{}#", kind.as_str());
        let ids = keys
            .iter()
            .map(|(_, pk)| {
                pk.strip_prefix(&prefix)
                    .map(|id| (kind, id.to_owned()))
                    .ok_or_else(|| StoreError::Corrupt(format!("entity key {pk}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The index is eventually consistent: each entity is read as it is now.
        let mut known = self.load_entities(&ids).await?;
        let mut entities = Vec::with_capacity(ids.len());
        for key in &ids {
            match known.remove(key) {
                Some(Some(entity)) => entities.push(entity),
                Some(None) => {}
                // Left unprocessed by the batch read: read it on its own.
                None => entities.extend(self.load_entity(kind, &key.1).await?),
            }
        }
        Ok(EntityPage {
            entities,
            next: if more {
                keys.last().map(|(at, _)| at.clone())
            } else {
                None
            },
        })
    }
}
