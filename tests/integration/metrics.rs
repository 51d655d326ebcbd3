//! Each function's real binary, run under a local Lambda Runtime API against moto's server,
//! writes CloudWatch Embedded Metric Format documents on stdout: parsed here, checked against
//! the EMF specification's shape, and for the metrics each function promises (docs/operations.md).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::helpers::pipeline::{ERP_SIGNING_SECRET, sqs_event};
use crate::helpers::recorder::{Recorder, Reply};
use crate::helpers::runtime::{function_binary, invoke};
use crate::helpers::{
    STRIPE_SECRET, apigw_event, aws, create_queue, create_table, drain, fixture, stripe_headers,
    unique,
};

const CONFIG: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_WEBHOOK_SECRET"]

[targets.erp]
kind = "http"
url = "{ERP}/ok"
secret = "env:ERP_SIGNING_SECRET"

[targets.flaky]
kind = "http"
url = "{ERP}/flaky"
secret = "env:ERP_SIGNING_SECRET"

[targets.strict]
kind = "http"
url = "{ERP}/strict"
secret = "env:ERP_SIGNING_SECRET"

[[routes]]
events = ["payment.*"]
targets = ["erp", "flaky", "strict"]

[delivery]
breaker_threshold = 1

[reconcile.thresholds]
dlq_messages = 0
"#;

/// One EMF document: the metric's name, value, unit and dimensions.
#[derive(Debug, Clone)]
struct Point {
    name: String,
    value: f64,
    unit: String,
    dimensions: BTreeMap<String, String>,
}

/// Parses every EMF line, checking the structure CloudWatch requires of each.
fn emf(lines: &[String]) -> Vec<Point> {
    let mut points = Vec::new();
    for line in lines {
        let Ok(doc) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(aws) = doc.get("_aws") else { continue };
        assert!(
            aws["Timestamp"]
                .as_i64()
                .is_some_and(|t| t > 1_700_000_000_000),
            "{line}"
        );
        let directives = aws["CloudWatchMetrics"].as_array().expect("directives");
        assert_eq!(directives.len(), 1, "{line}");
        let directive = &directives[0];
        assert_eq!(directive["Namespace"], "Plumbline", "{line}");
        let mut dimensions = BTreeMap::new();
        for set in directive["Dimensions"].as_array().expect("dimension sets") {
            let set = set.as_array().expect("a dimension set");
            assert!(set.len() <= 30, "{line}");
            for name in set {
                let name = name.as_str().expect("dimension name");
                let value = doc[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} missing: {line}"));
                dimensions.insert(name.to_owned(), value.to_owned());
            }
        }
        for metric in directive["Metrics"].as_array().expect("metrics") {
            let name = metric["Name"].as_str().expect("name");
            let unit = metric["Unit"].as_str().expect("unit");
            assert!(["Count", "Milliseconds"].contains(&unit), "{line}");
            points.push(Point {
                name: name.to_owned(),
                value: doc[name]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{name} has no value: {line}")),
                unit: unit.to_owned(),
                dimensions: dimensions.clone(),
            });
        }
    }
    points
}

