//! The local delivery worker stands for the Lambda service: a message whose processing panics
//! fails alone. It stays on the queue (back after its visibility timeout, a receive counted
//! towards the dead-letter queue), and the worker goes on with the next messages. On Lambda a
//! panic fails the whole batch; the batch's order lets the others through on a later receive.

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use plumbline::adapters::sqlite::SqliteStore;
use plumbline::adapters::targets::{self, ConfiguredTarget};
use plumbline::delivery::{Delivery, Document, InboundMessage, worker};
use plumbline::ports::{
    Clock, EventKey, EventStatus, EventStore, ManualClock, QueueConsumer, SystemClock, Target,
    TargetError,
};
use plumbline::telemetry::RecordingMetrics;
use serde_json::Value;
use tokio::sync::watch;

use crate::helpers::recorder::Recorder;
use crate::helpers::{fixture, local, unique};

/// The configured target, except that it panics on one payment: a bug in delivery as a
/// message would meet it.
struct PanicsOn {
    payment: &'static str,
    inner: ConfiguredTarget,
}

impl Target for PanicsOn {
    async fn deliver(&self, document: &Document, idempotency_key: &str) -> Result<(), TargetError> {
        assert_ne!(document.entity.id, self.payment, "a delivery that panics");
        self.inner.deliver(document, idempotency_key).await
    }
}

/// Takes in a Stripe `payment_intent.succeeded` about `pi_{name}` (event `evt_{name}`).
async fn take_in(ingress: &local::LocalIngress, name: &str) {
    let mut doc: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    doc["id"] = format!("evt_{name}").into();
    doc["created"] = now.into();
    doc["data"]["object"]["id"] = format!("pi_{name}").into();
    local::take_in(ingress, &doc, now).await;
}

/// Polls until `erp` has `n` deliveries, for at most ten seconds.
async fn deliveries(erp: &Recorder, n: usize) -> usize {
    let until = Instant::now() + Duration::from_secs(10);
    while erp.requests().len() < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    erp.requests().len()
}

type PanickingDelivery<C> =
    Delivery<SqliteStore, SqliteStore, SqliteStore, PanicsOn, C, RecordingMetrics>;

/// A store with its ingress, and a delivery on `clock` whose target panics on `pi_poison`.
fn panicking_pipeline<C: Clock>(
    erp: &Recorder,
    clock: C,
) -> (
    SqliteStore,
    local::LocalIngress,
    PanickingDelivery<C>,
    std::path::PathBuf,
) {
    let (config, resolver) = local::stripe_to_erp(&erp.url);
    let dir = std::env::temp_dir().join(unique("plumbline-worker"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let ingress = local::ingress(&store, &config, &resolver);
    let targets = targets::build_all(&config, &resolver)
        .expect("targets")
        .into_iter()
        .map(|(name, inner)| {
            let target = PanicsOn {
                payment: "pi_poison",
                inner,
            };
            (name, target)
        })
        .collect();
    let delivery = Delivery::new(
        store.clone(),
        store.clone(),
        store.clone(),
        targets,
        clock,
        RecordingMetrics::default(),
        &config,
    );
    (store, ingress, delivery, dir)
}

#[tokio::test]
async fn a_message_that_panics_fails_alone_and_the_worker_goes_on() {
    let erp = Recorder::start().await;
    let (store, ingress, delivery, dir) = panicking_pipeline(&erp, SystemClock);
    for name in ["before", "poison", "after"] {
        take_in(&ingress, name).await;
    }
    let (stop, stopped) = watch::channel(false);
    let queue = store.clone();
    let running = tokio::spawn(async move {
        let wait = |d: Duration| {
            let queue = queue.clone();
            async move { queue.wait_for_messages(d).await }
        };
        worker::run(&delivery, &queue, wait, Duration::from_millis(50), stopped).await;
    });

    assert_eq!(
        deliveries(&erp, 2).await,
        2,
        "the messages around the panic"
    );
    take_in(&ingress, "later").await;
    assert_eq!(
        deliveries(&erp, 3).await,
        3,
        "the worker outlived the panic and took a message sent after it"
    );
    let poison = EventKey::parse("EVT#stripe#evt_poison").expect("key");
    let record = store.get(&poison).await.expect("get").expect("claimed");
    assert_eq!(record.status, EventStatus::Received, "not settled");
    let waiting = store.list_messages(false, 10).await.expect("messages");
    assert_eq!(
        waiting.len(),
        1,
        "only the failed message is left on the queue"
    );
    assert!(waiting[0].body.contains("evt_poison"));
    assert_eq!(
        waiting[0].receive_count, 1,
        "received once, not acknowledged"
    );

    stop.send(true).expect("stop");
    running.await.expect("the worker stops when told");
    std::fs::remove_dir_all(&dir).ok();
}

/// As on Lambda: a panic fails the whole batch, which comes back together. On its first receive
/// the batch goes in the order it came, the poison first, and nothing is delivered; received
/// again, the others come before it on some receive, and each is delivered once.
#[tokio::test]
async fn a_batch_that_panics_again_and_again_delivers_its_other_messages() {
    let erp = Recorder::start().await;
    let clock = ManualClock::at(SystemClock.now());
    let (store, ingress, delivery, dir) = panicking_pipeline(&erp, clock.clone());
    for name in ["poison", "a", "b", "c"] {
        take_in(&ingress, name).await;
    }
    let taken = store
        .receive(10, Duration::from_secs(600))
        .await
        .expect("receive");
    assert_eq!(taken.len(), 4);
    assert!(
        taken[0].body.contains("evt_poison"),
        "the poison comes first"
    );
    let batch = |receive_count: u32| -> Vec<InboundMessage> {
        taken
            .iter()
            .map(|m| InboundMessage {
                message_id: m.message_id.clone(),
                receipt_handle: m.receipt_handle.clone(),
                body: m.body.clone(),
                receive_count,
                replay: false,
            })
            .collect()
    };
    let fails = |receive_count: u32| {
        let batch = batch(receive_count);
        let delivery = &delivery;
        async move {
            std::panic::AssertUnwindSafe(delivery.process_batch(&batch))
                .catch_unwind()
                .await
                .is_err()
        }
    };

    assert!(fails(1).await, "the batch panics");
    assert!(erp.requests().is_empty(), "the poison went first");
    let mut receives = 1;
    while erp.requests().len() < 3 && receives < 40 {
        // The batch comes back after its visibility timeout, when the hold its first attempt
        // took on the poison's delivery has lapsed.
        clock.advance_secs(3_600);
        receives += 1;
        assert!(fails(receives).await, "the poison is in every batch");
    }
    let mut delivered: Vec<String> = erp
        .requests()
        .iter()
        .map(|r| {
            r.json()["entity"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        ["pi_a", "pi_b", "pi_c"],
        "each once, after {receives} receives"
    );
    for name in ["a", "b", "c"] {
        let key = EventKey::parse(&format!("EVT#stripe#evt_{name}")).expect("key");
        let record = store.get(&key).await.expect("get").expect("claimed");
        assert_eq!(record.status, EventStatus::Delivered, "{name}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
