//! The entity ledger: what plumbline believes each payment, order, customer and lead looks like,
//! built from events under two rules. **Ownership**: a field with a declared system of record is
//! written only by that system; any other write is recorded as a conflict, not applied.
//! **Precedence**: states only move forward (see [`machine`]); other fields take the value of
//! the latest occurrence. Late events are recorded in the history and change nothing.

pub mod identity;
pub mod machine;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::contract::{EntityKind, Envelope, Timestamp};

/// How many history entries an entity keeps (newest last).
pub const HISTORY_LIMIT: usize = 100;

/// One field's value and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldValue {
    pub value: Value,
    pub source: String,
    pub event_id: String,
    pub at: Timestamp,
}

/// What one event did to an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// At least one field or the state changed.
    Applied,
    /// Nothing changed: the event is older than what the entity already reflects, or repeats it.
    Late,
    /// The same person submitted the same form again within the window: merged, not delivered.
    DuplicateSubmission,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub event_id: String,
    /// The provider's id of the event: with `source`, the key of the stored event, which lets
    /// reconciliation find the envelope again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event_id: Option<String>,
    pub event_type: String,
    pub source: String,
    pub occurred_at: Timestamp,
    pub effect: Effect,
    /// Fields this event tried to write but does not own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ownership_conflicts: Vec<String>,
    /// Until when the write that applied this event holds its delivery to every routed target
    /// (the first attempt's lease, taken with the entity's write instead of on its own; a
    /// target's record on the event, once written, speaks for it instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<Timestamp>,
}

/// An entity as the ledger stores it; `version` guards every update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub kind: EntityKind,
    pub id: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_at: Option<Timestamp>,
    #[serde(default)]
    pub fields: BTreeMap<String, FieldValue>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// When the ledger first and last wrote the entity (the clock of the delivery that did):
    /// reconciliation walks entities in `updated_at` order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

impl Entity {
    pub fn new(kind: EntityKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
            version: 0,
            state: None,
            state_at: None,
            fields: BTreeMap::new(),
            history: Vec::new(),
            created_at: None,
            updated_at: None,
        }
    }

    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).map(|f| &f.value)
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(Value::as_str)
    }

    /// Marks a write at `now`, for the change index.
    pub fn touch(&mut self, now: Timestamp) {
        self.created_at.get_or_insert(now);
        self.updated_at = Some(now);
    }
}

/// The system of record per `entity.field` (from the config's `[ownership]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership(pub BTreeMap<String, String>);

impl Ownership {
    pub fn owner(&self, kind: EntityKind, field: &str) -> Option<&str> {
        self.0
            .get(&format!("{}.{field}", kind.as_str()))
            .map(String::as_str)
    }
}

/// The outcome of applying one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub entity: Entity,
    pub effect: Effect,
    pub ownership_conflicts: Vec<String>,
}

/// The fields [`fields_of`] writes for payments, orders and subscriptions.
const TRANSACTION_FIELDS: &[&str] = &[
    "amount",
    "amount_refunded",
    "order_id",
    "payment_id",
    "customer_email",
    "customer_phone",
    "customer_external_id",
    "failure_reason",
];
/// The fields [`fields_of`] writes for customers and leads.
const PARTY_FIELDS: &[&str] = &[
    "name",
    "email",
    "phone",
    "external_id",
    "form_id",
    "lead_source",
    "utm_source",
    "utm_medium",
    "utm_campaign",
];

/// Every field an entity of `kind` can hold, as [`fields_of`] names them (the state aside):
/// what `[ownership]` and a target's `entity.fields.…` can usefully name.
pub fn field_names(kind: EntityKind) -> &'static [&'static str] {
    match kind {
        EntityKind::Payment | EntityKind::Order | EntityKind::Subscription => TRANSACTION_FIELDS,
        EntityKind::Customer | EntityKind::Lead => PARTY_FIELDS,
    }
}

/// Every field an entity of any kind can hold.
pub fn all_field_names() -> impl Iterator<Item = &'static str> {
    TRANSACTION_FIELDS.iter().chain(PARTY_FIELDS).copied()
}

