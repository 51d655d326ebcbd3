//! Reconciliation's stuck-event sweep, backlog figures, reports and thresholds, on both
//! backends; the Lambda handler; and the CLI's exit code on a breach.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::paddle_api::PaddleEvents;
use plumbline::adapters::sqlite::{LocalDeadLetters, SqliteStore};
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::adapters::stripe_api::StripeEvents;
use plumbline::contract::{EntityKind, Origin, SourceName, Timestamp, Trace};
use plumbline::ingress::build_record;
use plumbline::ingress::{Outgoing, QueueMessage};
use plumbline::ledger::{Entity, FieldValue};
use plumbline::ports::{
    Claim, DeadLetterSource, DeadLetters, EventKey, EventQueue, EventStatus, EventStore, Intake,
    LedgerStore, ManualClock, ProviderEvents, QueueConsumer, QueueStats, ReconcileStore, Watermark,
    Watermarks, change_entry,
};
use plumbline::reconcile::{
    DELIVERY_BACKLOG, DLQ_MESSAGES, MISSED_WEBHOOKS, PAYMENT_ORDER_PARITY, REPLAYS, Reconciler,
    STUCK_EVENTS, Settings, Storage,
};
use plumbline::sources::{Inbound, SourceKind, Verifier};
use plumbline::telemetry::{RecordingMetrics, Redacting, lambda_subscriber};
use secrecy::SecretSlice;

use crate::helpers::dev::binary;
use crate::helpers::lossy::{Loss, LossyFront};
use crate::helpers::paddle_api::PaddleApi;
use crate::helpers::pipeline::Pipeline;
use crate::helpers::requests::Requests;
use crate::helpers::stripe_api::StripeApi;
use crate::helpers::{
    STRIPE_SECRET, T0, aws, create_queue, create_table, dynamodb_config, fixture, paddle, stripe,
    stripe_header_map, unique,
};
use crate::redaction::Capture;

fn settings(stuck_threshold: u64) -> Settings {
    Settings {
        stuck_after_secs: 900,
        page_limit: 100,
        max_pages: 10,
        failed_only: false,
        retention_days: 90,
        thresholds: BTreeMap::from([
            (STUCK_EVENTS.to_owned(), stuck_threshold),
            (DLQ_MESSAGES.to_owned(), 5),
        ]),
        ..Settings::default()
    }
}

fn no_providers() -> BTreeMap<SourceName, (SourceKind, StripeEvents)> {
    BTreeMap::new()
}

/// A reconciler without providers, an hour after `T0`: claims made around `T0` are stuck.
fn an_hour_later<S, Q, D>(
    store: S,
    queue: Q,
    dlq: D,
    settings: Settings,
) -> Reconciler<S, Q, D, StripeEvents, ManualClock, RecordingMetrics> {
    Reconciler::new(
        store,
        queue,
        dlq,
        no_providers(),
        ManualClock::at(Timestamp::from_unix(T0 + 3_600).expect("in range")),
        RecordingMetrics::default(),
        settings,
    )
}

/// A reconciler with `settings(10)` that enqueues a stuck claim again at most `max_requeues`
/// times, on `clock`, with no provider.
fn requeuing_at_most<S, Q, D>(
    max_requeues: u32,
    store: S,
    queue: Q,
    dlq: D,
    clock: &ManualClock,
    metrics: &RecordingMetrics,
) -> Reconciler<S, Q, D, StripeEvents, ManualClock, RecordingMetrics> {
    let mut settings = settings(10);
    settings.max_requeues = max_requeues;
    Reconciler::new(
        store,
        queue,
        dlq,
        no_providers(),
        clock.clone(),
        metrics.clone(),
        settings,
    )
}

/// `settings(10)` walking pages of two, at most `max_pages` of them per run.
fn pages_of_two(max_pages: usize) -> Settings {
    let mut small = settings(10);
    small.page_limit = 2;
    small.max_pages = max_pages;
    small
}

/// A reconciler of the local stack: the SQLite store is also its queue and dead letters.
fn local_reconciler<P: ProviderEvents>(
    store: &SqliteStore,
    providers: BTreeMap<SourceName, (SourceKind, P)>,
    clock: &ManualClock,
    settings: Settings,
) -> Reconciler<SqliteStore, SqliteStore, LocalDeadLetters, P, ManualClock, RecordingMetrics> {
    Reconciler::new(
        store.clone(),
        store.clone(),
        LocalDeadLetters(store.clone()),
        providers,
        clock.clone(),
        RecordingMetrics::default(),
        settings,
    )
}

/// A claim whose enqueue a crash cut off, made at `T0`.
async fn crashed_claim(store: &impl EventStore) {
    let body = fixture("stripe/payment_intent.succeeded.json");
    crashed_claim_of(store, &body, T0).await;
}

/// A claim of the Stripe webhook `body`, made at `at`, that was never enqueued.
async fn crashed_claim_of(store: &impl EventStore, body: &[u8], at: i64) {
    let verifier = Verifier {
        kind: SourceKind::Stripe,
        keys: vec![SecretSlice::from(STRIPE_SECRET.as_bytes().to_vec())],
        tolerance_secs: 300,
    };
    let headers = stripe_header_map(STRIPE_SECRET, at, body);
    let now = Timestamp::from_unix(at).expect("in range");
    let event = verifier
        .accept(
            Inbound {
                headers: &headers,
                body,
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

/// A Stripe `payment_intent.succeeded` webhook about `pi_{name}` (event `evt_{name}`), claimed
/// at `at` by an ingress that crashed before it enqueued.
async fn crashed_payment(store: &impl EventStore, name: &str, at: i64) {
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    event["id"] = format!("evt_{name}").into();
    event["data"]["object"]["id"] = format!("pi_{name}").into();
    crashed_claim_of(store, &serde_json::to_vec(&event).expect("body"), at).await;
}

async fn reconciliation_conforms<S, Q, D>(store: S, queue: Q, dlq: D)
where
    S: Storage + Intake<Q> + Clone,
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
        no_providers(),
        clock.clone(),
        RecordingMetrics::default(),
        settings(0),
    );

    // Within the horizon: not stuck yet.
    let first = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(first.checks[STUCK_EVENTS].found, 0);
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
    assert_eq!(
        store.last_run().await.expect("last run"),
        Some(report.clone())
    );

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

    // Replays finished since that run: three delivered, one failed again.
    let at = |s: i64| Timestamp::from_unix(T0 + s).expect("in range");
    for (s, delivered) in [(1_060, true), (1_070, true), (1_200, false), (1_260, true)] {
        store.count_replay(at(s), delivered).await.expect("tally");
    }
    store.count_replay(at(-3_600), false).await.expect("tally");
    clock.advance_secs(600);
    let replays = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    let check = &replays.checks[REPLAYS];
    assert_eq!(check.found, 1, "{check:?}");
    assert!(
        check
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("replay success rate 75 % (3 of 4 since")),
        "{check:?}"
    );

    // Every run is kept, newest first; the two of the same second in either order.
    let kept = store.recent_runs(10).await.expect("runs");
    let ids: Vec<&str> = kept.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!((ids[0], ids[3]), (replays.id.as_str(), first.id.as_str()));
    let mut same_second = [ids[1], ids[2]];
    same_second.sort_unstable();
    let mut expected = [report.id.as_str(), again.id.as_str()];
    expected.sort_unstable();
    assert_eq!(same_second, expected);
    assert_eq!(kept[0], replays, "the whole report");
    assert_eq!(
        store.recent_runs(2).await.expect("runs").len(),
        2,
        "at most the limit"
    );
}

