//! Read models for operators (`plumbline events`, the status page), produced by both backends.

use serde::Serialize;

use crate::ports::{DeliveryRecord, EventRecord};

/// One line of `plumbline events list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub event_id: String,
    pub key: String,
    pub source: String,
    pub source_type: String,
    pub event_type: Option<String>,
    pub status: String,
    pub received_at: String,
    /// The quarantine reason or the status detail.
    pub detail: Option<String>,
    pub conflicts: u32,
}

/// What the ledger did with an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEffect {
    pub entity_kind: String,
    pub entity_id: String,
    pub effect: String,
    pub ownership_conflicts: Vec<String>,
    /// Until when the write that applied the event held its first delivery attempt: while no
    /// target has a record, that attempt is in flight (or, past this time, was lost).
    pub delivery_held_until: Option<String>,
}

/// Everything known about one event, for `plumbline events show`.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub record: EventRecord,
    pub status_detail: Option<String>,
    pub status_at: Option<String>,
    pub conflicts: u32,
    pub ledger: Option<LedgerEffect>,
    pub deliveries: Vec<DeliveryRecord>,
}
