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

/// The JSON Schema of the envelope, as committed under `docs/contract/`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Envelope)).expect("a schema always serializes")
}
