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
    schema_of::<Envelope>()
}

fn schema_of<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema always serializes")
}

/// A document's fields as its JSON Schema names them, generated once, for checking dotted
/// paths into it (a route's `where`, a target field's `from`).
#[derive(Debug)]
pub struct SchemaPaths(serde_json::Value);

impl SchemaPaths {
    /// The paths of an envelope.
    pub fn envelope() -> Self {
        Self::of::<Envelope>()
    }

    /// The paths of any document with a schema.
    pub fn of<T: schemars::JsonSchema>() -> Self {
        Self(schema_of::<T>())
    }

    /// Whether `path` (dotted) can name a value in such a document: a property of the schema at
    /// each step, an index into an array, or anything under a value of any shape.
    pub fn has(&self, path: &str) -> bool {
        let defs = &self.0["$defs"];
        let mut node = &self.0;
        for segment in path.split('.') {
            node = resolve(node, defs);
            if node.as_bool() == Some(true) {
                // `true` is the schema of any JSON value: what lies below is the sender's.
                return !segment.is_empty();
            }
            if let Some(next) = node.get("properties").and_then(|p| p.get(segment)) {
                node = next;
            } else if node.get("items").is_some() && segment.parse::<usize>().is_ok() {
                node = &node["items"];
            } else if let Some(open) = node
                .get("additionalProperties")
                .filter(|a| a.is_object() || a.as_bool() == Some(true))
                .filter(|_| !segment.is_empty())
            {
                node = open;
            } else {
                return false;
            }
        }
        true
    }
}

/// The schema a node stands for: through `$ref`, and past the `null` of an optional value.
fn resolve<'a>(
    mut node: &'a serde_json::Value,
    defs: &'a serde_json::Value,
) -> &'a serde_json::Value {
    loop {
        let referenced = node
            .get("$ref")
            .and_then(serde_json::Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"));
        let variant = node
            .get("anyOf")
            .or_else(|| node.get("allOf"))
            .and_then(serde_json::Value::as_array)
            .and_then(|vs| {
                vs.iter()
                    .find(|v| v.get("type").and_then(serde_json::Value::as_str) != Some("null"))
            });
        match (referenced, variant) {
            (Some(name), _) => node = &defs[name],
            (None, Some(v)) => node = v,
            (None, None) => return node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path to a value in the committed sample envelopes is one the schema walk accepts;
    /// misspelt ones are not.
    #[test]
    fn every_path_of_the_sample_envelopes_is_a_path_of_the_schema() {
        fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&path, v, out);
                    }
                }
                serde_json::Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        leaves(&format!("{prefix}.{i}"), v, out);
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/contract/fixtures/v1");
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).expect("fixtures") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("fixture");
            let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            leaves("", &doc, &mut paths);
        }
        assert!(paths.len() > 40, "{paths:?}");
        let fields = SchemaPaths::envelope();
        for path in &paths {
            assert!(fields.has(path), "{path}");
        }
        for wrong in [
            "data.currency",
            "entity.ref.order_id",
            "amount",
            "data.amount.currency.x",
        ] {
            assert!(!fields.has(wrong), "{wrong}");
        }
    }
}
