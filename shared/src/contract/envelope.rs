use serde::{Deserialize, Serialize};

use super::{EventId, EventType, IdempotencyKey, Money, SourceEventId, SourceName, Timestamp};

/// The schema name every v1 envelope carries.
pub const SCHEMA_V1: &str = "plumbline.event/v1";

/// One event, as plumbline records, queues and delivers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "plumbline.event/v1")]
pub struct Envelope {
    /// Always `plumbline.event/v1` for this version.
    #[schemars(regex(pattern = r"^plumbline\.event/v1$"))]
    pub schema: String,
    /// plumbline's own id (a ULID, sortable by receive time).
    pub id: EventId,
    /// `{source}:{source_event_id}`: the same for every retry of one provider event.
    pub idempotency_key: IdempotencyKey,
    pub source: SourceName,
    pub source_event_id: SourceEventId,
    /// The canonical type, e.g. `payment.succeeded`.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The provider's own type, e.g. `payment_intent.succeeded`.
    pub source_type: String,
    /// When the provider says it happened.
    pub occurred_at: Timestamp,
    /// When plumbline accepted it.
    pub received_at: Timestamp,
    pub entity: EntityRef,
    pub data: EventData,
    pub trace: Trace,
}

/// Room for a typical envelope (about 600 bytes), so it is written without regrowing.
const TYPICAL_JSON_BYTES: usize = 1024;

impl Envelope {
    /// The envelope as JSON: what the store keeps and the queue carries.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(TYPICAL_JSON_BYTES);
        serde_json::to_writer(&mut out, self).expect("an envelope always serializes");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// Which entity an event is about, and what else it refers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EntityRef {
    pub kind: EntityKind,
    /// The entity's id in the source system (payment intent, order number, lead id, …).
    pub id: String,
    #[serde(default, skip_serializing_if = "Refs::is_empty")]
    pub refs: Refs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Payment,
    Order,
    Customer,
    Lead,
    Subscription,
}

impl EntityKind {
    pub const ALL: [Self; 5] = [
        Self::Payment,
        Self::Order,
        Self::Customer,
        Self::Lead,
        Self::Subscription,
    ];

    /// The kind [`Self::as_str`] names.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Order => "order",
            Self::Customer => "customer",
            Self::Lead => "lead",
            Self::Subscription => "subscription",
        }
    }
}

/// References to related entities, used for identifier matching and parity checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Refs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_external_id: Option<String>,
}

impl Refs {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Normalized fields. Every field is optional: each event type fills the ones it knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventData {
    /// The canonical state the event reports (payment: `succeeded`, order: `paid`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_refunded: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead: Option<LeadDetails>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub line_items: Vec<LineItem>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LeadDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_source: Option<String>,
    #[serde(default, skip_serializing_if = "Utm::is_empty")]
    pub utm: Utm,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Utm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

impl Utm {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LineItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub name: String,
    pub quantity: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_price: Option<Money>,
}

/// Where the event came from inside plumbline, for tracing a delivery back to its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Trace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Webhook,
    Reconcile,
    Replay,
}
