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
    template_resources, unique,
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

# The ERP owns the amount, so Stripe's write of it is a conflict the ledger counts.
[ownership]
"payment.amount" = "erp"

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
    /// The dimension sets CloudWatch files it under, each sorted: an alarm or a search matches
    /// a metric only under one of these exactly.
    sets: BTreeSet<Vec<String>>,
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
        let mut sets = BTreeSet::new();
        for set in directive["Dimensions"].as_array().expect("dimension sets") {
            let set = set.as_array().expect("a dimension set");
            assert!(set.len() <= 30, "{line}");
            let mut names = Vec::new();
            for name in set {
                let name = name.as_str().expect("dimension name");
                let value = doc[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} missing: {line}"));
                dimensions.insert(name.to_owned(), value.to_owned());
                names.push(name.to_owned());
            }
            names.sort();
            sets.insert(names);
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
                sets: sets.clone(),
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

/// The configuration (its targets at `erp`) written to a directory of its own, and the
/// environment a function runs with against `table`, `queue` and `dlq`: JSON logs, the
/// configuration's secrets.
fn function_env(erp: &str, table: &str, queue: &str, dlq: &str) -> Vec<(&'static str, String)> {
    let dir = std::env::temp_dir().join(unique("plumbline-emf"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("plumbline.toml");
    std::fs::write(&config, CONFIG.replace("{ERP}", erp)).expect("config");
    vec![
        ("PLUMBLINE_CONFIG", config.display().to_string()),
        ("PLUMBLINE_TABLE", table.to_owned()),
        ("PLUMBLINE_QUEUE_URL", queue.to_owned()),
        ("PLUMBLINE_DLQ_URL", dlq.to_owned()),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET.to_owned()),
        ("ERP_SIGNING_SECRET", ERP_SIGNING_SECRET.to_owned()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".to_owned()),
    ]
}

/// What the functions' binaries run against: a table, a delivery queue and a dead-letter queue
/// of their own on moto's server, and the targets' server (`erp` answers, `flaky` 503, `strict`
/// 422; it serves as long as the test's runtime), with the environment naming them.
pub(crate) struct Deployed {
    pub sqs: aws_sdk_sqs::Client,
    pub queue: String,
    pub envs: Vec<(&'static str, String)>,
}

pub(crate) async fn deployed() -> Deployed {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let table = create_table(&ddb).await;
    let queue = create_queue(&sqs).await;
    let dlq = create_queue(&sqs).await;
    let targets = Recorder::start().await;
    targets.answer_path("/flaky", Reply::status(503));
    targets.answer_path("/strict", Reply::status(422));
    let envs = function_env(&targets.url, &table, &queue, &dlq);
    Deployed { sqs, queue, envs }
}

/// An API Gateway event of a Stripe webhook `body`, signed at `now` with `secret`.
pub(crate) fn stripe_webhook(secret: &str, now: i64, body: &[u8]) -> Value {
    apigw_event("POST", "stripe", &stripe_headers(secret, now, body), body)
}

#[tokio::test]
async fn every_function_writes_the_metrics_it_promises_as_emf() {
    let Deployed { sqs, queue, envs } = deployed().await;

    // Ingress: one signed webhook, one with a bad signature. The event says it was created an
    // hour from now: a sender's clock running fast, which delivery counts.
    let now = crate::helpers::unix_now();
    let mut body: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("JSON");
    body["created"] = json!(now + 3_600);
    let body = serde_json::to_vec(&body).expect("JSON");
    let good = stripe_webhook(STRIPE_SECRET, now, &body);
    let bad = stripe_webhook("whsec_wrong", now, &body);
    // A verified event that cannot be read into the contract (no amount): kept, quarantined.
    let mut unreadable: Value = serde_json::from_slice(&body).expect("fixture JSON");
    unreadable["id"] = json!(unique("evt_unreadable"));
    unreadable["data"]["object"]
        .as_object_mut()
        .expect("data.object")
        .remove("amount");
    let unreadable = serde_json::to_vec(&unreadable).expect("JSON");
    let unreadable = apigw_event(
        "POST",
        "stripe",
        &stripe_headers(STRIPE_SECRET, now, &unreadable),
        &unreadable,
    );
    let (answers, lines) = invoke(
        &function_binary("plumbline-ingress"),
        &envs,
        &[good.clone(), bad, unreadable],
    )
    .await;
    assert_eq!(answers[0].body["statusCode"], 200, "{answers:?}");
    assert_eq!(answers[1].body["statusCode"], 401, "{answers:?}");
    assert_eq!(answers[2].body["statusCode"], 200, "{answers:?}");
    let points = emf(&lines);
    let mut published = points.clone();
    assert_eq!(
        find(
            &points,
            "IngressEvents",
            &[("Source", "stripe"), ("Outcome", "quarantined")]
        )
        .len(),
        1
    );
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
        3
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

    // An ingress whose table is gone: the webhook is refused with a 5xx for the provider to retry.
    let mut broken = envs.clone();
    broken.retain(|(k, _)| *k != "PLUMBLINE_TABLE");
    broken.push(("PLUMBLINE_TABLE", unique("no-such-table")));
    let (answers, lines) = invoke(&function_binary("plumbline-ingress"), &broken, &[good]).await;
    assert!(
        answers[0].body["statusCode"]
            .as_u64()
            .is_some_and(|s| s >= 500),
        "{answers:?}"
    );
    let points = emf(&lines);
    assert_eq!(
        find(&points, "IngressFailed", &[("Source", "stripe")]).len(),
        1,
        "{lines:?}"
    );
    published.extend(points);

    // Delivery: the message the ingress enqueued, to three targets (ok, 503, 422).
    let messages = drain(&sqs, &queue).await;
    assert_eq!(messages.len(), 1);
    let event = serde_json::to_value(sqs_event(messages)).expect("event");
    // As the template sets it: the queue's redrive count, so a last receive is known.
    let mut delivery_envs = envs.clone();
    delivery_envs.push(("PLUMBLINE_MAX_RECEIVES", "2".to_owned()));
    let (answers, lines) = invoke(
        &function_binary("plumbline-delivery"),
        &delivery_envs,
        std::slice::from_ref(&event),
    )
    .await;
    assert_eq!(
        answers[0].body["batchItemFailures"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "the flaky target's retry: {answers:?}"
    );
    let points = emf(&lines);
    published.extend(points.clone());
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
    assert_eq!(
        find(
            &points,
            "OwnershipConflicts",
            &[("Field", "payment.amount"), ("Source", "stripe")]
        )
        .len(),
        1
    );
    assert_eq!(
        find(&points, "OccurrenceAhead", &[("Source", "stripe")]).len(),
        1
    );

    // The same message's second and last receive: the target still failing is dead-lettered.
    let mut last = event;
    last["Records"][0]["attributes"]["ApproximateReceiveCount"] = "2".into();
    let (answers, lines) = invoke(
        &function_binary("plumbline-delivery"),
        &delivery_envs,
        &[last],
    )
    .await;
    assert_eq!(
        answers[0].body["batchItemFailures"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "{answers:?}"
    );
    let points = emf(&lines);
    published.extend(points.clone());
    assert_eq!(
        find(
            &points,
            "DeadLetterSends",
            &[("Target", "flaky"), ("Reason", "exhausted")]
        )
        .len(),
        1
    );

    // Reconcile: a scheduled event; the dead letters breach `dlq_messages = 0`.
    let scheduled = crate::helpers::scheduled_event();
    let (answers, lines) =
        invoke(&function_binary("plumbline-reconcile"), &envs, &[scheduled]).await;
    assert!(!answers[0].error, "{answers:?}");
    let points = emf(&lines);
    published.extend(points.clone());
    let found = find(&points, "ReconcileFound", &[("Check", "dlq_messages")]);
    assert_eq!(found.len(), 1);
    assert!((found[0].value - 2.0).abs() < f64::EPSILON, "{found:?}");
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

    // Every alarm and dashboard graph on plumbline's metrics watches one these functions
    // publish, under a dimension set CloudWatch files it under (a metric is matched only by its
    // exact set), with a dimension value they write.
    let watched = watched_in_template();
    assert!(watched.len() >= 10, "{watched:?}");
    for w in &watched {
        let names: Vec<String> = w.dimensions.iter().map(|(k, _)| k.clone()).collect();
        let matching: Vec<&Point> = published
            .iter()
            .filter(|p| p.name == w.name && p.sets.contains(&names))
            .collect();
        assert!(
            !matching.is_empty(),
            "{} watches {} by {names:?}, which no function publishes",
            w.by,
            w.name
        );
        for (k, v) in &w.dimensions {
            if let Some(v) = v {
                assert!(
                    matching.iter().any(|p| p.dimensions.get(k) == Some(v)),
                    "{} watches {} with {k}={v}, which no function wrote",
                    w.by,
                    w.name
                );
            }
        }
    }
}

/// A metric an alarm or a dashboard graph watches: its name, its dimensions' names (sorted),
/// and the value the alarm asks of each.
#[derive(Debug)]
struct Watched {
    by: String,
    name: String,
    dimensions: Vec<(String, Option<String>)>,
}

/// The template's alarms in the `Plumbline` namespace and its dashboard's searches of it.
fn watched_in_template() -> Vec<Watched> {
    let mut watched = Vec::new();
    for (logical, resource) in template_resources() {
        let by = logical.as_str().expect("a resource name").to_owned();
        let props = &resource["Properties"];
        match resource["Type"].as_str() {
            Some("AWS::CloudWatch::Alarm") if props["Namespace"].as_str() == Some("Plumbline") => {
                let dimensions = dimensions_of(&props["Dimensions"]);
                let name = props["MetricName"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{by}: no MetricName"));
                watched.push(Watched {
                    by,
                    name: name.to_owned(),
                    dimensions,
                });
            }
            Some("AWS::CloudWatch::Alarm") => {
                for metric in props["Metrics"].as_sequence().into_iter().flatten() {
                    let stat = &metric["MetricStat"]["Metric"];
                    if stat["Namespace"].as_str() == Some("Plumbline") {
                        watched.push(Watched {
                            by: format!("{by} ({})", metric["Id"].as_str().unwrap_or("?")),
                            name: stat["MetricName"].as_str().expect("MetricName").to_owned(),
                            dimensions: dimensions_of(&stat["Dimensions"]),
                        });
                    }
                    if let Some(query) = metric["Expression"].as_str()
                        && query.contains("SCHEMA(Plumbline")
                    {
                        watched.push(queried(&by, query));
                    }
                }
            }
            Some("AWS::CloudWatch::Dashboard") => {
                let body = crate::helpers::dashboard_body();
                // Log widgets (queries of the functions' log groups) are checked in
                // dashboard_logs.rs, the alarms' widget in template_ops.rs.
                let graphs = body["widgets"]
                    .as_array()
                    .expect("widgets")
                    .iter()
                    .filter(|w| w["type"] == "metric");
                for widget in graphs {
                    for row in widget["properties"]["metrics"].as_array().expect("metrics") {
                        if let Some(expression) = row[0]["expression"].as_str() {
                            watched.push(searched(&by, expression));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    watched
}

/// An alarm's `Dimensions`, sorted by name.
fn dimensions_of(list: &serde_yaml_ng::Value) -> Vec<(String, Option<String>)> {
    let mut dimensions: Vec<(String, Option<String>)> = list
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|d| {
            let name = d["Name"].as_str().expect("a dimension name");
            (name.to_owned(), d["Value"].as_str().map(str::to_owned))
        })
        .collect();
    dimensions.sort();
    dimensions
}

/// `text` split at the first `at`; the test fails naming `whole` (which `by` watches) if
/// there is none.
fn cut<'a>(text: &'a str, at: &str, by: &str, whole: &str) -> (&'a str, &'a str) {
    text.split_once(at)
        .unwrap_or_else(|| panic!("{by}: no {at:?} in {whole}"))
}

/// `Plumbline, Outcome, Target`: the namespace, then the dimensions' names, none asked a value.
fn schema_dimensions(schema: &str, by: &str, whole: &str) -> Vec<(String, Option<String>)> {
    let mut parts = schema.split(',').map(str::trim);
    assert_eq!(parts.next(), Some("Plumbline"), "{by}: {whole}");
    parts.map(|d| (d.to_owned(), None)).collect()
}

/// `SEARCH('{Plumbline,Source,Outcome} MetricName="IngressEvents"', 'Sum', 60)`: the schema's
/// dimensions, matched exactly, and the metric's name.
fn searched(by: &str, expression: &str) -> Watched {
    let (_, rest) = cut(expression, "'{", by, expression);
    let (schema, rest) = cut(rest, "}", by, expression);
    let mut dimensions = schema_dimensions(schema, by, expression);
    dimensions.sort();
    let (_, rest) = cut(rest, "MetricName=\"", by, expression);
    let (name, _) = cut(rest, "\"", by, expression);
    Watched {
        by: format!("{by} ({expression})"),
        name: name.to_owned(),
        dimensions,
    }
}

/// A Metrics Insights query, `SELECT SUM(Deliveries) FROM SCHEMA(Plumbline, Outcome, Target)
/// WHERE Outcome = 'dead_lettered' GROUP BY Target`: the schema's dimensions, matched exactly,
/// the metric's name, and the values the `WHERE` asks for.
fn queried(by: &str, query: &str) -> Watched {
    let (_, rest) = cut(query, "(", by, query);
    let (name, rest) = cut(rest, ")", by, query);
    let (_, rest) = cut(rest, "SCHEMA(", by, query);
    let (schema, rest) = cut(rest, ")", by, query);
    let mut dimensions = schema_dimensions(schema, by, query);
    if let Some((_, condition)) = rest.split_once("WHERE ") {
        let condition = condition.split(" GROUP BY").next().unwrap_or_default();
        for clause in condition.split(" AND ") {
            let (key, value) = cut(clause, "=", by, query);
            let value = value.trim().trim_matches('\'');
            let slot = dimensions
                .iter_mut()
                .find(|(k, _)| k == key.trim())
                .unwrap_or_else(|| panic!("{by}: {key} is not in the schema of {query}"));
            slot.1 = Some(value.to_owned());
        }
    }
    dimensions.sort();
    Watched {
        by: format!("{by} ({query})"),
        name: name.trim().to_owned(),
        dimensions,
    }
}

/// Lambda, told an application log level above INFO, drops the metric lines (they carry no
/// level, which it reads as INFO): a function started so says it in an error line, which Lambda
/// keeps; at INFO it says nothing of the kind.
#[tokio::test]
async fn a_function_under_a_log_level_above_info_says_its_metrics_are_dropped() {
    let aws = aws().await;
    let table = create_table(&aws_sdk_dynamodb::Client::new(&aws)).await;
    let queue = create_queue(&aws_sdk_sqs::Client::new(&aws)).await;
    let now = crate::helpers::unix_now();
    let body = fixture("stripe/payment_intent.succeeded.json");
    let webhook = apigw_event(
        "POST",
        "stripe",
        &stripe_headers(STRIPE_SECRET, now, &body),
        &body,
    );
    for (level, warned) in [("WARN", true), ("INFO", false)] {
        let mut envs = function_env("http://127.0.0.1:9", &table, &queue, &queue);
        envs.push(("AWS_LAMBDA_LOG_LEVEL", level.to_owned()));
        let (answers, lines) = invoke(
            &function_binary("plumbline-ingress"),
            &envs,
            std::slice::from_ref(&webhook),
        )
        .await;
        assert_eq!(answers.len(), 1, "{level}: {answers:?}");
        let said = lines.iter().any(|line| {
            let doc: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            doc["level"] == "ERROR"
                && doc["application_log_level"] == level
                && doc["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("drops the metric lines"))
        });
        assert_eq!(said, warned, "{level}: {lines:#?}");
    }
}
