//! Reading HubSpot back for reconciliation: batch reads by the unique property plumbline
//! upserts by, and the contact search for lead counts.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::hubspot::{HubspotTarget, Upsert, upsert_for};
use super::{classify, transport};
use crate::contract::Timestamp;
use crate::delivery::Document;
use crate::ports::{CrmDrift, CrmLead, CrmReadBack, Target, TargetError};

/// HubSpot's batch read takes at most 100 inputs; its search pages hold at most 100 results.
const BATCH: usize = 100;
/// HubSpot's search returns at most 10,000 results per query.
const SEARCH_CAP: usize = 10_000;

/// The properties reconciliation compares, per object type; others (names, emails) may be
/// edited in the CRM by the people who own them.
const DEAL_PROPERTIES: [&str; 3] = ["dealstage", "pipeline", "amount"];
const CONTACT_PROPERTIES: [&str; 1] = ["lifecyclestage"];

/// One expected record: the object path segment, the unique property and value, and the
/// compared properties.
struct Expected {
    object: &'static str,
    id_property: String,
    id: String,
    properties: BTreeMap<String, String>,
}

fn expected(upsert: &Upsert) -> Option<Expected> {
    let object = if upsert.path.contains("/deals/") {
        "deals"
    } else {
        "contacts"
    };
    let input = upsert.body.pointer("/inputs/0")?;
    let compared: &[&str] = if object == "deals" {
        &DEAL_PROPERTIES
    } else {
        &CONTACT_PROPERTIES
    };
    let properties = compared
        .iter()
        .filter_map(|p| {
            let v = input.pointer(&format!("/properties/{p}"))?;
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            Some(((*p).to_owned(), text))
        })
        .collect();
    Some(Expected {
        object,
        id_property: input.get("idProperty")?.as_str()?.to_owned(),
        id: input.get("id")?.as_str()?.to_owned(),
        properties,
    })
}

/// Amounts compare as decimals, exactly (HubSpot answers `20` for `20.00`); everything else as
/// text.
fn same(property: &str, expected: &str, actual: &str) -> bool {
    if property == "amount" {
        return canonical_decimal(expected) == canonical_decimal(actual);
    }
    expected == actual
}

