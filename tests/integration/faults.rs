//! Exactly-once effects under faults, through the real ingress and delivery use cases on
//! SQLite: a seeded scenario of 10,000 requests across all five sources (duplicates, events out
//! of order, lead double-submits, forged requests), targets that fail a third of their calls
//! (5xx, 429 with Retry-After, timeouts) and refuse a few events for good, and crashes at every
//! named point of ≥ 5 % of attempts (plus store throttling and refused queue sends). After the
//! system settles (redeliveries, the stuck sweep, then a DLQ replay once the targets recover):
//! every accepted event has exactly one effect per selected target, nothing else has any, the
//! DLQ held exactly the refusals, nothing is stuck, and payments and orders end as a sequential
//! oracle says. `PLUMBLINE_FAULT_SEED` replays a run; `PLUMBLINE_FAULT_EVENTS` changes its size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqlite::{LocalDeadLetters, SqliteStore};
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::adapters::stripe_api::StripeEvents;
use plumbline::adapters::targets;
use plumbline::config::{Config, MapSecrets};
use plumbline::contract::{EntityKind, Origin, SourceName, Timestamp, Trace};
use plumbline::delivery::replay::{Filter, replay};
use plumbline::delivery::{Delivery, InboundMessage, Outcome, routes};
use plumbline::ingress::{Ingress, WebhookRequest, build_record};
use plumbline::ledger::{Entity, Ownership, apply};
use plumbline::ports::{
    DeadLetterSource, DeadLetters, DeliveryLog, Depth, EntityScan, EventQueue, EventStore, Intake,
    LedgerStore, ManualClock, QueueConsumer, QueueControl, QueueError, QueueStats, Received,
    ReconcileStore, ReplayTally, Requeue, SystemClock, Watermarks,
};
use plumbline::reconcile::{Reconciler, STUCK_EVENTS};
use plumbline::sources::sign::{Envelope as SignMeta, sign};
use plumbline::sources::{Inbound, Normalized, SourceKind};
use plumbline::telemetry::RecordingMetrics;
use serde_json::{Value, json};

use crate::helpers::faults::{
    CRASH, DELIVERY_POINTS, FaultyQueue, FaultyStore, FaultyTarget, INGRESS_POINTS, Plan,
    quiet_crashes,
};
use crate::helpers::pipeline::ERP_SIGNING_SECRET;
use crate::helpers::{aws, create_queue, create_table, fixture, secrets, source_scheme, unique};

const CONFIG: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET"]

[sources.site]
kind = "standard-webhooks"
secrets = ["env:SITE_SECRET"]

[sources.shop]
kind = "shopify"
secrets = ["env:SHOPIFY_SECRET"]

[sources.adyen]
kind = "adyen"
secrets = ["env:ADYEN_KEY"]

[sources.paddle]
kind = "paddle"
secrets = ["env:PADDLE_SECRET"]

[targets.erp]
kind = "http"
url = "{T}/erp"
secret = "env:ERP_SIGNING_SECRET"
timeout_ms = 300

[targets.crm]
kind = "http"
url = "{T}/crm"
secret = "env:ERP_SIGNING_SECRET"
timeout_ms = 300

[[routes]]
events = ["*"]
targets = ["erp"]

[[routes]]
events = ["payment.*", "lead.*"]
targets = ["crm"]

[ownership]
"payment.status" = "stripe"

[delivery]
backoff_base_secs = 1
backoff_cap_secs = 1
retry_after_cap_secs = 1
lease_secs = 1
breaker_cooldown_secs = 1
"#;

/// One request a provider sends (and sends again until it gets a 2xx or a 4xx).
#[derive(Debug, Clone)]
struct Request {
    source: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    valid: bool,
}

/// The scenario: every request in sending order, and what a correct system must end with.
struct Scenario {
    requests: Vec<Request>,
    /// Idempotency key → (entity, envelope as JSON) of every distinct valid event.
    accepted: BTreeMap<String, plumbline::contract::Envelope>,
    /// Pairs of lead submissions of which exactly one may have effects.
    lead_pairs: Vec<(String, String)>,
    /// Keys of forged requests: no effect, ever.
    forged: BTreeSet<String>,
}

