//! Event rows: the ingress's claim and the status delivery leaves them in.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{Cached, SqliteStore, queue, sql_error};
use crate::contract::{EventId, SourceEventId, SourceName, Timestamp};
use crate::ingress::{IngressError, Outgoing, claim_then_enqueue};
use crate::ports::{Claim, EventKey, EventRecord, EventStatus, EventStore, Intake, StoreError};
use crate::sources::PayloadHash;

const COLUMNS: &str = "key, event_id, source, source_event_id, source_type, status, payload_hash, claimed_at, \
                       received_at, expires_at, envelope, raw, reason, header_time, requeues";

fn status_of(text: &str) -> Option<EventStatus> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
}

pub(super) fn record_of(row: &Row<'_>) -> rusqlite::Result<Result<EventRecord, StoreError>> {
    let key: String = row.get(0)?;
    let text = |i: usize| -> rusqlite::Result<String> { row.get(i) };
    let corrupt = |what: &str| StoreError::Corrupt(format!("{key}: {what}"));
    let (event_id, source, source_event_id, source_type, status, hash, claimed_at, received_at) = (
        text(1)?,
        text(2)?,
        text(3)?,
        text(4)?,
        text(5)?,
        text(6)?,
        text(7)?,
        text(8)?,
    );
    let expires_at: i64 = row.get(9)?;
    let (envelope, raw, reason, header_time): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = (row.get(10)?, row.get(11)?, row.get(12)?, row.get(13)?);
    let requeues: i64 = row.get(14)?;
    Ok((|| {
        Ok(EventRecord {
            key: EventKey::parse(&key).ok_or_else(|| corrupt("bad key"))?,
            event_id: EventId::try_from(event_id).map_err(|_| corrupt("bad event id"))?,
            source: SourceName::try_from(source).map_err(|_| corrupt("bad source"))?,
            source_event_id: SourceEventId::try_from(source_event_id)
                .map_err(|_| corrupt("bad id"))?,
            source_type,
            status: status_of(&status).ok_or_else(|| corrupt("bad status"))?,
            payload_hash: PayloadHash::from_hex(hash),
            claimed_at: Timestamp::parse(&claimed_at).ok_or_else(|| corrupt("bad claimed_at"))?,
            received_at: Timestamp::parse(&received_at)
                .ok_or_else(|| corrupt("bad received_at"))?,
            expires_at: Timestamp::from_unix(expires_at).ok_or_else(|| corrupt("bad ttl"))?,
            envelope: envelope
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("bad envelope"))?,
            raw: raw
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("bad raw payload"))?,
            reason,
            header_time: header_time
                .map(|t| Timestamp::parse(&t).ok_or_else(|| corrupt("bad header_time")))
                .transpose()?,
            requeues: u32::try_from(requeues).map_err(|_| corrupt("bad requeues"))?,
        })
    })())
}

pub(super) fn get(conn: &Connection, key: &str) -> Result<Option<EventRecord>, StoreError> {
    conn.row(
        &format!("SELECT {COLUMNS} FROM events WHERE key = ?1"),
        [key],
        record_of,
    )
    .optional()
    .map_err(|e| sql_error(&e))?
    .transpose()
}

/// Inserts the claim unless the key is taken; then answers with the stored record.
/// `envelope_json` is the envelope already encoded, when the caller has it.
fn claim(
    conn: &Connection,
    r: &EventRecord,
    envelope_json: Option<&str>,
) -> Result<Claim, StoreError> {
    let pending = (r.status == EventStatus::Received).then(|| r.claimed_at.sort_key());
    let encoded = match envelope_json {
        None => r.envelope.as_ref().map(crate::contract::Envelope::to_json),
        Some(_) => None,
    };
    let envelope = r
        .envelope
        .as_ref()
        .and(envelope_json.or(encoded.as_deref()));
    let inserted = conn
        .exec(
            "INSERT INTO events (key, event_id, source, source_event_id, source_type, status, payload_hash, \
             claimed_at, received_at, received_ms, expires_at, event_type, envelope, raw, reason, pending_since, \
             header_time) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) ON CONFLICT (key) DO NOTHING",
            params![
                r.key.as_str(),
                r.event_id.as_str(),
                r.source.as_str(),
                r.source_event_id.as_str(),
                r.source_type,
                r.status.as_str(),
                r.payload_hash.as_str(),
                r.claimed_at.to_string(),
                r.received_at.to_string(),
                r.received_at.unix_millis(),
                r.expires_at.unix(),
                r.envelope.as_ref().map(|e| e.event_type.to_string()),
                envelope,
                r.raw.as_ref().map(ToString::to_string),
                r.reason,
                pending,
                r.header_time.map(|t| t.to_string()),
            ],
        )
        .map_err(|e| sql_error(&e))?;
    if inserted == 1 {
        return Ok(Claim::Claimed);
    }
    let existing = get(conn, r.key.as_str())?
        .ok_or_else(|| StoreError::Corrupt("claimed row vanished".into()))?;
    // This record itself: as on DynamoDB, where a retried write meets its first attempt.
    if existing.event_id == r.event_id {
        return Ok(Claim::Claimed);
    }
    Ok(Claim::Exists(Box::new(existing)))
}