fn find<'a>(points: &'a [Point], name: &str, dims: &[(&str, &str)]) -> Vec<&'a Point> {
    points
        .iter()
        .filter(|p| {
            p.name == name
                && dims
                    .iter()
                    .all(|(k, v)| p.dimensions.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn names(points: &[Point]) -> BTreeSet<&str> {
    points.iter().map(|p| p.name.as_str()).collect()
}

#[tokio::test]
async fn every_function_writes_the_metrics_it_promises_as_emf() {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let table = create_table(&ddb).await;
    let queue = create_queue(&sqs).await;
    let dlq = create_queue(&sqs).await;
    let erp = Recorder::start().await;
    erp.answer_path("/flaky", Reply::status(503));
    erp.answer_path("/strict", Reply::status(422));
    let dir = std::env::temp_dir().join(unique("plumbline-emf"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("plumbline.toml");
    std::fs::write(&config, CONFIG.replace("{ERP}", &erp.url)).expect("config");
    let envs = vec![
        ("PLUMBLINE_CONFIG", config.display().to_string()),
        ("PLUMBLINE_TABLE", table.clone()),
        ("PLUMBLINE_QUEUE_URL", queue.clone()),
        ("PLUMBLINE_DLQ_URL", dlq.clone()),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET.to_owned()),
        ("ERP_SIGNING_SECRET", ERP_SIGNING_SECRET.to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
    ];

    // Ingress: one signed webhook, one with a bad signature.
    let body = fixture("stripe/payment_intent.succeeded.json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let now = i64::try_from(now).expect("in range");
    let good = apigw_event(
        "POST",
        "stripe",
        &stripe_headers(STRIPE_SECRET, now, &body),
        &body,
    );
    let bad = apigw_event(
        "POST",
        "stripe",
        &stripe_headers("whsec_wrong", now, &body),
        &body,
    );
    let (answers, lines) = invoke(&function_binary("plumbline-ingress"), &envs, &[good, bad]).await;
    assert_eq!(answers[0].body["statusCode"], 200, "{answers:?}");
    assert_eq!(answers[1].body["statusCode"], 401, "{answers:?}");
    let points = emf(&lines);
    assert_eq!(
        find(
            &points,
            "IngressEvents",
            &[("Source", "stripe"), ("Outcome", "accepted")]
        )
        .len(),
        1
    );
    assert_eq!(
        find(
            &points,
            "IngressEventTypes",
            &[("EventType", "payment.succeeded"), ("Source", "stripe")]
        )
        .len(),
        1
    );
    assert_eq!(
        find(&points, "IngressLatency", &[("Source", "stripe")]).len(),
        2
    );
    assert!(
        find(&points, "IngressLatency", &[])
            .iter()
            .all(|p| p.unit == "Milliseconds")
    );
    assert_eq!(
        find(
            &points,
            "IngressRejected",
            &[("Source", "stripe"), ("Reason", "bad_signature")]
        )
        .len(),
        1
    );
    assert_eq!(
        find(
            &points,
            "SignatureFailures",
            &[("Source", "stripe"), ("Reason", "bad_signature")]
        )
        .len(),
        1
    );

    // Delivery: the message the ingress enqueued, to three targets (ok, 503, 422).
    let messages = drain(&sqs, &queue).await;
    assert_eq!(messages.len(), 1);
    let event = serde_json::to_value(sqs_event(messages)).expect("event");
    let (answers, lines) = invoke(&function_binary("plumbline-delivery"), &envs, &[event]).await;
    assert_eq!(
        answers[0].body["batchItemFailures"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "the flaky target's retry: {answers:?}"
    );
    let points = emf(&lines);
    assert_eq!(
        find(
            &points,
            "Deliveries",
            &[("Target", "erp"), ("Outcome", "delivered")]
        )
        .len(),
        1
    );
    assert_eq!(
        find(&points, "DeliveryLatency", &[("Target", "erp")]).len(),
        1
    );
    assert_eq!(
        find(&points, "DeliveryRetries", &[("Target", "flaky")]).len(),
        1
    );
    let breaker = find(&points, "CircuitBreakerOpen", &[("Target", "flaky")]);
    assert_eq!(breaker.len(), 1);
    assert!(
        (breaker[0].value - 1.0).abs() < f64::EPSILON,
        "the circuit opened"
    );
    assert_eq!(
        find(
            &points,
            "DeadLetterSends",
            &[("Target", "strict"), ("Reason", "HTTP 422")]
        )
        .len(),
        1
    );
    assert_eq!(
        find(
            &points,
            "LedgerEffects",
            &[("Entity", "payment"), ("Effect", "applied")]
        )
        .len(),
        1
    );

    // Reconcile: a scheduled event; the dead letter breaches `dlq_messages = 0`.
    let scheduled = json!({
        "version": "0", "id": "c1", "detail-type": "Scheduled Event", "source": "aws.scheduler",
        "account": "123456789012", "time": "2026-11-23T12:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {}
    });
    let (answers, lines) =
        invoke(&function_binary("plumbline-reconcile"), &envs, &[scheduled]).await;
    assert!(!answers[0].error, "{answers:?}");
    let points = emf(&lines);
    let found = find(&points, "ReconcileFound", &[("Check", "dlq_messages")]);
    assert_eq!(found.len(), 1);
    assert!((found[0].value - 1.0).abs() < f64::EPSILON);
    assert_eq!(
        find(&points, "ReconcileBreached", &[("Check", "dlq_messages")]).len(),
        1
    );
    let all = names(&points);
    for name in [
        "ReconcileFound",
        "ReconcileRepaired",
        "ReconcileUnrepairable",
        "ReconcileBreached",
    ] {
        assert!(all.contains(name), "{name} missing from {all:?}");
    }
}
