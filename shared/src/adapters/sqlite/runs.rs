//! Reconciliation on the local database: stuck claims through the partial `pending_since`
//! index, run reports, and queue depths.

use rusqlite::{OptionalExtension, params};

use super::{Cached, SqliteStore, events, sql_error};
use crate::contract::Timestamp;
use crate::ports::{
    DeadLetters, Depth, EventKey, EventStatus, PendingCursor, PendingPage, PendingPosition,
    QueueError, QueueStats, RUN_RETENTION_SECS, ReconcileStore, StoreError, Unreadable,
};
use crate::reconcile::Report;

impl ReconcileStore for SqliteStore {
    async fn pending_before(
        &self,
        cutoff: Timestamp,
        after: Option<&PendingCursor>,
        limit: usize,
    ) -> Result<PendingPage, StoreError> {
        // One ordered index: the cursor is the last claim read, ties broken by key.
        let (since, key) = after
            .and_then(|c| c.positions.last())
            .map(|p| (Some(p.since.clone()), Some(p.key.clone())))
            .unwrap_or_default();
        // One more than asked tells whether another page follows.
        let asked = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, pending_since FROM events \
                     WHERE pending_since IS NOT NULL AND pending_since < ?1 \
                       AND (?2 IS NULL OR (pending_since, key) > (?2, ?3)) \
                     ORDER BY pending_since, key LIMIT ?4",
                )
                .map_err(|e| sql_error(&e))?;
            let mut found: Vec<(String, String)> = stmt
                .query_map(params![cutoff.sort_key(), since, key, asked], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(|e| sql_error(&e))?
                .collect::<Result<_, _>>()
                .map_err(|e| sql_error(&e))?;
            let more = found.len() > limit;
            found.truncate(limit);
            let mut page = PendingPage::default();
            let mut last = None;
            for (key, since) in found {
                match events::get(conn, &key) {
                    Ok(Some(record)) => page.claims.push(Ok(record)),
                    // Settled and gone between the two reads.
                    Ok(None) => {}
                    Err(StoreError::Corrupt(reason)) => {
                        // A key this version does not write is not one it can report.
                        if let Some(key) = EventKey::parse(&key) {
                            page.claims.push(Err(Unreadable { key, reason }));
                        }
                    }
                    Err(err) => return Err(err),
                }
                last = Some(PendingPosition {
                    part: String::new(),
                    since,
                    key,
                });
            }
            page.next = more.then(|| PendingCursor {
                positions: last.into_iter().collect(),
            });
            Ok(page)
        })
        .await
    }

    async fn give_up_stuck(
        &self,
        key: &EventKey,
        seen: Timestamp,
        detail: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (key, seen, detail) = (key.to_string(), seen.to_string(), detail.to_owned());
        self.run(move |conn| {
            conn.exec(
                &format!(
                    "{} AND status = 'received' AND claimed_at = ?5",
                    events::FINAL_STATUS
                ),
                params![
                    key,
                    EventStatus::DeadLettered.as_str(),
                    detail,
                    now.to_string(),
                    seen
                ],
            )
            .map(|n| n == 1)
            .map_err(|e| sql_error(&e))
        })
        .await
    }

    async fn save_run(&self, report: &Report) -> Result<(), StoreError> {
        let body = serde_json::to_string(report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Fixed-width, so that runs of the same second list in order.
        let (id, started_at) = (report.id.clone(), report.started_at.sort_key());
        // What the table's TTL does on AWS: a long-running local stack keeps a quarter's runs.
        let expired = report.started_at.plus_secs(-RUN_RETENTION_SECS).sort_key();
        self.run(move |conn| {
            conn.exec(
                "INSERT OR REPLACE INTO runs (id, started_at, report) VALUES (?1, ?2, ?3)",
                params![id, started_at, body],
            )
            .map_err(|e| sql_error(&e))?;
            conn.exec("DELETE FROM runs WHERE started_at < ?1", params![expired])
                .map(|_| ())
                .map_err(|e| sql_error(&e))
        })
        .await
    }

    async fn recent_runs(&self, limit: usize) -> Result<Vec<Report>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let texts: Vec<String> = conn
                .prepare_cached(
                    "SELECT report FROM runs ORDER BY started_at DESC, id DESC LIMIT ?1",
                )
                .and_then(|mut statement| {
                    statement
                        .query_map([limit], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(|e| sql_error(&e))?;
            texts
                .iter()
                .map(|t| serde_json::from_str(t).map_err(|e| StoreError::Corrupt(e.to_string())))
                .collect()
        })
        .await
    }
}

