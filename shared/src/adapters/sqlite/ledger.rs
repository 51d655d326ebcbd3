//! Entities (versioned) and aliases.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Cached, SqliteStore, sql_error};
use crate::contract::{EntityKind, Timestamp};
use crate::ledger::Entity;
use crate::ports::{
    Alias, EntityPage, EntityScan, LedgerStore, Saved, StoreError, change_entry, change_key,
};

/// The entity as stored, if any.
fn stored_entity(conn: &Connection, kind: &str, id: &str) -> Result<Option<Entity>, StoreError> {
    let text: Option<String> = conn
        .row(
            "SELECT entity FROM entities WHERE kind = ?1 AND id = ?2",
            params![kind, id],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| sql_error(&e))?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{kind} {id}: {e}")))
    })
    .transpose()
}

impl LedgerStore for SqliteStore {
    async fn load_entity(&self, kind: EntityKind, id: &str) -> Result<Option<Entity>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn| stored_entity(conn, kind.as_str(), &id))
            .await
    }

    async fn save_entity(&self, entity: &Entity) -> Result<Saved, StoreError> {
        let body = serde_json::to_string(entity).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (kind, id, version) = (entity.kind.as_str(), entity.id.clone(), entity.version);
        let changed = entity.updated_at.map(|at| change_entry(at, &entity.id));
        // The status page's ownership-conflict count is kept from this column by a trigger.
        let conflict_entries = entity
            .history
            .iter()
            .filter(|h| !h.ownership_conflicts.is_empty())
            .count();
        let version =
            i64::try_from(version).map_err(|_| StoreError::Corrupt("version overflow".into()))?;
        self.run(move |conn| {
            let changed = if version <= 1 {
                conn.exec(
                    "INSERT INTO entities (kind, id, version, entity, changed_key, conflict_entries) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![kind, id, version, body, changed, conflict_entries],
                )
            } else {
                conn.exec(
                    "UPDATE entities SET version = ?3, entity = ?4, changed_key = ?5, conflict_entries = ?6 WHERE kind = ?1 AND id = ?2 AND version = ?3 - 1",
                    params![kind, id, version, body, changed, conflict_entries],
                )
            }
            .map_err(|e| sql_error(&e))?;
            if changed == 1 {
                return Ok(Saved::Saved);
            }
            // As DynamoDB's refusal does: the stored entity comes back with it.
            let stored = stored_entity(conn, kind, &id)?.map(Box::new);
            Ok(Saved::VersionConflict { stored })
        })
        .await
    }

    async fn load_alias(&self, kind: EntityKind, alias: &str) -> Result<Option<Alias>, StoreError> {
        let alias = alias.to_owned();
        self.run(move |conn| {
            let row: Option<(String, String)> = conn
                .row(
                    "SELECT entity_id, at FROM aliases WHERE kind = ?1 AND alias = ?2",
                    params![kind.as_str(), alias],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(|e| sql_error(&e))?;
            row.map(|(entity_id, at)| {
                let at = Timestamp::parse(&at)
                    .ok_or_else(|| StoreError::Corrupt(format!("alias {alias}")))?;
                Ok(Alias { entity_id, at })
            })
            .transpose()
        })
        .await
    }

    async fn save_alias(
        &self,
        kind: EntityKind,
        alias: &str,
        value: &Alias,
        previous: Option<&Alias>,
    ) -> Result<bool, StoreError> {
        let (alias, value, previous) = (alias.to_owned(), value.clone(), previous.cloned());
        self.run(move |conn| {
            let changed = match previous {
                None => conn.exec(
                    "INSERT INTO aliases (kind, alias, entity_id, at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![kind.as_str(), alias, value.entity_id, value.at.to_string()],
                ),
                Some(p) => conn.exec(
                    "UPDATE aliases SET entity_id = ?3, at = ?4 WHERE kind = ?1 AND alias = ?2 AND entity_id = ?5 AND at = ?6",
                    params![kind.as_str(), alias, value.entity_id, value.at.to_string(), p.entity_id, p.at.to_string()],
                ),
            }
            .map_err(|e| sql_error(&e))?;
            Ok(changed == 1)
        })
        .await
    }
}

impl EntityScan for SqliteStore {
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
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT changed_key, entity FROM entities WHERE kind = ?1 AND changed_key > ?2 AND changed_key < ?3 ORDER BY changed_key LIMIT ?4",
                )
                .map_err(|e| sql_error(&e))?;
            let rows = statement
                .query_map(params![kind.as_str(), low, high, fetch], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(|e| sql_error(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| sql_error(&e))?;
            let more = rows.len() > limit;
            let mut page = EntityPage::default();
            for (key, text) in rows.into_iter().take(limit) {
                page.entities.push(
                    serde_json::from_str(&text)
                        .map_err(|e| StoreError::Corrupt(format!("{} {key}: {e}", kind.as_str())))?,
                );
                page.next = Some(key);
            }
            if !more {
                page.next = None;
            }
            Ok(page)
        })
        .await
    }
}
