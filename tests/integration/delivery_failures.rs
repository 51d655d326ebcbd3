//! Retries, dead letters, the circuit breaker and replay, against moto's server and recording
//! targets.

use std::time::Duration;

use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::contract::Timestamp;
use plumbline::delivery::replay::Filter;
use plumbline::ports::{
    DeliveryLog, DeliveryState, EventKey, EventRecord, EventStatus, EventStore, ReconcileStore,
    ReplayTally,
};
use serde_json::{Value, json};

use crate::helpers::pipeline::{CONFIG, Pipeline, TWO_TARGETS};
use crate::helpers::recorder::Reply;
use crate::helpers::{STRIPE_SECRET, T0, apigw, fixture, site, stripe, stripe_headers};

fn processing(id: &str) -> Vec<u8> {
    let mut doc: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.processing.json")).expect("json");
    doc["id"] = json!(id);
    doc["data"]["object"]["id"] = json!(format!("pi_{id}"));
    serde_json::to_vec(&doc).expect("json")
}

fn key(id: &str) -> EventKey {
    EventKey::parse(&format!("EVT#stripe#{id}")).expect("key")
}

async fn stored(store: &DynamoStore, id: &str) -> EventRecord {
    store.get(&key(id)).await.expect("get").expect("kept")
}

/// Whether the stuck sweep, with this cutoff, would find the event `id` among its claims.
async fn stuck_before(store: &DynamoStore, cutoff: Timestamp, id: &str) -> bool {
    let page = store
        .pending_before(cutoff, None, 100)
        .await
        .expect("pending");
    page.claims
        .into_iter()
        .filter_map(Result::ok)
        .any(|claim| claim.key == key(id))
}

#[tokio::test]
async fn a_500_then_success_is_one_effective_delivery_with_a_stable_key() {
    let p = Pipeline::new().await;
    p.erp.script([Reply::status(500)]);
    p.ingest(stripe(&processing("evt_retry"))).await;
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!(failed, ids, "the 500 is a batch item failure");

    // Backoff is 1 s in this config: the message comes back on its own.
    let (event, _) = p.receive_within(Duration::from_secs(10)).await;
    assert_eq!(event.records.len(), 1);
    assert_eq!(
        event.records[0]
            .attributes
            .get("ApproximateReceiveCount")
            .map(String::as_str),
        Some("2")
    );
    assert!(p.deliver(event).await.batch_item_failures.is_empty());

    let requests = p.erp.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].header("idempotency-key"),
        requests[1].header("idempotency-key")
    );
    assert_eq!(
        requests[0].header("webhook-id"),
        requests[1].header("webhook-id")
    );
    let deliveries = p
        .delivery
        .store()
        .deliveries(&key("evt_retry"))
        .await
        .expect("deliveries");
    assert_eq!(
        (deliveries[0].state, deliveries[0].attempts),
        (DeliveryState::Delivered, 2)
    );
}

/// A 429 asking for `retry_after` hides the message for at least `at_least`: the `Retry-After`,
/// not the 1 s backoff. Then it delivers.
async fn a_429_hides_the_message(id: &str, retry_after: &str, at_least: Duration) {
    let p = Pipeline::new().await;
    p.erp
        .script([Reply::status(429).with_header("retry-after", retry_after)]);
    p.ingest(stripe(&processing(id))).await;
    let (_, failed) = p.deliver_visible().await;
    assert_eq!(failed.len(), 1);
    let (event, waited) = p.receive_within(Duration::from_secs(15)).await;
    assert_eq!(event.records.len(), 1, "the message came back");
    assert!(
        waited >= at_least,
        "hidden for Retry-After {retry_after:?}, not the 1 s backoff: {waited:?}"
    );
    assert!(p.deliver(event).await.batch_item_failures.is_empty());
}

#[tokio::test]
async fn a_429_with_retry_after_sets_the_message_visibility() {
    a_429_hides_the_message("evt_429", "3", Duration::from_millis(2500)).await;
}

