//! HubSpot CRM (v3 objects API): contacts upserted by email (or another unique property), deals
//! for orders and payments upserted by a unique deal property, stage from the ledger's state.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use super::{classify, transport};
use crate::config::{HubspotSettings, SecretResolver, TargetConfig};
use crate::contract::EntityKind;
use crate::delivery::{Document, mapping};
use crate::ports::TargetError;

/// HubSpot's burst limit is a rolling 10-second window: a 429 without `Retry-After` waits it out.
const BURST_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct HubspotTarget {
    pub(super) client: reqwest::Client,
    pub(super) token: SecretString,
    pub(super) settings: HubspotSettings,
    pub(super) fields: Vec<mapping::FieldMapping>,
}

/// One batch-upsert request: the object type's path and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    pub path: String,
    pub body: Value,
}

impl HubspotTarget {
    pub(super) fn new(
        client: reqwest::Client,
        target: &TargetConfig,
        resolver: &impl SecretResolver,
    ) -> Result<Self, (String, String)> {
        let reference = target
            .token
            .as_ref()
            .ok_or(("token".to_owned(), "missing".to_owned()))?;
        let token = resolver
            .resolve(reference)
            .map_err(|e| ("token".to_owned(), e))?;
        Ok(Self {
            client,
            token,
            settings: target.hubspot.clone(),
            fields: target.fields.clone(),
        })
    }

    pub(super) async fn deliver(
        &self,
        document: &Document,
        _idempotency_key: &str,
    ) -> Result<(), TargetError> {
        // Upserts by a unique property are idempotent by themselves: a retry writes the same values.
        let upsert = upsert_for(&self.settings, &self.fields, document)
            .map_err(|reason| TargetError::Permanent { reason })?;
        let url = format!(
            "{}{}",
            self.settings.base_url.trim_end_matches('/'),
            upsert.path
        );
        let response = self
            .client
            .post(url)
            .bearer_auth(self.token.expose_secret())
            .json(&upsert.body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        match response.status().as_u16() {
            // A conflict on an upsert means the record is already there as written.
            409 => Ok(()),
            207 => Err(TargetError::Permanent {
                reason: "HTTP 207: HubSpot rejected the record".into(),
            }),
            429 => {
                let retry_after = crate::adapters::retry_after(&response);
                let daily = response.text().await.is_ok_and(|t| t.contains("DAILY"));
                let fallback = if daily {
                    Duration::from_secs(3600)
                } else {
                    BURST_WINDOW
                };
                Err(TargetError::Retryable {
                    reason: "HTTP 429".into(),
                    retry_after: Some(retry_after.unwrap_or(fallback)),
                })
            }
            _ => classify(&response),
        }
    }
}

fn text(doc: &Value, path: &str) -> Option<String> {
    mapping::lookup(doc, path)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// What to send HubSpot for one document; `Err` names what is missing.
pub fn upsert_for(
    settings: &HubspotSettings,
    fields: &[mapping::FieldMapping],
    document: &Document,
) -> Result<Upsert, String> {
    let doc = document.to_json();
    let extra = mapping::map(&doc, fields)?;
    match document.entity.kind {
        EntityKind::Lead | EntityKind::Customer => {
            contact(settings, &doc, document.entity.kind, extra)
        }
        EntityKind::Order | EntityKind::Payment => Ok(deal(settings, &doc, document, extra)),
        EntityKind::Subscription => {
            Err("the hubspot target does not map subscription events; route them elsewhere".into())
        }
    }
}

fn merge(properties: &mut Map<String, Value>, extra: Value) {
    if let Value::Object(extra) = extra {
        properties.extend(extra);
    }
}

fn contact(
    settings: &HubspotSettings,
    doc: &Value,
    kind: EntityKind,
    extra: Value,
) -> Result<Upsert, String> {
    let mut properties = Map::new();
    if let Some(email) = text(doc, "entity.fields.email") {
        properties.insert("email".into(), Value::String(email));
    }
    if let Some(name) = text(doc, "entity.fields.name") {
        let (first, last) = name
            .split_once(' ')
            .map_or((name.as_str(), ""), |(f, l)| (f, l));
        properties.insert("firstname".into(), json!(first));
        if !last.is_empty() {
            properties.insert("lastname".into(), json!(last));
        }
    }
    if let Some(phone) = text(doc, "entity.fields.phone") {
        properties.insert("phone".into(), Value::String(phone));
    }
    if kind == EntityKind::Lead {
        properties.insert("lifecyclestage".into(), json!("lead"));
    }
    merge(&mut properties, extra);
    let id_property = settings.contact_id_property.clone();
    let id = properties
        .get(&id_property)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("contact {id_property} is missing"))?;
    Ok(Upsert {
        path: "/crm/v3/objects/contacts/batch/upsert".into(),
        body: json!({ "inputs": [{ "idProperty": id_property, "id": id, "properties": properties }] }),
    })
}

fn deal(settings: &HubspotSettings, doc: &Value, document: &Document, extra: Value) -> Upsert {
    let kind = document.entity.kind.as_str();
    let id = format!("{kind}:{}", document.entity.id);
    let title = if document.entity.kind == EntityKind::Order {
        "Order"
    } else {
        "Payment"
    };
    let mut properties = Map::new();
    properties.insert(
        "dealname".into(),
        json!(format!("{title} {}", document.entity.id)),
    );
    properties.insert("pipeline".into(), json!(settings.pipeline));
    if let Some(stage) = document
        .entity
        .state
        .as_ref()
        .and_then(|s| settings.stages.get(s))
    {
        properties.insert("dealstage".into(), json!(stage));
    }
    if let Some(amount) = mapping::lookup(doc, "entity.fields.amount")
        .and_then(|m| mapping::format_value(m, mapping::Format::Decimal).ok())
    {
        properties.insert("amount".into(), amount);
    }
    if let Some(currency) = text(doc, "entity.fields.amount.currency") {
        properties.insert("deal_currency_code".into(), json!(currency));
    }
    merge(&mut properties, extra);
    Upsert {
        path: "/crm/v3/objects/deals/batch/upsert".into(),
        body: json!({ "inputs": [{ "idProperty": settings.deal_id_property, "id": id, "properties": properties }] }),
    }
}
