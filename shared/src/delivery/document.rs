use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::contract::{EntityKind, Envelope};
use crate::ledger::{Effect, Entity};

/// What a target receives: the event, and the entity as the ledger sees it after the event, so
/// a late or out-of-order event can never make a target regress.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Document {
    pub event: Envelope,
    pub entity: EntityView,
    /// What the event did to the entity (`applied`, or `late`: the state shown is newer).
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct EntityView {
    pub kind: EntityKind,
    pub id: String,
    pub version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[schemars(schema_with = "entity_fields")]
    pub fields: BTreeMap<String, Value>,
}

/// The fields as the ledger names them, so that a target's `from = "entity.fields.…"` with a
/// misspelt name is caught by `plumbline config check` rather than never sent.
fn entity_fields(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let properties: serde_json::Map<String, Value> = crate::ledger::all_field_names()
        .map(|name| (name.to_owned(), Value::Bool(true)))
        .collect();
    schemars::json_schema!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    })
}

impl Document {
    pub fn new(event: Envelope, entity: &Entity, effect: Effect) -> Self {
        let view = EntityView {
            kind: entity.kind,
            id: entity.id.clone(),
            version: entity.version,
            state: entity.state.clone(),
            fields: entity
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
        };
        Self {
            event,
            entity: view,
            effect,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a document always serializes")
    }
}