/// The fields an event writes, by entity kind: canonical names ([`field_names`]), documented
/// in docs/ledger.md.
pub fn fields_of(envelope: &Envelope) -> BTreeMap<&'static str, Value> {
    let d = &envelope.data;
    let r = &envelope.entity.refs;
    let mut out = BTreeMap::new();
    let mut put = |name: &'static str, value: Option<Value>| {
        if let Some(v) = value {
            out.insert(name, v);
        }
    };
    let text = |s: &Option<String>| s.as_ref().map(|s| Value::String(s.clone()));
    let json = |v: &Option<crate::contract::Money>| {
        v.as_ref()
            .map(|m| serde_json::to_value(m).expect("money serializes"))
    };
    match envelope.entity.kind {
        EntityKind::Payment | EntityKind::Order | EntityKind::Subscription => {
            put("amount", json(&d.amount));
            put("amount_refunded", json(&d.amount_refunded));
            put("order_id", text(&r.order_id));
            put("payment_id", text(&r.payment_id));
            put(
                "customer_email",
                r.customer_email
                    .as_deref()
                    .and_then(identity::normalize_email)
                    .map(Value::String),
            );
            put(
                "customer_phone",
                r.customer_phone
                    .as_deref()
                    .and_then(identity::normalize_phone)
                    .map(Value::String),
            );
            put("customer_external_id", text(&r.customer_external_id));
            put("failure_reason", text(&d.failure_reason));
        }
        EntityKind::Customer | EntityKind::Lead => {
            let c = d.customer.clone().unwrap_or_default();
            put("name", text(&c.name));
            put(
                "email",
                c.email
                    .as_deref()
                    .and_then(identity::normalize_email)
                    .map(Value::String),
            );
            put(
                "phone",
                c.phone
                    .as_deref()
                    .and_then(identity::normalize_phone)
                    .map(Value::String),
            );
            put("external_id", text(&c.external_id));
            if let Some(lead) = &d.lead {
                put("form_id", text(&lead.form_id));
                put("lead_source", text(&lead.lead_source));
                put("utm_source", text(&lead.utm.source));
                put("utm_medium", text(&lead.utm.medium));
                put("utm_campaign", text(&lead.utm.campaign));
            }
        }
    }
    out
}

/// How far past its receipt an event's occurrence time is believed when events are ordered.
/// A sender whose clock runs fast (a website's server, say) stamps its events ahead of time,
/// and ordered by that time one event would hold the fields it writes against every event
/// that really came after it, until the clock caught up.
pub const MAX_AHEAD_SECS: i64 = 300;

/// The time `envelope` is ordered by: when it occurred, but no later than
/// [`MAX_AHEAD_SECS`] after plumbline received it. The envelope keeps the time its sender
/// gave; only the ledger's ordering is bounded.
pub fn ordering_time(envelope: &Envelope) -> Timestamp {
    envelope
        .occurred_at
        .min(envelope.received_at.plus_secs(MAX_AHEAD_SECS))
}

/// Applies `envelope` to `entity` under the ownership and precedence rules. Pure.
pub fn apply(mut entity: Entity, envelope: &Envelope, ownership: &Ownership) -> Applied {
    let kind = entity.kind;
    let source = envelope.source.as_str();
    let at = ordering_time(envelope);
    let mut changed = false;
    let mut conflicts = Vec::new();
    let may_write = |field: &str, conflicts: &mut Vec<String>| match ownership.owner(kind, field) {
        Some(owner) if owner != source => {
            conflicts.push(field.to_owned());
            false
        }
        _ => true,
    };

    if let Some(state) = &envelope.data.status
        && may_write("status", &mut conflicts)
    {
        let current = entity.state.as_deref().zip(entity.state_at);
        if machine::advances(kind, current, state, at) {
            // The same state seen later moves only its time (so the result stays the maximum
            // of all events); only a new state is a change worth delivering.
            changed |= entity.state.as_deref() != Some(state.as_str());
            entity.state = Some(state.clone());
            entity.state_at = Some(at);
        }
    }
    for (name, value) in fields_of(envelope) {
        if !may_write(name, &mut conflicts) {
            continue;
        }
        let newer = entity
            .fields
            .get(name)
            .is_none_or(|f| at >= f.at && f.value != value);
        if newer {
            let field = FieldValue {
                value,
                source: source.to_owned(),
                event_id: envelope.id.to_string(),
                at,
            };
            entity.fields.insert(name.to_owned(), field);
            changed = true;
        }
    }
    let effect = if changed {
        Effect::Applied
    } else {
        Effect::Late
    };
    record(&mut entity, envelope, effect, conflicts.clone());
    Applied {
        entity,
        effect,
        ownership_conflicts: conflicts,
    }
}