/// HTTP allows `Retry-After` as a date too; it is waited out the same way.
#[tokio::test]
async fn a_429_with_retry_after_as_an_http_date_sets_the_message_visibility() {
    let at = std::time::SystemTime::now() + Duration::from_secs(5);
    // The date has whole seconds: the wait is 4 to 5 s from when it was written.
    let date = httpdate::fmt_http_date(at);
    a_429_hides_the_message("evt_429_date", &date, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn a_permanent_400_goes_to_the_dead_letter_queue_with_its_reason() {
    let p = Pipeline::new().await;
    p.erp.set_default(Reply::status(400));
    p.ingest(stripe(&processing("evt_400"))).await;
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty(), "dead-lettered at once and acknowledged");
    assert_eq!(p.queue_depth().await, 0);

    let letters = p.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let attrs = letters[0].message_attributes().expect("attributes");
    let attr = |name: &str| {
        attrs
            .get(name)
            .and_then(|a| a.string_value())
            .map(str::to_owned)
    };
    assert_eq!(attr("reason").as_deref(), Some("HTTP 400"));
    assert_eq!(attr("target").as_deref(), Some("erp"));
    assert_eq!(attr("event_type").as_deref(), Some("payment.processing"));
    assert_eq!(attr("event_key").as_deref(), Some("EVT#stripe#evt_400"));
    let deliveries = p
        .delivery
        .store()
        .deliveries(&key("evt_400"))
        .await
        .expect("deliveries");
    assert_eq!(
        (deliveries[0].state, deliveries[0].last_error.as_deref()),
        (DeliveryState::Failed, Some("HTTP 400"))
    );
    assert_eq!(
        p.metrics.count(
            "Deliveries",
            &[("Target", "erp"), ("Outcome", "dead_lettered")]
        ),
        1
    );
}

#[tokio::test]
async fn a_target_still_failing_on_the_last_receive_is_dead_lettered_with_its_reason() {
    let mut p = Pipeline::new().await;
    p.delivery = p.delivery.with_max_receives(2);
    p.erp.set_default(Reply::status(503));
    p.ingest(stripe(&processing("evt_last"))).await;
    let store = p.delivery.store().clone();
    let far = Timestamp::from_unix(T0 + 86_400).expect("in range");
    let pending = || stuck_before(&store, far, "evt_last");

    let (ids, failed) = p.deliver_visible().await;
    assert_eq!(failed, ids, "the first 503 is retried");
    assert!(p.dead_letters().await.is_empty());
    assert!(pending().await, "awaiting delivery between receives");

    let (event, _) = p.receive_within(Duration::from_secs(10)).await;
    assert_eq!(event.records.len(), 1, "the message came back");
    let response = p.deliver(event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "the last receive dead-letters it and acknowledges the message"
    );
    assert_eq!(p.queue_depth().await, 0);
    let letters = p.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let attrs = letters[0].message_attributes().expect("attributes");
    let attr = |name: &str| attrs.get(name).and_then(|a| a.string_value());
    assert_eq!(attr("target"), Some("erp"));
    assert_eq!(attr("reason"), Some("HTTP 503 (gave up after 2 receives)"));
    assert_eq!(attr("event_key"), Some("EVT#stripe#evt_last"));
    // Looked at, not taken: visible again for the replay below.
    p.sqs
        .change_message_visibility()
        .queue_url(&p.dlq_url)
        .receipt_handle(letters[0].receipt_handle().expect("receipt"))
        .visibility_timeout(0)
        .send()
        .await
        .expect("release");

    let record = stored(&store, "evt_last").await;
    assert_eq!(record.status, EventStatus::DeadLettered);
    let timeline = store
        .timeline("EVT#stripe#evt_last")
        .await
        .expect("read")
        .expect("event");
    assert_eq!(
        timeline.status_detail.as_deref(),
        Some("erp: HTTP 503 (gave up after 2 receives)"),
        "why, on the event itself"
    );
    let deliveries = store
        .deliveries(&key("evt_last"))
        .await
        .expect("deliveries");
    assert_eq!(
        (deliveries[0].state, deliveries[0].last_error.as_deref()),
        (
            DeliveryState::Failed,
            Some("HTTP 503 (gave up after 2 receives)")
        )
    );
    assert!(
        !pending().await,
        "out of the stuck sweep's reach: the dead letter is the operator's to replay"
    );
    assert_eq!(
        p.metrics.count(
            "DeadLetterSends",
            &[("Target", "erp"), ("Reason", "exhausted")]
        ),
        1
    );

    // Replayed once the target is back: delivered once more, and the event is delivered.
    p.erp.set_default(Reply::status(200));
    assert_eq!(p.replay(&Filter::default(), false).await.replayed, 1);
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    assert_eq!(p.erp.count(), 3, "two refused calls, then the replay's");
    let record = stored(&store, "evt_last").await;
    assert_eq!(record.status, EventStatus::Delivered);
}

/// A target that asks for an hour (`Retry-After: 3600`): the claim counts as alive until the
/// message is due back, so neither the stuck sweep nor a duplicate after the horizon enqueues
/// the event again and calls the target early.
#[tokio::test]
async fn a_retry_keeps_the_claim_alive_until_the_message_is_due_back() {
    let p = Pipeline::new().await;
    p.erp
        .set_default(Reply::status(429).with_header("retry-after", "3600"));
    let body = processing("evt_wait");
    p.ingest(stripe(&body)).await;
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!(failed, ids, "the 429 is retried");

    let store = p.delivery.store().clone();
    let at = |s: i64| Timestamp::from_unix(T0 + s).expect("in range");
    let record = stored(&store, "evt_wait").await;
    assert_eq!(record.claimed_at, at(3600), "alive until the retry is due");
    assert_eq!(record.received_at, at(0), "the receipt stays");
    // The sweep 20 minutes on (claims before T0 + 5 min are stuck) leaves it; once the retry
    // is overdue by as much, it is found.
    assert!(!stuck_before(&store, at(1200 - 900), "evt_wait").await);
    assert!(stuck_before(&store, at(3600 + 1), "evt_wait").await);

    // A provider's duplicate 20 minutes on, past the five-minute horizon: no second message.
    p.clock.advance_secs(1200);
    let late = apigw(
        "POST",
        "stripe",
        &stripe_headers(STRIPE_SECRET, T0 + 1200, &body),
        &body,
    );
    assert_eq!(p.ingest(late).await["status"], "duplicate");
    assert_eq!(
        p.queue_depth().await,
        1,
        "only the message waiting out the hour"
    );
    assert_eq!(p.erp.count(), 1, "the target was not called early");
}

#[tokio::test]
async fn a_message_that_cannot_be_read_is_dead_lettered_with_the_reason() {
    let p = Pipeline::new().await;
    p.sqs
        .send_message()
        .queue_url(&p.queue_url)
        .message_body("{not json")
        .send()
        .await
        .expect("send");
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    let letters = p.dead_letters().await;
    assert_eq!(letters.len(), 1);
    let reason = letters[0]
        .message_attributes()
        .and_then(|a| a.get("reason"))
        .and_then(|a| a.string_value())
        .unwrap_or_default();
    assert!(reason.starts_with("undecodable_message:"), "{reason}");
}

/// One target refuses an event for good while the other must retry it. On the message's next
/// receive the refused target is not called again, the other delivers, and the event is
/// settled dead-lettered with the refusal as its detail, read from the refused target's record.
#[tokio::test]
async fn a_refusal_on_an_earlier_receive_is_the_events_detail_when_it_settles() {
    let p = Pipeline::with_config(TWO_TARGETS).await;
    p.erp.answer_path("/erp", Reply::status(422));
    p.erp.script([Reply::status(503)]);
    p.ingest(stripe(&processing("evt_split"))).await;
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!(failed, ids, "the ledger's 503 keeps the message");
    assert_eq!(p.dead_letters().await.len(), 1, "erp's refusal");

    let (event, _) = p.receive_within(Duration::from_secs(10)).await;
    assert!(p.deliver(event).await.batch_item_failures.is_empty());
    let calls = |path: &str| p.erp.requests().iter().filter(|r| r.path == path).count();
    assert_eq!(
        (calls("/erp"), calls("/ledger")),
        (1, 2),
        "erp not called again"
    );

    let store = p.delivery.store();
    assert_eq!(
        stored(store, "evt_split").await.status,
        EventStatus::DeadLettered
    );
    let timeline = store
        .timeline("EVT#stripe#evt_split")
        .await
        .expect("read")
        .expect("event");
    assert_eq!(timeline.status_detail.as_deref(), Some("erp: HTTP 422"));
}

/// Both targets refuse the event, each for its own reason: the event's detail names both, so
/// an operator replaying it knows that two targets need a look.
#[tokio::test]
async fn an_event_every_target_refuses_names_each_refusal_in_its_detail() {
    let p = Pipeline::with_config(TWO_TARGETS).await;
    p.erp.answer_path("/erp", Reply::status(422));
    p.erp.answer_path("/ledger", Reply::status(400));
    p.ingest(stripe(&processing("evt_both"))).await;
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty(), "dead-lettered at once and acknowledged");
    assert_eq!(p.dead_letters().await.len(), 2, "a letter per target");

    let store = p.delivery.store();
    assert_eq!(
        stored(store, "evt_both").await.status,
        EventStatus::DeadLettered
    );
    let timeline = store
        .timeline("EVT#stripe#evt_both")
        .await
        .expect("read")
        .expect("event");
    assert_eq!(
        timeline.status_detail.as_deref(),
        Some("erp: HTTP 422; ledger: HTTP 400")
    );
}

