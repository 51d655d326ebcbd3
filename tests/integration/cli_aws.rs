//! The operator commands with `--aws`, as a person runs them: the real binary against DynamoDB
//! and SQS on moto's server.

use std::process::Command;

use serde_json::Value;

use crate::helpers::dev::binary;
use crate::helpers::fixture;
use crate::helpers::pipeline::Pipeline;
use crate::helpers::recorder::Reply;
use crate::helpers::stripe;

fn plumbline(p: &Pipeline, args: &[&str]) -> Value {
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
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "plumbline {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
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