/// Claim and enqueue in one operation of the writer: one savepoint, one commit. A send that
/// fails rolls the claim back with it, so no claim is ever left without its message.
impl Intake<SqliteStore> for SqliteStore {
    async fn claim_and_enqueue(
        &self,
        queue: &SqliteStore,
        record: &EventRecord,
    ) -> Result<Claim, IngressError> {
        if !self.shares_database_with(queue) {
            return claim_then_enqueue(self, queue, record).await;
        }
        // Encoded once, for the row and the message.
        let json = record
            .envelope
            .as_ref()
            .map(crate::contract::Envelope::to_json);
        let message = match (record.status, &record.envelope, &json) {
            (EventStatus::Received, Some(envelope), Some(json)) => Some(queue::row_of(
                &Outgoing::encoded(&record.key, envelope, json),
            )),
            _ => None,
        };
        let r = record.clone();
        let (claim, sent) = self
            .run(move |conn| {
                let claim = claim(conn, &r, json.as_deref())?;
                let sent = match (&claim, &message) {
                    (Claim::Claimed, Some((body, attributes))) => {
                        queue::send(conn, queue::DELIVERY, body, attributes)?;
                        true
                    }
                    _ => false,
                };
                Ok((claim, sent))
            })
            .await?;
        if sent {
            self.enqueued.notify_one();
        }
        Ok(claim)
    }
}

impl SqliteStore {
    /// Moves a `Received` claim's time (and so its place among pending claims) to `to`; given
    /// `seen`, only while the claim time is still that. False when nothing matched. Only a
    /// re-enqueue names the claim time it read, and only it counts: delivery's retry passes
    /// `None`.
    pub(super) async fn move_claim(
        &self,
        key: &EventKey,
        to: Timestamp,
        seen: Option<Timestamp>,
    ) -> Result<bool, StoreError> {
        let (key, seen) = (key.to_string(), seen.map(|t| t.to_string()));
        self.run(move |conn| {
            conn.exec(
                "UPDATE events SET claimed_at = ?3, pending_since = ?4, \
                 requeues = requeues + (?2 IS NOT NULL) \
                 WHERE key = ?1 AND status = 'received' AND (?2 IS NULL OR claimed_at = ?2)",
                params![key, seen, to.to_string(), to.sort_key()],
            )
            .map(|n| n == 1)
            .map_err(|e| sql_error(&e))
        })
        .await
    }
}

impl EventStore for SqliteStore {
    async fn claim(&self, record: &EventRecord) -> Result<Claim, StoreError> {
        let r = record.clone();
        self.run(move |conn| claim(conn, &r, None)).await
    }

    async fn release(&self, key: &EventKey, event_id: &EventId) -> Result<(), StoreError> {
        let (key, id) = (key.to_string(), event_id.to_string());
        self.run(move |conn| {
            conn.exec(
                "DELETE FROM events WHERE key = ?1 AND event_id = ?2 AND status = 'received'",
                params![key, id],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&e))
        })
        .await
    }

    async fn promote(&self, was: EventStatus, record: &EventRecord) -> Result<bool, StoreError> {
        let r = record.clone();
        self.run(move |conn| {
            let pending = (r.status == EventStatus::Received).then(|| r.claimed_at.sort_key());
            conn.exec(
                "UPDATE events SET status = ?4, claimed_at = ?5, event_type = ?6, envelope = ?7, raw = ?8, \
                 reason = ?9, pending_since = ?10, header_time = ?11 WHERE key = ?1 AND event_id = ?2 AND status = ?3",
                params![
                    r.key.as_str(),
                    r.event_id.as_str(),
                    was.as_str(),
                    r.status.as_str(),
                    r.claimed_at.to_string(),
                    r.envelope.as_ref().map(|e| e.event_type.to_string()),
                    r.envelope.as_ref().map(crate::contract::Envelope::to_json),
                    r.raw.as_ref().map(ToString::to_string),
                    r.reason,
                    pending,
                    r.header_time.map(|t| t.to_string()),
                ],
            )
            .map(|n| n == 1)
            .map_err(|e| sql_error(&e))
        })
        .await
    }

    async fn refresh_claim(
        &self,
        key: &EventKey,
        seen: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.move_claim(key, now, Some(seen)).await
    }

    async fn record_conflict(
        &self,
        key: &EventKey,
        hash: &PayloadHash,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let (key, hash) = (key.to_string(), hash.as_str().to_owned());
        self.run(move |conn| {
            conn.exec(
                "UPDATE events SET conflicts = conflicts + 1, last_conflict_hash = ?2, last_conflict_at = ?3 WHERE key = ?1",
                params![key, hash, at.to_string()],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&e))
        })
        .await
    }

    async fn get(&self, key: &EventKey) -> Result<Option<EventRecord>, StoreError> {
        let key = key.to_string();
        self.run(move |conn| get(conn, &key)).await
    }

    async fn get_many(&self, keys: &[EventKey]) -> Result<Vec<Option<EventRecord>>, StoreError> {
        let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
        self.run(move |conn| keys.iter().map(|key| get(conn, key)).collect())
            .await
    }

    async fn set_status(
        &self,
        key: &EventKey,
        status: EventStatus,
        detail: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let (key, detail) = (key.to_string(), detail.map(str::to_owned));
        self.run(move |conn| set_status(conn, &key, status, detail.as_deref(), at))
            .await
    }
}

/// The write that gives event `?1` its final status `?2`, detail `?3`, at `?4`: it leaves the
/// pending sweep. A caller may add conditions with `AND`.
pub(super) const FINAL_STATUS: &str = "UPDATE events SET status = ?2, status_detail = ?3, status_at = ?4, \
                                       pending_since = NULL WHERE key = ?1";

/// Sets an event's final status; it leaves the pending sweep.
pub(super) fn set_status(
    conn: &Connection,
    key: &str,
    status: EventStatus,
    detail: Option<&str>,
    at: Timestamp,
) -> Result<(), StoreError> {
    let n = conn
        .exec(
            FINAL_STATUS,
            params![key, status.as_str(), detail, at.to_string()],
        )
        .map_err(|e| sql_error(&e))?;
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!("{key}: no such event")))
    }
}