const MIXED: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET"]

[sources.site]
kind = "standard-webhooks"
secrets = ["env:SITE_SECRET"]

[targets.ok]
kind = "http"
url = "{ERP}/ok"

[targets.flaky]
kind = "http"
url = "{ERP}/flaky"

[targets.crm]
kind = "hubspot"
token = "env:HUBSPOT_TOKEN"
base_url = "{CRM}"

[[routes]]
events = ["payment.processing"]
targets = ["ok"]

[[routes]]
events = ["payment.succeeded"]
targets = ["flaky"]

[[routes]]
events = ["lead.*"]
targets = ["crm"]

[delivery]
backoff_base_secs = 1
backoff_cap_secs = 1
"#;

#[tokio::test]
async fn a_batch_with_mixed_outcomes_returns_exactly_the_failed_ids() {
    let p = Pipeline::with_config(MIXED).await;
    p.erp.answer_path("/flaky", Reply::status(503));
    p.crm.set_default(Reply::status(400));
    p.ingest(stripe(&processing("evt_ok"))).await;
    p.ingest(stripe(&fixture("stripe/payment_intent.succeeded.json")))
        .await;
    p.ingest(site("msg_lead_1", &fixture("site/lead.submitted.json")))
        .await;

    let event = p.receive().await;
    assert_eq!(event.records.len(), 3);
    let flaky_id = event
        .records
        .iter()
        .find(|r| {
            r.body
                .as_deref()
                .is_some_and(|b| b.contains("payment.succeeded"))
        })
        .and_then(|r| r.message_id.clone())
        .expect("the flaky one");
    let response = p.deliver(event).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(
        failed,
        [flaky_id],
        "only the retryable one stays on the queue"
    );
    assert_eq!(
        p.dead_letters().await.len(),
        1,
        "the refused lead is dead-lettered"
    );
    assert_eq!(
        p.erp.requests().iter().filter(|r| r.path == "/ok").count(),
        1
    );
}

