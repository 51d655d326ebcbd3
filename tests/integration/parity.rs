//! Payment ↔ order parity, CRM parity and lead counts: drift made behind plumbline's back is
//! found, repaired once, and a second run finds nothing. DynamoDB and SQS on moto's server; the
//! ERP is a recording server and HubSpot a loopback server shaped like its CRM API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqlite::SqliteStore;
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::adapters::stripe_api::StripeEvents;
use plumbline::adapters::targets::{HubspotTarget, crm_targets};
use plumbline::config::{Config, MapSecrets};
use plumbline::contract::{EntityKind, SourceName, Timestamp};
use plumbline::ledger::Entity;
use plumbline::ports::{EntityScan, LedgerStore, ManualClock};
use plumbline::reconcile::{CRM_PARITY, LEAD_COUNTS, PAYMENT_ORDER_PARITY, Reconciler};
use plumbline::sources::SourceKind;
use plumbline::telemetry::RecordingMetrics;

use crate::helpers::hubspot::Hubspot;
use crate::helpers::pipeline::{HUBSPOT_TOKEN, Pipeline};
use crate::helpers::requests::Requests;
use crate::helpers::{T0, aws, fixture, secrets, site, stripe, unique};

const CONFIG: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET"]

[sources.site]
kind = "standard-webhooks"
secrets = ["env:SITE_SECRET"]

[targets.erp]
kind = "http"
url = "{ERP}/plumbline"
secret = "env:ERP_SIGNING_SECRET"

[targets.crm]
kind = "hubspot"
token = "env:HUBSPOT_TOKEN"
base_url = "{HUB}"

[[targets.crm.fields]]
to = "lead_source"
from = "entity.fields.lead_source"

[[routes]]
events = ["payment.*", "order.*"]
targets = ["erp"]

[[routes]]
events = ["lead.*", "payment.succeeded"]
targets = ["crm"]

[ownership]
"payment.status" = "stripe"

[reconcile]
settle_secs = 600

[reconcile.thresholds]
payment_order_parity = 0
crm_parity = 0
"#;

const PAYMENT: &str = "pi_3PqLr2F7kS1mZk0a1Qw2Ey3R";
const DEAL_ID: &str = "payment:pi_3PqLr2F7kS1mZk0a1Qw2Ey3R";
const EMAIL: &str = "jane.doe@example.com";

async fn deliver_all(p: &Pipeline) {
    for _ in 0..20 {
        let (ids, failed) = p.deliver_visible().await;
        assert!(failed.is_empty(), "no delivery fails here: {failed:?}");
        if ids.is_empty() && p.queue_depth().await == 0 {
            return;
        }
    }
    panic!("the queue did not drain");
}

