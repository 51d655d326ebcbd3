//! What operators ask the local store: event listings and timelines, and the figures of the
//! status page.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{Cached, SqliteStore, deliveries, events, now_ms, sql_error};
use crate::inspect::{EventRow, LedgerEffect, Timeline};
use crate::ports::StoreError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub status: Option<String>,
    /// A canonical type or a `prefix.*` glob.
    pub event_type: Option<String>,
    pub since_ms: Option<i64>,
    pub limit: usize,
}

/// Per-minute counts for the status page's chart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Minute {
    pub minute_ms: i64,
    pub accepted: u64,
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetStats {
    pub delivered: u64,
    pub retrying: u64,
    pub failed: u64,
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        event_id: r.get(0)?,
        key: r.get(1)?,
        source: r.get(2)?,
        source_type: r.get(3)?,
        event_type: r.get(4)?,
        status: r.get(5)?,
        received_at: r.get(6)?,
        detail: r.get(7)?,
        conflicts: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
    })
}

impl SqliteStore {
    pub async fn list_events(&self, filter: EventFilter) -> Result<Vec<EventRow>, StoreError> {
        self.run(move |conn| {
            let type_pattern = filter.event_type.map(|t| t.strip_suffix('*').map_or(t.clone(), |p| format!("{p}%")));
            let mut stmt = conn
                .prepare_cached(
                    "SELECT event_id, key, source, source_type, event_type, status, received_at, COALESCE(reason, status_detail), conflicts \
                     FROM events WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR event_type LIKE ?2) AND (?3 IS NULL OR received_ms >= ?3) \
                     ORDER BY received_ms DESC, event_id DESC LIMIT ?4",
                )
                .map_err(|e| sql_error(&e))?;
            let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![filter.status, type_pattern, filter.since_ms, limit], row_of)
                .map_err(|e| sql_error(&e))?;
            rows.collect::<Result<_, _>>().map_err(|e| sql_error(&e))
        })
        .await
    }

    /// An event by plumbline's id, its key (`EVT#…`) or its idempotency key (`source:id`).
    pub async fn timeline(&self, id: &str) -> Result<Option<Timeline>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn| {
            let from_idempotency = id.split_once(':').map(|(s, rest)| format!("EVT#{s}#{rest}")).unwrap_or_default();
            let key: Option<String> = conn
                .row("SELECT key FROM events WHERE event_id = ?1 OR key = ?1 OR key = ?2", params![id, from_idempotency], |r| r.get(0))
                .optional()
                .map_err(|e| sql_error(&e))?;
            let Some(key) = key else { return Ok(None) };
            let Some(record) = events::get(conn, &key)? else { return Ok(None) };
            let (status_detail, status_at, conflicts): (Option<String>, Option<String>, i64) = conn
                .row("SELECT status_detail, status_at, conflicts FROM events WHERE key = ?1", [&key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(|e| sql_error(&e))?;
            let ledger = conn
                .row(
                    "SELECT e.kind, e.id, json_extract(h.value, '$.effect'), COALESCE(json_extract(h.value, '$.ownership_conflicts'), '[]'), json_extract(h.value, '$.held_until') \
                     FROM entities e, json_each(e.entity, '$.history') h WHERE json_extract(h.value, '$.event_id') = ?1",
                    [record.event_id.as_str()],
                    |r| {
                        let conflicts: String = r.get(3)?;
                        Ok(LedgerEffect {
                            entity_kind: r.get(0)?,
                            entity_id: r.get(1)?,
                            effect: r.get(2)?,
                            ownership_conflicts: serde_json::from_str(&conflicts).unwrap_or_default(),
                            delivery_held_until: r.get(4)?,
                        })
                    },
                )
                .optional()
                .map_err(|e| sql_error(&e))?;
            let deliveries = deliveries::list(conn, &key)?;
            Ok(Some(Timeline { record, status_detail, status_at, conflicts: u32::try_from(conflicts).unwrap_or(0), ledger, deliveries }))
        })
        .await
    }

    /// Accepted, delivered and failed (attempts) per minute over the last `minutes`, oldest first.
    pub async fn per_minute(&self, minutes: i64) -> Result<Vec<Minute>, StoreError> {
        self.run(move |conn| {
            let now = now_ms();
            let first = now / 60_000 - minutes + 1;
            let mut out: BTreeMap<i64, Minute> = (first..first + minutes)
                .map(|m| (m, Minute { minute_ms: m * 60_000, ..Minute::default() }))
                .collect();
            let mut stmt = conn
                .prepare_cached("SELECT name, minute, n FROM minute_tallies WHERE name IN ('accepted', 'delivered', 'failed') AND minute >= ?1")
                .map_err(|e| sql_error(&e))?;
            let rows = stmt
                .query_map([first], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                .map_err(|e| sql_error(&e))?;
            for row in rows {
                let (name, minute, n) = row.map_err(|e| sql_error(&e))?;
                let (Some(m), Ok(n)) = (out.get_mut(&minute), u64::try_from(n)) else { continue };
                match name.as_str() {
                    "accepted" => m.accepted = n,
                    "delivered" => m.delivered = n,
                    _ => m.failed = n,
                }
            }
            Ok(out.into_values().collect())
        })
        .await
    }

    /// Delivery outcomes per target.
    pub async fn target_stats(&self) -> Result<BTreeMap<String, TargetStats>, StoreError> {
        self.run(|conn| {
            let mut out: BTreeMap<String, TargetStats> = BTreeMap::new();
            for (target, state, n) in tallies(conn, "delivery_state")? {
                let entry = out.entry(target).or_default();
                match state.as_str() {
                    "delivered" => entry.delivered += n,
                    "failed" => entry.failed += n,
                    _ => entry.retrying += n,
                }
            }
            Ok(out)
        })
        .await
    }

    /// Events per status, and ownership conflicts recorded in the ledger.
    pub async fn status_counts(&self) -> Result<(BTreeMap<String, u64>, u64), StoreError> {
        self.run(|conn| {
            let counts = tallies(conn, "event_status")?
                .into_iter()
                .map(|(status, _, n)| (status, n))
                .collect();
            let conflicts = tallies(conn, "ownership_conflicts")?
                .into_iter()
                .map(|(_, _, n)| n)
                .sum();
            Ok((counts, conflicts))
        })
        .await
    }
}

/// The running counts named `name` (kept by the schema's triggers), leaving out those at zero.
fn tallies(conn: &Connection, name: &str) -> Result<Vec<(String, String, u64)>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT a, b, n FROM tallies WHERE name = ?1 AND n > 0")
        .map_err(|e| sql_error(&e))?;
    let rows = stmt
        .query_map([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .map_err(|e| sql_error(&e))?;
    rows.map(|row| {
        let (a, b, n) = row.map_err(|e| sql_error(&e))?;
        Ok((a, b, u64::try_from(n).unwrap_or(0)))
    })
    .collect()
}
