//! The ingress Lambda handler against DynamoDB and SQS on moto's server.

use std::sync::Arc;

use plumbline::contract::{Envelope, SourceEventId, SourceName, Timestamp};
use plumbline::ingress::QueueMessage;
use plumbline::ports::{Claim, Clock, EventKey, EventStore};

use crate::helpers::{
    STRIPE_SECRET, Stack, T0, adyen, apigw, fixture, json, paddle, s, shopify, site, site_at,
    stripe, stripe_at, stripe_header_map, stripe_headers,
};

#[tokio::test]
async fn an_accepted_event_is_stored_and_enqueued_once() {
    let stack = Stack::new().await;
    let body = fixture("stripe/payment_intent.succeeded.json");
    let (status, answer) = stack.send(stripe(&body)).await;
    assert_eq!(status, 200, "{answer}");
    let answer = json(&answer);
    assert_eq!(answer["status"], "accepted");
    let event_id = answer["event_id"].as_str().expect("event id").to_owned();

    let items = stack.items().await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(
        s(item, "pk"),
        Some("EVT#stripe#evt_3PqLr2F7kS1mZk0a1dS8kT4e")
    );
    assert_eq!(s(item, "status"), Some("received"));
    assert_eq!(s(item, "event_id"), Some(event_id.as_str()));
    assert!(item.contains_key("expires_at"), "the TTL attribute is set");
    assert!(
        s(item, "pending_shard").is_some(),
        "a pending event is in the sparse index"
    );

    let messages = stack.messages().await;
    assert_eq!(messages.len(), 1);
    let message = QueueMessage::decode(messages[0].body().expect("body")).expect("decodes");
    assert_eq!(message.key, "EVT#stripe#evt_3PqLr2F7kS1mZk0a1dS8kT4e");
    let envelope: Envelope = message.event.expect("the envelope fits in the message");
    assert_eq!(envelope.id.as_str(), event_id);
    assert_eq!(
        envelope.idempotency_key.as_str(),
        "stripe:evt_3PqLr2F7kS1mZk0a1dS8kT4e"
    );
    assert_eq!(envelope.event_type.as_str(), "payment.succeeded");
    assert_eq!(
        envelope.trace.request_id.as_deref(),
        Some("CbY7ahQpIAMEVxw=")
    );
    let attrs = messages[0].message_attributes().expect("attributes");
    assert_eq!(
        attrs["event_type"].string_value(),
        Some("payment.succeeded")
    );
    assert_eq!(
        stack
            .metrics
            .count("IngressEvents", &[("Outcome", "accepted")]),
        1
    );
}

#[tokio::test]
async fn a_duplicate_answers_the_same_id_and_enqueues_nothing() {
    let stack = Stack::new().await;
    let body = fixture("stripe/payment_intent.succeeded.json");
    let (_, first) = stack.send(stripe(&body)).await;
    stack.clock.advance_secs(30);
    let (status, second) = stack.send(stripe(&body)).await;
    assert_eq!(status, 200);
    let (first, second) = (json(&first), json(&second));
    assert_eq!(second["status"], "duplicate");
    assert_eq!(first["event_id"], second["event_id"]);
    assert_eq!(stack.messages().await.len(), 1);
    assert_eq!(stack.items().await.len(), 1);
    assert_eq!(
        stack
            .metrics
            .count("IngressEvents", &[("Outcome", "duplicate")]),
        1
    );
}

#[tokio::test]
async fn sixteen_concurrent_copies_make_one_claim_and_one_message() {
    let stack = Arc::new(Stack::new().await);
    let body = fixture("stripe/payment_intent.succeeded.json");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let stack = Arc::clone(&stack);
            let request = stripe(&body);
            tokio::spawn(async move { stack.send(request).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
        statuses.push(json(&body)["status"].as_str().expect("status").to_owned());
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "accepted").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "duplicate").count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(stack.items().await.len(), 1);
    assert_eq!(stack.messages().await.len(), 1);
}

#[tokio::test]
async fn a_failed_enqueue_releases_the_claim_and_answers_503() {
    let healthy = Stack::new().await;
    let missing_queue = format!("{}-gone", healthy.queue_url);
    let broken = Stack::over(
        healthy.ddb.clone(),
        healthy.sqs.clone(),
        healthy.table.clone(),
        missing_queue,
    );
    let body = fixture("stripe/payment_intent.succeeded.json");

    let (status, answer) = broken.send(stripe(&body)).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(json(&answer)["error"], "queue_unavailable");
    assert!(
        !answer.contains("QueueDoesNotExist"),
        "internal detail never reaches the sender"
    );
    assert!(broken.items().await.is_empty(), "the claim was released");
    assert_eq!(
        broken
            .metrics
            .count("IngressFailed", &[("Reason", "queue_unavailable")]),
        1
    );

    // The provider's retry starts clean.
    let (status, answer) = healthy.send(stripe(&body)).await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "accepted".into())
    );
    assert_eq!(healthy.messages().await.len(), 1);
}

