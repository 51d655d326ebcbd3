//! The delivery handler against moto's server and recording targets: effects, ledger, HubSpot.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plumbline::contract::{EntityKind, SourceEventId, SourceName};
use plumbline::ledger::{Effect, Entity};
use plumbline::ports::{DeliveryLog, DeliveryState, EventKey, EventStore, LedgerStore, Saved};
use plumbline::sources::hmac_sha256;
use serde_json::{Value, json};

use crate::helpers::pipeline::{ERP_SIGNING_SECRET, HUBSPOT_TOKEN, Pipeline, failed};
use crate::helpers::recorder::Recorded;
use crate::helpers::{T0, adyen, fixture, site, stripe};

fn key(source: &str, id: &str) -> EventKey {
    EventKey::new(
        &SourceName::try_from(source).expect("source"),
        &SourceEventId::try_from(id).expect("id"),
    )
}

/// A Stripe fixture with its event id and creation time replaced.
fn stripe_event(file: &str, id: &str, created: i64) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(&fixture(&format!("stripe/{file}"))).expect("json");
    doc["id"] = json!(id);
    doc["created"] = json!(created);
    serde_json::to_vec(&doc).expect("json")
}

#[tokio::test]
async fn a_payment_is_delivered_once_signed_and_with_its_entity() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!((ids.len(), failed.len()), (1, 0));

    let requests = p.erp.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/plumbline")
    );
    assert_eq!(
        request.header("idempotency-key"),
        Some("stripe:evt_3PqLr2F7kS1mZk0a0pRoC4s5")
    );
    // The receiver can verify it with any Standard Webhooks library.
    let (id, ts) = (
        request.header("webhook-id").expect("id"),
        request.header("webhook-timestamp").expect("ts"),
    );
    let signing_key = STANDARD
        .decode(ERP_SIGNING_SECRET.trim_start_matches("whsec_"))
        .expect("base64");
    let mac = hmac_sha256(
        &signing_key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", &request.body],
    );
    assert_eq!(
        request.header("webhook-signature"),
        Some(format!("v1,{}", STANDARD.encode(mac)).as_str())
    );
    let body = request.json();
    assert_eq!(body["event"]["type"], "payment.processing");
    assert_eq!(body["event"]["id"], id);
    assert_eq!(body["entity"]["state"], "processing");
    assert_eq!(
        body["entity"]["fields"]["amount"],
        json!({"amount_minor": 2000, "currency": "USD"})
    );
    assert_eq!(body["effect"], "applied");

    let k = key("stripe", "evt_3PqLr2F7kS1mZk0a0pRoC4s5");
    let store = p.delivery.store();
    assert_eq!(
        store
            .get(&k)
            .await
            .expect("get")
            .expect("event")
            .status
            .as_str(),
        "delivered"
    );
    let deliveries = store.deliveries(&k).await.expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        (deliveries[0].state, deliveries[0].attempts),
        (DeliveryState::Delivered, 1)
    );
    assert_eq!(p.queue_depth().await, 0, "the message was acknowledged");
    assert_eq!(
        p.metrics
            .count("Deliveries", &[("Target", "erp"), ("Outcome", "delivered")]),
        1
    );
}

/// A second receive of a message finds the event in its entity's history: the target is not
/// called again and the ledger's metrics do not count it again.
#[tokio::test]
async fn the_same_message_delivered_twice_has_one_effect() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let event = p.receive().await;
    let first = p.deliver(event.clone()).await;
    let second = p.deliver(event).await;
    assert!(first.batch_item_failures.is_empty() && second.batch_item_failures.is_empty());
    assert_eq!(p.erp.count(), 1, "the target was called once");
    assert_eq!(
        p.metrics.count(
            "LedgerEffects",
            &[("Entity", "payment"), ("Effect", "applied")]
        ),
        1,
        "the ledger's effect is counted once"
    );
}