fn erp_types(p: &Pipeline) -> Vec<String> {
    p.erp
        .requests()
        .iter()
        .map(|r| {
            r.json()["event"]["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// The reconciler a deployment of `text` runs on the pipeline's table and queues, with its
/// HubSpot target read back, reading the store through `ddb`.
fn reconciler_of(
    p: &Pipeline,
    text: &str,
    ddb: aws_sdk_dynamodb::Client,
) -> Reconciler<
    DynamoStore,
    SqsQueue,
    SqsDeadLetters,
    StripeEvents,
    ManualClock,
    RecordingMetrics,
    HubspotTarget,
> {
    let config = Config::parse(&text.replace("{ERP}", &p.erp.url)).expect("config");
    let mut all = secrets().0;
    all.insert("env:HUBSPOT_TOKEN".into(), HUBSPOT_TOKEN.into());
    Reconciler::new(
        DynamoStore::new(ddb, p.table.clone()),
        SqsQueue::new(p.sqs.clone(), p.queue_url.clone()),
        SqsDeadLetters::new(p.sqs.clone(), p.dlq_url.clone()),
        BTreeMap::<SourceName, (SourceKind, StripeEvents)>::new(),
        p.clock.clone(),
        RecordingMetrics::default(),
        config.reconcile.clone(),
    )
    .with_crm(crm_targets(&config, &MapSecrets(all)).expect("crm"))
}

#[tokio::test]
async fn parity_repairs_an_unpaid_order_and_crm_drift_and_reports_a_missing_lead() {
    let hub = Hubspot::start(T0 * 1000).await;
    let text = CONFIG.replace("{HUB}", &hub.url);
    let p = Pipeline::with_config(&text).await;
    // The order's own "paid" webhook never comes; the payment's does.
    p.ingest(site(
        "msg_order_created",
        &fixture("site/order.created.json"),
    ))
    .await;
    p.ingest(stripe(&fixture("stripe/payment_intent.succeeded.json")))
        .await;
    p.ingest(site("msg_lead", &fixture("site/lead.submitted.json")))
        .await;
    deliver_all(&p).await;
    let deal = hub.records("deals");
    assert_eq!(deal.len(), 1);
    assert_eq!(deal[0].properties["dealstage"], "closedwon");
    assert_eq!(hub.records("contacts").len(), 1);

    // Behind plumbline's back: someone moves the deal back, someone deletes the contact.
    hub.edit(
        "deals",
        ("plumbline_id", DEAL_ID),
        ("dealstage", "appointmentscheduled"),
    );
    hub.delete("contacts", ("email", EMAIL));
    p.clock.advance_secs(700);

    let aws = aws().await;
    let reconciler = reconciler_of(&p, &text, aws_sdk_dynamodb::Client::new(&aws));
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), p.table.clone());
    let lead: Entity = store
        .changed_entities(
            EntityKind::Lead,
            Timestamp::from_unix(T0 - 60).expect("in range"),
            Timestamp::from_unix(T0 + 60).expect("in range"),
            None,
            10,
        )
        .await
        .expect("scan")
        .entities
        .pop()
        .expect("the lead");

    let report = reconciler
        .run(Instant::now() + Duration::from_secs(60))
        .await;
    let parity = &report.checks[PAYMENT_ORDER_PARITY];
    assert_eq!(
        (parity.found, parity.repaired, parity.unrepairable),
        (1, 1, 0),
        "{report:?}"
    );
    assert_eq!(parity.ids, ["order:ord_1001"]);
    let crm = &report.checks[CRM_PARITY];
    assert_eq!(
        (crm.found, crm.repaired, crm.unrepairable),
        (2, 2, 0),
        "{report:?}"
    );
    assert!(
        crm.ids.contains(&format!("crm:payment:{PAYMENT}")),
        "{crm:?}"
    );
    assert!(
        crm.ids.contains(&format!("crm:lead:{}", lead.id)),
        "{crm:?}"
    );
    let leads = &report.checks[LEAD_COUNTS];
    assert_eq!(leads.found, 1, "{leads:?}");
    assert_eq!(leads.ids, [format!("crm:lead:{}", lead.id)]);
    assert!(
        leads
            .note
            .as_deref()
            .is_some_and(|n| n.contains("2025-11-23/google-ads: ledger 1, crm 0")),
        "{leads:?}"
    );
    assert_eq!(report.breached, [CRM_PARITY, PAYMENT_ORDER_PARITY]);

    // The CRM holds the ledger's state again.
    assert_eq!(hub.records("deals")[0].properties["dealstage"], "closedwon");
    let contacts = hub.records("contacts");
    assert_eq!(contacts.len(), 1);
    assert_eq!(contacts[0].properties["lifecyclestage"], "lead");
    assert_eq!(contacts[0].properties["lead_source"], "google-ads");

    // The corrective event goes through delivery like a webhook: the ledger, then the ERP.
    assert!(!erp_types(&p).contains(&"order.paid".to_owned()));
    deliver_all(&p).await;
    let paid: Vec<_> = p
        .erp
        .requests()
        .into_iter()
        .filter(|r| r.json()["event"]["type"] == "order.paid")
        .collect();
    assert_eq!(paid.len(), 1);
    assert_eq!(
        paid[0].json()["event"]["trace"]["origin"],
        "reconcile",
        "marked as a correction"
    );
    assert!(paid[0].header("idempotency-key").is_some());
    let order = store
        .load_entity(EntityKind::Order, "ord_1001")
        .await
        .expect("load")
        .expect("order");
    assert_eq!(order.state.as_deref(), Some("paid"));

    // A second run finds nothing and changes nothing.
    let upserts = hub.upserts();
    let again = reconciler
        .run(Instant::now() + Duration::from_secs(60))
        .await;
    for check in [PAYMENT_ORDER_PARITY, CRM_PARITY, LEAD_COUNTS] {
        assert_eq!(again.checks[check].found, 0, "{check}: {again:?}");
    }
    assert!(!again.is_breached());
    assert_eq!(hub.upserts(), upserts);
    deliver_all(&p).await;
    assert_eq!(
        erp_types(&p).iter().filter(|t| *t == "order.paid").count(),
        1
    );
}

/// CRM parity reads the events a page of entities' documents are built on in one request, not
/// one per entity (on DynamoDB, counted on the wire).
#[tokio::test]
async fn crm_parity_reads_a_pages_events_in_one_request() {
    const PAYMENTS: usize = 8;
    let hub = Hubspot::start(T0 * 1000).await;
    let text = CONFIG.replace("{HUB}", &hub.url);
    let p = Pipeline::with_config(&text).await;
    let template: serde_json::Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    for i in 0..PAYMENTS {
        let mut event = template.clone();
        event["id"] = format!("evt_crm_{i}").into();
        event["data"]["object"]["id"] = format!("pi_crm_{i}").into();
        // No order to pair with: this run is about the CRM alone.
        event["data"]["object"]["metadata"] = serde_json::json!({});
        p.ingest(stripe(&serde_json::to_vec(&event).expect("json")))
            .await;
    }
    deliver_all(&p).await;
    assert_eq!(hub.records("deals").len(), PAYMENTS);
    p.clock.advance_secs(700);

    let aws = aws().await;
    let requests = Requests::default();
    let reconciler = reconciler_of(&p, &text, requests.client(&aws));
    let report = reconciler
        .run(Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(report.checks[CRM_PARITY].found, 0, "{report:?}");
    let counts = requests.counts();
    // No single reads: the four walks' cursors are one batch, the one page of entities (the
    // eight payments) another, and the events their documents are built on a third.
    assert_eq!(counts.get("GetItem"), None, "{counts:?}");
    assert_eq!(counts.get("BatchGetItem"), Some(&3), "{counts:?}");
}

/// The change index on SQLite answers as DynamoDB's does: `[from, to)`, in change order, paged.
#[tokio::test]
async fn the_change_index_pages_entities_in_change_order() {
    let dir = std::env::temp_dir().join(unique("plumbline-change-index"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let dynamo = DynamoStore::new(ddb.clone(), crate::helpers::create_table(&ddb).await);
    pages_in_change_order(&store).await;
    pages_in_change_order(&dynamo).await;
}

async fn pages_in_change_order(store: &(impl LedgerStore + EntityScan)) {
    // Minutes apart: the index dates each write by the minute after it (`change_entry`).
    let at = |minutes: i64| Timestamp::from_unix(T0 + 60 * minutes).expect("in range");
    // Written out of order; one outside the window on each side; one payment (another kind).
    for (id, minutes) in [
        ("o3", 30),
        ("o1", 10),
        ("o0", -5),
        ("o2", 20),
        ("o4", 40),
        ("o5", 50),
    ] {
        let mut e = Entity::new(EntityKind::Order, id);
        e.version = 1;
        e.touch(at(minutes));
        store.save_entity(&e).await.expect("save");
    }
    let mut p = Entity::new(EntityKind::Payment, "p1");
    p.version = 1;
    p.touch(at(15));
    store.save_entity(&p).await.expect("save");
    // Written a second before the window ends (T0 is 20 s past a minute): dated the minute
    // after, so the next window holds it, not this one.
    let mut late = Entity::new(EntityKind::Order, "o6");
    late.version = 1;
    late.touch(at(50).plus_secs(-1));
    store.save_entity(&late).await.expect("save");
    let walk = |from: i64, to: i64| async move {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .changed_entities(EntityKind::Order, at(from), at(to), cursor.as_deref(), 2)
                .await
                .expect("page");
            assert!(page.entities.len() <= 2);
            seen.extend(page.entities.into_iter().map(|e| e.id));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        seen
    };
    assert_eq!(walk(0, 50).await, ["o1", "o2", "o3", "o4"]);
    assert_eq!(walk(50, 51).await, ["o5", "o6"], "the same minute: by id");
}