/// A claim whose enqueue never happened, as a crash between the two writes leaves it.
async fn crashed_claim(stack: &Stack) {
    let body = fixture("stripe/payment_intent.succeeded.json");
    let source = SourceName::try_from("stripe").expect("valid");
    let headers = stripe_header_map(STRIPE_SECRET, T0, &body);
    let event = stack
        .ingress
        .verify(&source, &headers, &body)
        .expect("verified")
        .remove(0);
    let record = stack
        .ingress
        .record(&source, event, stack.clock.now(), None);
    assert_eq!(
        record.key,
        EventKey::new(
            &source,
            &SourceEventId::try_from("evt_3PqLr2F7kS1mZk0a1dS8kT4e").expect("valid")
        )
    );
    assert_eq!(
        stack.ingress.store().claim(&record).await.expect("claim"),
        Claim::Claimed
    );
}

#[tokio::test]
async fn a_duplicate_within_the_horizon_never_enqueues_a_stale_claim() {
    let stack = Stack::new().await;
    crashed_claim(&stack).await;
    stack.clock.advance_secs(299);
    let (status, answer) = stack
        .send(stripe(&fixture("stripe/payment_intent.succeeded.json")))
        .await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "duplicate".into())
    );
    assert!(stack.messages().await.is_empty());
}

#[tokio::test]
async fn a_duplicate_after_the_horizon_re_enqueues_a_crashed_claim_once() {
    let stack = Stack::new().await;
    crashed_claim(&stack).await;
    stack.clock.advance_secs(301);
    let body = fixture("stripe/payment_intent.succeeded.json");
    // One after another: the first refreshes the claim and re-enqueues, the others find the
    // refreshed claim within its new horizon. Sent at the same moment, the refresh's condition
    // (`claimed_at` still the time the copy read) lets one of them win on DynamoDB, which
    // serializes conditional writes to an item; moto does not (its threaded server evaluates a
    // condition and writes without a lock), so there two simultaneous refreshes can both pass,
    // and a concurrent version of this test failed that way on moto.
    for _ in 0..8 {
        let (status, answer) = stack.send(stripe_at(T0 + 301, &body)).await;
        assert_eq!(
            (status, json(&answer)["status"].clone()),
            (200, "duplicate".into())
        );
    }
    let messages = stack.messages().await;
    assert_eq!(messages.len(), 1, "exactly one duplicate wins the refresh");
    assert_eq!(stack.metrics.count("IngressRequeued", &[]), 1);
    // The refreshed claim starts a new horizon.
    stack.clock.advance_secs(60);
    let _ = stack.send(stripe_at(T0 + 361, &body)).await;
    assert!(stack.messages().await.is_empty());
}

/// A claim already enqueued again `reconcile.max_requeues` times (3, the default) is not enqueued
/// once more by a duplicate: delivery never finished it, and reconciliation dead-letters it.
#[tokio::test]
async fn a_duplicate_leaves_a_claim_enqueued_max_requeues_times_to_reconciliation() {
    let stack = Stack::new().await;
    crashed_claim(&stack).await;
    let body = fixture("stripe/payment_intent.succeeded.json");
    let key = EventKey::parse("EVT#stripe#evt_3PqLr2F7kS1mZk0a1dS8kT4e").expect("key");
    let store = stack.ingress.store();
    let at = |s: i64| Timestamp::from_unix(T0 + s).expect("in range");
    for (seen, now) in [(0, 1_000), (1_000, 2_000)] {
        assert!(
            store
                .refresh_claim(&key, at(seen), at(now))
                .await
                .expect("refresh")
        );
    }
    // Two re-enqueues so far: a duplicate past the horizon makes the third.
    stack.clock.advance_secs(2_400);
    let _ = stack.send(stripe_at(T0 + 2_400, &body)).await;
    assert_eq!(stack.messages().await.len(), 1, "the third copy");
    let record = store.get(&key).await.expect("get").expect("claimed");
    assert_eq!(record.requeues, 3);

    stack.clock.advance_secs(2_400);
    let (status, answer) = stack.send(stripe_at(T0 + 4_800, &body)).await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "duplicate".into())
    );
    assert!(stack.messages().await.is_empty(), "no fourth copy");
    assert_eq!(stack.metrics.count("IngressRequeued", &[]), 1);
}

