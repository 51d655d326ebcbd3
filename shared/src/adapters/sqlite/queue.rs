//! The delivery queue and the dead-letter queue as rows: visibility timeouts, receive counts,
//! and the move to the dead-letter queue after the maximum receive count, as SQS does.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{Connection, params};

use super::{Cached, SqliteStore, now_ms, sql_error};
use crate::ingress::Outgoing;
use crate::ports::{
    DeadLetterSource, DeadLetters, EventQueue, QueueConsumer, QueueControl, QueueError, Received,
    Requeue, StoreError,
};

/// SQS's `maxReceiveCount` default in the template.
pub const MAX_RECEIVES_DEFAULT: u32 = 8;

pub(super) const DELIVERY: &str = "delivery";
const DLQ: &str = "dlq";

/// A message on one of the local queues, for operators' listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMessage {
    pub id: i64,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    pub sent_ms: i64,
    pub receive_count: u32,
}

fn queue_error(e: StoreError) -> QueueError {
    match e {
        StoreError::Throttled(s) => QueueError::Throttled(s),
        other => QueueError::Unavailable(Box::new(other)),
    }
}

pub(super) fn send(
    conn: &Connection,
    queue: &str,
    body: &str,
    attributes: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    let now = now_ms();
    conn.exec(
        "INSERT INTO messages (queue, body, attributes, sent_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![queue, body, serde_json::to_string(attributes).expect("attributes serialize"), now],
    )
    .map(|_| ())
    .map_err(|e| sql_error(&e))
}

