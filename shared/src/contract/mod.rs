//! The event contract `plumbline.event/v1`: the envelope every accepted event is turned into.
//!
//! Compatibility rule (docs/contract/README.md): fields are only ever added, as optional; a
//! field is never renamed, retyped or removed within v1. Every fixture ever committed under
//! `docs/contract/fixtures/v1/` must keep parsing.

mod envelope;
mod ids;
mod money;
mod timestamp;

pub use envelope::{
    Customer, EntityKind, EntityRef, Envelope, EventData, LeadDetails, LineItem, Origin, Refs,
    SCHEMA_V1, Trace, Utm,
};
pub use ids::{EventId, EventType, IdError, IdempotencyKey, SourceEventId, SourceName};
pub use money::{Currency, Money, MoneyError};
pub use timestamp::Timestamp;

/// Every canonical type an envelope can carry: what the sources' normalizers map providers'
/// events to, and the corrective events reconciliation writes (`order.{state}`). A route whose
/// pattern matches none of these would never deliver anything.
pub const EVENT_TYPES: [&str; 25] = [
    "customer.created",
    "customer.updated",
    "lead.submitted",
    "order.cancelled",
    "order.created",
    "order.paid",
    "order.partially_refunded",
    "order.refunded",
    "payment.authorized",
    "payment.cancel_failed",
    "payment.canceled",
    "payment.capture_failed",
    "payment.dispute_closed",
    "payment.dispute_lost",
    "payment.dispute_won",
    "payment.disputed",
    "payment.failed",
    "payment.partially_refunded",
    "payment.processing",
    "payment.refund_created",
    "payment.refund_failed",
    "payment.refund_updated",
    "payment.refunded",
    "payment.requires_action",
    "payment.succeeded",
];

/// The JSON Schema of the envelope, as committed under `docs/contract/`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Envelope)).expect("a schema always serializes")
}