#[tokio::test]
async fn a_reused_id_with_another_payload_is_kept_as_a_conflict() {
    let stack = Stack::new().await;
    let body = fixture("stripe/payment_intent.succeeded.json");
    let _ = stack.send(stripe(&body)).await;
    // Another payment under the same event id. (A Stripe event's other copies, whatever their
    // bodies, are duplicates: its payload hash covers the event's identity.)
    let altered = String::from_utf8(body)
        .expect("utf8")
        .replace("pi_3PqLr2F7kS1mZk0a1Qw2Ey3R", "pi_someone_else")
        .replace("\"amount\": 2000", "\"amount\": 9999");
    let (status, answer) = stack.send(stripe(altered.as_bytes())).await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "conflict".into())
    );
    let items = stack.items().await;
    assert_eq!(
        items[0]
            .get("conflicts")
            .and_then(|v| v.as_n().ok())
            .map(String::as_str),
        Some("1")
    );
    assert!(s(&items[0], "last_conflict_hash").is_some());
    assert_eq!(
        stack.messages().await.len(),
        1,
        "a conflict is not delivered"
    );
    assert_eq!(
        stack
            .metrics
            .count("IngressEvents", &[("Outcome", "conflict")]),
        1
    );
}

/// Requests that must be refused, with the status and error label each gets.
fn refusals() -> Vec<(u16, &'static str, lambda_http::Request)> {
    let body = fixture("stripe/payment_intent.succeeded.json");
    let big = vec![b'x'; 65_537];
    vec![
        (
            401,
            "bad_signature",
            apigw(
                "POST",
                "stripe",
                &stripe_headers("whsec_wrong", T0, &body),
                &body,
            ),
        ),
        (
            401,
            "stale_timestamp",
            apigw(
                "POST",
                "stripe",
                &stripe_headers(STRIPE_SECRET, T0 - 301, &body),
                &body,
            ),
        ),
        (
            401,
            "future_timestamp",
            apigw(
                "POST",
                "stripe",
                &stripe_headers(STRIPE_SECRET, T0 + 301, &body),
                &body,
            ),
        ),
        (401, "missing_header", apigw("POST", "stripe", &[], &body)),
        (
            401,
            "malformed_header",
            apigw(
                "POST",
                "stripe",
                &[("Stripe-Signature", "t=x".into())],
                &body,
            ),
        ),
        (
            400,
            "malformed_body",
            apigw(
                "POST",
                "stripe",
                &stripe_headers(STRIPE_SECRET, T0, b"{not json"),
                b"{not json",
            ),
        ),
        (
            400,
            "malformed_body",
            apigw(
                "POST",
                "stripe",
                &stripe_headers(STRIPE_SECRET, T0, &[0xff, 0xfe]),
                &[0xff, 0xfe],
            ),
        ),
        (
            404,
            "unknown_source",
            apigw(
                "POST",
                "mailchimp",
                &stripe_headers(STRIPE_SECRET, T0, &body),
                &body,
            ),
        ),
        (
            413,
            "too_large",
            apigw(
                "POST",
                "stripe",
                &stripe_headers(STRIPE_SECRET, T0, &big),
                &big,
            ),
        ),
        (405, "method_not_allowed", apigw("GET", "stripe", &[], b"")),
    ]
}

#[tokio::test]
async fn refused_requests_store_nothing_and_are_counted() {
    let stack = Stack::new().await;
    let cases = refusals();
    let count = cases.len();
    for (expected, label, request) in cases {
        let (status, answer) = stack.send(request).await;
        assert_eq!(status, expected, "{label}: {answer}");
        assert_eq!(json(&answer)["error"], label);
    }
    assert!(stack.items().await.is_empty(), "nothing stored for a 4xx");
    assert!(
        stack.messages().await.is_empty(),
        "nothing enqueued for a 4xx"
    );
    assert_eq!(stack.metrics.count("IngressRejected", &[]), count as u64);
    assert_eq!(
        stack
            .metrics
            .count("IngressRejected", &[("Source", "(unknown)")]),
        1
    );
}

