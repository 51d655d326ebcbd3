//! Answers lost between DynamoDB and the functions, on the SDK configuration the functions run
//! with: a write carried out whose answer never arrives is tried again by the SDK, and the
//! retry meets the write. The claim and the entity's write each know their own.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;

use plumbline::contract::{EntityKind, SourceEventId, SourceName};
use plumbline::ports::{
    Claim, Clock, DeliveryLog, DeliveryState, EventKey, EventStore, LedgerStore,
};

use crate::helpers::lossy::{Loss, LossyFront};
use crate::helpers::pipeline::{CONFIG, Pipeline};
use crate::helpers::recorder::Reply;
use crate::helpers::{STRIPE_SECRET, T0, fixture, stripe, stripe_at, stripe_header_map};

const PROCESSING: &str = "stripe/payment_intent.processing.json";

/// Far beyond what the SDK's attempt timeout and retries take: a test that reaches it hung.
const HUNG: Duration = Duration::from_secs(30);

/// The event's claim is written, but its answer comes back a 500: the SDK writes again and is
/// refused by the claim it made. The webhook is still accepted, and enqueued, once.
#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_accepted_and_enqueued_once() {
    let p = ingest_through_one_lost_claim(Loss::ServerError).await;
    assert_eq!(
        (
            p.metrics.count(
                "IngressEvents",
                &[("Source", "stripe"), ("Outcome", "accepted")]
            ),
            p.metrics.count(
                "IngressEvents",
                &[("Source", "stripe"), ("Outcome", "duplicate")]
            ),
        ),
        (1, 0)
    );
    let (delivered, failed) = p.deliver_visible().await;
    assert_eq!((delivered.len(), failed.len(), p.erp.count()), (1, 0, 1));
}

/// The claim is written and its answer never comes: the attempt times out, the SDK sends it
/// again on a new connection, and that retry meets the claim. Without an attempt timeout the
/// webhook would wait until the function timed out.
#[tokio::test]
async fn a_claim_whose_answer_never_came_is_accepted_after_the_attempt_timeout() {
    ingest_through_one_lost_claim(Loss::Silence).await;
}

/// Takes a webhook in while the claim's answer is lost by `loss`: accepted (within [`HUNG`]),
/// the claim sent twice (the write whose answer was lost, then the SDK's retry), one message.
async fn ingest_through_one_lost_claim(loss: Loss) -> Pipeline {
    let (front, p) = losing("PutItem", "\"EVT#", loss).await;
    let answer = tokio::time::timeout(HUNG, p.ingest(stripe(&fixture(PROCESSING))))
        .await
        .expect("the ingress answered: the lost attempt was given up on");
    assert_eq!(answer["status"], "accepted", "{answer}");
    assert_eq!(
        front.seen(),
        2,
        "the write whose answer was lost, then the SDK's retry"
    );
    assert_eq!(p.queue_depth().await, 1, "one message");
    p
}

/// A pipeline whose DynamoDB requests go through a front that loses the answer of the first
/// `operation` request holding `holding`, by `loss`.
async fn losing(operation: &str, holding: &str, loss: Loss) -> (LossyFront, Pipeline) {
    let front = LossyFront::start(operation, holding, loss, 1).await;
    let p = Pipeline::through(CONFIG, &front.url).await;
    (front, p)
}

/// The delivery's write of the entity, which also holds the event's first attempt, is stored
/// but answered with a 500. The SDK's retry is refused by that write; the delivery knows it for
/// its own and calls the target on this receive, once, instead of taking it for another
/// copy's hold and waiting for the message to come back.
#[tokio::test]
async fn an_entity_write_whose_answer_was_lost_still_holds_the_first_attempt() {
    let (front, p) = losing("PutItem", "\"ENT#", Loss::ServerError).await;
    let answer = p.ingest(stripe(&fixture(PROCESSING))).await;
    deliver_through_one_lost_answer(&p, &front, p.receive().await).await;
    assert_eq!(p.erp.count(), 1, "the target was called once");

    let store = p.delivery.store();
    let record = store
        .get(&processing_key())
        .await
        .expect("get")
        .expect("event");
    assert_eq!(record.status.as_str(), "delivered");
    assert_eq!(record.event_id.to_string(), answer["event_id"]);
    let entity = store
        .load_entity(EntityKind::Payment, "pi_3PqLr2F7kS1mZk0a1Qw2Ey3R")
        .await
        .expect("load")
        .expect("the payment");
    assert_eq!(entity.version, 1, "one write of the entity");
    assert_eq!(entity.history.len(), 1);
}