fn iso(t: i64) -> String {
    Timestamp::from_unix(t).expect("in range").to_string()
}

fn doc(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).expect("fixture")
}

/// Signs `body` for `source` (or with a forged secret) at `now`.
fn request(source: &'static str, id: &str, body: &Value, now: i64, forged: bool) -> Request {
    let (kind, configured) = source_scheme(source).expect("a known source");
    let secret = if forged {
        match kind {
            SourceKind::StandardWebhooks => "whsec_Zm9yZ2VkLXNlY3JldC1mb3ItdGVzdHM=".to_owned(),
            SourceKind::Adyen => "AB".repeat(32),
            _ => "whsec_forged".to_owned(),
        }
    } else {
        configured.to_owned()
    };
    let signed = sign(
        kind,
        &secret,
        SignMeta {
            event_id: id,
            timestamp: now,
            topic: Some("orders/create"),
        },
        &serde_json::to_vec(body).expect("json"),
    )
    .expect("sign");
    let mut headers = signed.headers;
    headers.push(("content-type", "application/json".to_owned()));
    Request {
        source,
        headers,
        body: signed.body,
        valid: !forged,
    }
}

/// What the ingress would make of a valid request: its idempotency key and envelope.
fn envelope_of(
    r: &Request,
    verifiers: &BTreeMap<SourceName, plumbline::sources::Verifier>,
    now: Timestamp,
) -> (String, Option<plumbline::contract::Envelope>) {
    let source = SourceName::try_from(r.source).expect("source");
    let h = header_map(&r.headers);
    let mut events = verifiers[&source]
        .accept(
            Inbound {
                headers: &h,
                body: &r.body,
            },
            now,
        )
        .expect("a valid request verifies");
    assert_eq!(events.len(), 1, "one event per request here");
    let event = events.remove(0);
    let key = format!("{}:{}", r.source, event.source_event_id);
    let unrouted = !matches!(event.outcome, Normalized::Event(_));
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
    (key, if unrouted { None } else { record.envelope })
}

