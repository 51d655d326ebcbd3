//! Delivery records with a lease, as on DynamoDB.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Cached, SqliteStore, sql_error};
use crate::contract::Timestamp;
use crate::ports::{
    Attempt, DeliveryLog, DeliveryRecord, DeliveryState, EventKey, EventStatus, StoreError,
};

fn state_of(text: &str) -> Option<DeliveryState> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

fn name(state: DeliveryState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub(super) fn list(conn: &Connection, key: &str) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT target, state, attempts, last_error, lease_until_ms, updated_at, delivered_at FROM deliveries WHERE key = ?1 ORDER BY target")
        .map_err(|e| sql_error(&e))?;
    let rows = stmt
        .query_map([key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })
        .map_err(|e| sql_error(&e))?;
    let mut out = Vec::new();
    for row in rows {
        let (target, state, attempts, last_error, lease, updated_at, delivered_at) =
            row.map_err(|e| sql_error(&e))?;
        let corrupt = || StoreError::Corrupt(format!("delivery {key} {target}"));
        out.push(DeliveryRecord {
            state: state_of(&state).ok_or_else(corrupt)?,
            attempts: u32::try_from(attempts).unwrap_or(0),
            last_error,
            lease_until: lease.and_then(|ms| Timestamp::from_unix(ms / 1000)),
            updated_at: Timestamp::parse(&updated_at).ok_or_else(corrupt)?,
            delivered_at: delivered_at.as_deref().and_then(Timestamp::parse),
            target,
        });
    }
    Ok(out)
}

fn mark_delivered(
    conn: &Connection,
    key: &str,
    target: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    // No record yet: the entity's write held this first attempt.
    conn.exec(
        "INSERT INTO deliveries (key, target, state, attempts, delivered_at, updated_at, updated_ms) \
         SELECT ?1, ?2, ?3, 1, ?4, ?4, ?5 WHERE EXISTS (SELECT 1 FROM events WHERE key = ?1) \
         ON CONFLICT (key, target) DO UPDATE SET state = ?3, delivered_at = ?4, updated_at = ?4, updated_ms = ?5, lease_until_ms = NULL",
        params![key, target, name(DeliveryState::Delivered), now.to_string(), now.unix_millis()],
    )
    .map(|_| ())
    .map_err(|e| sql_error(&e))
}

impl DeliveryLog for SqliteStore {
    async fn begin(
        &self,
        key: &EventKey,
        target: &str,
        now: Timestamp,
        lease: Duration,
        replay: bool,
        held: Option<Timestamp>,
    ) -> Result<Attempt, StoreError> {
        let (key, target) = (key.to_string(), target.to_owned());
        let void_before = self.void_holds_before_ms.load(Ordering::SeqCst);
        let held = held.filter(|h| h.unix_millis() >= now.unix_millis().max(void_before));
        let until = now.unix_millis() + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.run(move |conn| {
            let claimed = conn
                .row("SELECT 1 FROM events WHERE key = ?1", [&key], |_| Ok(()))
                .optional()
                .map_err(|e| sql_error(&e))?;
            if claimed.is_none() {
                return Err(StoreError::Corrupt(format!("{key}: no such event")));
            }
            let current: Option<(String, Option<i64>, i64, Option<String>)> = conn
                .row("SELECT state, lease_until_ms, attempts, last_error FROM deliveries WHERE key = ?1 AND target = ?2", params![key, target], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
                .map_err(|e| sql_error(&e))?;
            if let Some((state, lease_until, _, last_error)) = &current {
                match state_of(state) {
                    Some(DeliveryState::Delivered) => return Ok(Attempt::AlreadyDelivered),
                    Some(DeliveryState::Failed) if !replay => {
                        return Ok(Attempt::FailedBefore { reason: last_error.clone() });
                    }
                    _ => {}
                }
                if let Some(ms) = lease_until
                    && *ms >= now.unix_millis()
                {
                    return Ok(Attempt::Leased { until: Timestamp::from_unix(ms / 1000).unwrap_or(now) });
                }
            } else if let Some(until) = held {
                // The entity's write holds the first attempt, and it has not reported yet.
                return Ok(Attempt::Leased { until });
            }
            let attempts = current.map_or(0, |(_, _, a, _)| a) + 1;
            conn.exec(
                "INSERT INTO deliveries (key, target, state, attempts, lease_until_ms, updated_at, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (key, target) DO UPDATE SET state = ?3, attempts = ?4, lease_until_ms = ?5, updated_at = ?6, updated_ms = ?7",
                params![key, target, name(DeliveryState::InFlight), attempts, until, now.to_string(), now.unix_millis()],
            )
            .map_err(|e| sql_error(&e))?;
            Ok(Attempt::Go { attempt: u32::try_from(attempts).unwrap_or(u32::MAX) })
        })
        .await
    }

    async fn delivered(
        &self,
        key: &EventKey,
        target: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (key, target) = (key.to_string(), target.to_owned());
        self.run(move |conn| mark_delivered(conn, &key, &target, now))
            .await
    }

    async fn settle(
        &self,
        key: &EventKey,
        delivered: &[&str],
        status: EventStatus,
        detail: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let key = key.to_string();
        let delivered: Vec<String> = delivered.iter().map(|t| (*t).to_owned()).collect();
        let detail = detail.map(str::to_owned);
        self.run(move |conn| {
            for target in &delivered {
                mark_delivered(conn, &key, target, now)?;
            }
            super::events::set_status(conn, &key, status, detail.as_deref(), now)
        })
        .await
    }

    async fn failed(
        &self,
        key: &EventKey,
        target: &str,
        reason: &str,
        permanent: bool,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (key, target, reason) = (key.to_string(), target.to_owned(), reason.to_owned());
        let state = if permanent {
            DeliveryState::Failed
        } else {
            DeliveryState::Retrying
        };
        self.run(move |conn| {
            // No record yet: the entity's write held this first attempt.
            conn.exec(
                "INSERT INTO deliveries (key, target, state, attempts, last_error, updated_at, updated_ms) \
                 SELECT ?1, ?2, ?3, 1, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM events WHERE key = ?1) \
                 ON CONFLICT (key, target) DO UPDATE SET state = ?3, last_error = ?4, updated_at = ?5, updated_ms = ?6, lease_until_ms = NULL \
                 WHERE state <> 'delivered'",
                params![key, target, name(state), reason, now.to_string(), now.unix_millis()],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&e))
        })
        .await
    }

    async fn retrying_until(&self, key: &EventKey, until: Timestamp) -> Result<(), StoreError> {
        // A claim no longer received is left alone.
        self.move_claim(key, until, None).await.map(|_| ())
    }

    async fn deliveries(&self, key: &EventKey) -> Result<Vec<DeliveryRecord>, StoreError> {
        let key = key.to_string();
        self.run(move |conn| list(conn, &key)).await
    }
}
