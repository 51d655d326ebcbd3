//! Reading kept events again: an unrouted or quarantined event keeps the provider's payload,
//! so once a normalizer has learned its type or field it can go down the pipeline after all.

use tracing::{info, instrument};

use super::Outgoing;
use super::record::envelope_of;
use crate::contract::{Origin, Timestamp, Trace};
use crate::ports::{EventQueue, EventRecord, EventStatus, EventStore, QueueError, StoreError};
use crate::sources::{Normalized, SourceKind, reread};

/// What reading one kept event again came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reprocessed {
    /// It now reads into the contract: stored as `received` and enqueued.
    Enqueued,
    /// A dry run: it now reads, and would be stored and enqueued.
    WouldEnqueue,
    /// It still does not read; the reason today's normalizers give.
    StillQuarantined(String),
    /// Its type is still one no normalizer maps.
    StillUnrouted,
    /// Something changed the event between the read and the write (another run): left alone.
    Changed,
    /// Not a kept event (its status is neither quarantined nor unrouted), or no payload kept.
    NotKept,
}

impl Reprocessed {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Enqueued => "enqueued",
            Self::WouldEnqueue => "would_enqueue",
            Self::StillQuarantined(_) => "still_quarantined",
            Self::StillUnrouted => "still_unrouted",
            Self::Changed => "changed",
            Self::NotKept => "not_kept",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    #[error("the event store failed")]
    Store(#[from] StoreError),
    /// The event is stored as `received` but its message was not sent: the stuck sweep
    /// re-enqueues it once `ingress.duplicate_horizon_secs` has passed.
    #[error("the event is stored as received but its message was not sent")]
    Queue(#[from] QueueError),
}

impl ReprocessError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Queue(e) => e.is_retryable(),
        }
    }
}

/// Reads `record`, a kept event of a source of `kind`, with today's normalizers. One that now
/// reads is stored as `received` under the same event id, key and receipt time (origin
/// `replay`) by a write conditional on it still being kept, and then enqueued; the condition
/// makes two runs at once enqueue it once. `dry_run` says what would happen and writes
/// nothing.
#[instrument(skip_all, fields(event_id = %record.event_id, source = %record.source))]
pub async fn reprocess<S: EventStore, Q: EventQueue>(
    store: &S,
    queue: &Q,
    kind: SourceKind,
    record: &EventRecord,
    now: Timestamp,
    dry_run: bool,
) -> Result<Reprocessed, ReprocessError> {
    let (EventStatus::Quarantined | EventStatus::Unrouted, Some(raw)) =
        (record.status, &record.raw)
    else {
        return Ok(Reprocessed::NotKept);
    };
    let n = match reread(
        kind,
        &record.source_type,
        raw,
        record.header_time,
        record.received_at,
    ) {
        Normalized::Event(n) => *n,
        Normalized::Unrouted => return Ok(Reprocessed::StillUnrouted),
        Normalized::Quarantined(reason) => return Ok(Reprocessed::StillQuarantined(reason)),
    };
    if dry_run {
        return Ok(Reprocessed::WouldEnqueue);
    }
    let envelope = envelope_of(
        &record.source,
        &record.source_event_id,
        &record.source_type,
        n,
        record.event_id.clone(),
        record.received_at,
        Trace {
            request_id: None,
            origin: Origin::Replay,
        },
    );
    let promoted = EventRecord {
        status: EventStatus::Received,
        claimed_at: now,
        envelope: Some(envelope),
        raw: None,
        reason: None,
        header_time: None,
        ..record.clone()
    };
    if !store.promote(record.status, &promoted).await? {
        return Ok(Reprocessed::Changed);
    }
    let envelope = promoted.envelope.as_ref().expect("set above");
    queue
        .enqueue(&Outgoing::new(&promoted.key, envelope))
        .await?;
    info!(event_type = %envelope.event_type, was = record.status.as_str(), "kept event reprocessed");
    Ok(Reprocessed::Enqueued)
}