/// Records a second submission of the same form by the same person, without changing anything.
pub fn merge_duplicate_submission(mut entity: Entity, envelope: &Envelope) -> Applied {
    record(
        &mut entity,
        envelope,
        Effect::DuplicateSubmission,
        Vec::new(),
    );
    Applied {
        entity,
        effect: Effect::DuplicateSubmission,
        ownership_conflicts: Vec::new(),
    }
}

fn record(
    entity: &mut Entity,
    envelope: &Envelope,
    effect: Effect,
    ownership_conflicts: Vec<String>,
) {
    entity.history.push(HistoryEntry {
        event_id: envelope.id.to_string(),
        source_event_id: Some(envelope.source_event_id.to_string()),
        event_type: envelope.event_type.to_string(),
        source: envelope.source.to_string(),
        occurred_at: envelope.occurred_at,
        effect,
        ownership_conflicts,
        held_until: None,
    });
    if entity.history.len() > HISTORY_LIMIT {
        let excess = entity.history.len() - HISTORY_LIMIT;
        entity.history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{
        EntityRef, EventData, EventId, IdempotencyKey, Money, Origin, Refs, SCHEMA_V1, Trace,
    };

    fn event(source: &str, event_type: &str, status: Option<&str>, at: i64) -> Envelope {
        let now = Timestamp::from_unix(1_700_000_000 + at).expect("in range");
        let source_name = crate::contract::SourceName::try_from(source).expect("name");
        let id = crate::contract::SourceEventId::try_from(format!("evt_{at}")).expect("id");
        Envelope {
            schema: SCHEMA_V1.into(),
            id: EventId::generate(now),
            idempotency_key: IdempotencyKey::for_event(&source_name, &id),
            source: source_name,
            source_event_id: id,
            event_type: event_type.try_into().expect("type"),
            source_type: event_type.into(),
            occurred_at: now,
            received_at: now,
            entity: EntityRef {
                kind: EntityKind::Payment,
                id: "pi_1".into(),
                refs: Refs::default(),
            },
            data: EventData {
                status: status.map(Into::into),
                amount: Some(Money::new(2000, "USD".try_into().expect("cur"))),
                ..EventData::default()
            },
            trace: Trace {
                request_id: None,
                origin: Origin::Webhook,
            },
        }
    }

    /// An event stamped an hour ahead by a fast clock is ordered as if it occurred at most
    /// five minutes after its receipt: an event that really came after that still writes its
    /// fields and its state. The envelope's own time is kept in the history.
    #[test]
    fn a_time_from_a_fast_clock_does_not_hold_later_events_off() {
        let own = Ownership::default();
        let mut ahead = event("site", "payment.failed", Some("failed"), 0);
        ahead.occurred_at = ahead.received_at.plus_secs(3_600);
        ahead.data.failure_reason = Some("card_declined".into());
        let first = apply(Entity::new(EntityKind::Payment, "pi_1"), &ahead, &own);
        assert_eq!(
            first.entity.state_at,
            Some(ahead.received_at.plus_secs(MAX_AHEAD_SECS))
        );
        assert_eq!(first.entity.history[0].occurred_at, ahead.occurred_at);

        // Ten minutes after the first was received: later than its bounded time, though
        // earlier than the time it claimed.
        let mut later = event("stripe", "payment.authorized", Some("authorized"), 600);
        later.data.failure_reason = Some("retried".into());
        let second = apply(first.entity, &later, &own);
        assert_eq!(second.effect, Effect::Applied);
        assert_eq!(second.entity.state.as_deref(), Some("authorized"));
        assert_eq!(
            second.entity.fields["failure_reason"].value,
            serde_json::json!("retried")
        );

        // Arrival order does not matter: the other way round ends the same.
        let reversed = apply(
            apply(Entity::new(EntityKind::Payment, "pi_1"), &later, &own).entity,
            &ahead,
            &own,
        );
        assert_eq!(reversed.effect, Effect::Late);
        assert_eq!(reversed.entity.state, second.entity.state);
        assert_eq!(
            reversed.entity.fields["failure_reason"].value,
            serde_json::json!("retried")
        );
    }

    #[test]
    fn a_late_event_is_recorded_but_changes_nothing() {
        let own = Ownership::default();
        let e = apply(
            Entity::new(EntityKind::Payment, "pi_1"),
            &event("stripe", "payment.succeeded", Some("succeeded"), 10),
            &own,
        );
        assert_eq!(e.effect, Effect::Applied);
        let late = apply(
            e.entity,
            &event("stripe", "payment.processing", Some("processing"), 5),
            &own,
        );
        assert_eq!(late.effect, Effect::Late);
        assert_eq!(late.entity.state.as_deref(), Some("succeeded"));
        assert_eq!(late.entity.history.len(), 2);
        assert_eq!(late.entity.history[1].effect, Effect::Late);
    }

    #[test]
    fn a_non_owner_never_writes_an_owned_field() {
        let own = Ownership([("payment.status".to_owned(), "stripe".to_owned())].into());
        let e = apply(
            Entity::new(EntityKind::Payment, "pi_1"),
            &event("stripe", "payment.succeeded", Some("succeeded"), 1),
            &own,
        );
        let other = apply(
            e.entity,
            &event("site", "payment.refunded", Some("refunded"), 2),
            &own,
        );
        assert_eq!(other.entity.state.as_deref(), Some("succeeded"));
        assert_eq!(other.ownership_conflicts, ["status"]);
        assert_eq!(other.entity.history[1].ownership_conflicts, ["status"]);
        let owner = apply(
            other.entity,
            &event("stripe", "payment.refunded", Some("refunded"), 3),
            &own,
        );
        assert_eq!(owner.entity.state.as_deref(), Some("refunded"));
        assert!(owner.ownership_conflicts.is_empty());
    }

    #[test]
    fn an_event_with_every_field_set_writes_exactly_the_named_fields_of_its_kind() {
        let text = |s: &str| Some(s.to_owned());
        for kind in EntityKind::ALL {
            let mut e = event("stripe", "payment.succeeded", Some("succeeded"), 0);
            e.entity.kind = kind;
            e.entity.refs = Refs {
                order_id: text("o_1"),
                payment_id: text("pi_1"),
                customer_email: text("a@example.com"),
                customer_phone: text("+14155550100"),
                customer_external_id: text("c_1"),
            };
            e.data.amount_refunded = e.data.amount.clone();
            e.data.failure_reason = text("card_declined");
            e.data.customer = Some(crate::contract::Customer {
                external_id: text("c_1"),
                name: text("Ada"),
                email: text("a@example.com"),
                phone: text("+14155550100"),
            });
            e.data.lead = Some(crate::contract::LeadDetails {
                form_id: text("f_1"),
                lead_source: text("ads"),
                utm: crate::contract::Utm {
                    source: text("s"),
                    medium: text("m"),
                    campaign: text("c"),
                    term: text("t"),
                    content: text("x"),
                },
            });
            let written: Vec<&str> = fields_of(&e).into_keys().collect();
            let mut named = field_names(kind).to_vec();
            named.sort_unstable();
            assert_eq!(written, named, "{kind:?}");
        }
    }

    #[test]
    fn unowned_fields_take_the_latest_occurrence() {
        let own = Ownership::default();
        let mut newer = event("stripe", "payment.succeeded", Some("succeeded"), 10);
        newer.data.amount = Some(Money::new(3000, "USD".try_into().expect("cur")));
        let e = apply(Entity::new(EntityKind::Payment, "pi_1"), &newer, &own);
        let older = apply(
            e.entity,
            &event("stripe", "payment.processing", Some("processing"), 5),
            &own,
        );
        assert_eq!(
            older.entity.field("amount"),
            Some(&serde_json::json!({"amount_minor": 3000, "currency": "USD"}))
        );
    }

    #[test]
    fn history_is_bounded() {
        let own = Ownership::default();
        let mut entity = Entity::new(EntityKind::Payment, "pi_1");
        for i in 0..i64::try_from(HISTORY_LIMIT + 10).expect("small") {
            entity = apply(
                entity,
                &event("stripe", "payment.processing", Some("processing"), i),
                &own,
            )
            .entity;
        }
        assert_eq!(entity.history.len(), HISTORY_LIMIT);
    }
}