/// The first attempt's lease rides on the entity's write: a second copy of the message that
/// arrives while the first is still calling the target finds the event applied and held, asks
/// for a retry, and does not call the target; once the first copy has settled, a copy finds the
/// target delivered and is done.
#[tokio::test]
async fn a_copy_arriving_while_the_first_attempt_is_in_flight_waits_for_it() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let event = p.receive().await;
    let (first, second) = p
        .deliver_while_erp_holds(event.clone(), p.deliver(event.clone()))
        .await;
    assert!(first.batch_item_failures.is_empty(), "the first delivered");
    assert_eq!(
        failed(&second),
        [event.records[0].message_id.clone().expect("id")],
        "the copy is left on the queue for later"
    );
    assert_eq!(p.erp.count(), 1, "the copy did not call the target");

    let third = p.deliver(event).await;
    assert!(third.batch_item_failures.is_empty(), "a late copy is done");
    assert_eq!(p.erp.count(), 1, "and calls nobody");
}

/// Only a message's first receive holds its targets through the entity's write. A later
/// receive asks each target's record, so a target that has the event is not called again even
/// when the entity's history (bounded) no longer lists the event and it is applied anew.
#[tokio::test]
async fn a_later_receive_asks_the_targets_records_even_when_the_history_let_go() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let mut event = p.receive().await;
    assert!(
        p.deliver(event.clone())
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(p.erp.count(), 1);

    let mut forgotten = fixture_payment(&p).await;
    forgotten.history.clear();
    forgotten.version += 1;
    let store = p.delivery.store();
    assert_eq!(
        store.save_entity(&forgotten).await.expect("save"),
        Saved::Saved
    );
    event.records[0]
        .attributes
        .insert("ApproximateReceiveCount".into(), "2".into());
    assert!(p.deliver(event).await.batch_item_failures.is_empty());
    assert_eq!(
        fixture_payment(&p).await.history.len(),
        1,
        "applied anew, without a hold"
    );
    assert_eq!(p.erp.count(), 1, "erp's record says delivered: not called");
}

/// A message on its own (a quiet queue's batch of one) reads no entity first: a new payment is
/// one write; for an existing one, the write that took it for new is refused and brings the
/// stored entity back, and the event is applied to that. The write that applies the event also
/// holds its first delivery attempt, so no target takes a lease of its own.
#[tokio::test]
async fn a_lone_message_writes_its_entity_without_reading_it_first() {
    let p = Pipeline::new().await;
    let mut requests = Vec::new();
    for (fixture_name, id, at) in [
        ("payment_intent.processing.json", "evt_lone_1", T0 - 100),
        ("payment_intent.succeeded.json", "evt_lone_2", T0 - 50),
    ] {
        p.ingest(stripe(&stripe_event(fixture_name, id, at))).await;
        let event = p.receive().await;
        assert_eq!(event.records.len(), 1);
        p.delivery_requests.reset();
        assert!(p.deliver(event).await.batch_item_failures.is_empty());
        requests.push(p.delivery_requests.counts());
    }
    let owned = |pairs: &[(&str, usize)]| -> BTreeMap<String, usize> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    };
    assert_eq!(
        requests,
        [
            // The entity's write, holding erp's attempt; the settle.
            owned(&[("PutItem", 1), ("UpdateItem", 1)]),
            // The refused write and the versioned one, holding crm's and erp's; the settle.
            owned(&[("PutItem", 2), ("UpdateItem", 1)]),
        ],
        "no GetItem: no entity was read first"
    );
    assert_eq!(
        fixture_payment_summary(&p).await,
        (2, Some("succeeded".to_owned()), 2)
    );
}

