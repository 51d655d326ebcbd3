//! The smallest local pipeline: Stripe webhooks into an ingress on SQLite, payments routed to
//! one HTTP target, `erp`, on a recorder.

use axum::http::Method;
use plumbline::adapters::sqlite::SqliteStore;
use plumbline::config::{Config, MapSecrets};
use plumbline::ingress::{Ingress, WebhookRequest};
use plumbline::ports::SystemClock;
use plumbline::telemetry::RecordingMetrics;
use serde_json::Value;

use super::{STRIPE_SECRET, secrets, stripe_header_map};

pub type LocalIngress = Ingress<SqliteStore, SqliteStore, SystemClock, RecordingMetrics>;

const STRIPE_TO_ERP: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET"]

[targets.erp]
kind = "http"
url = "{ERP}/erp"

[[routes]]
events = ["payment.*"]
targets = ["erp"]
"#;

/// The configuration, with `erp` at `{erp_url}/erp`, and the secrets it names.
pub fn stripe_to_erp(erp_url: &str) -> (Config, MapSecrets) {
    let config = Config::parse(&STRIPE_TO_ERP.replace("{ERP}", erp_url)).expect("config");
    (config, secrets())
}

/// The ingress of `config` on `store`, on the system clock.
pub fn ingress(store: &SqliteStore, config: &Config, resolver: &MapSecrets) -> LocalIngress {
    Ingress::new(
        store.clone(),
        store.clone(),
        SystemClock,
        RecordingMetrics::default(),
        config.verifiers(resolver).expect("verifiers"),
        config.ingress,
    )
}

/// Hands `ingress` the Stripe webhook `doc`, signed at `now`; expects it taken (200).
pub async fn take_in(ingress: &LocalIngress, doc: &Value, now: i64) {
    let body = serde_json::to_vec(doc).expect("json");
    let headers = stripe_header_map(STRIPE_SECRET, now, &body);
    let result = ingress
        .handle(WebhookRequest {
            method: &Method::POST,
            source: "stripe",
            headers: &headers,
            body: &body,
            request_id: None,
        })
        .await;
    assert_eq!(plumbline::ingress::reply(&result).status, 200);
}