/// A retry's lease on the target's record (the message's second receive, after a 500) is
/// stored but answered with a 500. The SDK's retry finds the lease taken, by this very call:
/// the delivery calls the target on this receive, not after the lease runs out.
#[tokio::test]
async fn a_lease_whose_answer_was_lost_is_still_the_callers() {
    let (front, p) = losing("UpdateItem", "d:erp:holder", Loss::ServerError).await;
    p.erp.script([Reply::status(500)]);
    p.ingest(stripe(&fixture(PROCESSING))).await;
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!(failed, ids, "the 500 is a batch item failure");
    assert_eq!(
        front.seen(),
        0,
        "the first attempt rode on the entity's write"
    );

    // Backoff is 1 s in this config: the message comes back on its own.
    let (event, _) = p.receive_within(Duration::from_secs(10)).await;
    assert_eq!(event.records.len(), 1, "the message came back");
    deliver_through_one_lost_answer(&p, &front, event).await;
    assert_eq!(p.erp.count(), 2, "the 500, then the delivery");
    let deliveries = p
        .delivery
        .store()
        .deliveries(&processing_key())
        .await
        .expect("deliveries");
    assert_eq!(
        (
            deliveries.len(),
            deliveries[0].state,
            deliveries[0].attempts
        ),
        (1, DeliveryState::Delivered, 2)
    );
}

/// A claim whose enqueue a crash cut off is refreshed by a duplicate after the horizon; the
/// refresh is stored, but answered with a 500. The SDK's retry finds the claim moved to this
/// duplicate's time, by this very refresh: the duplicate enqueues it, once.
#[tokio::test]
async fn a_refresh_whose_answer_was_lost_still_enqueues_the_claim() {
    let (front, p) = losing("UpdateItem", "ADD requeues", Loss::ServerError).await;
    let body = fixture(PROCESSING);
    let source = SourceName::try_from("stripe").expect("source");
    let event = p
        .ingress
        .verify(&source, &stripe_header_map(STRIPE_SECRET, T0, &body), &body)
        .expect("verified")
        .remove(0);
    let record = p.ingress.record(&source, event, p.clock.now(), None);
    assert_eq!(
        p.ingress.store().claim(&record).await.expect("claim"),
        Claim::Claimed,
        "claimed, and never enqueued"
    );
    p.clock.advance_secs(301);
    let answer = p.ingest(stripe_at(T0 + 301, &body)).await;
    assert_eq!(answer["status"], "duplicate", "{answer}");
    assert_eq!(
        front.seen(),
        2,
        "the refresh whose answer was lost, then the SDK's retry"
    );
    assert_eq!(p.queue_depth().await, 1, "enqueued by the duplicate");
    assert_eq!(p.metrics.count("IngressRequeued", &[]), 1);
    let stored = p
        .ingress
        .store()
        .get(&processing_key())
        .await
        .expect("get")
        .expect("claim");
    assert_eq!(stored.requeues, 1, "one refresh");
}

/// Delivers `event` while `front` loses one write's answer: delivered on this receive, the
/// write seen twice (the one whose answer was lost, then the SDK's retry).
async fn deliver_through_one_lost_answer(p: &Pipeline, front: &LossyFront, event: SqsEvent) {
    let response = p.deliver(event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "delivered on this receive: {response:?}"
    );
    assert_eq!(
        front.seen(),
        2,
        "the lost answer's write, then the SDK's retry"
    );
}

fn processing_key() -> EventKey {
    EventKey::new(
        &SourceName::try_from("stripe").expect("source"),
        &SourceEventId::try_from("evt_3PqLr2F7kS1mZk0a0pRoC4s5").expect("id"),
    )
}
