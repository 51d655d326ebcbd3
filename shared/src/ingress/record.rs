use crate::contract::{
    Envelope, EventId, IdempotencyKey, SCHEMA_V1, SourceEventId, SourceName, Timestamp, Trace,
};
use crate::ports::{EventKey, EventRecord, EventStatus};
use crate::sources::{Normalized, NormalizedEvent, SourceEvent};

/// The record a verified event is claimed as: an envelope for events that normalized, the
/// provider's payload (and the reason) for the rest. Pure: `now` and the trace come in.
pub fn build_record(
    source: &SourceName,
    event: SourceEvent,
    now: Timestamp,
    trace: Trace,
    retention_days: i64,
) -> EventRecord {
    let event_id = EventId::generate(now);
    let key = EventKey::new(source, &event.source_event_id);
    let (status, envelope, raw, reason) = match event.outcome {
        Normalized::Event(n) => {
            let envelope = envelope_of(
                source,
                &event.source_event_id,
                &event.source_type,
                *n,
                event_id.clone(),
                now,
                trace,
            );
            (EventStatus::Received, Some(envelope), None, None)
        }
        Normalized::Unrouted => (EventStatus::Unrouted, None, event.payload, None),
        Normalized::Quarantined(reason) => {
            (EventStatus::Quarantined, None, event.payload, Some(reason))
        }
    };
    EventRecord {
        key,
        event_id,
        source: source.clone(),
        source_event_id: event.source_event_id,
        source_type: event.source_type,
        status,
        payload_hash: event.payload_hash,
        claimed_at: now,
        received_at: now,
        expires_at: now.plus_secs(retention_days * 86_400),
        envelope,
        header_time: event.header_time.filter(|_| raw.is_some()),
        raw,
        reason,
        requeues: 0,
    }
}

/// The envelope of a normalized event, as plumbline's event `event_id` received at
/// `received_at`.
pub fn envelope_of(
    source: &SourceName,
    source_event_id: &SourceEventId,
    source_type: &str,
    n: NormalizedEvent,
    event_id: EventId,
    received_at: Timestamp,
    trace: Trace,
) -> Envelope {
    Envelope {
        schema: SCHEMA_V1.to_owned(),
        id: event_id,
        idempotency_key: IdempotencyKey::for_event(source, source_event_id),
        source: source.clone(),
        source_event_id: source_event_id.clone(),
        event_type: n.event_type,
        source_type: source_type.to_owned(),
        occurred_at: n.occurred_at,
        received_at,
        entity: n.entity,
        data: n.data,
        trace,
    }
}