#[tokio::test]
async fn quarantined_and_unrouted_events_are_kept_but_not_enqueued() {
    let stack = Stack::new().await;
    let unknown = br#"{"id":"evt_unknown_1","type":"invoice.paid","created":1763900000,"data":{"object":{"id":"in_1"}}}"#;
    let (status, answer) = stack.send(stripe(unknown)).await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "unrouted".into())
    );
    let broken = br#"{"id":"evt_broken_1","type":"payment_intent.succeeded","created":1763900000,"data":{"object":{"id":"pi_1","currency":"usd"}}}"#;
    let (status, answer) = stack.send(stripe(broken)).await;
    let answer = json(&answer);
    assert_eq!(
        (status, answer["status"].clone()),
        (200, "quarantined".into())
    );
    assert_eq!(answer["reason"], "amount is missing");
    // The site's time is in its signed header; signed two minutes before it arrived.
    let signed_at = T0 - 120;
    let (status, answer) = stack
        .send(site_at(
            "msg_unknown_1",
            signed_at,
            br#"{"type":"site.unknown","data":{"id":"u1"}}"#,
        ))
        .await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "unrouted".into())
    );

    let items = stack.items().await;
    let by_status = |st: &str| items.iter().filter(|i| s(i, "status") == Some(st)).count();
    assert_eq!((by_status("unrouted"), by_status("quarantined")), (2, 1));
    let site_item = items
        .iter()
        .find(|i| s(i, "source") == Some("site"))
        .expect("the site event");
    assert_eq!(
        s(site_item, "header_time").and_then(Timestamp::parse),
        Timestamp::from_unix(signed_at),
        "kept with its signed time, which reading it again needs"
    );
    let quarantined = items
        .iter()
        .find(|i| s(i, "status") == Some("quarantined"))
        .expect("quarantined");
    assert_eq!(s(quarantined, "reason"), Some("amount is missing"));
    assert!(
        s(quarantined, "raw").is_some_and(|raw| raw.contains("evt_broken_1")),
        "the payload is kept for replay"
    );
    assert!(
        !quarantined.contains_key("pending_shard"),
        "not awaiting delivery"
    );
    assert!(
        !quarantined.contains_key("header_time"),
        "Stripe's time is in its body"
    );
    assert!(
        s(quarantined, "kept_shard").is_some_and(|shard| shard.starts_with("KEPT#quarantined#")),
        "in the kept index"
    );
    assert!(stack.messages().await.is_empty());
    assert_eq!(
        stack
            .metrics
            .count("IngressEvents", &[("Outcome", "quarantined")]),
        1
    );
}

#[tokio::test]
async fn every_source_is_taken_through_the_lambda_handler() {
    let stack = Stack::new().await;
    let (status, answer) = stack
        .send(site("msg_lead_1", &fixture("site/lead.submitted.json")))
        .await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "accepted".into()),
        "site"
    );
    let (status, answer) = stack
        .send(shopify(
            "orders/paid",
            "b1d7e2a0-1",
            &fixture("shopify/orders.paid.json"),
        ))
        .await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "accepted".into()),
        "shopify"
    );
    let (status, answer) = stack
        .send(paddle(&fixture("paddle/transaction.completed.json")))
        .await;
    assert_eq!(
        (status, json(&answer)["status"].clone()),
        (200, "accepted".into()),
        "paddle"
    );

    let (status, answer) = stack.send(adyen(&fixture("adyen/batch.json"))).await;
    assert_eq!(
        (status, answer.as_str()),
        (200, "[accepted]"),
        "adyen answers its literal"
    );
    // Seven notification items: six delivered types and one unrouted report.
    let items = stack.items().await;
    assert_eq!(items.len(), 3 + 7);
    let messages = stack.messages().await;
    assert_eq!(messages.len(), 3 + 6);
    let types: Vec<String> = messages
        .iter()
        .map(|m| {
            QueueMessage::decode(m.body().expect("body"))
                .expect("decodes")
                .event
                .expect("envelope")
                .event_type
                .to_string()
        })
        .collect();
    for expected in [
        "lead.submitted",
        "order.paid",
        "payment.succeeded",
        "payment.authorized",
        "payment.disputed",
    ] {
        assert!(
            types.iter().any(|t| t == expected),
            "{expected} in {types:?}"
        );
    }

    // Adyen retries the whole batch: every item is a duplicate, nothing new is enqueued.
    let (status, _) = stack.send(adyen(&fixture("adyen/batch.json"))).await;
    assert_eq!(status, 200);
    assert!(stack.messages().await.is_empty());
}