/// What one batch costs in DynamoDB requests: one read for all its entities, then per event the
/// entity's write (which holds the first attempt for every target, so no lease of its own) and
/// one write for "delivered" together with the final status.
#[tokio::test]
async fn a_batch_reads_its_entities_in_one_request_and_settles_each_event_in_one_write() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&stripe_event(
        "payment_intent.processing.json",
        "evt_batch_1",
        T0 - 100,
    )))
    .await;
    p.ingest(stripe(&stripe_event(
        "payment_intent.succeeded.json",
        "evt_batch_2",
        T0 - 50,
    )))
    .await;
    let mut other: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    other["id"] = json!("evt_batch_3");
    other["data"]["object"]["id"] = json!("pi_batch_other");
    p.ingest(stripe(&serde_json::to_vec(&other).expect("json")))
        .await;

    p.delivery_requests.reset();
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!((ids.len(), failed.len()), (3, 0), "one batch of three");
    let counts = p.delivery_requests.counts();
    let counts: Vec<(&str, usize)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    // Three entity writes, then three settles.
    assert_eq!(
        counts,
        [("BatchGetItem", 1), ("PutItem", 3), ("UpdateItem", 3)],
        "no single reads; the second event of a payment used the first one's write"
    );

    let store = p.delivery.store();
    assert_eq!(
        fixture_payment_summary(&p).await,
        (2, Some("succeeded".to_owned()), 2)
    );
    for (id, targets) in [
        ("evt_batch_1", &["erp"][..]),
        ("evt_batch_2", &["crm", "erp"][..]),
        ("evt_batch_3", &["crm", "erp"][..]),
    ] {
        let k = key("stripe", id);
        let event = store.get(&k).await.expect("get").expect("event");
        assert_eq!(event.status.as_str(), "delivered", "{id}");
        let deliveries = store.deliveries(&k).await.expect("deliveries");
        let expected: Vec<_> = targets
            .iter()
            .map(|t| (*t, DeliveryState::Delivered, None, 1))
            .collect();
        assert_eq!(
            deliveries
                .iter()
                .map(|d| (d.target.as_str(), d.state, d.lease_until, d.attempts))
                .collect::<Vec<_>>(),
            expected,
            "{id}: one attempt each, and no lease left"
        );
    }
    assert_eq!(p.erp.count(), 3);
}

#[tokio::test]
async fn out_of_order_payment_events_end_in_the_right_state_and_the_late_one_is_recorded() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&stripe_event(
        "payment_intent.succeeded.json",
        "evt_late_2",
        T0 - 50,
    )))
    .await;
    p.deliver_visible().await;
    p.ingest(stripe(&stripe_event(
        "payment_intent.processing.json",
        "evt_late_1",
        T0 - 100,
    )))
    .await;
    p.deliver_visible().await;

    let entity = fixture_payment(&p).await;
    assert_eq!(entity.state.as_deref(), Some("succeeded"));
    assert_eq!(entity.version, 2);
    let effects: Vec<Effect> = entity.history.iter().map(|h| h.effect).collect();
    assert_eq!(effects, [Effect::Applied, Effect::Late]);
    // The late event still reaches the ERP, carrying the newer state, so it cannot regress there.
    let bodies: Vec<Value> = p.erp.requests().iter().map(Recorded::json).collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        (
            bodies[1]["event"]["type"].clone(),
            bodies[1]["entity"]["state"].clone()
        ),
        (json!("payment.processing"), json!("succeeded"))
    );
    assert_eq!(bodies[1]["effect"], "late");
}

#[tokio::test]
async fn a_write_by_a_system_that_does_not_own_the_field_is_recorded_not_applied() {
    let p = Pipeline::new().await;
    // Adyen reports a cancellation for a payment whose status Stripe owns.
    let body = json!({"live": "false", "notificationItems": [{"NotificationRequestItem": {
        "additionalData": {}, "amount": {"currency": "USD", "value": 2000}, "eventCode": "CANCELLATION",
        "eventDate": "2025-11-23T12:00:00+00:00", "merchantAccountCode": "Acme", "merchantReference": "ord_1001",
        "pspReference": "pi_3PqLr2F7kS1mZk0a1Qw2Ey3R", "success": "true"}}]});
    let response =
        plumbline_ingress::handle(&p.ingress, adyen(&serde_json::to_vec(&body).expect("json")))
            .await;
    assert_eq!(response.status(), 200);
    p.deliver_visible().await;

    let entity = fixture_payment(&p).await;
    assert_eq!(entity.state, None, "adyen does not own payment.status");
    assert!(
        entity.field("amount").is_some(),
        "unowned fields still apply"
    );
    assert_eq!(entity.history[0].ownership_conflicts, ["status"]);
    assert_eq!(
        p.metrics.count(
            "OwnershipConflicts",
            &[("Field", "payment.status"), ("Source", "adyen")]
        ),
        1
    );

    // The owner's own write applies.
    p.ingest(stripe(&fixture("stripe/payment_intent.succeeded.json")))
        .await;
    p.deliver_visible().await;
    let entity = fixture_payment(&p).await;
    assert_eq!(entity.state.as_deref(), Some("succeeded"));
}

