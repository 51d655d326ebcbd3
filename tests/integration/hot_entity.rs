//! A burst of events about one entity, processed by many workers of one process at once (as
//! `plumbline dev` runs sixteen): each event is applied and delivered on its first receive.
//! A lost write race would send the message back to the queue, and every return costs it a
//! receive towards the dead-letter queue.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use plumbline::adapters::sqlite::SqliteStore;
use plumbline::adapters::targets;
use plumbline::contract::EntityKind;
use plumbline::delivery::{Delivery, InboundMessage, Outcome};
use plumbline::ports::{EventStatus, LedgerStore, QueueConsumer, SystemClock};
use plumbline::telemetry::RecordingMetrics;
use serde_json::Value;

use crate::helpers::recorder::Recorder;
use crate::helpers::{fixture, local, unique};

const EVENTS: usize = 64;
const WORKERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_workers_on_one_entity_apply_every_event_on_its_first_receive() {
    let erp = Recorder::start().await;
    let (config, resolver) = local::stripe_to_erp(&erp.url);
    let dir = std::env::temp_dir().join(unique("plumbline-hot-entity"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let ingress = local::ingress(&store, &config, &resolver);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let template: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    let payment = template["data"]["object"]["id"]
        .as_str()
        .expect("a payment intent id")
        .to_owned();
    for i in 0..EVENTS {
        let mut doc = template.clone();
        doc["id"] = Value::from(format!("evt_hot_{i:03}"));
        doc["created"] = Value::from(now);
        local::take_in(&ingress, &doc, now).await;
    }

    let mut messages = Vec::new();
    loop {
        let batch = QueueConsumer::receive(&store, 10, Duration::from_secs(300))
            .await
            .expect("receive");
        if batch.is_empty() {
            break;
        }
        messages.extend(batch.into_iter().map(|m| InboundMessage {
            message_id: m.message_id,
            receipt_handle: m.receipt_handle,
            body: m.body,
            receive_count: m.receive_count,
            replay: false,
        }));
    }
    assert_eq!(messages.len(), EVENTS);

    let delivery = Arc::new(Delivery::new(
        store.clone(),
        store.clone(),
        store.clone(),
        targets::build_all(&config, &resolver).expect("targets"),
        SystemClock,
        RecordingMetrics::default(),
        &config,
    ));
    let messages = Arc::new(messages);
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..WORKERS {
        let (delivery, messages) = (Arc::clone(&delivery), Arc::clone(&messages));
        lanes.spawn(async move {
            let mut outcomes = Vec::new();
            for message in messages.iter().skip(lane).step_by(WORKERS) {
                outcomes.push(delivery.process(message).await);
            }
            outcomes
        });
    }
    let mut outcomes = Vec::new();
    while let Some(lane) = lanes.join_next().await {
        outcomes.extend(lane.expect("lane"));
    }
    assert_eq!(outcomes.len(), EVENTS);
    let retried: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Done(EventStatus::Delivered)))
        .collect();
    assert!(retried.is_empty(), "sent back to the queue: {retried:?}");

    let entity = store
        .load_entity(EntityKind::Payment, &payment)
        .await
        .expect("load")
        .expect("the payment");
    let applied: BTreeSet<&str> = entity.history.iter().map(|h| h.event_id.as_str()).collect();
    assert_eq!(
        applied.len(),
        EVENTS,
        "every event in the payment's history"
    );
    let keys: BTreeSet<String> = erp
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), EVENTS, "one delivery per event");
}