fn header_map(pairs: &[(&str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn generate(
    rng: &mut fastrand::Rng,
    total: usize,
    now: i64,
    verifiers: &BTreeMap<SourceName, plumbline::sources::Verifier>,
) -> Scenario {
    let mut unique: Vec<Request> = Vec::new();
    let mut lead_ids = Vec::new();
    let base = now - 7200;
    let distinct = total * 76 / 100;
    let mut n = 0_usize;
    while unique.len() < distinct {
        n += 1;
        let t0 = base + rng.i64(0..3600);
        match n % 10 {
            // A payment's life on Stripe: processing, then succeeded or failed, maybe refunded.
            0..=2 => {
                let pi = format!("pi_f{n}");
                let ok = rng.u8(..10) < 8;
                let mut steps = vec![("payment_intent.processing.json", t0)];
                steps.push((
                    if ok {
                        "payment_intent.succeeded.json"
                    } else {
                        "payment_intent.payment_failed.json"
                    },
                    t0 + 10,
                ));
                if ok && rng.bool() {
                    steps.push(("charge.refunded.full.json", t0 + 20));
                }
                for (i, (file, t)) in steps.into_iter().enumerate() {
                    let mut d = doc(&format!("stripe/{file}"));
                    let id = format!("evt_f{n}_{i}");
                    d["id"] = json!(id);
                    d["created"] = json!(t);
                    if file.starts_with("charge") {
                        d["data"]["object"]["id"] = json!(format!("ch_f{n}"));
                        d["data"]["object"]["payment_intent"] = json!(pi);
                    } else {
                        d["data"]["object"]["id"] = json!(pi);
                    }
                    d["data"]["object"]["metadata"] = json!({});
                    unique.push(request("stripe", &id, &d, now, false));
                }
            }
            // An order on the site: created, sometimes cancelled.
            3 | 4 => {
                let order = format!("ord_f{n}");
                let mut created = doc("site/order.created.json");
                created["data"]["id"] = json!(order);
                created["data"]["paymentId"] = Value::Null;
                created["timestamp"] = json!(iso(t0));
                unique.push(request(
                    "site",
                    &format!("msg_f{n}_0"),
                    &created,
                    now,
                    false,
                ));
                if rng.bool() {
                    let mut cancelled = doc("site/order.cancelled.json");
                    cancelled["data"]["id"] = json!(order);
                    cancelled["timestamp"] = json!(iso(t0 + 30));
                    unique.push(request(
                        "site",
                        &format!("msg_f{n}_1"),
                        &cancelled,
                        now,
                        false,
                    ));
                }
            }
            // A lead; a third of them submitted twice by the same person.
            5 | 6 => {
                let mut lead = doc("site/lead.submitted.json");
                lead["data"]["id"] = json!(format!("lead_f{n}"));
                lead["data"]["email"] = json!(format!("lead{n}@example.com"));
                lead["data"]["phone"] = Value::Null;
                lead["timestamp"] = json!(iso(t0));
                let first = request("site", &format!("msg_l{n}_0"), &lead, now, false);
                unique.push(first);
                if rng.u8(..3) == 0 {
                    lead["data"]["id"] = json!(format!("lead_f{n}_again"));
                    lead["timestamp"] = json!(iso(t0 + 5));
                    unique.push(request("site", &format!("msg_l{n}_1"), &lead, now, false));
                    lead_ids.push((format!("site:msg_l{n}_0"), format!("site:msg_l{n}_1")));
                }
            }
            7 => {
                let mut order = doc("shopify/orders.create.json");
                order["id"] = json!(5_000_000 + n);
                unique.push(request(
                    "shop",
                    &format!("shop-evt-{n}"),
                    &order,
                    now,
                    false,
                ));
            }
            8 => {
                let mut batch = doc("adyen/batch.json");
                let mut item = batch["notificationItems"][0].clone();
                item["NotificationRequestItem"]["pspReference"] =
                    json!(format!("{}", 7_000_000_000_000_000_u64 + n as u64));
                item["NotificationRequestItem"]["merchantReference"] = json!(format!("ref_{n}"));
                batch["notificationItems"] = json!([item]);
                unique.push(request("adyen", "-", &batch, now, false));
            }
            _ => {
                let mut txn = doc("paddle/transaction.completed.json");
                txn["event_id"] = json!(format!("evt_pd_{n}"));
                txn["notification_id"] = json!(format!("ntf_pd_{n}"));
                txn["data"]["id"] = json!(format!("txn_f{n}"));
                txn["data"]["custom_data"] = Value::Null;
                txn["occurred_at"] = json!(iso(t0));
                unique.push(request("paddle", "-", &txn, now, false));
            }
        }
    }
    let now_ts = Timestamp::from_unix(now).expect("in range");
    let mut accepted = BTreeMap::new();
    for r in &unique {
        let (key, envelope) = envelope_of(r, verifiers, now_ts);
        if let Some(e) = envelope {
            accepted.insert(key, e);
        }
    }
    // Forged requests: 2 % of the total, each a fresh event signed with the wrong secret.
    let mut forged = BTreeSet::new();
    let mut requests = unique.clone();
    for i in 0..total / 50 {
        let mut d = doc("stripe/payment_intent.succeeded.json");
        let id = format!("evt_forged_{i}");
        d["id"] = json!(id);
        requests.push(request("stripe", &id, &d, now, true));
        forged.insert(format!("stripe:{id}"));
    }
    // Exact resends (the provider's duplicates) fill the rest: ≥ 20 % of all requests.
    while requests.len() < total {
        let r = unique[rng.usize(..unique.len())].clone();
        requests.push(r);
    }
    rng.shuffle(&mut requests);
    Scenario {
        requests,
        accepted,
        lead_pairs: lead_ids,
        forged,
    }
}

/// A target that fails about a third of its calls (503, 429 with Retry-After, answers slower
/// than the caller's timeout) and, while `broken`, refuses some keys for good (422). It counts
/// successful calls per Idempotency-Key: a key's first success is its effect.
#[derive(Default)]
struct FlakyState {
    rng: Option<fastrand::Rng>,
    successes: HashMap<(String, String), usize>,
    refused: BTreeSet<(String, String)>,
    broken: bool,
    calls: usize,
    failures: usize,
}

#[derive(Clone)]
struct Flaky(Arc<Mutex<FlakyState>>);

fn refuses_for_good(key: &str) -> bool {
    key.bytes()
        .fold(7_u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 97
        == 0
}

async fn flaky(State(Flaky(state)): State<Flaky>, uri: http::Uri, headers: HeaderMap) -> Response {
    let target = uri.path().trim_start_matches('/').to_owned();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let roll = {
        let mut s = state.lock().expect("state");
        s.calls += 1;
        if s.broken && refuses_for_good(&key) {
            s.refused.insert((target.clone(), key.clone()));
            s.failures += 1;
            return StatusCode::UNPROCESSABLE_ENTITY.into_response();
        }
        s.rng.as_mut().expect("rng").f64()
    };
    if roll < 0.12 {
        state.lock().expect("state").failures += 1;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if roll < 0.22 {
        state.lock().expect("state").failures += 1;
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
    }
    if roll < 0.30 {
        state.lock().expect("state").failures += 1;
        // Slower than the caller's 300 ms timeout: it gives up; this call has no effect.
        tokio::time::sleep(Duration::from_millis(600)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    *state
        .lock()
        .expect("state")
        .successes
        .entry((target, key))
        .or_default() += 1;
    StatusCode::OK.into_response()
}

async fn start_flaky(seed: u64) -> (String, Flaky) {
    let state = Flaky(Arc::new(Mutex::new(FlakyState {
        rng: Some(fastrand::Rng::with_seed(seed ^ 0xfeed)),
        broken: true,
        ..FlakyState::default()
    })));
    let app = axum::Router::new()
        .fallback(axum::routing::post(flaky))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, state)
}

/// A store, a delivery queue and a dead-letter queue to run the scenario on.
trait Backend: Send + Sync + 'static {
    type S: EventStore
        + Intake<Self::Q>
        + DeliveryLog
        + LedgerStore
        + ReplayTally
        + ReconcileStore
        + Watermarks
        + EntityScan
        + Clone
        + 'static;
    type Q: EventQueue + QueueControl + QueueConsumer + QueueStats + Requeue + Clone + 'static;
    type D: DeadLetters + DeadLetterSource + QueueStats + Clone + 'static;
    fn store(&self) -> Self::S;
    fn queue(&self) -> Self::Q;
    fn dlq(&self) -> Self::D;
}

struct Local(SqliteStore);

/// The local dead-letter queue: written and read through the store, counted on its own.
#[derive(Clone)]
struct LocalDlq(SqliteStore);

impl DeadLetters for LocalDlq {
    async fn dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> Result<(), QueueError> {
        DeadLetters::dead_letter(&self.0, body, attributes).await
    }
}

impl DeadLetterSource for LocalDlq {
    async fn receive(&self, max: i32, hide: Duration) -> Result<Vec<Received>, QueueError> {
        DeadLetterSource::receive(&self.0, max, hide).await
    }
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        DeadLetterSource::delete(&self.0, receipt_handle).await
    }
    async fn release(&self, receipt_handle: &str) -> Result<(), QueueError> {
        DeadLetterSource::release(&self.0, receipt_handle).await
    }
}

impl QueueStats for LocalDlq {
    async fn depth(&self) -> Result<Depth, QueueError> {
        LocalDeadLetters(self.0.clone()).depth().await
    }
}

impl Backend for Local {
    type S = SqliteStore;
    type Q = SqliteStore;
    type D = LocalDlq;
    fn store(&self) -> SqliteStore {
        self.0.clone()
    }
    fn queue(&self) -> SqliteStore {
        self.0.clone()
    }
    fn dlq(&self) -> LocalDlq {
        LocalDlq(self.0.clone())
    }
}

struct Aws {
    store: DynamoStore,
    queue: SqsQueue,
    dlq: SqsDeadLetters,
}

impl Backend for Aws {
    type S = DynamoStore;
    type Q = SqsQueue;
    type D = SqsDeadLetters;
    fn store(&self) -> DynamoStore {
        self.store.clone()
    }
    fn queue(&self) -> SqsQueue {
        self.queue.clone()
    }
    fn dlq(&self) -> SqsDeadLetters {
        self.dlq.clone()
    }
}

/// Polls until the delivery queue is empty, then runs the stuck sweep (with the clock moved
/// past the horizon); settled when the sweep finds nothing either.
async fn settle<B: Backend>(b: &B, clock: &ManualClock, config: &Config, seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        while b.queue().depth().await.expect("depth").messages > 0 {
            assert!(
                Instant::now() < deadline,
                "seed {seed}: the queue never drained"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        clock.advance_secs(config.reconcile.stuck_after_secs + 60);
        let report = Reconciler::new(
            b.store(),
            b.queue(),
            b.dlq(),
            BTreeMap::<SourceName, (SourceKind, StripeEvents)>::new(),
            clock.clone(),
            RecordingMetrics::default(),
            config.reconcile.clone(),
        )
        .run(Instant::now() + Duration::from_secs(60))
        .await;
        if report.checks[STUCK_EVENTS].found == 0
            && b.queue().depth().await.expect("depth").messages == 0
        {
            return;
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_effects_under_faults_on_sqlite() {
    let dir = std::env::temp_dir().join(unique("plumbline-faults"));
    let store = SqliteStore::open(&dir, 10_000).expect("open");
    scenario(
        Local(store),
        env_or("PLUMBLINE_FAULT_SEED", 0xfa17_u64),
        env_or("PLUMBLINE_FAULT_EVENTS", 10_000_usize),
    )
    .await;
    let db = dir.join("plumbline.db");
    assert_tallies_match_the_rows(&db);
    let conn = rusqlite::Connection::open(&db).expect("open");
    let failed_attempts: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(n), 0) FROM minute_tallies WHERE name = 'failed'",
            [],
            |r| r.get(0),
        )
        .expect("failed attempts");
    assert!(
        failed_attempts > 1_000,
        "the chart counts each failed attempt: {failed_attempts}"
    );
    // A database from before the running counts existed gets them, counted from its rows.
    let triggers: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'tally_%'")
        .expect("triggers")
        .query_map([], |r| r.get(0))
        .expect("triggers")
        .map(|r| r.expect("name"))
        .collect();
    assert!(triggers.len() >= 8, "triggers: {triggers:?}");
    for name in triggers {
        conn.execute_batch(&format!("DROP TRIGGER {name}"))
            .expect("drop");
    }
    conn.execute_batch(
        "DROP TABLE tallies; DROP TABLE minute_tallies; ALTER TABLE entities DROP COLUMN conflict_entries;",
    )
    .expect("back to the old schema");
    drop(SqliteStore::open(&dir, 10_000).expect("reopen"));
    assert_tallies_match_the_rows(&db);
}

/// The status page's running counts (kept by triggers) equal a recount of the rows.
fn assert_tallies_match_the_rows(db: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).expect("open");
    let read = |sql: &str| -> BTreeMap<(String, String), i64> {
        let mut stmt = conn.prepare(sql).expect(sql);
        stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
            .expect(sql)
            .map(|r| r.expect("row"))
            .collect()
    };
    let pairs = [
        (
            "SELECT a, b, n FROM tallies WHERE name = 'event_status' AND n <> 0",
            "SELECT status, '', COUNT(*) FROM events GROUP BY 1",
        ),
        (
            "SELECT a, b, n FROM tallies WHERE name = 'delivery_state' AND n <> 0",
            "SELECT target, state, COUNT(*) FROM deliveries GROUP BY 1, 2",
        ),
        (
            "SELECT a, b, n FROM tallies WHERE name = 'ownership_conflicts'",
            "SELECT '', '', COUNT(*) FROM entities e, json_each(e.entity, '$.history') h \
             WHERE json_array_length(COALESCE(json_extract(h.value, '$.ownership_conflicts'), '[]')) > 0",
        ),
        (
            "SELECT name, CAST(minute AS TEXT), n FROM minute_tallies WHERE name = 'accepted' AND n <> 0",
            "SELECT 'accepted', CAST(received_ms / 60000 AS TEXT), COUNT(*) FROM events GROUP BY 2",
        ),
        (
            "SELECT name, CAST(minute AS TEXT), n FROM minute_tallies WHERE name = 'delivered' AND n <> 0",
            "SELECT 'delivered', CAST(updated_ms / 60000 AS TEXT), COUNT(*) FROM deliveries \
             WHERE state = 'delivered' GROUP BY 2",
        ),
    ];
    for (tally, recount) in pairs {
        let (kept, counted) = (read(tally), read(recount));
        assert!(!counted.is_empty(), "nothing to count: {recount}");
        assert_eq!(kept, counted, "{tally}");
    }
}

/// On moto's server, which answers a few hundred requests a second one at a time: a smaller
/// count by default, the full 10,000 with `PLUMBLINE_FAULT_EVENTS_AWS=10000`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_effects_under_faults_on_dynamodb_and_sqs() {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let backend = Aws {
        store: DynamoStore::new(ddb.clone(), create_table(&ddb).await),
        queue: SqsQueue::new(sqs.clone(), create_queue(&sqs).await),
        dlq: SqsDeadLetters::new(sqs.clone(), create_queue(&sqs).await),
    };
    scenario(
        backend,
        env_or("PLUMBLINE_FAULT_SEED", 0xfa17_u64),
        env_or("PLUMBLINE_FAULT_EVENTS_AWS", 300_usize),
    )
    .await;
}

async fn scenario<B: Backend>(backend: B, seed: u64, total: usize) {
    quiet_crashes();
    eprintln!(
        "fault scenario seed {seed}, {total} requests (PLUMBLINE_FAULT_SEED={seed} replays it)"
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let (url, target_state) = start_flaky(seed).await;
    let config = Config::parse(&CONFIG.replace("{T}", &url)).expect("config");
    let mut all = secrets().0;
    all.insert("env:ERP_SIGNING_SECRET".into(), ERP_SIGNING_SECRET.into());
    let resolver = MapSecrets(all);
    let verifiers = config.verifiers(&resolver).expect("verifiers");
    let now = crate::helpers::unix_now();
    let scenario = generate(&mut rng, total, now, &verifiers);
    let distinct = scenario.requests.iter().filter(|r| r.valid).count();
    eprintln!(
        "{} requests: {} distinct accepted events, {} forged, {} lead double-submits",
        scenario.requests.len(),
        scenario.accepted.len(),
        scenario.forged.len(),
        scenario.lead_pairs.len()
    );
    assert!(distinct >= scenario.accepted.len());

    let store = backend.store();
    let queue = backend.queue();
    let dlq = backend.dlq();
    let plan = Plan::new(seed, 0.01, 0.02);
    let clock = ManualClock::at(Timestamp::from_unix(now).expect("in range"));
    let ingress = Arc::new(Ingress::new(
        FaultyStore {
            inner: store.clone(),
            plan: plan.clone(),
        },
        FaultyQueue {
            inner: queue.clone(),
            plan: plan.clone(),
        },
        clock.clone(),
        RecordingMetrics::default(),
        verifiers,
        config.ingress,
    ));
    let delivery = Arc::new(Delivery::new(
        FaultyStore {
            inner: store.clone(),
            plan: plan.clone(),
        },
        FaultyQueue {
            inner: queue.clone(),
            plan: plan.clone(),
        },
        dlq.clone(),
        targets::build_all(&config, &resolver)
            .expect("targets")
            .into_iter()
            .map(|(name, inner)| {
                (
                    name,
                    FaultyTarget {
                        inner,
                        plan: plan.clone(),
                    },
                )
            })
            .collect(),
        SystemClock,
        RecordingMetrics::default(),
        &config,
    ));

    // Delivery workers: receive, process each message in its own task (a crash is a panic
    // there), acknowledge what is done.
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let crashes = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (queue, delivery, plan, stop, attempts, crashes) = (
                queue.clone(),
                delivery.clone(),
                plan.clone(),
                stop.clone(),
                attempts.clone(),
                crashes.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let batch = QueueConsumer::receive(&queue, 10, Duration::from_secs(1))
                        .await
                        .unwrap_or_default();
                    if batch.is_empty() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    for m in batch {
                        let message = InboundMessage {
                            message_id: m.message_id,
                            receipt_handle: m.receipt_handle,
                            body: m.body,
                            receive_count: m.receive_count,
                            replay: m.attributes.contains_key("replay"),
                        };
                        let crash = plan.chance(0.16).then(|| plan.pick(&DELIVERY_POINTS));
                        attempts.fetch_add(1, Ordering::SeqCst);
                        let d = delivery.clone();
                        let msg = message.clone();
                        let outcome =
                            tokio::spawn(CRASH.scope(crash, async move { d.process(&msg).await }))
                                .await;
                        match outcome {
                            Ok(Outcome::Done(_)) => {
                                let _ = queue.ack(&message.receipt_handle).await;
                            }
                            Ok(Outcome::Retry(_)) => {}
                            Err(_) => {
                                crashes.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Providers: sixteen senders; each request is sent until it gets a 2xx (or a 4xx).
    let requests = Arc::new(scenario.requests.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let ingress_crashes = Arc::new(AtomicUsize::new(0));
    let providers: Vec<_> = (0..16)
        .map(|_| {
            let (requests, next, ingress, plan, ingress_crashes) = (
                requests.clone(),
                next.clone(),
                ingress.clone(),
                plan.clone(),
                ingress_crashes.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(r) = requests.get(i).cloned() else {
                        return;
                    };
                    loop {
                        let crash = plan.chance(0.05).then(|| plan.pick(&INGRESS_POINTS));
                        let (ingress, r2) = (ingress.clone(), r.clone());
                        let answer = tokio::spawn(CRASH.scope(crash, async move {
                            let h = header_map(&r2.headers);
                            let method = http::Method::POST;
                            let result = ingress
                                .handle(WebhookRequest {
                                    method: &method,
                                    source: r2.source,
                                    headers: &h,
                                    body: &r2.body,
                                    request_id: None,
                                })
                                .await;
                            plumbline::ingress::reply(&result).status
                        }))
                        .await;
                        match answer {
                            Ok(status) if status < 300 => {
                                assert!(r.valid, "a forged request was taken");
                                break;
                            }
                            Ok(status) if status < 500 => {
                                assert!(!r.valid, "a valid request was refused: {status}");
                                break;
                            }
                            Ok(_) => {}
                            Err(_) => {
                                ingress_crashes.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        // The provider's retry, a moment later.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
        })
        .collect();
    for p in providers {
        p.await.expect("provider");
    }
    settle(&backend, &clock, &config, seed).await;

    // The DLQ holds exactly the refusals, each with its reason.
    let refused = target_state.0.lock().expect("state").refused.clone();
    let mut letters = Vec::new();
    loop {
        let batch = DeadLetterSource::receive(&dlq, 10, Duration::from_secs(600))
            .await
            .expect("dead letters");
        if batch.is_empty() {
            break;
        }
        letters.extend(batch);
    }
    let mut in_dlq = BTreeSet::new();
    for l in &letters {
        let event_key = l.attributes.get("event_key").cloned().unwrap_or_default();
        let target = l.attributes.get("target").cloned().unwrap_or_default();
        assert!(
            l.attributes
                .get("reason")
                .is_some_and(|r| r.contains("422")),
            "seed {seed}: {:?}",
            l.attributes
        );
        in_dlq.insert((target, event_key));
    }
    for l in &letters {
        DeadLetterSource::release(&dlq, &l.receipt_handle)
            .await
            .expect("release");
    }
    let expected_dlq: BTreeSet<(String, String)> = refused
        .iter()
        .map(|(t, k)| {
            let (source, id) = k.split_once(':').expect("key");
            (t.clone(), format!("EVT#{source}#{id}"))
        })
        .collect();
    assert_eq!(
        in_dlq, expected_dlq,
        "seed {seed}: the DLQ holds exactly the refusals"
    );

    // The targets recover; replay drains the DLQ.
    target_state.0.lock().expect("state").broken = false;
    let replayed = replay(&dlq, &queue, &Filter::default(), usize::MAX, false, |_| {})
        .await
        .expect("replay");
    assert_eq!(replayed.replayed, letters.len());
    settle(&backend, &clock, &config, seed).await;
    assert_eq!(
        dlq.depth().await.expect("depth").messages,
        0,
        "seed {seed}: replay drained the DLQ"
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }

    // Effects: exactly the accepted events, once per selected target.
    let (effects, repeated, failure_rate) = {
        let state = target_state.0.lock().expect("state");
        let effects: BTreeSet<(String, String)> = state.successes.keys().cloned().collect();
        let repeated: usize = state.successes.values().map(|n| n - 1).sum();
        (
            effects,
            repeated,
            state.failures as f64 / state.calls as f64,
        )
    };
    let suppressed: BTreeSet<&String> = scenario
        .lead_pairs
        .iter()
        .flat_map(|(a, b)| [a, b])
        .collect();
    let mut expected = BTreeSet::new();
    for (key, envelope) in &scenario.accepted {
        if suppressed.contains(key) {
            continue;
        }
        let json = serde_json::to_value(envelope).expect("envelope");
        for t in routes::targets_for(&config.routes, envelope.event_type.as_str(), &json) {
            expected.insert((t, key.clone()));
        }
    }
    let explain = |k: &str| {
        let (source, id) = k.split_once(':').unwrap_or_default();
        let mut log = plan.history(&format!("EVT#{source}#{id}"));
        log.extend(plan.history(k));
        format!("{k}: {log:?}")
    };
    for e in &expected {
        assert!(
            effects.contains(e),
            "seed {seed}: no effect for {e:?}; {}",
            explain(&e.1)
        );
    }
    for (t, k) in &effects {
        assert!(
            !scenario.forged.contains(k),
            "seed {seed}: a forged request had an effect: {k}"
        );
        if !suppressed.contains(k) {
            assert!(
                expected.contains(&(t.clone(), k.clone())),
                "seed {seed}: an effect nobody asked for: {t} {}",
                explain(k)
            );
        }
    }
    for (a, b) in &scenario.lead_pairs {
        let sent = |k: &String| effects.iter().any(|(_, key)| key == k);
        assert!(
            sent(a) ^ sent(b),
            "seed {seed}: lead double-submit {a} ({}) / {b} ({}): exactly one has effects; {}; {}",
            sent(a),
            sent(b),
            explain(a),
            explain(b)
        );
    }

    // Payments and orders end as the sequential oracle says.
    let mut by_entity: BTreeMap<(&'static str, String), Vec<&plumbline::contract::Envelope>> =
        BTreeMap::new();
    for e in scenario.accepted.values() {
        if matches!(e.entity.kind, EntityKind::Payment | EntityKind::Order) {
            by_entity
                .entry((e.entity.kind.as_str(), e.entity.id.clone()))
                .or_default()
                .push(e);
        }
    }
    let ownership = Ownership(config.ownership.clone());
    for ((_, id), mut events) in by_entity {
        events.sort_by_key(|e| e.occurred_at);
        let kind = events[0].entity.kind;
        let mut oracle = Entity::new(kind, &id);
        for e in events {
            oracle = apply(oracle, e, &ownership).entity;
        }
        let actual = store
            .load_entity(kind, &id)
            .await
            .expect("load")
            .unwrap_or_else(|| panic!("seed {seed}: {} {id} is missing", kind.as_str()));
        assert_eq!(
            actual.state,
            oracle.state,
            "seed {seed}: {} {id}",
            kind.as_str()
        );
        let values = |e: &Entity| -> BTreeMap<String, Value> {
            e.fields
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect()
        };
        assert_eq!(
            values(&actual),
            values(&oracle),
            "seed {seed}: {} {id}",
            kind.as_str()
        );
    }

    let (attempts, crashes, ingress_crashes) = (
        attempts.load(Ordering::SeqCst),
        crashes.load(Ordering::SeqCst),
        ingress_crashes.load(Ordering::SeqCst),
    );
    eprintln!(
        "delivery attempts {attempts}, crashed {crashes} ({:.1} %); ingress crashes {ingress_crashes}; \
         target failure rate {:.1} %; calls repeated with the same key {repeated}; dead letters {}",
        100.0 * crashes as f64 / attempts as f64,
        100.0 * failure_rate,
        letters.len()
    );
    assert!(
        crashes * 100 >= attempts * 5,
        "seed {seed}: ≥ 5 % of attempts crashed"
    );
    assert!(
        failure_rate >= 0.30,
        "seed {seed}: targets failed ≥ 30 % of calls"
    );
    assert!(
        !letters.is_empty(),
        "seed {seed}: some events were refused for good"
    );
}