/// An entity as the ledger holds it, if it does.
async fn entity(p: &Pipeline, kind: EntityKind, id: &str) -> Option<Entity> {
    p.delivery
        .store()
        .load_entity(kind, id)
        .await
        .expect("load")
}

/// The payment the Stripe fixtures are about, as the ledger holds it.
async fn fixture_payment(p: &Pipeline) -> Entity {
    entity(p, EntityKind::Payment, "pi_3PqLr2F7kS1mZk0a1Qw2Ey3R")
        .await
        .expect("entity")
}

/// The fixture payment's version, state and number of events in its history.
async fn fixture_payment_summary(p: &Pipeline) -> (u64, Option<String>, usize) {
    let entity = fixture_payment(p).await;
    (entity.version, entity.state, entity.history.len())
}

fn lead(id: &str, timestamp: &str) -> Vec<u8> {
    let mut doc: Value =
        serde_json::from_slice(&fixture("site/lead.submitted.json")).expect("json");
    doc["data"]["id"] = json!(id);
    doc["timestamp"] = json!(timestamp);
    serde_json::to_vec(&doc).expect("json")
}

#[tokio::test]
async fn a_double_submitted_lead_form_is_one_lead_and_one_crm_upsert() {
    let p = Pipeline::new().await;
    p.ingest(site("msg_lead_a", &lead("lead_a", "2025-11-23T12:00:00Z")))
        .await;
    p.deliver_visible().await;
    p.ingest(site("msg_lead_b", &lead("lead_b", "2025-11-23T12:00:30Z")))
        .await;
    p.deliver_visible().await;

    let upserts = p.crm.requests();
    assert_eq!(upserts.len(), 1, "one CRM upsert");
    let first = entity(&p, EntityKind::Lead, "lead_a").await.expect("lead");
    assert_eq!(
        first.history.iter().map(|h| h.effect).collect::<Vec<_>>(),
        [Effect::Applied, Effect::DuplicateSubmission]
    );
    assert!(
        entity(&p, EntityKind::Lead, "lead_b").await.is_none(),
        "no second lead"
    );
    let second = p
        .delivery
        .store()
        .get(&key("site", "msg_lead_b"))
        .await
        .expect("get")
        .expect("event");
    assert_eq!(second.status.as_str(), "suppressed");

    // Outside the window, the same person's new submission is a new lead.
    p.ingest(site("msg_lead_c", &lead("lead_c", "2025-11-23T13:00:00Z")))
        .await;
    p.deliver_visible().await;
    assert_eq!(p.crm.count(), 2);
}

/// A sender whose clock runs an hour fast: the event is applied, ordered as if it occurred
/// five minutes after its receipt, keeps the time it was sent with in the history, and is
/// counted for operators by source.
#[tokio::test]
async fn an_event_from_a_fast_clock_is_ordered_by_a_bounded_time_and_counted() {
    use plumbline::contract::Timestamp;
    use plumbline::ledger::MAX_AHEAD_SECS;

    let p = Pipeline::new().await;
    let hour_ahead = Timestamp::from_unix(T0 + 3_600).expect("in range");
    p.ingest(site(
        "msg_lead_fast",
        &lead("lead_fast", &hour_ahead.to_string()),
    ))
    .await;
    p.deliver_visible().await;

    let lead = entity(&p, EntityKind::Lead, "lead_fast")
        .await
        .expect("lead");
    let received = Timestamp::from_unix(T0).expect("in range");
    assert_eq!(lead.fields["email"].at, received.plus_secs(MAX_AHEAD_SECS));
    assert_eq!(lead.history[0].occurred_at, hour_ahead);
    assert_eq!(p.metrics.count("OccurrenceAhead", &[("Source", "site")]), 1);
    assert_eq!(p.crm.count(), 1, "delivered all the same");
}

