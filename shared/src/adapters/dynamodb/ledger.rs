//! Entities (versioned, updated only on the version read) and aliases.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{DynamoStore, classify, condition_failed, key, n, s};
use crate::contract::{EntityKind, Timestamp};
use crate::ledger::Entity;
use crate::ports::{Alias, LedgerStore, Saved, StoreError};

const STATE_SK: &str = "STATE";
const ALIAS_SK: &str = "ALIAS";

fn entity_pk(kind: EntityKind, id: &str) -> String {
    format!("ENT#{}#{id}", kind.as_str())
}

fn alias_pk(kind: EntityKind, alias: &str) -> String {
    format!("ALIAS#{}#{alias}", kind.as_str())
}

impl LedgerStore for DynamoStore {
    async fn load_entity(&self, kind: EntityKind, id: &str) -> Result<Option<Entity>, StoreError> {
        let item = self.read(key(&entity_pk(kind, id), STATE_SK)).await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let text = item
            .get("entity")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("{} {id}: no entity", kind.as_str())))?;
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{} {id}: {e}", kind.as_str())))
    }

    async fn save_entity(&self, entity: &Entity) -> Result<Saved, StoreError> {
        let body = serde_json::to_string(entity).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(entity_pk(entity.kind, &entity.id)))
            .item("sk", s(STATE_SK))
            .item("version", n(entity.version))
            .item("entity", s(body));
        request = if entity.version <= 1 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("version = :previous")
                .expression_attribute_values(":previous", n(entity.version - 1))
        };
        match request.send().await {
            Ok(_) => Ok(Saved::Saved),
            Err(err) if condition_failed(&err) => Ok(Saved::VersionConflict),
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
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) if condition_failed(&err) => Ok(false),
            Err(err) => Err(classify(err)),
        }
    }
}
