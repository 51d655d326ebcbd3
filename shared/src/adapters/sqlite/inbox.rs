//! The `inbox` target of the local stack: records each delivery in the local database, once per
//! idempotency key, so the whole flow can be seen without any outside system.

use rusqlite::params;
use serde::Serialize;

use super::{Cached, SqliteStore, now_ms, sql_error};
use crate::delivery::Document;
use crate::ports::{StoreError, Target, TargetError};

#[derive(Debug, Clone)]
pub struct InboxTarget {
    store: SqliteStore,
    name: String,
}

/// One recorded delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboxEntry {
    pub target: String,
    pub idempotency_key: String,
    pub event_id: String,
    pub received_ms: i64,
}

impl InboxTarget {
    pub fn new(store: SqliteStore, name: impl Into<String>) -> Self {
        Self {
            store,
            name: name.into(),
        }
    }
}

impl Target for InboxTarget {
    async fn deliver(&self, document: &Document, idempotency_key: &str) -> Result<(), TargetError> {
        let (target, key) = (self.name.clone(), idempotency_key.to_owned());
        let (event_id, body) = (
            document.event.id.to_string(),
            document.to_json().to_string(),
        );
        self.store
            .run(move |conn| {
                conn.exec(
                    "INSERT INTO inbox (target, idempotency_key, event_id, body, received_ms) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    params![target, key, event_id, body, now_ms()],
                )
                .map(|_| ())
                .map_err(|e| sql_error(&e))
            })
            .await
            .map_err(|e| TargetError::Retryable { reason: e.to_string(), retry_after: None })
    }
}

impl SqliteStore {
    /// Deliveries the inbox targets recorded, newest first.
    pub async fn inbox(&self, limit: usize) -> Result<Vec<InboxEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT target, idempotency_key, event_id, received_ms FROM inbox ORDER BY id DESC LIMIT ?1")
                .map_err(|e| sql_error(&e))?;
            let rows = stmt
                .query_map([limit], |r| Ok(InboxEntry { target: r.get(0)?, idempotency_key: r.get(1)?, event_id: r.get(2)?, received_ms: r.get(3)? }))
                .map_err(|e| sql_error(&e))?;
            rows.collect::<Result<_, _>>().map_err(|e| sql_error(&e))
        })
        .await
    }
}
