//! The sample payloads under docs/targets/ are what the targets really send for the sample
//! events: generated here and compared, so the docs cannot drift from the code.

use plumbline::adapters::targets::hubspot_upsert;
use plumbline::config::Config;
use plumbline::contract::Envelope;
use plumbline::delivery::{Document, mapping};
use plumbline::ledger::{Entity, Ownership, apply};

use crate::helpers::repo_path;

const SAMPLE_CONFIG: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_WEBHOOK_SECRET"]

[targets.erp]
kind = "http"
url = "https://erp.example.com/plumbline"

[[targets.erp.fields]]
to = "order_number"
from = "event.entity.refs.order_id"
required = true

[[targets.erp.fields]]
to = "payment.reference"
from = "entity.id"
required = true

[[targets.erp.fields]]
to = "payment.status"
from = "entity.state"
required = true

[[targets.erp.fields]]
to = "payment.amount"
from = "entity.fields.amount"
format = "decimal"
required = true

[[targets.erp.fields]]
to = "payment.amount_cents"
from = "entity.fields.amount"
format = "minor_units"

[[targets.erp.fields]]
to = "customer.email"
from = "entity.fields.customer_email"
format = "email"

[[targets.erp.fields]]
to = "paid_on"
from = "event.occurred_at"
format = "date"

[targets.crm]
kind = "hubspot"
token = "env:HUBSPOT_TOKEN"

[[routes]]
events = ["payment.*"]
targets = ["erp", "crm"]
"#;

fn sample_document() -> Document {
    let path = repo_path("docs/contract/fixtures/v1/payment.succeeded.stripe.json");
    let envelope: Envelope =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("envelope");
    let mut applied = apply(
        Entity::new(envelope.entity.kind, &envelope.entity.id),
        &envelope,
        &Ownership::default(),
    );
    applied.entity.version = 1;
    Document::new(envelope, &applied.entity, applied.effect)
}

fn assert_doc(name: &str, actual: &serde_json::Value) {
    let path = repo_path(&format!("docs/targets/{name}"));
    let pretty = serde_json::to_string_pretty(actual).expect("json") + "\n";
    if std::env::var_os("PLUMBLINE_WRITE_SAMPLES").is_some() {
        std::fs::write(&path, &pretty).expect("write sample");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == pretty,
        "{} is out of date; regenerate with PLUMBLINE_WRITE_SAMPLES=1 tests/run\n{pretty}",
        path.display()
    );
}

#[test]
fn the_documented_http_samples_are_what_the_target_sends() {
    let config = Config::parse(SAMPLE_CONFIG).expect("config");
    let document = sample_document();
    assert_doc("http-document.sample.json", &document.to_json());
    let mapped = mapping::map(&document.to_json(), &config.targets["erp"].fields).expect("maps");
    assert_doc("http-mapped.sample.json", &mapped);
}

#[test]
fn the_documented_hubspot_sample_is_what_the_target_sends() {
    let config = Config::parse(SAMPLE_CONFIG).expect("config");
    let crm = &config.targets["crm"];
    let upsert = hubspot_upsert(&crm.hubspot, &crm.fields, &sample_document()).expect("maps");
    assert_doc(
        "hubspot-deal.sample.json",
        &serde_json::json!({ "path": upsert.path, "body": upsert.body }),
    );
}