/// A decimal without trailing fractional zeros: `20.50` → `20.5`, `20.00` → `20`. No float.
fn canonical_decimal(text: &str) -> &str {
    let text = text.trim();
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// Where `actual` (the CRM's properties, `None` if it has no such record) differs from `want`.
fn compare(want: &Expected, actual: Option<&Value>) -> Vec<CrmDrift> {
    let Some(actual) = actual else {
        return vec![CrmDrift {
            field: want.id_property.clone(),
            expected: Some(want.id.clone()),
            actual: None,
        }];
    };
    want.properties
        .iter()
        .filter_map(|(property, expected)| {
            let got = actual
                .get(property)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let drifted = got.is_none_or(|got| !same(property, expected, got));
            drifted.then(|| CrmDrift {
                field: property.clone(),
                expected: Some(expected.clone()),
                actual: got.map(str::to_owned),
            })
        })
        .collect()
}

impl HubspotTarget {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, TargetError> {
        let url = format!("{}{path}", self.settings.base_url.trim_end_matches('/'));
        let response = self
            .client
            .post(url)
            .bearer_auth(self.token.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        // 207: some inputs were not found; the results hold the others.
        if response.status().as_u16() != 207 {
            classify(&response)?;
        }
        response.json().await.map_err(|_| TargetError::Retryable {
            reason: "HubSpot answered with something that is not JSON".into(),
            retry_after: None,
        })
    }

    /// The records with these unique values, by value.
    async fn read(
        &self,
        object: &str,
        id_property: &str,
        ids: &[&str],
        properties: &[&str],
    ) -> Result<BTreeMap<String, Value>, TargetError> {
        let mut found = BTreeMap::new();
        for chunk in ids.chunks(BATCH) {
            let mut wanted: Vec<&str> = properties.to_vec();
            wanted.push(id_property);
            let body = json!({
                "idProperty": id_property,
                "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                "properties": wanted,
            });
            let answer = self
                .post(&format!("/crm/v3/objects/{object}/batch/read"), &body)
                .await?;
            for result in answer["results"].as_array().into_iter().flatten() {
                let properties = &result["properties"];
                if let Some(id) = properties.get(id_property).and_then(Value::as_str) {
                    found.insert(id.to_owned(), properties.clone());
                }
            }
        }
        Ok(found)
    }

    fn lead_source_property(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.from == "entity.fields.lead_source")
            .map(|f| f.to.as_str())
    }
}

impl Target for HubspotTarget {
    async fn deliver(&self, document: &Document, idempotency_key: &str) -> Result<(), TargetError> {
        HubspotTarget::deliver(self, document, idempotency_key).await
    }
}

impl CrmReadBack for HubspotTarget {
    async fn drift(&self, documents: &[Document]) -> Result<Vec<Vec<CrmDrift>>, TargetError> {
        let wanted: Vec<Option<Expected>> = documents
            .iter()
            .map(|d| {
                upsert_for(&self.settings, &self.fields, d)
                    .ok()
                    .and_then(|u| expected(&u))
            })
            .collect();
        // One batch read per object type and unique property.
        let mut groups: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for w in wanted.iter().flatten() {
            groups
                .entry((w.object, w.id_property.as_str()))
                .or_default()
                .push(w.id.as_str());
        }
        let mut records = BTreeMap::new();
        for ((object, id_property), ids) in groups {
            let properties: &[&str] = if object == "deals" {
                &DEAL_PROPERTIES
            } else {
                &CONTACT_PROPERTIES
            };
            let found = self.read(object, id_property, &ids, properties).await?;
            records.insert(object, found);
        }
        Ok(wanted
            .iter()
            .map(|w| match w {
                // A document the target cannot map is the delivery's concern, not drift.
                None => Vec::new(),
                Some(w) => compare(w, records.get(w.object).and_then(|r| r.get(&w.id))),
            })
            .collect())
    }

    async fn contacts_created(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<CrmLead>, TargetError> {
        let lead_source = self.lead_source_property();
        let mut filters = vec![
            json!({"propertyName": "createdate", "operator": "GTE", "value": from.unix_millis().to_string()}),
            json!({"propertyName": "createdate", "operator": "LT", "value": to.unix_millis().to_string()}),
        ];
        let mut properties = vec!["email", "createdate"];
        if let Some(p) = lead_source {
            // Contacts that came in as leads carry a lead source; others were made by hand.
            filters.push(json!({"propertyName": p, "operator": "HAS_PROPERTY"}));
            properties.push(p);
        }
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        while out.len() < SEARCH_CAP {
            let mut body = json!({
                "filterGroups": [{"filters": filters}],
                "properties": properties,
                "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
                "limit": BATCH,
            });
            if let Some(a) = &after {
                body["after"] = json!(a);
            }
            let answer = self.post("/crm/v3/objects/contacts/search", &body).await?;
            for result in answer["results"].as_array().into_iter().flatten() {
                let created = result["createdAt"]
                    .as_str()
                    .or_else(|| result["properties"]["createdate"].as_str())
                    .and_then(Timestamp::parse);
                let Some(created_at) = created else { continue };
                let text = |p: &str| result["properties"][p].as_str().map(str::to_owned);
                out.push(CrmLead {
                    created_at,
                    email: text("email"),
                    lead_source: lead_source.and_then(text),
                });
            }
            match answer.pointer("/paging/next/after").and_then(Value::as_str) {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(out)
    }

    async fn existing_contacts(&self, emails: &[String]) -> Result<BTreeSet<String>, TargetError> {
        let ids: Vec<&str> = emails.iter().map(String::as_str).collect();
        let found = self.read("contacts", "email", &ids, &[]).await?;
        Ok(found.into_keys().map(|e| e.to_ascii_lowercase()).collect())
    }

    fn knows_lead_source(&self) -> bool {
        self.lead_source_property().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(properties: &[(&str, &str)]) -> Expected {
        Expected {
            object: "deals",
            id_property: "plumbline_id".into(),
            id: "payment:pi_1".into(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_missing_record_drifts_on_its_id() {
        let drift = compare(&want(&[("dealstage", "closedwon")]), None);
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].field, "plumbline_id");
        assert_eq!(drift[0].actual, None);
    }

    #[test]
    fn stage_drifts_and_amounts_compare_as_numbers() {
        let w = want(&[("dealstage", "closedwon"), ("amount", "20.00")]);
        let same = json!({"dealstage": "closedwon", "amount": "20"});
        assert!(compare(&w, Some(&same)).is_empty());
        let moved = json!({"dealstage": "appointmentscheduled", "amount": "20.00"});
        let drift = compare(&w, Some(&moved));
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].field, "dealstage");
        assert_eq!(drift[0].expected.as_deref(), Some("closedwon"));
        assert_eq!(drift[0].actual.as_deref(), Some("appointmentscheduled"));
        let cleared = json!({"dealstage": "", "amount": "21"});
        assert_eq!(compare(&w, Some(&cleared)).len(), 2);
    }
}