fn attributes_of(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Hands out up to `max` visible messages of `queue`, moving over-received ones to the DLQ.
fn receive(
    conn: &Connection,
    queue: &str,
    max: i32,
    hide: Duration,
    max_receives: Option<u32>,
) -> Result<Vec<Received>, StoreError> {
    let now = now_ms();
    let hide_ms = i64::try_from(hide.as_millis()).unwrap_or(i64::MAX / 2);
    if let Some(limit) = max_receives {
        conn.exec(
            "UPDATE messages SET queue = ?1, visible_at_ms = ?2, receipt = NULL, receive_count = 0, \
             attributes = json_set(attributes, '$.reason', COALESCE(json_extract(attributes, '$.reason'), ?4)) \
             WHERE id IN (SELECT id FROM messages INDEXED BY messages_redrive \
                          WHERE queue = ?3 AND receive_count >= ?5 AND visible_at_ms <= ?2)",
            params![DLQ, now, queue, format!("received {limit} times without success"), limit],
        )
        .map_err(|e| sql_error(&e))?;
    }
    let mut stmt = conn
        .prepare_cached("SELECT id, body, attributes, receive_count FROM messages WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY visible_at_ms, id LIMIT ?3")
        .map_err(|e| sql_error(&e))?;
    let rows: Vec<(i64, String, String, i64)> = stmt
        .query_map(params![queue, now, max.clamp(1, 10)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .map_err(|e| sql_error(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| sql_error(&e))?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, body, attributes, count) in rows {
        let receipt = ulid::Ulid::new().to_string();
        conn.exec(
            "UPDATE messages SET visible_at_ms = ?2, receive_count = receive_count + 1, receipt = ?3 WHERE id = ?1",
            params![id, now + hide_ms, receipt],
        )
        .map_err(|e| sql_error(&e))?;
        out.push(Received {
            message_id: id.to_string(),
            receipt_handle: receipt,
            body,
            attributes: serde_json::from_str(&attributes).unwrap_or_default(),
            receive_count: u32::try_from(count + 1).unwrap_or(u32::MAX),
        });
    }
    Ok(out)
}

fn delete(conn: &Connection, receipt: &str) -> Result<(), StoreError> {
    conn.exec("DELETE FROM messages WHERE receipt = ?1", [receipt])
        .map(|_| ())
        .map_err(|e| sql_error(&e))
}

fn set_visible_in(conn: &Connection, receipt: &str, delay: Duration) -> Result<(), StoreError> {
    let at = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
    conn.exec(
        "UPDATE messages SET visible_at_ms = ?2 WHERE receipt = ?1",
        params![receipt, at],
    )
    .map(|_| ())
    .map_err(|e| sql_error(&e))
}

impl SqliteStore {
    /// Messages on a queue (`delivery` or `dlq`), oldest first, for operators.
    pub async fn list_messages(
        &self,
        dead_letters: bool,
        limit: usize,
    ) -> Result<Vec<LocalMessage>, StoreError> {
        let queue = if dead_letters { DLQ } else { DELIVERY };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, body, attributes, sent_ms, receive_count FROM messages WHERE queue = ?1 ORDER BY id LIMIT ?2")
                .map_err(|e| sql_error(&e))?;
            let rows = stmt
                .query_map(params![queue, limit], |r| {
                    Ok(LocalMessage {
                        id: r.get(0)?,
                        body: r.get(1)?,
                        attributes: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
                        sent_ms: r.get(3)?,
                        receive_count: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    })
                })
                .map_err(|e| sql_error(&e))?;
            rows.collect::<Result<_, _>>().map_err(|e| sql_error(&e))
        })
        .await
    }

    /// Messages on a queue, of which in flight (not visible), and the oldest one's age in ms.
    pub async fn queue_stats(
        &self,
        dead_letters: bool,
    ) -> Result<(u64, u64, Option<i64>), StoreError> {
        let queue = if dead_letters { DLQ } else { DELIVERY };
        self.run(move |conn| {
            let now = now_ms();
            conn.row(
                "SELECT COUNT(*), COALESCE(SUM(visible_at_ms > ?2), 0), MIN(sent_ms) \
                 FROM messages WHERE queue = ?1",
                rusqlite::params![queue, now],
                |r| {
                    let count: i64 = r.get(0)?;
                    let in_flight: i64 = r.get(1)?;
                    let oldest: Option<i64> = r.get(2)?;
                    Ok((
                        u64::try_from(count).unwrap_or(0),
                        u64::try_from(in_flight).unwrap_or(0),
                        oldest.map(|sent| now - sent),
                    ))
                },
            )
            .map_err(|e| sql_error(&e))
        })
        .await
    }

    /// Makes every in-flight message visible and frees every delivery lease, including the
    /// first attempts the entities' writes held: any hold taken before now, with the `lease`
    /// delivery takes, ends before now + `lease`. Only for the one process that consumes this
    /// database, at its start: whatever is in flight then belonged to a process that died, and
    /// waiting out its timeouts would only delay delivery.
    pub async fn recover_in_flight(&self, lease: Duration) -> Result<(u64, u64), StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        self.void_holds_before_ms
            .store(now_ms().saturating_add(lease_ms), Ordering::SeqCst);
        self.run(|conn| {
            let messages = conn
                .exec("UPDATE messages SET visible_at_ms = ?1, receipt = NULL WHERE receipt IS NOT NULL AND visible_at_ms > ?1", [now_ms()])
                .map_err(|e| sql_error(&e))?;
            let leases = conn
                .exec("UPDATE deliveries SET state = 'retrying', lease_until_ms = NULL WHERE state = 'in_flight'", [])
                .map_err(|e| sql_error(&e))?;
            Ok((messages as u64, leases as u64))
        })
        .await
    }

    /// Re-enqueues every claim that awaits delivery but has no message on the queue. The ingress
    /// and reconciliation commit a claim with its message, but a database written before they
    /// did can hold one a dead process left between the two. Run at start-up, before any
    /// request is taken.
    pub async fn requeue_orphaned_claims(&self) -> Result<u64, StoreError> {
        let requeued = self
            .run(|conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT e.key, e.envelope FROM events e WHERE e.pending_since IS NOT NULL AND e.envelope IS NOT NULL \
                         AND NOT EXISTS (SELECT 1 FROM messages m WHERE json_extract(m.body, '$.key') = e.key)",
                    )
                    .map_err(|e| sql_error(&e))?;
                let orphans: Vec<(String, String)> = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(|e| sql_error(&e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| sql_error(&e))?;
                for (key, envelope) in &orphans {
                    let envelope: crate::contract::Envelope =
                        serde_json::from_str(envelope).map_err(|e| StoreError::Corrupt(format!("{key}: {e}")))?;
                    let key = crate::ports::EventKey::parse(key).ok_or_else(|| StoreError::Corrupt(format!("{key}: bad key")))?;
                    let message = Outgoing::new(&key, &envelope);
                    let attributes = message.attributes().iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
                    send(conn, DELIVERY, message.body(), &attributes)?;
                }
                Ok(orphans.len() as u64)
            })
            .await?;
        if requeued > 0 {
            self.enqueued.notify_one();
        }
        Ok(requeued)
    }

    /// Waits until a message may have become visible: woken by an enqueue, or after `at_most`.
    pub async fn wait_for_messages(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.enqueued.notified()).await;
    }
}

