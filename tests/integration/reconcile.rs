//! Reconciliation's stuck-event sweep, backlog figures, reports and thresholds, on both
//! backends; the Lambda handler; and the CLI's exit code on a breach.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqlite::{LocalDeadLetters, SqliteStore};
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::contract::{Origin, SourceName, Timestamp, Trace};
use plumbline::ingress::build_record;
use plumbline::ports::{
    Claim, DeadLetters, EventQueue, EventStore, ManualClock, QueueConsumer, QueueStats,
    ReconcileStore,
};
use plumbline::reconcile::{DLQ_MESSAGES, Reconciler, STUCK_EVENTS, Settings};
use plumbline::sources::{Inbound, SourceKind, Verifier};
use plumbline::telemetry::RecordingMetrics;
use secrecy::SecretSlice;

use crate::helpers::dev::binary;
use crate::helpers::{
    STRIPE_SECRET, T0, aws, create_queue, create_table, fixture, stripe_headers, unique,
};

fn settings(stuck_threshold: u64) -> Settings {
    Settings {
        stuck_after_secs: 900,
        page_limit: 100,
        thresholds: BTreeMap::from([
            (STUCK_EVENTS.to_owned(), stuck_threshold),
            (DLQ_MESSAGES.to_owned(), 5),
        ]),
    }
}

/// A claim whose enqueue a crash cut off, made at `T0`.
async fn crashed_claim(store: &impl EventStore) {
    let verifier = Verifier {
        kind: SourceKind::Stripe,
        keys: vec![SecretSlice::from(STRIPE_SECRET.as_bytes().to_vec())],
        tolerance_secs: 300,
    };
    let body = fixture("stripe/payment_intent.succeeded.json");
    let headers: http::HeaderMap = stripe_headers(STRIPE_SECRET, T0, &body)
        .into_iter()
        .map(|(k, v)| (k.parse().expect("name"), v.parse().expect("value")))
        .collect();
    let now = Timestamp::from_unix(T0).expect("in range");
    let event = verifier
        .accept(
            Inbound {
                headers: &headers,
                body: &body,
            },
            now,
        )
        .expect("verified")
        .remove(0);
    let source = SourceName::try_from("stripe").expect("source");
    let record = build_record(
        &source,
        event,
        now,
        Trace {
            request_id: None,
            origin: Origin::Webhook,
        },
        90,
    );
    assert_eq!(store.claim(&record).await.expect("claim"), Claim::Claimed);
}

async fn reconciliation_conforms<S, Q, D>(store: S, queue: Q, dlq: D)
where
    S: ReconcileStore + EventStore + Clone,
    Q: EventQueue + QueueStats + QueueConsumer + Clone,
    D: QueueStats + DeadLetters + Clone,
{
    crashed_claim(&store).await;
    dlq.dead_letter(
        "{\"key\":\"EVT#stripe#x\"}",
        &[("reason", "HTTP 400".into())],
    )
    .await
    .expect("dead letter");
    let clock = ManualClock::at(Timestamp::from_unix(T0 + 600).expect("in range"));
    let reconciler = Reconciler::new(
        store.clone(),
        queue.clone(),
        dlq.clone(),
        clock.clone(),
        RecordingMetrics::default(),
        settings(0),
    );

    // Within the horizon: not stuck yet.
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(report.checks[STUCK_EVENTS].found, 0);
    assert!(
        queue
            .receive(10, Duration::from_secs(30))
            .await
            .expect("receive")
            .is_empty()
    );

    clock.advance_secs(400);
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    let stuck = &report.checks[STUCK_EVENTS];
    assert_eq!((stuck.found, stuck.repaired, stuck.unrepairable), (1, 1, 0));
    assert_eq!(stuck.ids, ["EVT#stripe#evt_3PqLr2F7kS1mZk0a1dS8kT4e"]);
    assert_eq!(report.checks[DLQ_MESSAGES].found, 1);
    assert_eq!(
        report.breached,
        [STUCK_EVENTS],
        "stuck_events = 0 is breached; dlq_messages = 5 is not"
    );
    let messages = queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(messages.len(), 1, "re-enqueued once");
    assert_eq!(store.last_run().await.expect("last run"), Some(report));

    // A second run repairs nothing twice: the claim was refreshed.
    let again = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(again.checks[STUCK_EVENTS].found, 0);
    assert!(!again.is_breached());
    assert!(
        queue
            .receive(10, Duration::from_secs(30))
            .await
            .expect("receive")
            .is_empty()
    );
}

#[tokio::test]
async fn reconciliation_on_sqlite() {
    let dir = std::env::temp_dir().join(unique("plumbline-reconcile"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    reconciliation_conforms(store.clone(), store.clone(), LocalDeadLetters(store)).await;
}

#[tokio::test]
async fn reconciliation_on_dynamodb_and_sqs() {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let store = DynamoStore::new(ddb.clone(), create_table(&ddb).await);
    let queue = SqsQueue::new(sqs.clone(), create_queue(&sqs).await);
    let dlq = SqsDeadLetters::new(sqs.clone(), create_queue(&sqs).await);
    reconciliation_conforms(store, queue, dlq).await;
}

#[tokio::test]
async fn the_lambda_handler_runs_within_the_invocation_time() {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let store = DynamoStore::new(ddb.clone(), create_table(&ddb).await);
    crashed_claim(&store).await;
    let clock = ManualClock::at(Timestamp::from_unix(T0 + 3600).expect("in range"));
    let queue_url = create_queue(&sqs).await;
    let reconciler = Reconciler::new(
        store,
        SqsQueue::new(sqs.clone(), queue_url.clone()),
        SqsDeadLetters::new(sqs.clone(), create_queue(&sqs).await),
        clock,
        RecordingMetrics::default(),
        settings(10),
    );
    // No time left: nothing is attempted, and the report says why; the next run does it.
    let starved = plumbline_reconcile::handle(&reconciler, Duration::from_secs(1)).await;
    assert_eq!(starved.checks[STUCK_EVENTS].repaired, 0);
    assert_eq!(
        starved.checks[STUCK_EVENTS].note.as_deref(),
        Some("time budget spent; the next run continues")
    );
    let report = plumbline_reconcile::handle(&reconciler, Duration::from_secs(60)).await;
    assert_eq!(report.checks[STUCK_EVENTS].repaired, 1);
}

#[tokio::test]
async fn the_cli_exits_non_zero_when_a_threshold_is_breached() {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let table = create_table(&ddb).await;
    let (queue, dlq) = (create_queue(&sqs).await, create_queue(&sqs).await);
    SqsDeadLetters::new(sqs.clone(), dlq.clone())
        .dead_letter("{}", &[("reason", "HTTP 400".into())])
        .await
        .expect("dead letter");
    let config = std::env::temp_dir()
        .join(unique("plumbline-reconcile"))
        .with_extension("toml");
    let run = |threshold: u64| {
        std::fs::write(
            &config,
            format!("[reconcile.thresholds]\ndlq_messages = {threshold}\n"),
        )
        .expect("config");
        Command::new(binary())
            .args(["reconcile", "--aws", "--json", "--config"])
            .arg(&config)
            .env("PLUMBLINE_TABLE", &table)
            .env("PLUMBLINE_QUEUE_URL", &queue)
            .env("PLUMBLINE_DLQ_URL", &dlq)
            .output()
            .expect("run plumbline reconcile")
    };
    let breached = run(0);
    assert_eq!(
        breached.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&breached.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&breached.stdout).expect("json");
    assert_eq!(report["breached"], serde_json::json!([DLQ_MESSAGES]));
    assert_eq!(run(1).status.code(), Some(0));
}