#[tokio::test]
async fn the_circuit_opens_when_every_call_fails_and_closes_after_the_cooldown() {
    let p =
        Pipeline::with_config(&CONFIG.replace("breaker_threshold = 3", "breaker_threshold = 2"))
            .await;
    p.erp.set_default(Reply::status(503));
    for id in ["evt_cb_1", "evt_cb_2", "evt_cb_3"] {
        p.ingest(stripe(&processing(id))).await;
    }
    let event = p.receive().await;
    assert_eq!(event.records.len(), 3);
    let response = p.deliver(event.clone()).await;
    assert_eq!(response.batch_item_failures.len(), 3);
    assert_eq!(
        p.erp.count(),
        2,
        "the third call is not made: the circuit is open"
    );
    assert_eq!(
        p.metrics.count(
            "Deliveries",
            &[("Target", "erp"), ("Outcome", "circuit_opened")]
        ),
        1
    );
    assert_eq!(
        p.metrics.count(
            "Deliveries",
            &[("Target", "erp"), ("Outcome", "circuit_open")]
        ),
        1
    );

    // Still open before the cool-down ends.
    p.clock.advance_secs(10);
    p.deliver(event.clone()).await;
    assert_eq!(p.erp.count(), 2);

    // After it, one trial call goes through; it succeeds and the circuit closes.
    p.erp.set_default(Reply::status(200));
    p.clock.advance_secs(25);
    let response = p.deliver(event).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(p.erp.count(), 5);
}