async fn depth(store: &SqliteStore, dead_letters: bool) -> Result<Depth, QueueError> {
    let (messages, in_flight, oldest_ms) = store
        .queue_stats(dead_letters)
        .await
        .map_err(|e| QueueError::Unavailable(Box::new(e)))?;
    Ok(Depth {
        messages,
        in_flight,
        oldest_age_secs: oldest_ms.map(|ms| u64::try_from(ms / 1000).unwrap_or(0)),
        // The local queue deletes a message only when it is taken and settled.
        retention_secs: None,
    })
}

impl QueueStats for SqliteStore {
    async fn depth(&self) -> Result<Depth, QueueError> {
        depth(self, false).await
    }
}

/// The local dead-letter queue, as reconciliation counts it.
#[derive(Debug, Clone)]
pub struct LocalDeadLetters(pub SqliteStore);

impl QueueStats for LocalDeadLetters {
    async fn depth(&self) -> Result<Depth, QueueError> {
        depth(&self.0, true).await
    }
}

impl DeadLetters for LocalDeadLetters {
    async fn dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> Result<(), QueueError> {
        self.0.dead_letter(body, attributes).await
    }
}

impl crate::ports::Watermarks for SqliteStore {
    async fn load_watermark(
        &self,
        source: &str,
    ) -> Result<Option<crate::ports::Watermark>, StoreError> {
        let source = source.to_owned();
        self.run(move |conn| {
            let text: Option<String> = conn
                .row(
                    "SELECT watermark FROM watermarks WHERE source = ?1",
                    [&source],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| sql_error(&e))?;
            text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })
        .await
    }

    async fn save_watermark(
        &self,
        source: &str,
        watermark: &crate::ports::Watermark,
    ) -> Result<(), StoreError> {
        let (source, body) = (
            source.to_owned(),
            serde_json::to_string(watermark).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
        self.run(move |conn| {
            conn.exec(
                "INSERT OR REPLACE INTO watermarks (source, watermark) VALUES (?1, ?2)",
                params![source, body],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&e))
        })
        .await
    }
}

impl crate::ports::ReplayTally for SqliteStore {
    async fn count_replay(&self, at: Timestamp, delivered: bool) -> Result<(), StoreError> {
        let minute = crate::ports::replay_minute(at);
        let (d, f) = if delivered { (1, 0) } else { (0, 1) };
        self.run(move |conn| {
            conn.exec(
                "INSERT INTO replays (minute, delivered, failed) VALUES (?1, ?2, ?3)
                 ON CONFLICT (minute) DO UPDATE SET delivered = delivered + ?2, failed = failed + ?3",
                rusqlite::params![minute, d, f],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&e))
        })
        .await
    }

    async fn replays_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        let (from, to) = (
            crate::ports::replay_minute(from),
            crate::ports::replay_minute(to),
        );
        self.run(move |conn| {
            let (d, f): (i64, i64) = conn
                .row(
                    "SELECT COALESCE(SUM(delivered), 0), COALESCE(SUM(failed), 0) FROM replays WHERE minute BETWEEN ?1 AND ?2",
                    [&from, &to],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(|e| sql_error(&e))?;
            Ok((u64::try_from(d).unwrap_or(0), u64::try_from(f).unwrap_or(0)))
        })
        .await
    }
}
