//! The operator commands with `--aws`, as a person runs them: the real binary against DynamoDB
//! and SQS on moto's server.

use std::process::Command;

use serde_json::Value;

use crate::helpers::dev::binary;
use crate::helpers::fixture;
use crate::helpers::pipeline::Pipeline;
use crate::helpers::recorder::Reply;
use crate::helpers::stripe;

/// Runs `plumbline args` against the pipeline's table and queues; returns its stdout.
fn plumbline_output(p: &Pipeline, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .env("PLUMBLINE_TABLE", &p.table)
        .env("PLUMBLINE_QUEUE_URL", &p.queue_url)
        .env("PLUMBLINE_DLQ_URL", &p.dlq_url)
        .output()
        .expect("run plumbline");
    assert!(
        out.status.success(),
        "plumbline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn plumbline(p: &Pipeline, args: &[&str]) -> Value {
    let out = plumbline_output(p, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("plumbline {args:?}: {e}: {out}"))
}

/// `plumbline events show --aws --json` of the Stripe fixture's event.
fn show_fixture_event(p: &Pipeline) -> Value {
    plumbline(
        p,
        &[
            "events",
            "show",
            "stripe:evt_3PqLr2F7kS1mZk0a0pRoC4s5",
            "--aws",
            "--json",
        ],
    )
}

/// While an event's first attempt is in flight, the event has no delivery record yet: the
/// entity's write holds the attempt, and `events show` says until when.
#[tokio::test]
async fn events_show_says_a_first_attempt_is_in_flight() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let event = p.receive().await;
    let (delivered, during) = p
        .deliver_while_erp_holds(event, async { show_fixture_event(&p) })
        .await;
    assert!(delivered.batch_item_failures.is_empty());
    assert!(
        during["ledger"]["delivery_held_until"].is_string(),
        "{during}"
    );
    assert_eq!(during["deliveries"], serde_json::json!([]));
    let after = show_fixture_event(&p);
    assert_eq!(after["status"], "delivered");
    assert_eq!(after["deliveries"][0]["state"], "delivered");
    assert_eq!(after["deliveries"][0]["attempts"], 1);
}

#[tokio::test]
async fn events_dlq_and_replay_work_against_aws() {
    let p = Pipeline::new().await;
    p.erp.set_default(Reply::status(400));
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    p.deliver_visible().await;

    let list = plumbline(&p, &["events", "list", "--aws", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["status"], "dead_lettered");
    assert_eq!(list[0]["event_type"], "payment.processing");

    let show = show_fixture_event(&p);
    assert_eq!(show["ledger"]["effect"], "applied");
    assert_eq!(show["deliveries"][0]["target"], "erp");
    assert_eq!(show["deliveries"][0]["state"], "failed");
    assert_eq!(show["deliveries"][0]["last_error"], "HTTP 400");

    let letters = plumbline(&p, &["dlq", "list", "--aws", "--json"]);
    assert_eq!(letters.as_array().map(Vec::len), Some(1));
    assert_eq!(
        letters[0]["event_key"],
        "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5"
    );
    assert_eq!(letters[0]["attributes"]["reason"], "HTTP 400");
    let again = plumbline(&p, &["dlq", "list", "--aws", "--json"]);
    assert_eq!(
        again.as_array().map(Vec::len),
        Some(1),
        "listing removes nothing"
    );

    p.erp.set_default(Reply::status(200));
    let report = plumbline(&p, &["replay", "--aws", "--json"]);
    assert_eq!(report["replayed"], 1);
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    let show = plumbline(
        &p,
        &[
            "events",
            "show",
            "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5",
            "--aws",
            "--json",
        ],
    );
    assert_eq!(show["deliveries"][0]["state"], "delivered");
    assert_eq!(show["status"], "delivered");
}

/// `plumbline events reprocess --aws`: a kept event that today's normalizer reads goes to the
/// delivery queue and on to its target; one the ingress quarantined today stays, with why.
#[tokio::test]
async fn events_reprocess_works_against_aws() {
    use plumbline::adapters::dynamodb::DynamoStore;
    use plumbline::contract::Timestamp;
    use plumbline::ports::{EventStatus, EventStore};

    let p = Pipeline::new().await;
    // Quarantined by today's ingress: a payment without its amount.
    let mut broken: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.processing.json")).expect("json");
    broken["data"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("amount");
    let answer = p
        .ingest(stripe(&serde_json::to_vec(&broken).expect("json")))
        .await;
    assert_eq!(answer["status"], "quarantined", "{answer}");
    // Kept by an older build, readable today.
    let raw: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    let at = Timestamp::from_unix(crate::helpers::T0).expect("time");
    let kept = crate::helpers::kept_stripe_event(
        "evt_kept_by_an_older_build",
        EventStatus::Unrouted,
        raw,
        at,
    );
    let ddb = aws_sdk_dynamodb::Client::new(&crate::helpers::aws().await);
    let store = DynamoStore::new(ddb, p.table.clone());
    store.claim(&kept).await.expect("claim");
    // The provider reused the id with another payload while the event was kept: still counted
    // after the reprocess.
    store
        .record_conflict(
            &kept.key,
            &plumbline::sources::PayloadHash::of(b"other"),
            at,
        )
        .await
        .expect("conflict");

    let run = || {
        plumbline_output(&p, &["events", "reprocess", "--aws", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .collect::<Vec<_>>()
    };
    let first = run();
    let outcome_of = |lines: &[Value], event: &str| {
        lines
            .iter()
            .find(|l| l["key"] == event)
            .map(|l| (l["outcome"].clone(), l["reason"].clone()))
    };
    assert_eq!(
        outcome_of(&first, kept.key.as_str()),
        Some((Value::from("enqueued"), Value::Null)),
        "{first:?}"
    );
    let (outcome, reason) =
        outcome_of(&first, "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5").expect("the quarantined one");
    assert_eq!(outcome, "still_quarantined");
    assert!(
        reason.as_str().is_some_and(|r| r.contains("amount")),
        "{reason}"
    );

    let (ids, failed) = p.deliver_visible().await;
    assert_eq!(
        (ids.len(), failed.len()),
        (1, 0),
        "the reprocessed event alone"
    );
    let to_erp: Vec<_> = p
        .erp
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(to_erp, ["stripe:evt_kept_by_an_older_build"]);

    let shown = plumbline(
        &p,
        &[
            "events",
            "show",
            "stripe:evt_kept_by_an_older_build",
            "--aws",
            "--json",
        ],
    );
    assert_eq!(shown["status"], "delivered", "{shown}");
    assert_eq!(shown["payload_conflicts"], 1, "{shown}");

    let second = run();
    assert_eq!(outcome_of(&second, kept.key.as_str()), None, "{second:?}");
    assert_eq!(
        second.last().map(|s| s["outcomes"].clone()),
        Some(serde_json::json!({ "still_quarantined": 1 }))
    );
}