#[tokio::test]
async fn replay_after_the_target_recovers_delivers_everything_exactly_once() {
    let p = Pipeline::new().await;
    p.erp.set_default(Reply::status(422));
    for id in ["evt_rp_1", "evt_rp_2"] {
        p.ingest(stripe(&processing(id))).await;
    }
    p.deliver_visible().await;
    assert_eq!(p.erp.count(), 2);

    p.erp.set_default(Reply::status(200));
    let dry = p.replay(&Filter::default(), true).await;
    assert_eq!((dry.matched, dry.replayed), (2, 0));
    assert_eq!(p.queue_depth().await, 0, "a dry run moves nothing");
    // The dry run released what it looked at: a real run right after sees every letter.
    let only_erp = Filter {
        target: Some("erp".into()),
        ..Filter::default()
    };
    let report = p.replay(&only_erp, false).await;
    assert_eq!(report.replayed, 2);
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    assert_eq!(p.erp.count(), 4, "each replayed event delivered once more");
    // Reconciliation reports the replay success rate from this tally.
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&crate::helpers::aws().await),
        p.table.clone(),
    );
    let at = |s: i64| Timestamp::from_unix(T0 + s).expect("in range");
    assert_eq!(
        store.replays_between(at(-60), at(60)).await.expect("tally"),
        (2, 0)
    );

    // A replay that re-queued but crashed before deleting leaves duplicates: still one effect.
    for id in ["evt_rp_1", "evt_rp_2"] {
        let body = json!({"key": format!("EVT#stripe#{id}")}).to_string();
        let attr = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value("1")
            .build()
            .expect("attr");
        p.sqs
            .send_message()
            .queue_url(&p.queue_url)
            .message_body(body)
            .message_attributes("replay", attr)
            .send()
            .await
            .expect("send");
    }
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    assert_eq!(p.erp.count(), 4, "nothing delivered twice");
}

#[tokio::test]
async fn a_route_filter_matches_paths_in_the_envelope() {
    let config = MIXED.replace(
        "[[routes]]\nevents = [\"payment.processing\"]\ntargets = [\"ok\"]",
        "[[routes]]\nevents = [\"payment.processing\"]\ntargets = [\"ok\"]\nwhere = { \"data.amount.currency\" = \"USD\", \"entity.kind\" = \"payment\" }\n\n[[routes]]\nevents = [\"payment.processing\"]\ntargets = [\"flaky\"]\nwhere = { \"data.amount.currency\" = \"EUR\" }",
    );
    let p = Pipeline::with_config(&config).await;
    p.ingest(stripe(&processing("evt_usd"))).await;
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    let paths: Vec<String> = p.erp.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/ok"],
        "the USD route matched; the EUR route did not"
    );
}