#[tokio::test]
async fn hubspot_requests_follow_the_crm_v3_batch_upsert_api() {
    let p = Pipeline::new().await;
    p.ingest(site("msg_lead_1", &fixture("site/lead.submitted.json")))
        .await;
    p.deliver_visible().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.succeeded.json")))
        .await;
    p.deliver_visible().await;

    let requests = p.crm.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {HUBSPOT_TOKEN}").as_str())
        );
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("application/json"))
        );
    }
    assert_eq!(requests[0].path, "/crm/v3/objects/contacts/batch/upsert");
    assert_eq!(
        requests[0].json(),
        json!({"inputs": [{"idProperty": "email", "id": "jane.doe@example.com", "properties": {
            "email": "jane.doe@example.com", "firstname": "Jane", "lastname": "Doe", "phone": "+14155550123", "lifecyclestage": "lead"}}]})
    );
    assert_eq!(requests[1].path, "/crm/v3/objects/deals/batch/upsert");
    assert_eq!(
        requests[1].json(),
        json!({"inputs": [{"idProperty": "plumbline_id", "id": "payment:pi_3PqLr2F7kS1mZk0a1Qw2Ey3R", "properties": {
            "dealname": "Payment pi_3PqLr2F7kS1mZk0a1Qw2Ey3R", "pipeline": "default", "dealstage": "closedwon",
            "amount": "20.00", "deal_currency_code": "USD"}}]})
    );
}

#[tokio::test]
async fn a_message_carrying_only_the_key_is_read_from_the_table() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let _ = p.receive().await; // the full message: held, never deleted in this test
    p.sqs
        .send_message()
        .queue_url(&p.queue_url)
        .message_body(json!({"key": "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5"}).to_string())
        .send()
        .await
        .expect("send");
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!((ids.len(), failed.len()), (1, 0));
    assert_eq!(
        p.erp.requests()[0].json()["event"]["type"],
        "payment.processing"
    );
}

#[tokio::test]
async fn an_event_no_route_selects_is_delivered_to_none() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/customer.created.json")))
        .await;
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    assert_eq!(p.erp.count() + p.crm.count(), 0);
    let event = p
        .delivery
        .store()
        .get(&key("stripe", "evt_1PqLuBF7kS1mZk0aCuStC9r0"))
        .await
        .expect("get")
        .expect("event");
    assert_eq!(event.status.as_str(), "delivered_to_none");
}

#[tokio::test]
async fn customers_match_on_email_when_their_external_ids_differ() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/customer.created.json")))
        .await;
    p.deliver_visible().await;
    let mut other: Value =
        serde_json::from_slice(&fixture("stripe/customer.created.json")).expect("json");
    other["id"] = json!("evt_other_customer");
    other["data"]["object"]["id"] = json!("cus_Other");
    other["data"]["object"]["email"] = json!("  JANE.DOE@example.com ");
    other["data"]["object"]["phone"] = Value::Null;
    p.ingest(stripe(&serde_json::to_vec(&other).expect("json")))
        .await;
    p.deliver_visible().await;

    let store = p.delivery.store();
    let first = store
        .load_entity(EntityKind::Customer, "cus_R2x9LmQ4vT7pZa")
        .await
        .expect("load")
        .expect("customer");
    assert_eq!(
        first.history.len(),
        2,
        "the second customer event landed on the first customer"
    );
    assert!(
        store
            .load_entity(EntityKind::Customer, "cus_Other")
            .await
            .expect("load")
            .is_none()
    );
}

#[tokio::test]
async fn hubspot_429_without_retry_after_waits_out_the_burst_window_and_409_is_an_upsert() {
    use crate::helpers::recorder::Reply;
    use plumbline::delivery::{InboundMessage, Outcome};

    let p = Pipeline::new().await;
    p.crm.script([Reply::status(429), Reply::status(409)]);
    p.ingest(site("msg_lead_1", &fixture("site/lead.submitted.json")))
        .await;
    let event = p.receive().await;
    let record = &event.records[0];
    let message = InboundMessage {
        message_id: record.message_id.clone().expect("id"),
        receipt_handle: record.receipt_handle.clone().expect("receipt"),
        body: record.body.clone().expect("body"),
        receive_count: 1,
        replay: false,
    };
    assert_eq!(
        p.delivery.process(&message).await,
        Outcome::Retry(Duration::from_secs(10))
    );
    let second = p.delivery.process(&message).await;
    assert!(
        matches!(second, Outcome::Done(status) if status.as_str() == "delivered"),
        "{second:?}"
    );
    assert_eq!(p.crm.count(), 2);
}