/// The local store keeps a run 90 days, as the table's TTL does on AWS: saving a run deletes
/// those that started before then.
#[tokio::test]
async fn the_local_store_keeps_runs_ninety_days() {
    let (store, _, _) = local_deployment("plumbline-runs");
    let run = |id: &str, at: i64| plumbline::reconcile::Report {
        id: id.to_owned(),
        started_at: Timestamp::from_unix(at).expect("in range"),
        finished_at: Timestamp::from_unix(at + 1).expect("in range"),
        checks: BTreeMap::new(),
        breached: Vec::new(),
    };
    let day = 86_400;
    for (id, at) in [("old", T0), ("kept", T0 + day)] {
        store.save_run(&run(id, at)).await.expect("save");
    }
    let ids = || async {
        let kept = store.recent_runs(10).await.expect("runs");
        kept.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(ids().await, ["kept", "old"]);
    store
        .save_run(&run("new", T0 + 90 * day + 1))
        .await
        .expect("save");
    assert_eq!(ids().await, ["new", "kept"], "`old` is past 90 days");
}

#[tokio::test]
async fn reconciliation_on_sqlite() {
    let (store, queue, dlq) = local_deployment("plumbline-reconcile");
    reconciliation_conforms(store, queue, dlq).await;
}

/// The local stack's store, queue and dead letters, on a database of the test's own: one
/// SQLite database is all three.
fn local_deployment(name: &str) -> (SqliteStore, SqliteStore, LocalDeadLetters) {
    let dir = std::env::temp_dir().join(unique(name));
    let store = SqliteStore::open(&dir, 8).expect("open");
    (store.clone(), store.clone(), LocalDeadLetters(store))
}

/// A table, a delivery queue and a dead-letter queue of the test's own, on moto's server.
async fn fresh_deployment() -> (DynamoStore, SqsQueue, SqsDeadLetters) {
    fresh_deployment_through(None).await
}

/// [`fresh_deployment`], its table's requests through the front at `dynamodb_at`, if any.
async fn fresh_deployment_through(
    dynamodb_at: Option<&str>,
) -> (DynamoStore, SqsQueue, SqsDeadLetters) {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::from_conf(dynamodb_config(&aws, dynamodb_at).build());
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let store = DynamoStore::new(ddb.clone(), create_table(&ddb).await);
    let queue = SqsQueue::new(sqs.clone(), create_queue(&sqs).await);
    let dlq = SqsDeadLetters::new(sqs.clone(), create_queue(&sqs).await);
    (store, queue, dlq)
}

#[tokio::test]
async fn reconciliation_on_dynamodb_and_sqs() {
    let (store, queue, dlq) = fresh_deployment().await;
    reconciliation_conforms(store, queue, dlq).await;
}

/// A claim delivery never settles however often it is enqueued again (the function crashes on
/// it) is re-enqueued `max_requeues` times, then dead-lettered with its reason: no copy more,
/// out of the sweep, counted as unrepairable, and a metric. Returns the event's key.
async fn stuck_claims_are_given_up_on<S, Q, D>(
    store: S,
    queue: Q,
    dlq: D,
    letters: &impl DeadLetterSource,
) -> String
where
    S: Storage + Intake<Q> + Clone,
    Q: EventQueue + QueueStats + QueueConsumer + Clone,
    D: QueueStats + DeadLetters + Clone,
{
    // What the function would log, to find the event in.
    let logs = Capture::default();
    let _logging =
        tracing::subscriber::set_default(lambda_subscriber("info", false, Redacting(logs.clone())));
    crashed_claim(&store).await;
    let key = "EVT#stripe#evt_3PqLr2F7kS1mZk0a1dS8kT4e";
    let clock = ManualClock::at(Timestamp::from_unix(T0 + 1_000).expect("in range"));
    let metrics = RecordingMetrics::default();
    let reconciler = requeuing_at_most(2, store.clone(), queue.clone(), dlq, &clock, &metrics);
    let run = || async {
        let report = reconciler
            .run(Instant::now() + Duration::from_secs(30))
            .await;
        let copies = queue
            .receive(10, Duration::from_secs(600))
            .await
            .expect("receive")
            .len();
        (report.checks[STUCK_EVENTS].clone(), copies)
    };

    // Each copy crashes delivery (nothing settles the event): two re-enqueues, counted.
    for requeues in 1..=2 {
        let (stuck, copies) = run().await;
        assert_eq!(
            (stuck.found, stuck.repaired, stuck.unrepairable, copies),
            (1, 1, 0, 1)
        );
        let record = store
            .get(&EventKey::parse(key).expect("key"))
            .await
            .expect("get")
            .expect("kept");
        assert_eq!(
            (record.status, record.requeues),
            (EventStatus::Received, requeues)
        );
        clock.advance_secs(1_000);
    }

    let (stuck, copies) = run().await;
    assert_eq!(
        (stuck.found, stuck.repaired, stuck.unrepairable, copies),
        (1, 0, 1, 0),
        "given up on, not enqueued a third time: {stuck:?}"
    );
    assert_eq!(stuck.ids, [key]);
    assert_eq!(
        stuck.note.as_deref(),
        Some("1 dead-lettered after 2 re-enqueues")
    );
    let record = store
        .get(&EventKey::parse(key).expect("key"))
        .await
        .expect("get")
        .expect("kept, not deleted");
    assert_eq!(record.status, EventStatus::DeadLettered);
    assert_eq!(
        metrics.count("ReconcileGaveUp", &[("Check", STUCK_EVENTS)]),
        1
    );
    // Each repair's line names the event by the id the other functions' lines carry.
    let lines = logs.json_lines();
    let about = |message: &str| -> Vec<(String, u64)> {
        lines
            .iter()
            .filter(|l| l["message"] == message)
            .map(|l| {
                (
                    l["event_id"].as_str().unwrap_or_default().to_owned(),
                    l["requeues"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    };
    let id = record.event_id.to_string();
    assert_eq!(
        about("stuck event enqueued again"),
        [(id.clone(), 1), (id.clone(), 2)],
        "{lines:#?}"
    );
    assert_eq!(about("stuck event dead-lettered"), [(id, 2)], "{lines:#?}");
    // A dead letter with the reason and the event, replayable whatever became of the copies.
    let written = letters
        .receive(10, Duration::from_secs(600))
        .await
        .expect("dead letters");
    assert_eq!(written.len(), 1, "one letter: {written:?}");
    let attr = |name: &str| written[0].attributes.get(name).map(String::as_str);
    assert_eq!(attr("reason"), Some(GIVEN_UP_DETAIL));
    assert_eq!(attr("event_key"), Some(key));
    assert_eq!(attr("event_type"), Some("payment.succeeded"));
    let body = QueueMessage::decode(&written[0].body).expect("a delivery message");
    assert_eq!(body.key, key);
    assert!(body.event.is_some(), "with its envelope");

    clock.advance_secs(1_000);
    let (stuck, copies) = run().await;
    assert_eq!((stuck.found, copies), (0, 0), "out of the sweep for good");
    key.to_owned()
}

#[tokio::test]
async fn stuck_claims_are_given_up_on_after_max_requeues_on_sqlite() {
    let (store, queue, dlq) = local_deployment("plumbline-give-up");
    let key = stuck_claims_are_given_up_on(store.clone(), queue, dlq, &store).await;
    let timeline = store.timeline(&key).await.expect("read").expect("event");
    assert_eq!(
        timeline.status_detail.as_deref(),
        Some(GIVEN_UP_DETAIL),
        "the reason is on the event"
    );
}

#[tokio::test]
async fn stuck_claims_are_given_up_on_after_max_requeues_on_dynamodb_and_sqs() {
    let (store, queue, dlq) = fresh_deployment().await;
    let key = stuck_claims_are_given_up_on(store.clone(), queue, dlq.clone(), &dlq).await;
    let timeline = store.timeline(&key).await.expect("read").expect("event");
    assert_eq!(timeline.status_detail.as_deref(), Some(GIVEN_UP_DETAIL));
}

/// The same, with the first answer of each refresh and of the give-up lost: moto carries the
/// write out, the front answers a 500, and the SDK's retry is refused by that very write. The
/// sweep knows each for its own, so the runs count and enqueue exactly as above.
#[tokio::test]
async fn stuck_claims_are_given_up_on_when_each_writes_answer_is_lost_once() {
    let front = LossyFront::start("UpdateItem", "claimed_at = :seen", Loss::ServerError, 3).await;
    let (store, queue, dlq) = fresh_deployment_through(Some(&front.url)).await;
    let key = stuck_claims_are_given_up_on(store.clone(), queue, dlq.clone(), &dlq).await;
    assert_eq!(
        front.seen(),
        6,
        "two refreshes and the give-up, each sent twice"
    );
    let timeline = store.timeline(&key).await.expect("read").expect("event");
    assert_eq!(timeline.status_detail.as_deref(), Some(GIVEN_UP_DETAIL));
}

const GIVEN_UP_DETAIL: &str = "not settled after 2 re-enqueues: delivery never finished it (it \
                               crashed or timed out on each receive)";

/// [`crashed_claim`], with `messages` of it on the queue (sent, never settled); its key.
async fn crashed_claim_on_the_queue(
    store: &impl EventStore,
    queue: &impl EventQueue,
    messages: usize,
) -> EventKey {
    crashed_claim(store).await;
    let key = EventKey::parse("EVT#stripe#evt_3PqLr2F7kS1mZk0a1dS8kT4e").expect("key");
    let record = store.get(&key).await.expect("get").expect("claimed");
    let envelope = record.envelope.as_ref().expect("envelope");
    for _ in 0..messages {
        queue
            .enqueue(&Outgoing::new(&key, envelope))
            .await
            .expect("enqueue");
    }
    key
}

/// While messages wait on the delivery queue and none is in flight (delivery held back, its
/// event source mapping disabled), a claim past the horizon may be one of them: it is counted,
/// not enqueued again, and not given up on even at `max_requeues = 0`. Once delivery reads the
/// queue (here: it took the message and crashed on it), the sweep acts again.
async fn stuck_claims_wait_while_nothing_reads_the_queue<S, Q, D>(store: S, queue: Q, dlq: D)
where
    S: Storage + Intake<Q> + Clone,
    Q: EventQueue + QueueStats + QueueConsumer + Clone,
    D: QueueStats + DeadLetters + Clone,
{
    let key = crashed_claim_on_the_queue(&store, &queue, 1).await;
    let clock = ManualClock::at(Timestamp::from_unix(T0 + 1_000).expect("in range"));
    let metrics = RecordingMetrics::default();
    let reconciler = requeuing_at_most(0, store.clone(), queue.clone(), dlq, &clock, &metrics);
    let run = || async {
        let report = reconciler
            .run(Instant::now() + Duration::from_secs(30))
            .await;
        let stuck = report.checks[STUCK_EVENTS].clone();
        let counts = (stuck.found, stuck.repaired, stuck.unrepairable);
        (report, stuck, counts)
    };

    let (report, stuck, counts) = run().await;
    assert_eq!(counts, (1, 0, 0), "{stuck:?}");
    assert_eq!(stuck.ids, [key.to_string()]);
    assert_eq!(
        stuck.note.as_deref(),
        Some(
            "delivery is not reading its queue (1 waiting, none in flight): left for it, none \
             enqueued again or given up on"
        )
    );
    let backlog = &report.checks[DELIVERY_BACKLOG];
    assert_eq!(backlog.found, 1);
    assert!(
        backlog
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with("0 in flight")),
        "{backlog:?}"
    );
    let record = store.get(&key).await.expect("get").expect("kept");
    assert_eq!((record.status, record.requeues), (EventStatus::Received, 0));
    // The one message is still the only one, and delivery takes it (and crashes on it).
    let taken = queue
        .receive(10, Duration::from_secs(600))
        .await
        .expect("receive");
    assert_eq!(taken.len(), 1, "no copy was added");

    // Now the queue is read: at max_requeues = 0 the claim is given up on.
    clock.advance_secs(60);
    let (_, stuck, counts) = run().await;
    assert_eq!(counts, (1, 0, 1), "{stuck:?}");
    let record = store.get(&key).await.expect("get").expect("kept");
    assert_eq!(record.status, EventStatus::DeadLettered);
}

#[tokio::test]
async fn stuck_claims_wait_while_nothing_reads_the_queue_on_sqlite() {
    let (store, queue, dlq) = local_deployment("plumbline-held");
    stuck_claims_wait_while_nothing_reads_the_queue(store, queue, dlq).await;
}

#[tokio::test]
async fn stuck_claims_wait_while_nothing_reads_the_queue_on_dynamodb_and_sqs() {
    let (store, queue, dlq) = fresh_deployment().await;
    stuck_claims_wait_while_nothing_reads_the_queue(store, queue, dlq).await;
}

/// A crashed claim with two messages on the queue, one of them held by delivery and the other
/// waiting; a reconciler at T0 + 1000 (past the horizon) that enqueues a claim again once.
async fn one_held_one_waiting<S, Q, D>(
    store: &S,
    queue: &Q,
    dlq: &D,
) -> (
    EventKey,
    ManualClock,
    RecordingMetrics,
    Reconciler<S, Q, D, StripeEvents, ManualClock, RecordingMetrics>,
)
where
    S: Storage + Intake<Q> + Clone,
    Q: EventQueue + QueueStats + QueueConsumer + Clone,
    D: QueueStats + DeadLetters + Clone,
{
    let key = crashed_claim_on_the_queue(store, queue, 2).await;
    let taken = queue
        .receive(1, Duration::from_secs(600))
        .await
        .expect("receive");
    assert_eq!(taken.len(), 1, "{taken:?}");
    let clock = ManualClock::at(Timestamp::from_unix(T0 + 1_000).expect("in range"));
    let metrics = RecordingMetrics::default();
    let reconciler = requeuing_at_most(
        1,
        store.clone(),
        queue.clone(),
        dlq.clone(),
        &clock,
        &metrics,
    );
    (key, clock, metrics, reconciler)
}

/// One run's stuck-events check.
async fn stuck_check<S, Q, D>(
    reconciler: &Reconciler<S, Q, D, StripeEvents, ManualClock, RecordingMetrics>,
) -> plumbline::reconcile::CheckResult
where
    S: Storage + Intake<Q> + Clone,
    Q: EventQueue + QueueStats + QueueConsumer + Clone,
    D: QueueStats + DeadLetters + Clone,
{
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    report.checks[STUCK_EVENTS].clone()
}

/// While delivery reads its queue but has not caught up (messages wait while others are in
/// flight), stuck claims are enqueued again as usual, but none is given up on: its copies may
/// be among the waiting messages. Once nothing waits, the next run gives up on it.
async fn spent_claims_wait_while_delivery_is_behind<S, Q, D>(
    store: S,
    queue: Q,
    dlq: D,
    retention_note: &str,
) where
    S: Storage + Intake<Q> + Clone,
    Q: EventQueue + QueueStats + QueueConsumer + Clone,
    D: QueueStats + DeadLetters + Clone,
{
    let (key, clock, metrics, reconciler) = one_held_one_waiting(&store, &queue, &dlq).await;
    let run = || stuck_check(&reconciler);
    let requeues_and_status = || async {
        let record = store.get(&key).await.expect("get").expect("kept");
        (record.requeues, record.status)
    };

    // Behind, not stopped: the claim is enqueued again (two wait now).
    let stuck = run().await;
    assert_eq!(
        (stuck.found, stuck.repaired, stuck.unrepairable),
        (1, 1, 0),
        "{stuck:?}"
    );
    assert_eq!(requeues_and_status().await, (1, EventStatus::Received));

    // Spent, but messages still wait: left, not dead-lettered.
    clock.advance_secs(1_000);
    let stuck = run().await;
    assert_eq!(
        (stuck.found, stuck.repaired, stuck.unrepairable),
        (1, 0, 0),
        "{stuck:?}"
    );
    assert_eq!(stuck.ids, [key.to_string()]);
    assert_eq!(
        stuck.note,
        Some(format!(
            "1 due to be given up on, left while the delivery queue has 2 waiting (their copies \
             may be among them{retention_note})"
        ))
    );
    assert_eq!(requeues_and_status().await, (1, EventStatus::Received));
    assert_eq!(dlq.depth().await.expect("depth").messages, 0, "no letter");
    assert_eq!(
        metrics.count("ReconcileGaveUp", &[("Check", STUCK_EVENTS)]),
        0
    );

    // Delivery takes the rest (and crashes on them): nothing waits, so the claim is given up on.
    let taken = queue
        .receive(2, Duration::from_secs(600))
        .await
        .expect("receive");
    assert_eq!(taken.len(), 2, "{taken:?}");
    clock.advance_secs(60);
    let stuck = run().await;
    assert_eq!(
        (stuck.found, stuck.repaired, stuck.unrepairable),
        (1, 0, 1),
        "{stuck:?}"
    );
    assert_eq!(
        stuck.note.as_deref(),
        Some("1 dead-lettered after 1 re-enqueues")
    );
    assert_eq!(requeues_and_status().await, (1, EventStatus::DeadLettered));
    assert_eq!(dlq.depth().await.expect("depth").messages, 1, "its letter");
}

#[tokio::test]
async fn spent_claims_wait_while_delivery_is_behind_on_sqlite() {
    let (store, queue, dlq) = local_deployment("plumbline-behind");
    // The local queue keeps a message until it is taken.
    spent_claims_wait_while_delivery_is_behind(store, queue, dlq, "").await;
}

#[tokio::test]
async fn spent_claims_wait_while_delivery_is_behind_on_dynamodb_and_sqs() {
    let (store, queue, dlq) = fresh_deployment().await;
    // A queue made with SQS's default retention, four days.
    spent_claims_wait_while_delivery_is_behind(
        store,
        queue,
        dlq,
        " until 345600 s after the last was sent",
    )
    .await;
}

/// However long messages keep waiting on the delivery queue, a spent claim is given up on once
/// the queue's retention has passed since its last copy went out (up to 900 s after the claim's
/// refresh): the queue has deleted that copy by then, read or not, and the reason says so.
#[tokio::test]
async fn spent_claims_are_given_up_on_once_the_queue_has_deleted_their_copies() {
    let (store, _, dlq) = fresh_deployment().await;
    let sqs = aws_sdk_sqs::Client::new(&aws().await);
    let url = sqs
        .create_queue()
        .queue_name(unique("delivery-hour"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MessageRetentionPeriod,
            "3600",
        )
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("url");
    let queue = SqsQueue::new(sqs, url);
    // The waiting message waits on through every run below.
    let (key, clock, metrics, reconciler) = one_held_one_waiting(&store, &queue, &dlq).await;
    let run = || stuck_check(&reconciler);
    let tally = |c: &plumbline::reconcile::CheckResult| (c.found, c.repaired, c.unrepairable);
    assert_eq!(
        tally(&run().await),
        (1, 1, 0),
        "enqueued again, at T0 + 1000"
    );

    // The last copy went out by T0 + 1900 at the latest; the queue keeps it until T0 + 5500.
    clock.advance_secs(4_500);
    let stuck = run().await;
    assert_eq!(tally(&stuck), (1, 0, 0), "{stuck:?}");
    assert_eq!(
        stuck.note.as_deref(),
        Some(
            "1 due to be given up on, left while the delivery queue has 2 waiting (their copies \
             may be among them until 3600 s after the last was sent)"
        )
    );
    assert_eq!(
        dlq.depth().await.expect("depth").messages,
        0,
        "no letter yet"
    );

    clock.advance_secs(1);
    let stuck = run().await;
    assert_eq!(tally(&stuck), (1, 0, 1), "{stuck:?}");
    assert_eq!(
        stuck.note.as_deref(),
        Some("1 dead-lettered after 1 re-enqueues")
    );
    assert_eq!(
        queue.depth().await.expect("depth").waiting(),
        2,
        "given up on while messages still wait"
    );
    let detail = "not settled after 1 re-enqueues, and its last copy is past the delivery \
                  queue's 3600 s retention: delivery crashed or timed out on each receive, or \
                  the queue deleted it unread";
    let record = store.get(&key).await.expect("get").expect("kept");
    assert_eq!(record.status, EventStatus::DeadLettered);
    let timeline = store
        .timeline(&key.to_string())
        .await
        .expect("read")
        .expect("event");
    assert_eq!(timeline.status_detail.as_deref(), Some(detail));
    let letters = dlq
        .receive(10, Duration::from_secs(600))
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), 1, "one letter: {letters:?}");
    assert_eq!(
        letters[0].attributes.get("reason").map(String::as_str),
        Some(detail)
    );
    assert_eq!(
        metrics.count("ReconcileGaveUp", &[("Check", STUCK_EVENTS)]),
        1
    );
}

/// A backlog of stuck events (a queue outage outlasted the horizon) is repaired in one run,
/// page after page: every claim re-enqueued once, oldest first in the report, none twice by the
/// next run.
#[tokio::test]
async fn a_backlog_of_stuck_events_is_re_enqueued_once_each_oldest_first() {
    let (store, queue, dlq) = fresh_deployment().await;
    // Claimed newest first, so the report's order is the store's doing, not the claims'.
    let backlog = 40_i64;
    for i in (0..backlog).rev() {
        crashed_payment(&store, &format!("backlog_{i:02}"), T0 + i).await;
    }
    // Pages of ten: the backlog takes four of them.
    let mut paged = settings(100);
    paged.page_limit = 10;
    let reconciler = an_hour_later(store, queue.clone(), dlq, paged);
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(60))
        .await;
    let stuck = &report.checks[STUCK_EVENTS];
    assert_eq!(
        (stuck.found, stuck.repaired, stuck.unrepairable),
        (40, 40, 0)
    );
    assert_eq!(stuck.note, None, "the run reached the end of the backlog");
    let oldest_first: Vec<String> = (0..backlog)
        .map(|i| format!("EVT#stripe#evt_backlog_{i:02}"))
        .collect();
    assert_eq!(stuck.ids, oldest_first);

    let mut enqueued = Vec::new();
    loop {
        let batch = queue
            .receive(10, Duration::from_secs(60))
            .await
            .expect("receive");
        if batch.is_empty() {
            break;
        }
        for message in batch {
            let decoded = QueueMessage::decode(&message.body).expect("body");
            enqueued.push(decoded.key);
        }
    }
    enqueued.sort();
    assert_eq!(enqueued, oldest_first, "each stuck event enqueued once");

    let again = reconciler
        .run(Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(
        again.checks[STUCK_EVENTS].found, 0,
        "refreshed claims are not stuck"
    );
}

/// Claims the sweep cannot read (written by another version, or damaged) stay in the pending
/// index. A run reports each with its key and still reaches the claims behind them, though they
/// fill more than a page; the next run reports them again and re-enqueues nothing twice. The
/// caller has put three damaged claims, `evt_damaged_{0,1,2}`, ahead of everything.
async fn unreadable_claims_hold_up_nothing<S, Q, D>(store: S, queue: Q, dlq: D)
where
    S: Storage + Intake<Q> + Clone,
    Q: EventQueue + QueueStats + QueueConsumer + Clone,
    D: QueueStats + DeadLetters + Clone,
{
    for i in 0..2 {
        crashed_payment(&store, &format!("behind_{i}"), T0 + i).await;
    }
    let reconciler = an_hour_later(store, queue.clone(), dlq, pages_of_two(10));
    let stuck_events = || async {
        let report = reconciler
            .run(Instant::now() + Duration::from_secs(60))
            .await;
        report.checks[STUCK_EVENTS].clone()
    };
    let tally = |c: &plumbline::reconcile::CheckResult| (c.found, c.repaired, c.unrepairable);
    let stuck = stuck_events().await;
    assert_eq!(tally(&stuck), (5, 2, 3), "{stuck:?}");
    assert_eq!(
        stuck.ids,
        [
            "EVT#stripe#evt_damaged_0",
            "EVT#stripe#evt_damaged_1",
            "EVT#stripe#evt_damaged_2",
            "EVT#stripe#evt_behind_0",
            "EVT#stripe#evt_behind_1",
        ]
    );
    assert_eq!(stuck.note, None, "the run reached the end of the index");
    let batch = queue
        .receive(10, Duration::from_secs(60))
        .await
        .expect("receive");
    let mut enqueued: Vec<String> = batch
        .iter()
        .map(|m| QueueMessage::decode(&m.body).expect("body").key)
        .collect();
    enqueued.sort();
    assert_eq!(
        enqueued,
        ["EVT#stripe#evt_behind_0", "EVT#stripe#evt_behind_1"]
    );

    let again = stuck_events().await;
    assert_eq!(tally(&again), (3, 0, 3), "still reported: {again:?}");
}

fn damaged_since(i: i64) -> String {
    Timestamp::from_unix(T0 - 100 + i)
        .expect("in range")
        .to_string()
}

#[tokio::test]
async fn unreadable_stuck_claims_hold_up_nothing_on_dynamodb() {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let table = create_table(&ddb).await;
    let text = aws_sdk_dynamodb::types::AttributeValue::S;
    for i in 0..3 {
        ddb.put_item()
            .table_name(&table)
            .item("pk", text(format!("EVT#stripe#evt_damaged_{i}")))
            .item("sk", text("EVENT".into()))
            .item("status", text("received".into()))
            .item("pending_shard", text(format!("PENDING#{i}")))
            .item("pending_since", text(damaged_since(i)))
            .send()
            .await
            .expect("put");
    }
    unreadable_claims_hold_up_nothing(
        DynamoStore::new(ddb.clone(), table),
        SqsQueue::new(sqs.clone(), create_queue(&sqs).await),
        SqsDeadLetters::new(sqs.clone(), create_queue(&sqs).await),
    )
    .await;
}

#[tokio::test]
async fn unreadable_stuck_claims_hold_up_nothing_on_sqlite() {
    let dir = std::env::temp_dir().join(unique("plumbline-unreadable"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let db = rusqlite::Connection::open(dir.join("plumbline.db")).expect("open the database");
    for i in 0..3 {
        db.execute(
            "INSERT INTO events (key, event_id, source, source_event_id, source_type, status, \
             payload_hash, claimed_at, received_at, received_ms, expires_at, envelope, pending_since) \
             VALUES (?1, ?2, 'stripe', ?3, 'payment_intent.succeeded', 'received', 'aa', ?4, ?4, 0, \
             0, 'not an envelope', ?4)",
            rusqlite::params![
                format!("EVT#stripe#evt_damaged_{i}"),
                format!("damaged-{i}"),
                format!("evt_damaged_{i}"),
                damaged_since(i),
            ],
        )
        .expect("insert");
    }
    drop(db);
    unreadable_claims_hold_up_nothing(store.clone(), store.clone(), LocalDeadLetters(store)).await;
}

#[tokio::test]
async fn the_lambda_handler_runs_within_the_invocation_time() {
    let (store, queue, dlq) = fresh_deployment().await;
    crashed_claim(&store).await;
    let reconciler = an_hour_later(store, queue, dlq, settings(10));
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

    // Both runs are kept, newest first, and listed without running again.
    let history = |json: bool| {
        let out = Command::new(binary())
            .args(["reconcile", "--aws", "--history", "5"])
            .args(json.then_some("--json"))
            .env("PLUMBLINE_TABLE", &table)
            .output()
            .expect("run plumbline reconcile --history");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let runs: serde_json::Value = serde_json::from_str(&history(true)).expect("json");
    let breached: Vec<&serde_json::Value> = runs
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| &r["breached"])
        .collect();
    assert_eq!(
        breached,
        [&serde_json::json!([]), &serde_json::json!([DLQ_MESSAGES])],
        "{runs}"
    );
    let text = history(false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains(" ok ") && lines[1].ends_with("dlq_messages 1"),
        "{text}"
    );
    assert!(
        lines[2].contains(" breached ") && lines[2].ends_with("dlq_messages 1 (breached)"),
        "{text}"
    );
}

/// A Stripe event as the events list returns it.
fn listed(id: &str, created: i64) -> serde_json::Value {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.processing.json")).expect("json");
    doc["id"] = serde_json::json!(id);
    doc["created"] = serde_json::json!(created);
    doc["data"]["object"]["id"] = serde_json::json!(format!("pi_{id}"));
    doc
}

/// The missed-webhook check of one run at `T0`, on a store of its own.
async fn missed_on_a_fresh_store<P: ProviderEvents>(
    providers: BTreeMap<SourceName, (SourceKind, P)>,
    settings: Settings,
) -> plumbline::reconcile::CheckResult {
    let dir = std::env::temp_dir().join(unique("plumbline-missed"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
    local_reconciler(&store, providers, &clock, settings)
        .run(Instant::now() + Duration::from_secs(30))
        .await
        .checks[MISSED_WEBHOOKS]
        .clone()
}

/// `providers`, each changed by `change` (held to a webhook endpoint, say).
fn each<P>(
    providers: BTreeMap<SourceName, (SourceKind, P)>,
    change: impl Fn(P) -> P,
) -> BTreeMap<SourceName, (SourceKind, P)> {
    providers
        .into_iter()
        .map(|(name, (kind, events))| (name, (kind, change(events))))
        .collect()
}

fn stripe_provider(api: &StripeApi) -> BTreeMap<SourceName, (SourceKind, StripeEvents)> {
    let events = StripeEvents::new(Some(&api.url), "rk_test_reconcile".to_owned().into())
        .expect("client")
        .with_backoff(Duration::from_millis(20));
    BTreeMap::from([(
        SourceName::try_from("stripe").expect("name"),
        (SourceKind::Stripe, events),
    )])
}

#[tokio::test]
async fn a_webhook_that_never_arrived_is_recovered_from_the_events_list_and_delivered_once() {
    let p = Pipeline::new().await;
    // A payout the account also made: a type plumbline does not read, never sent to it.
    let mut payout = listed("evt_payout", T0 - 150);
    payout["type"] = serde_json::json!("payout.paid");
    let api = StripeApi::start(vec![
        listed("evt_arrived", T0 - 300),
        listed("evt_lost_1", T0 - 200),
        payout,
        listed("evt_lost_2", T0 - 100),
    ])
    .await;
    // One of the three payment events arrived as a webhook.
    p.ingest(stripe(
        &serde_json::to_vec(&listed("evt_arrived", T0 - 300)).expect("json"),
    ))
    .await;
    p.deliver_visible().await;

    let aws = aws().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), p.table.clone());
    let reconciler = Reconciler::new(
        store,
        SqsQueue::new(sqs.clone(), p.queue_url.clone()),
        SqsDeadLetters::new(sqs, p.dlq_url.clone()),
        stripe_provider(&api),
        p.clock.clone(),
        RecordingMetrics::default(),
        settings(10),
    );
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    let missed = &report.checks[MISSED_WEBHOOKS];
    assert_eq!((missed.found, missed.repaired), (2, 2));
    assert_eq!(
        missed.ids,
        ["EVT#stripe#evt_lost_2", "EVT#stripe#evt_lost_1"]
    );
    assert_eq!(api.auth()[0], "Bearer rk_test_reconcile");
    assert!(api.queries()[0].contains_key("created[gte]"));
    // The list was asked for the types plumbline reads, so the payout was not taken for a
    // missed webhook.
    let asked: Vec<String> = api.queries()[0]
        .iter()
        .filter(|(k, _)| k.starts_with("types["))
        .map(|(_, v)| v.clone())
        .collect();
    assert!(
        asked.contains(&"payment_intent.processing".to_owned()),
        "{asked:?}"
    );
    assert!(!asked.contains(&"payout.paid".to_owned()), "{asked:?}");

    let (ids, failed) = p.deliver_visible().await;
    assert_eq!((ids.len(), failed.len()), (2, 0));
    assert_eq!(
        p.erp.idempotency_keys(),
        [
            "stripe:evt_arrived",
            "stripe:evt_lost_2",
            "stripe:evt_lost_1"
        ],
        "each delivered once"
    );
    let body = p.erp.requests()[1].json();
    assert_eq!(body["event"]["trace"]["origin"], "reconcile");

    // Stripe's own retry of a recovered event lands late, indented as webhooks are and counting
    // a different number of endpoints still waiting than the list did: the same event, so a
    // duplicate (2xx, nothing new), not a conflict.
    let mut late = listed("evt_lost_1", T0 - 200);
    late["pending_webhooks"] = serde_json::json!(3);
    let answer = p
        .ingest(stripe(&serde_json::to_vec_pretty(&late).expect("json")))
        .await;
    assert_eq!(answer["status"], "duplicate", "{answer}");
    assert_eq!(
        p.queue_depth().await,
        0,
        "nothing enqueued for the late copy"
    );

    // The next run starts from the watermark and repairs nothing twice.
    let again = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(again.checks[MISSED_WEBHOOKS].found, 0);
    assert_eq!(p.queue_depth().await, 0);
}

/// A Paddle event as its events list returns it: the webhook's fields without its
/// `notification_id`, about transaction `txn_{id}`.
/// Reconciliation's provider map: the source `paddle`, read from `api`.
fn paddle_providers(api: &PaddleApi) -> BTreeMap<SourceName, (SourceKind, PaddleEvents)> {
    let events =
        PaddleEvents::new(Some(&api.url), "pdl_apikey_test".to_owned().into()).expect("client");
    BTreeMap::from([(
        SourceName::try_from("paddle").expect("name"),
        (SourceKind::Paddle, events),
    )])
}

fn paddle_listed(id: &str, occurred_at: i64) -> serde_json::Value {
    let mut doc: serde_json::Value =
        serde_json::from_slice(&fixture("paddle/transaction.completed.json")).expect("json");
    doc.as_object_mut()
        .expect("an object")
        .remove("notification_id");
    doc["event_id"] = serde_json::json!(id);
    doc["occurred_at"] = serde_json::json!(
        Timestamp::from_unix(occurred_at)
            .expect("in range")
            .to_string()
    );
    doc["data"]["id"] = serde_json::json!(format!("txn_{id}"));
    doc["data"]["custom_data"]["order_id"] = serde_json::json!(format!("ord_{id}"));
    doc
}

const PADDLE_PIPELINE: &str = r#"
[sources.paddle]
kind = "paddle"
secrets = ["env:PADDLE_SECRET"]

[targets.erp]
kind = "http"
url = "{ERP}/plumbline"

[[routes]]
events = ["payment.*"]
targets = ["erp"]
"#;

/// Paddle's events list has no time filter: it is read newest first, a page at a time, and the
/// walk ends at the first event older than the window, so what lies beyond is never asked for.
/// What the store lacks is taken in and delivered once; Paddle's own late notification of it
/// (with a `notification_id` the list does not carry) is a duplicate.
#[tokio::test]
async fn paddle_webhooks_that_never_arrived_are_recovered_from_its_events_list() {
    let p = Pipeline::with_config(PADDLE_PIPELINE).await;
    let window = 30 * 86_400;
    // Paddle's ids sort by creation, as the events they name.
    // `evt_04a`: an address change, a type plumbline does not read.
    let mut address = paddle_listed("evt_04a", T0 - 150);
    address["event_type"] = serde_json::json!("address.updated");
    let api = PaddleApi::start(vec![
        paddle_listed("evt_01", T0 - window - 2_000),
        paddle_listed("evt_02", T0 - window - 1_000),
        paddle_listed("evt_03", T0 - 300),
        paddle_listed("evt_04", T0 - 200),
        address,
        paddle_listed("evt_05", T0 - 100),
    ])
    .await;
    let webhook = |id: &str, occurred_at: i64| {
        let mut doc = paddle_listed(id, occurred_at);
        doc["notification_id"] = serde_json::json!(format!("ntf_{id}"));
        serde_json::to_vec(&doc).expect("json")
    };
    p.ingest(paddle(&webhook("evt_04", T0 - 200))).await;
    p.deliver_visible().await;

    let aws = aws().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let events =
        PaddleEvents::new(Some(&api.url), "pdl_apikey_test".to_owned().into()).expect("client");
    let mut paged = settings(10);
    paged.page_limit = 2;
    let reconciler = Reconciler::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), p.table.clone()),
        SqsQueue::new(sqs.clone(), p.queue_url.clone()),
        SqsDeadLetters::new(sqs, p.dlq_url.clone()),
        BTreeMap::from([(
            SourceName::try_from("paddle").expect("name"),
            (SourceKind::Paddle, events),
        )]),
        p.clock.clone(),
        RecordingMetrics::default(),
        paged,
    );
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    let missed = &report.checks[MISSED_WEBHOOKS];
    assert_eq!((missed.found, missed.repaired), (2, 2), "{missed:?}");
    assert_eq!(missed.ids, ["EVT#paddle#evt_05", "EVT#paddle#evt_03"]);
    let queries = api.queries();
    let asked = |q: &BTreeMap<String, String>, name: &str| q.get(name).cloned();
    assert_eq!(
        queries.len(),
        2,
        "the second page reached the window's end: {queries:?}"
    );
    assert_eq!(asked(&queries[0], "order_by").as_deref(), Some("id[DESC]"));
    let types = asked(&queries[0], "event_type").unwrap_or_default();
    assert!(
        types.split(',').any(|t| t == "transaction.completed") && !types.contains("address."),
        "{types}"
    );
    assert_eq!(asked(&queries[0], "per_page").as_deref(), Some("2"));
    assert_eq!(asked(&queries[0], "after"), None);
    assert_eq!(asked(&queries[1], "after").as_deref(), Some("evt_04"));
    assert_eq!(api.auth(), ["Bearer pdl_apikey_test"; 2]);

    let (ids, failed) = p.deliver_visible().await;
    assert_eq!((ids.len(), failed.len()), (2, 0));
    assert_eq!(
        p.erp.idempotency_keys(),
        ["paddle:evt_04", "paddle:evt_05", "paddle:evt_03"],
        "each delivered once"
    );

    let answer = p.ingest(paddle(&webhook("evt_03", T0 - 300))).await;
    assert_eq!(answer["status"], "duplicate", "{answer}");
    assert_eq!(
        p.queue_depth().await,
        0,
        "nothing enqueued for the late one"
    );
}

/// The missed-webhook check looks a page of the provider's list up in one request, not one per
/// listed event: in steady state every listed event arrived as a webhook (on DynamoDB, counted
/// on the wire).
#[tokio::test]
async fn the_missed_webhook_check_looks_a_page_up_in_one_request() {
    const LISTED: i64 = 30;
    let events: Vec<_> = (0..LISTED)
        .map(|i| listed(&format!("evt_listed_{i:02}"), T0 - 600 + i))
        .collect();
    let api = StripeApi::start(events.clone()).await;
    let aws = aws().await;
    let requests = Requests::default();
    let table = create_table(&aws_sdk_dynamodb::Client::new(&aws)).await;
    let store = DynamoStore::new(requests.client(&aws), table);
    // Every one arrived as a webhook but the newest.
    for event in &events[..events.len() - 1] {
        crashed_claim_of(&store, &serde_json::to_vec(event).expect("json"), T0 - 60).await;
    }
    requests.reset();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let reconciler = Reconciler::new(
        store,
        SqsQueue::new(sqs.clone(), create_queue(&sqs).await),
        SqsDeadLetters::new(sqs.clone(), create_queue(&sqs).await),
        stripe_provider(&api),
        ManualClock::at(Timestamp::from_unix(T0).expect("in range")),
        RecordingMetrics::default(),
        settings(10),
    );
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(60))
        .await;
    let missed = &report.checks[MISSED_WEBHOOKS];
    assert_eq!((missed.found, missed.repaired), (1, 1), "{missed:?}");
    assert_eq!(missed.ids, ["EVT#stripe#evt_listed_29"]);
    let counts = requests.counts();
    // The page's one look-up, beside the sweep's cursors (one batch); the source's watermark
    // is the one single read.
    assert_eq!(counts.get("BatchGetItem"), Some(&2), "{counts:?}");
    assert_eq!(counts.get("GetItem"), Some(&1), "{counts:?}");
}

/// Reconciliation that last walked a provider's list before the provider's 30-day window (it
/// was stopped, or the API failed, that long) checks what the list still holds, and says which
/// stretch it could not check; the run after it has nothing to say.
#[tokio::test]
async fn a_watermark_older_than_the_providers_window_is_reported_as_a_stretch_not_checked() {
    let api = StripeApi::start(vec![listed("evt_in_the_window", T0 - 3_600)]).await;
    let dir = std::env::temp_dir().join(unique("plumbline-lapsed"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let day = 86_400;
    let last_walk = Timestamp::from_unix(T0 - 40 * day).expect("in range");
    store
        .save_watermark("stripe", &Watermark::finished(last_walk))
        .await
        .expect("watermark");
    let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
    let reconciler = local_reconciler(&store, stripe_provider(&api), &clock, settings(10));
    let missed = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await
        .checks[MISSED_WEBHOOKS]
        .clone();
    assert_eq!((missed.found, missed.repaired), (1, 1), "{missed:?}");
    let window_start = Timestamp::from_unix(T0 - 30 * day).expect("in range");
    assert_eq!(
        missed.note,
        Some(format!(
            "stripe: not checked from {last_walk} to {window_start}, past the provider's 30 days \
             of events"
        ))
    );
    clock.advance_secs(300);
    let again = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await
        .checks[MISSED_WEBHOOKS]
        .clone();
    assert_eq!((again.found, again.note), (0, None));
}

/// With `reconcile.failed_only`, Paddle's undelivered notifications are read instead of its
/// events: one event failed to two destinations is taken in once; a delivered one, one of a type
/// plumbline does not read and one from before the walk's start are not.
#[tokio::test]
async fn paddles_undelivered_notifications_are_what_failed_only_reads() {
    use crate::helpers::paddle_api::notification;
    let day = 86_400;
    let (failed, delivered, old) = (
        paddle_listed("evt_failed", T0 - 600),
        paddle_listed("evt_delivered", T0 - 500),
        paddle_listed("evt_old", T0 - 40 * day),
    );
    let mut address = paddle_listed("evt_address", T0 - 400);
    address["event_type"] = serde_json::json!("address.updated");
    let api = PaddleApi::with_notifications(
        vec![failed.clone(), delivered.clone()],
        vec![
            notification("ntf_01", &old, "failed"),
            notification("ntf_02", &failed, "failed"),
            notification("ntf_03", &failed, "needs_retry"),
            notification("ntf_04", &delivered, "delivered"),
            notification("ntf_05", &address, "failed"),
        ],
    )
    .await;
    let dir = std::env::temp_dir().join(unique("plumbline-paddle-failed"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
    let providers = paddle_providers(&api);
    let mut settings = settings(10);
    settings.failed_only = true;
    let reconciler = local_reconciler(&store, providers, &clock, settings);
    let missed = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await
        .checks[MISSED_WEBHOOKS]
        .clone();
    assert_eq!((missed.found, missed.repaired), (1, 1), "{missed:?}");
    assert_eq!(missed.ids, ["EVT#paddle#evt_failed"]);
    assert!(api.queries().is_empty(), "the events list is not read");
    let asked = &api.notification_queries()[0];
    assert_eq!(
        asked.get("status").map(String::as_str),
        Some("failed,needs_retry")
    );
    let from = Timestamp::from_unix(T0 - 30 * day).expect("in range");
    assert_eq!(asked.get("from"), Some(&from.to_string()));
    let key = EventKey::parse("EVT#paddle#evt_failed").expect("key");
    let taken = store.get(&key).await.expect("get").expect("taken in");
    assert_eq!(taken.status, EventStatus::Received);
}

/// A walk cut short in Paddle's events list, then `failed_only` switched on: the notifications
/// list is walked from the watermark, not from the events list's cursor, which names no
/// notification; and back again the same way.
#[tokio::test]
async fn a_walk_cut_short_in_one_list_starts_over_in_the_other() {
    use crate::helpers::paddle_api::notification;
    let listed: Vec<serde_json::Value> = (1..=3)
        .map(|n| paddle_listed(&format!("evt_0{n}"), T0 - 700 + n * 100))
        .collect();
    let api = PaddleApi::with_notifications(
        listed.clone(),
        vec![
            notification("ntf_01", &listed[0], "failed"),
            notification("ntf_02", &listed[1], "needs_retry"),
        ],
    )
    .await;
    let dir = std::env::temp_dir().join(unique("plumbline-paddle-switch"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
    let run = async |failed_only: bool| {
        let providers = paddle_providers(&api);
        let mut settings = settings(10);
        (settings.page_limit, settings.max_pages) = (1, 1);
        settings.failed_only = failed_only;
        local_reconciler(&store, providers, &clock, settings)
            .run(Instant::now() + Duration::from_secs(30))
            .await
            .checks[MISSED_WEBHOOKS]
            .clone()
    };
    let after = |query: &BTreeMap<String, String>| query.get("after").cloned();

    let first = run(false).await;
    assert_eq!(first.ids, ["EVT#paddle#evt_03"], "{first:?}");
    let cut = store
        .load_watermark("paddle")
        .await
        .expect("load")
        .expect("saved");
    assert_eq!(cut.cursor.as_deref(), Some("evt_03"));
    assert!(!cut.failed_only);

    let second = run(true).await;
    assert_eq!(second.ids, ["EVT#paddle#evt_02"], "{second:?}");
    assert_eq!(
        after(&api.notification_queries()[0]),
        None,
        "walked from the start"
    );
    let cut = store
        .load_watermark("paddle")
        .await
        .expect("load")
        .expect("saved");
    assert_eq!(cut.cursor.as_deref(), Some("ntf_02"));
    assert!(cut.failed_only);

    let third = run(false).await;
    let events_asked = api.queries();
    assert_eq!(events_asked.len(), 2, "one page a run");
    assert_eq!(after(&events_asked[1]), None, "walked from the start");
    assert!(third.ids.is_empty(), "evt_03 is stored: {third:?}");
}

/// With the webhook endpoint named, the missed-webhook check lists only the types that endpoint
/// is sent: an event of a type plumbline reads but the endpoint is not subscribed to was never
/// a webhook, so it is not taken in. `*` sends every type; an endpoint sent none of them is not
/// listed at all; an endpoint the provider does not know is said in the run's note.
#[tokio::test]
async fn missed_webhooks_are_looked_for_in_the_types_the_stripe_endpoint_is_sent() {
    let mut succeeded = listed("evt_succeeded", T0 - 500);
    succeeded["type"] = serde_json::json!("payment_intent.succeeded");
    let api = StripeApi::start(vec![listed("evt_processing", T0 - 600), succeeded]).await;
    let run = async |endpoint: &str| {
        let providers = each(stripe_provider(&api), |events| {
            events.with_endpoint(Some(endpoint.to_owned()))
        });
        missed_on_a_fresh_store(providers, settings(10)).await
    };
    let types = |query: &BTreeMap<String, String>| -> Vec<String> {
        query
            .iter()
            .filter(|(k, _)| k.starts_with("types["))
            .map(|(_, v)| v.clone())
            .collect()
    };

    api.add_endpoint("we_1Sent", &["payment_intent.processing", "invoice.paid"]);
    let held = run("we_1Sent").await;
    assert_eq!(held.ids, ["EVT#stripe#evt_processing"], "{held:?}");
    assert_eq!(types(&api.queries()[0]), ["payment_intent.processing"]);
    assert_eq!(api.endpoint_reads(), ["we_1Sent"]);

    api.add_endpoint("we_1All", &["*"]);
    let all = run("we_1All").await;
    assert_eq!(all.found, 2, "{all:?}");
    assert_eq!(
        types(&api.queries()[1]).len(),
        SourceKind::Stripe.read_types().len()
    );

    api.add_endpoint("we_1Other", &["invoice.paid"]);
    let none = run("we_1Other").await;
    assert_eq!((none.found, none.note.as_deref()), (0, None), "{none:?}");
    assert_eq!(api.queries().len(), 2, "nothing to list");

    let unknown = run("we_1Gone").await;
    assert_eq!(
        unknown.note.as_deref(),
        Some("stripe: the provider refused the request: HTTP 404; the next run continues")
    );
    assert_eq!(api.queries().len(), 2);

    // Disabled (Stripe does so after days of failed deliveries): sent nothing, so what it
    // lists is taken in, and the run says why.
    api.disable_endpoint("we_1All");
    let off = run("we_1All").await;
    assert_eq!(off.found, 2, "{off:?}");
    assert_eq!(
        off.note.as_deref(),
        Some("stripe: webhook endpoint we_1All is disabled: Stripe sends it no webhooks")
    );
}

/// With the notification destination named, Paddle's lists are held to it: its subscribed
/// types in the events list, and its own undelivered notifications (`notification_setting_id`),
/// not another destination's.
#[tokio::test]
async fn paddles_lists_are_held_to_the_named_notification_destination() {
    use crate::helpers::paddle_api::{DESTINATION, notification};
    let (ours, theirs) = (
        paddle_listed("evt_ours", T0 - 600),
        paddle_listed("evt_theirs", T0 - 500),
    );
    let mut elsewhere = notification("ntf_02", &theirs, "failed");
    elsewhere["notification_setting_id"] = serde_json::json!("ntfset_01other");
    let api = PaddleApi::with_notifications(
        vec![ours.clone(), theirs.clone()],
        vec![notification("ntf_01", &ours, "failed"), elsewhere],
    )
    .await;
    api.add_setting(DESTINATION, &["transaction.completed", "address.updated"]);
    let run = async |failed_only: bool| {
        let providers = each(paddle_providers(&api), |events| {
            events.with_endpoint(Some(DESTINATION.to_owned()))
        });
        let mut settings = settings(10);
        settings.failed_only = failed_only;
        missed_on_a_fresh_store(providers, settings).await
    };

    let undelivered = run(true).await;
    assert_eq!(undelivered.ids, ["EVT#paddle#evt_ours"], "{undelivered:?}");
    let asked = &api.notification_queries()[0];
    assert_eq!(
        asked.get("notification_setting_id").map(String::as_str),
        Some(DESTINATION)
    );

    let listed = run(false).await;
    assert_eq!(listed.found, 2, "{listed:?}");
    assert_eq!(
        api.queries()[0].get("event_type").map(String::as_str),
        Some("transaction.completed")
    );
    assert_eq!(api.setting_reads(), [DESTINATION, DESTINATION]);
    assert_eq!(listed.note, None);

    api.deactivate(DESTINATION);
    let inactive = run(false).await;
    assert_eq!(inactive.found, 2, "{inactive:?}");
    assert_eq!(
        inactive.note.as_deref(),
        Some(
            "paddle: notification destination ntfset_01plumbline is inactive: Paddle sends it \
             no webhooks"
        )
    );
}

/// Paddle lists 90 days of events, not Stripe's 30: a Paddle watermark 60 days old is walked
/// from where it stands, and only one older than 90 days leaves a stretch not checked.
#[tokio::test]
async fn a_paddle_watermark_is_held_to_paddles_ninety_days() {
    let day = 86_400;
    let api = PaddleApi::start(vec![
        paddle_listed("evt_01", T0 - 50 * day),
        paddle_listed("evt_02", T0 - 3_600),
    ])
    .await;
    let dir = std::env::temp_dir().join(unique("plumbline-paddle-window"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let at = |secs: i64| Timestamp::from_unix(secs).expect("in range");
    store
        .save_watermark("paddle", &Watermark::finished(at(T0 - 60 * day)))
        .await
        .expect("watermark");
    let clock = ManualClock::at(at(T0));
    let providers = paddle_providers(&api);
    let reconciler = local_reconciler(&store, providers, &clock, settings(10));
    let run = async || {
        reconciler
            .run(Instant::now() + Duration::from_secs(30))
            .await
            .checks[MISSED_WEBHOOKS]
            .clone()
    };
    let missed = run().await;
    assert_eq!((missed.found, missed.repaired), (2, 2), "{missed:?}");
    assert_eq!(missed.note, None, "60 days is within Paddle's window");

    let last_walk = at(T0 - 100 * day);
    store
        .save_watermark("paddle", &Watermark::finished(last_walk))
        .await
        .expect("watermark");
    clock.advance_secs(300);
    let lapsed = run().await;
    assert_eq!(lapsed.found, 0, "both are stored now: {lapsed:?}");
    let window_start = at(T0 + 300 - 90 * day);
    assert_eq!(
        lapsed.note,
        Some(format!(
            "paddle: not checked from {last_walk} to {window_start}, past the provider's 90 days \
             of events"
        ))
    );
}

/// A source's first walk (no watermark) reaches back `reconcile.first_walk_days` only: with 1,
/// an event of two days ago is left alone and one of an hour ago is taken in; with 0, nothing
/// before the first run is.
#[tokio::test]
async fn a_first_walk_reaches_back_first_walk_days_only() {
    let day = 86_400;
    let api = StripeApi::start(vec![
        listed("evt_two_days_ago", T0 - 2 * day),
        listed("evt_an_hour_ago", T0 - 3_600),
    ])
    .await;
    for (first_walk_days, expected) in [(1, vec!["EVT#stripe#evt_an_hour_ago"]), (0, vec![])] {
        let mut settings = settings(10);
        settings.first_walk_days = first_walk_days;
        let missed = missed_on_a_fresh_store(stripe_provider(&api), settings).await;
        assert_eq!(missed.ids, expected, "first_walk_days = {first_walk_days}");
        assert_eq!(missed.note, None);
    }
}

#[tokio::test]
async fn a_run_cut_short_resumes_from_the_watermark_and_skips_nothing() {
    let events: Vec<_> = (0..5)
        .map(|i| listed(&format!("evt_page_{i}"), T0 - 500 + i))
        .collect();
    let api = StripeApi::start(events).await;
    let dir = std::env::temp_dir().join(unique("plumbline-missed"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
    let reconciler = local_reconciler(&store, stripe_provider(&api), &clock, pages_of_two(1));

    let mut seen = Vec::new();
    for run in 0..3 {
        let report = reconciler
            .run(Instant::now() + Duration::from_secs(30))
            .await;
        let missed = &report.checks[MISSED_WEBHOOKS];
        seen.extend(missed.ids.clone());
        let expect_note = run < 2;
        assert_eq!(
            missed.note.is_some(),
            expect_note,
            "run {run}: {:?}",
            missed.note
        );
    }
    let expected: Vec<String> = (0..5)
        .rev()
        .map(|i| format!("EVT#stripe#evt_page_{i}"))
        .collect();
    assert_eq!(
        seen, expected,
        "every event once, newest first, across three runs"
    );
    let afters: Vec<Option<String>> = api
        .queries()
        .iter()
        .map(|q| q.get("starting_after").cloned())
        .collect();
    assert_eq!(
        afters,
        [None, Some("evt_page_3".into()), Some("evt_page_1".into())]
    );
    // The walk finished: the next one starts at the first walk's start, from the top.
    clock.advance_secs(60);
    let fresh = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(fresh.checks[MISSED_WEBHOOKS].found, 0);
    let last = api.queries().last().cloned().expect("a query");
    assert_eq!(
        (
            last.get("starting_after"),
            last.get("created[gte]").map(String::as_str)
        ),
        (None, Some(T0.to_string().as_str()))
    );
}

#[tokio::test]
async fn a_provider_429_is_backed_off_and_retried() {
    let api = StripeApi::start(vec![listed("evt_throttled", T0 - 100)]).await;
    api.throttle(2);
    let dir = std::env::temp_dir().join(unique("plumbline-429"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
    let reconciler = local_reconciler(&store, stripe_provider(&api), &clock, settings(10));
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(report.checks[MISSED_WEBHOOKS].repaired, 1);
    assert_eq!(api.queries().len(), 3, "two 429s, then the page");
}

/// A 429 with `Retry-After` is waited out when it is short, and left to the next run when it is
/// longer than a run should sleep.
#[tokio::test]
async fn a_providers_retry_after_is_waited_out_or_left_to_the_next_run() {
    let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
    let run = |api: StripeApi| {
        let clock = clock.clone();
        async move {
            let dir = std::env::temp_dir().join(unique("plumbline-retry-after"));
            let store = SqliteStore::open(&dir, 8).expect("open");
            let reconciler = local_reconciler(&store, stripe_provider(&api), &clock, settings(10));
            reconciler
                .run(Instant::now() + Duration::from_secs(30))
                .await
                .checks[MISSED_WEBHOOKS]
                .clone()
        }
    };

    let api = StripeApi::start(vec![listed("evt_throttled", T0 - 100)]).await;
    api.throttle_for(1);
    let missed = run(api.clone()).await;
    assert_eq!(missed.repaired, 1, "{missed:?}");
    let arrivals = api.arrivals();
    assert_eq!(arrivals.len(), 2, "a 429, then the page");
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(1),
        "the second asked after Retry-After (1 s), not the 20 ms backoff: {:?}",
        arrivals[1] - arrivals[0]
    );

    let api = StripeApi::start(vec![listed("evt_throttled", T0 - 100)]).await;
    api.throttle_for(3_600);
    let missed = run(api.clone()).await;
    assert_eq!((missed.found, api.arrivals().len()), (0, 1), "{missed:?}");
    assert_eq!(
        missed.note.as_deref(),
        Some("stripe: the provider is rate limiting us; the next run continues")
    );
}

/// The payment ↔ order sweep reads the other side of a page's pairs in one request, not one
/// per pair (on DynamoDB, counted on the wire).
#[tokio::test]
async fn the_parity_sweep_reads_a_pages_counterparts_in_one_request() {
    const PAIRS: usize = 20;
    let aws = aws().await;
    let requests = Requests::default();
    let table = create_table(&aws_sdk_dynamodb::Client::new(&aws)).await;
    let store = DynamoStore::new(requests.client(&aws), table);
    let at = Timestamp::from_unix(T0).expect("in range");
    let field = |value: String| FieldValue {
        value: serde_json::Value::String(value),
        source: "stripe".into(),
        event_id: "evt_seed".into(),
        at,
    };
    let save = |mut entity: Entity| {
        entity.version = 1;
        entity.touch(at);
        let store = &store;
        async move { store.save_entity(&entity).await.expect("save") }
    };
    for i in 0..PAIRS {
        let (payment_id, order_id) = (format!("pi_{i:02}"), format!("ord_{i:02}"));
        let mut payment = Entity::new(EntityKind::Payment, &payment_id);
        payment
            .fields
            .insert("order_id".into(), field(order_id.clone()));
        let mut order = Entity::new(EntityKind::Order, &order_id);
        order.fields.insert("payment_id".into(), field(payment_id));
        save(payment).await;
        save(order).await;
    }
    // Attempts that paid the same order: they share its one read.
    for i in 0..5 {
        let mut retry = Entity::new(EntityKind::Payment, format!("pi_retry_{i}"));
        retry
            .fields
            .insert("order_id".into(), field("ord_00".into()));
        save(retry).await;
    }
    requests.reset();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let reconciler = an_hour_later(
        store,
        SqsQueue::new(sqs.clone(), create_queue(&sqs).await),
        SqsDeadLetters::new(sqs.clone(), create_queue(&sqs).await),
        settings(10),
    );
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(report.checks[PAYMENT_ORDER_PARITY].found, 0, "{report:?}");
    let counts = requests.counts();
    // No single reads: the two walks' cursors are read in one batch, and each walk's page
    // costs one read of its entities and one of their counterparts.
    assert_eq!(counts.get("GetItem"), None, "{counts:?}");
    assert_eq!(counts.get("BatchGetItem"), Some(&5), "{counts:?}");
    // Both walks began and ended in this run: the report is the run's one write.
    assert_eq!(counts.get("PutItem"), Some(&1), "{counts:?}");
}

/// A sweep cut short by the page limit saves where it stopped, the next runs continue from
/// there, the run that finishes clears the cursor, and a walk that begins and ends in one run
/// leaves the saved state as it was.
#[tokio::test]
async fn a_sweep_cut_short_continues_where_it_stopped_and_clears_its_cursor_when_done() {
    let dir = std::env::temp_dir().join(unique("plumbline-sweep"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let at = Timestamp::from_unix(T0).expect("in range");
    for i in 0..5 {
        let mut payment = Entity::new(EntityKind::Payment, format!("pi_{i}"));
        payment.version = 1;
        payment.touch(at);
        store.save_entity(&payment).await.expect("save");
    }
    let clock = ManualClock::at(Timestamp::from_unix(T0 + 3600).expect("in range"));
    let reconciler = |pages| local_reconciler(&store, no_providers(), &clock, pages_of_two(pages));
    let saved = || async { store.load_watermark("sweep:payment").await.expect("read") };

    let one_page = reconciler(1);
    let mut cursors = Vec::new();
    for _ in 0..3 {
        let report = one_page.run(Instant::now() + Duration::from_secs(30)).await;
        let note = report.checks[PAYMENT_ORDER_PARITY].note.clone();
        cursors.push((saved().await.and_then(|w| w.cursor), note.is_some()));
    }
    assert_eq!(
        cursors,
        [
            (Some(change_entry(at, "pi_1")), true),
            (Some(change_entry(at, "pi_3")), true),
            (None, false),
        ],
        "two pages of two, then the last entity and a cleared cursor"
    );
    let finished = saved().await.expect("the finishing run's state");

    clock.advance_secs(600);
    let report = reconciler(10)
        .run(Instant::now() + Duration::from_secs(30))
        .await;
    assert_eq!(report.checks[PAYMENT_ORDER_PARITY].note, None);
    assert_eq!(
        saved().await,
        Some(finished),
        "a whole walk in one run writes nothing"
    );
    assert_eq!(
        store.load_watermark("sweep:order").await.expect("read"),
        None,
        "no orders: the order walk never saved a cursor"
    );
}
