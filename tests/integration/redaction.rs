//! No personal data or secret reaches a log line: events full of seeded values go through the
//! ingress, delivery (including a permanent failure) and reconciliation, logged by the functions'
//! own subscriber at the level they run at, and no seeded value appears in what was written.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::adapters::stripe_api::StripeEvents;
use plumbline::contract::SourceName;
use plumbline::reconcile::{Reconciler, Settings};
use plumbline::sources::SourceKind;
use plumbline::telemetry::{RecordingMetrics, Redacting, lambda_subscriber};
use serde_json::{Value, json};

use crate::helpers::pipeline::Pipeline;
use crate::helpers::recorder::Reply;
use crate::helpers::stripe_api::StripeApi;
use crate::helpers::{ADYEN_KEY, CONFIG, T0, apigw, aws, fixture, secrets, site, stripe};

const SEEDED: [&str; 7] = [
    "Zebulon Quattlebaum",
    "zebulon.quattlebaum@seeded.example",
    "+44 20 7946 0958",
    "4000056655665556",
    "Wrenfield Oyelaran",
    "wrenfield@seeded.example",
    "whsec_integration_stripe",
];

/// What a subscriber wrote, kept for the test to read.
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// The JSON lines written so far, parsed.
    pub(crate) fn json_lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().expect("lock").clone())
            .expect("utf8")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn seeded_lead() -> Vec<u8> {
    let mut doc: Value =
        serde_json::from_slice(&fixture("site/lead.submitted.json")).expect("json");
    doc["data"]["name"] = json!(SEEDED[0]);
    doc["data"]["email"] = json!(SEEDED[1]);
    doc["data"]["phone"] = json!(SEEDED[2]);
    doc["data"]["message"] = json!(format!("card {} please call", SEEDED[3]));
    serde_json::to_vec(&doc).expect("json")
}

fn seeded_payment(id: &str) -> Value {
    let mut doc: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    doc["id"] = json!(id);
    doc["data"]["object"]["receipt_email"] = json!(SEEDED[5]);
    doc["data"]["object"]["shipping"] = json!({"name": SEEDED[4], "phone": SEEDED[2]});
    doc
}

#[tokio::test]
async fn no_seeded_personal_data_or_secret_reaches_a_log_line() {
    assert_no_seeded_value_in(&seeded_flows_logged_at("info").await);
}

/// What an operator turns on to see into a failure: plumbline's own lines at trace, the SDK's
/// and the HTTP clients' at debug (at trace they write whole requests and responses). Still no
/// seeded value.
#[tokio::test]
async fn nor_at_trace_level() {
    let logs = seeded_flows_logged_at("TRACE").await;
    assert!(
        logs.lines()
            .filter(|l| l.contains("\"level\":\"DEBUG\""))
            .count()
            >= 10,
        "the dependencies' debug lines were written:\n{logs}"
    );
    assert_no_seeded_value_in(&logs);
}

/// A secret whose shape no pattern knows (an Adyen HMAC key: hex), resolved from the
/// configuration as a function resolves its own at cold start: a line that quotes it by
/// mistake, in an error's text or escaped in its `Debug` form, has it replaced.
#[test]
fn a_resolved_secret_of_any_shape_never_reaches_a_log_line() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(lambda_subscriber(
        "info",
        false,
        Redacting(capture.clone()),
    ));
    let config = plumbline::config::Config::parse(CONFIG).expect("config");
    config
        .verifiers(&secrets())
        .expect("the sources' secrets resolve");
    tracing::warn!(
        error = %format!("HMAC check with key {ADYEN_KEY} failed"),
        "a line that quotes a secret"
    );
    tracing::warn!(
        error = ?format!(r#"{{"hmacKey":"{ADYEN_KEY}"}}"#),
        "a line that quotes it escaped"
    );
    let lines = capture.json_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        let text = line.to_string();
        assert!(!text.contains(ADYEN_KEY), "{text}");
        assert!(
            line["error"]
                .as_str()
                .is_some_and(|e| e.contains("[secret]")),
            "{text}"
        );
    }
}

fn assert_no_seeded_value_in(logs: &str) {
    assert!(logs.lines().count() >= 8, "the flows were logged:\n{logs}");
    assert!(
        logs.contains("\"message\":\"dead-lettered\"") && logs.contains("request refused"),
        "failure paths were logged:\n{logs}"
    );
    for value in SEEDED {
        if let Some(at) = logs.find(value) {
            let line = logs[..at].rfind('\n').map_or(0, |n| n + 1);
            let end = logs[at..].find('\n').map_or(logs.len(), |n| at + n);
            panic!("{value} appeared in a log line:\n{}", &logs[line..end]);
        }
    }
    assert!(!logs.contains("rk_test_seeded"), "the API key appeared");
}

/// The ingress, delivery and reconciliation flows on seeded data, logged by the functions' own
/// subscriber at `level`: what it wrote.
pub(crate) async fn seeded_flows_logged_at(level: &str) -> String {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(lambda_subscriber(
        level,
        false,
        Redacting(capture.clone()),
    ));

    let p = Pipeline::new().await;
    p.crm.set_default(Reply::status(400));
    // Ingress: accepted, refused (bad signature, with the body full of data), quarantined.
    p.ingest(site("msg_seeded", &seeded_lead())).await;
    p.ingest(stripe(
        &serde_json::to_vec(&seeded_payment("evt_seeded")).expect("json"),
    ))
    .await;
    let forged = apigw(
        "POST",
        "stripe",
        &[("Stripe-Signature", format!("t={T0},v1={}", "ab".repeat(32)))],
        &seeded_lead(),
    );
    assert_eq!(
        plumbline_ingress::handle(&p.ingress, forged).await.status(),
        401
    );
    let mut broken = seeded_payment("evt_broken");
    broken["data"]["object"]["amount"] = json!("not money");
    p.ingest(stripe(&serde_json::to_vec(&broken).expect("json")))
        .await;
    // Delivery: the ERP takes the payment, the CRM refuses the lead for good.
    p.deliver_visible().await;
    // Reconciliation: a missed payment from the provider's list.
    let api = StripeApi::start(vec![seeded_payment("evt_missed")]).await;
    let aws = aws().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let providers = BTreeMap::from([(
        SourceName::try_from("stripe").expect("name"),
        (
            SourceKind::Stripe,
            StripeEvents::new(Some(&api.url), "rk_test_seeded".to_owned().into()).expect("client"),
        ),
    )]);
    let settings = Settings::default();
    let reconciler = Reconciler::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), p.table.clone()),
        SqsQueue::new(sqs.clone(), p.queue_url.clone()),
        SqsDeadLetters::new(sqs, p.dlq_url.clone()),
        providers,
        p.clock.clone(),
        RecordingMetrics::default(),
        settings,
    );
    assert_eq!(
        reconciler
            .run(Instant::now() + Duration::from_secs(30))
            .await
            .checks["missed_webhooks"]
            .repaired,
        1
    );
    p.deliver_visible().await;

    String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf8")
}