/// A message's row: its body and its attributes.
pub(super) fn row_of(message: &Outgoing) -> (String, BTreeMap<String, String>) {
    let attributes = message
        .attributes()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    (message.body().to_owned(), attributes)
}

impl EventQueue for SqliteStore {
    async fn enqueue(&self, message: &Outgoing) -> Result<(), QueueError> {
        let (body, attributes) = row_of(message);
        self.run(move |conn| send(conn, DELIVERY, &body, &attributes))
            .await
            .map_err(queue_error)?;
        self.enqueued.notify_one();
        Ok(())
    }
}

impl Requeue for SqliteStore {
    async fn requeue(&self, body: &str, attributes: &[(&str, String)]) -> Result<(), QueueError> {
        let (body, attributes) = (body.to_owned(), attributes_of(attributes));
        self.run(move |conn| send(conn, DELIVERY, &body, &attributes))
            .await
            .map_err(queue_error)?;
        self.enqueued.notify_one();
        Ok(())
    }
}

impl DeadLetters for SqliteStore {
    async fn dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> Result<(), QueueError> {
        let (body, attributes) = (body.to_owned(), attributes_of(attributes));
        self.run(move |conn| send(conn, DLQ, &body, &attributes))
            .await
            .map_err(queue_error)
    }
}

impl QueueControl for SqliteStore {
    async fn retry_after(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        let receipt = receipt_handle.to_owned();
        self.run(move |conn| set_visible_in(conn, &receipt, delay))
            .await
            .map_err(queue_error)
    }
}

impl QueueConsumer for SqliteStore {
    async fn receive(&self, max: i32, hide: Duration) -> Result<Vec<Received>, QueueError> {
        let limit = self.max_receives;
        self.run(move |conn| receive(conn, DELIVERY, max, hide, Some(limit)))
            .await
            .map_err(queue_error)
    }

    async fn ack(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let receipt = receipt_handle.to_owned();
        self.run(move |conn| delete(conn, &receipt))
            .await
            .map_err(queue_error)
    }
}

impl DeadLetterSource for SqliteStore {
    async fn receive(&self, max: i32, hide: Duration) -> Result<Vec<Received>, QueueError> {
        self.run(move |conn| receive(conn, DLQ, max, hide, None))
            .await
            .map_err(queue_error)
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let receipt = receipt_handle.to_owned();
        self.run(move |conn| delete(conn, &receipt))
            .await
            .map_err(queue_error)
    }

    async fn release(&self, receipt_handle: &str) -> Result<(), QueueError> {
        let receipt = receipt_handle.to_owned();
        self.run(move |conn| set_visible_in(conn, &receipt, Duration::ZERO))
            .await
            .map_err(queue_error)
    }
}
