//! The operator commands with `--aws`, as a person runs them: the real binary against DynamoDB
//! and SQS on moto's server.

use std::process::Command;

use aws_sdk_dynamodb::types::AttributeValue;
use plumbline::contract::Timestamp;
use serde_json::Value;

use crate::helpers::dev::binary;
use crate::helpers::fixture;
use crate::helpers::pipeline::{Pipeline, TWO_TARGETS};
use crate::helpers::recorder::Reply;
use crate::helpers::{T0, stripe};

/// Runs `plumbline args` against the pipeline's table and queues; returns its stdout.
fn plumbline_output(p: &Pipeline, args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .env("PLUMBLINE_TABLE", &p.table)
        .env("PLUMBLINE_QUEUE_URL", &p.queue_url)
        .env("PLUMBLINE_DLQ_URL", &p.dlq_url)
        .output()
        .expect("run plumbline");
    assert!(
        out.status.success(),
        "plumbline {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn plumbline(p: &Pipeline, args: &[&str]) -> Value {
    let out = plumbline_output(p, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("plumbline {args:?}: {e}: {out}"))
}

/// `plumbline events show --aws` of the Stripe fixture's event, as a person reads it.
fn show_fixture_event_text(p: &Pipeline) -> String {
    plumbline_output(
        p,
        &[
            "events",
            "show",
            "stripe:evt_3PqLr2F7kS1mZk0a0pRoC4s5",
            "--aws",
        ],
    )
}

/// `plumbline events show --aws --json` of the Stripe fixture's event.
fn show_fixture_event(p: &Pipeline) -> Value {
    plumbline(
        p,
        &[
            "events",
            "show",
            "stripe:evt_3PqLr2F7kS1mZk0a0pRoC4s5",
            "--aws",
            "--json",
        ],
    )
}

/// While an event's first attempt is in flight, the event has no delivery record yet: the
/// entity's write holds the attempt, and `events show` says until when.
#[tokio::test]
async fn events_show_says_a_first_attempt_is_in_flight() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let event = p.receive().await;
    let (delivered, during) = p
        .deliver_while_erp_holds(event, async { show_fixture_event(&p) })
        .await;
    assert!(delivered.batch_item_failures.is_empty());
    assert!(
        during["ledger"]["delivery_held_until"].is_string(),
        "{during}"
    );
    assert_eq!(during["deliveries"], serde_json::json!([]));
    let after = show_fixture_event(&p);
    assert_eq!(after["status"], "delivered");
    assert_eq!(after["deliveries"][0]["state"], "delivered");
    assert_eq!(after["deliveries"][0]["attempts"], 1);
    assert_eq!(after["due_back_at"], Value::Null, "nothing retrying");
}

/// A retrying event's timeline says when its message is due back: here, after the hour a
/// target asked for with `Retry-After`.
#[tokio::test]
async fn events_show_says_when_a_retry_is_due() {
    let p = Pipeline::new().await;
    p.erp
        .set_default(Reply::status(429).with_header("retry-after", "3600"));
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!(failed, ids);
    let shown = show_fixture_event(&p);
    assert_eq!(shown["status"], "received");
    assert_eq!(shown["deliveries"][0]["state"], "retrying");
    let due = Timestamp::from_unix(T0 + 3600)
        .expect("in range")
        .to_string();
    assert_eq!(shown["due_back_at"], due.as_str(), "{shown}");
    let text = show_fixture_event_text(&p);
    assert!(
        text.contains(&format!(
            "{due}  due back on the queue for the next attempt"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn events_dlq_and_replay_work_against_aws() {
    let p = Pipeline::new().await;
    p.erp.set_default(Reply::status(400));
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    p.deliver_visible().await;

    let list = plumbline(&p, &["events", "list", "--aws", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["status"], "dead_lettered");
    assert_eq!(list[0]["event_type"], "payment.processing");

    let show = show_fixture_event(&p);
    assert_eq!(show["ledger"]["effect"], "applied");
    assert_eq!(show["deliveries"][0]["target"], "erp");
    assert_eq!(show["deliveries"][0]["state"], "failed");
    assert_eq!(show["deliveries"][0]["last_error"], "HTTP 400");

    let letters = plumbline(&p, &["dlq", "list", "--aws", "--json"]);
    assert_eq!(letters.as_array().map(Vec::len), Some(1));
    assert_eq!(
        letters[0]["event_key"],
        "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5"
    );
    assert_eq!(letters[0]["attributes"]["reason"], "HTTP 400");
    let again = plumbline(&p, &["dlq", "list", "--aws", "--json"]);
    assert_eq!(
        again.as_array().map(Vec::len),
        Some(1),
        "listing removes nothing"
    );

    p.erp.set_default(Reply::status(200));
    let report = plumbline(&p, &["replay", "--aws", "--json"]);
    assert_eq!(report["replayed"], 1);
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    let show = plumbline(
        &p,
        &[
            "events",
            "show",
            "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5",
            "--aws",
            "--json",
        ],
    );
    assert_eq!(show["deliveries"][0]["state"], "delivered");
    assert_eq!(show["status"], "delivered");
}

/// Dead-lettered events are listed from the `kept` index, not a scan: one a target refused (the
/// delivery's settle) and one reconciliation gave up on. A replay that delivers the first takes
/// it out of the index again.
#[tokio::test]
async fn dead_lettered_events_are_listed_from_the_kept_index_until_a_replay_delivers_them() {
    use plumbline::ports::{EventKey, EventStore, ReconcileStore};

    let p = Pipeline::new().await;
    p.erp.set_default(Reply::status(400));
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    p.deliver_visible().await;
    let refused = "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5";

    let (store, requests) = counted_store(&p).await;
    let later = fixture("stripe/payment_intent.succeeded.json");
    p.ingest(stripe(&later)).await;
    // Delivery takes its message and crashes on it; reconciliation gives up on the claim.
    assert_eq!(p.receive().await.records.len(), 1);
    let later: Value = serde_json::from_slice(&later).expect("json");
    let given_up = format!("EVT#stripe#{}", later["id"].as_str().expect("id"));
    let key = EventKey::parse(&given_up).expect("key");
    let claim = store.get(&key).await.expect("get").expect("claimed");
    assert!(
        store
            .give_up_stuck(&key, claim.claimed_at, "never settled", claim.claimed_at)
            .await
            .expect("give up")
    );

    requests.reset();
    let both = listed(&store, "dead_lettered", None, 10).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.contains(&refused.to_owned()) && both.contains(&given_up));
    let counts = requests.counts();
    assert_eq!(counts.get("Scan"), None, "{counts:?}");
    assert!(counts.get("Query").is_some_and(|&n| n > 0), "{counts:?}");

    p.erp.set_default(Reply::status(200));
    let report = plumbline(&p, &["replay", "--aws", "--json"]);
    assert_eq!(report["replayed"], 1);
    let (_, failed) = p.deliver_visible().await;
    assert!(failed.is_empty());
    assert_eq!(listed(&store, "dead_lettered", None, 10).await, [given_up]);
}

/// `plumbline events redeliver --aws`: a dead-lettered event whose letter is gone (the
/// dead-letter queue purged, as its 14-day retention would) is sent back from the table as a
/// replay, and the target that refused it is called again; a dry run sends nothing, and once it
/// is delivered nothing is left to send.
#[tokio::test]
async fn events_redeliver_sends_dead_lettered_events_back_from_the_table() {
    use plumbline::ports::{EventKey, EventStatus, EventStore};

    let p = Pipeline::new().await;
    p.erp.set_default(Reply::status(400));
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    p.deliver_visible().await;
    p.sqs
        .purge_queue()
        .queue_url(&p.dlq_url)
        .send()
        .await
        .expect("purge the dead letters");
    assert!(p.dead_letters().await.is_empty(), "no letter to replay");
    p.erp.set_default(Reply::status(200));

    let redeliver = |extra: &[&str]| {
        let mut args = vec!["events", "redeliver", "--aws", "--json"];
        args.extend(extra);
        plumbline(&p, &args)
    };
    assert_eq!(
        redeliver(&["--dry-run"]),
        serde_json::json!({ "dry_run": true, "redelivered": 1, "skipped": 0 })
    );
    assert_eq!(p.queue_depth().await, 0, "a dry run sends nothing");
    assert_eq!(
        redeliver(&[]),
        serde_json::json!({ "dry_run": false, "redelivered": 1, "skipped": 0 })
    );
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!((ids.len(), failed.len()), (1, 0));
    assert_eq!(
        p.erp.idempotency_keys(),
        ["stripe:evt_3PqLr2F7kS1mZk0a0pRoC4s5"; 2],
        "refused once, then called again under the same key"
    );
    let (store, _) = counted_store(&p).await;
    let key = EventKey::parse("EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5").expect("key");
    let record = store.get(&key).await.expect("get").expect("kept");
    assert_eq!(record.status, EventStatus::Delivered);
    assert_eq!(
        redeliver(&[]),
        serde_json::json!({ "dry_run": false, "redelivered": 0, "skipped": 0 })
    );
}

/// `plumbline events redeliver --aws --target T` sends back only the dead-lettered events T
/// did not deliver: with one event refused by the ERP and another by the ledger, redelivering
/// for the ERP sends the first and leaves the second dead-lettered, and the ledger is not
/// called again for what it already has.
#[tokio::test]
async fn events_redeliver_for_one_target_leaves_what_only_another_target_refused() {
    use plumbline::ports::{EventKey, EventStatus, EventStore};

    let p = Pipeline::with_config(TWO_TARGETS).await;
    p.erp.answer_path("/erp", Reply::status(422));
    p.erp.answer_path("/ledger", Reply::status(200));
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    p.deliver_visible().await;
    p.erp.answer_path("/erp", Reply::status(200));
    p.erp.answer_path("/ledger", Reply::status(400));
    p.ingest(stripe(&fixture("stripe/payment_intent.succeeded.json")))
        .await;
    p.deliver_visible().await;
    let (store, _) = counted_store(&p).await;
    let status = async |id: &str| {
        let key = EventKey::parse(&format!("EVT#stripe#{id}")).expect("key");
        store.get(&key).await.expect("get").expect("kept").status
    };
    let (refused_by_erp, refused_by_ledger) = (
        "evt_3PqLr2F7kS1mZk0a0pRoC4s5",
        "evt_3PqLr2F7kS1mZk0a1dS8kT4e",
    );
    assert_eq!(status(refused_by_erp).await, EventStatus::DeadLettered);
    assert_eq!(status(refused_by_ledger).await, EventStatus::DeadLettered);
    p.erp.answer_path("/erp", Reply::status(200));
    let before = p.erp.count();

    let redeliver = |extra: &[&str]| {
        let mut args = vec!["events", "redeliver", "--aws", "--json"];
        args.extend(extra);
        plumbline(&p, &args)
    };
    let summary = |dry_run: bool, target: &str| {
        serde_json::json!({ "dry_run": dry_run, "redelivered": 1, "skipped": 0,
                            "target": target, "not_owed_by_target": 1 })
    };
    assert_eq!(
        redeliver(&["--target", "ledger", "--dry-run"]),
        summary(true, "ledger")
    );
    assert_eq!(redeliver(&["--target", "erp"]), summary(false, "erp"));
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!((ids.len(), failed.len()), (1, 0));
    let calls: Vec<String> = p.erp.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(calls, ["/erp"], "only the ERP owed the event sent back");
    assert_eq!(status(refused_by_erp).await, EventStatus::Delivered);
    assert_eq!(status(refused_by_ledger).await, EventStatus::DeadLettered);
}

/// Ingests the Stripe `fixture` without its payment's amount: today's ingress quarantines it.
async fn quarantined_without_its_amount(p: &Pipeline, fixture_name: &str) {
    let mut broken: Value = serde_json::from_slice(&fixture(fixture_name)).expect("json");
    broken["data"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("amount");
    let answer = p
        .ingest(stripe(&serde_json::to_vec(&broken).expect("json")))
        .await;
    assert_eq!(answer["status"], "quarantined", "{answer}");
}

/// `plumbline events reindex --aws`: kept events an older build wrote without their `kept`
/// index entry (here: a dead-lettered and a quarantined one whose entries are taken away) are
/// listed by the index only once it has run; a dry run writes nothing, a delivered event is
/// not touched, and a second run finds nothing left.
#[tokio::test]
async fn events_reindex_puts_what_an_older_build_left_out_into_the_kept_index() {
    let p = Pipeline::new().await;
    p.erp.set_default(Reply::status(400));
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    p.deliver_visible().await;
    quarantined_without_its_amount(&p, "stripe/payment_intent.canceled.json").await;
    p.erp.set_default(Reply::status(200));
    p.ingest(stripe(&fixture("stripe/payment_intent.succeeded.json")))
        .await;
    p.deliver_visible().await;

    let (store, _) = counted_store(&p).await;
    let dead = listed(&store, "dead_lettered", None, 10).await;
    let quarantined = listed(&store, "quarantined", None, 10).await;
    assert_eq!((dead.len(), quarantined.len()), (1, 1));
    // As an older build wrote them: no entry in the index.
    let ddb = aws_sdk_dynamodb::Client::new(&crate::helpers::aws().await);
    for pk in dead.iter().chain(&quarantined) {
        ddb.update_item()
            .table_name(&p.table)
            .key("pk", AttributeValue::S(pk.clone()))
            .key("sk", AttributeValue::S("EVENT".into()))
            .update_expression("REMOVE kept_shard, kept_at")
            .send()
            .await
            .expect("remove the entry");
    }
    assert!(listed(&store, "dead_lettered", None, 10).await.is_empty());

    let reindex = |extra: &[&str]| {
        let mut args = vec!["events", "reindex", "--aws", "--json"];
        args.extend(extra);
        plumbline(&p, &args)
    };
    assert_eq!(
        reindex(&["--dry-run"]),
        serde_json::json!({ "missing": 2, "indexed": 0 })
    );
    assert!(listed(&store, "quarantined", None, 10).await.is_empty());
    assert_eq!(
        reindex(&[]),
        serde_json::json!({ "missing": 2, "indexed": 2 })
    );
    assert_eq!(listed(&store, "dead_lettered", None, 10).await, dead);
    assert_eq!(listed(&store, "quarantined", None, 10).await, quarantined);
    assert_eq!(
        reindex(&[]),
        serde_json::json!({ "missing": 0, "indexed": 0 })
    );
}

/// `plumbline events reprocess --aws`: a kept event that today's normalizer reads goes to the
/// delivery queue and on to its target; one the ingress quarantined today stays, with why.
#[tokio::test]
async fn events_reprocess_works_against_aws() {
    use plumbline::adapters::dynamodb::DynamoStore;
    use plumbline::ports::{EventStatus, EventStore};

    let p = Pipeline::new().await;
    // Quarantined by today's ingress.
    quarantined_without_its_amount(&p, "stripe/payment_intent.processing.json").await;
    // Kept by an older build, readable today.
    let raw: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    let at = Timestamp::from_unix(T0).expect("time");
    let kept = crate::helpers::kept_stripe_event(
        "evt_kept_by_an_older_build",
        EventStatus::Unrouted,
        raw,
        at,
    );
    let ddb = aws_sdk_dynamodb::Client::new(&crate::helpers::aws().await);
    let store = DynamoStore::new(ddb, p.table.clone());
    store.claim(&kept).await.expect("claim");
    // The provider reused the id with another payload while the event was kept: still counted
    // after the reprocess.
    store
        .record_conflict(
            &kept.key,
            &plumbline::sources::PayloadHash::of(b"other"),
            at,
        )
        .await
        .expect("conflict");

    let run = || {
        plumbline_output(&p, &["events", "reprocess", "--aws", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
            .collect::<Vec<_>>()
    };
    let first = run();
    let outcome_of = |lines: &[Value], event: &str| {
        lines
            .iter()
            .find(|l| l["key"] == event)
            .map(|l| (l["outcome"].clone(), l["reason"].clone()))
    };
    assert_eq!(
        outcome_of(&first, kept.key.as_str()),
        Some((Value::from("enqueued"), Value::Null)),
        "{first:?}"
    );
    let (outcome, reason) =
        outcome_of(&first, "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5").expect("the quarantined one");
    assert_eq!(outcome, "still_quarantined");
    assert!(
        reason.as_str().is_some_and(|r| r.contains("amount")),
        "{reason}"
    );

    let (ids, failed) = p.deliver_visible().await;
    assert_eq!(
        (ids.len(), failed.len()),
        (1, 0),
        "the reprocessed event alone"
    );
    assert_eq!(
        p.erp.idempotency_keys(),
        ["stripe:evt_kept_by_an_older_build"]
    );

    let shown = plumbline(
        &p,
        &[
            "events",
            "show",
            "stripe:evt_kept_by_an_older_build",
            "--aws",
            "--json",
        ],
    );
    assert_eq!(shown["status"], "delivered", "{shown}");
    assert_eq!(shown["payload_conflicts"], 1, "{shown}");

    let second = run();
    assert_eq!(outcome_of(&second, kept.key.as_str()), None, "{second:?}");
    assert_eq!(
        second.last().map(|s| s["outcomes"].clone()),
        Some(serde_json::json!({ "still_quarantined": 1 }))
    );
}

/// The pipeline's table through a client whose requests are counted.
async fn counted_store(
    p: &Pipeline,
) -> (
    plumbline::adapters::dynamodb::DynamoStore,
    crate::helpers::requests::Requests,
) {
    let requests = crate::helpers::requests::Requests::default();
    let store = plumbline::adapters::dynamodb::DynamoStore::new(
        requests.client(&crate::helpers::aws().await),
        p.table.clone(),
    );
    (store, requests)
}

/// The keys `list_events` lists for a status, newest first.
async fn listed(
    store: &plumbline::adapters::dynamodb::DynamoStore,
    status: &str,
    since: Option<Timestamp>,
    limit: usize,
) -> Vec<String> {
    let rows = store
        .list_events(&plumbline::adapters::dynamodb::Listing {
            status: Some(status),
            since,
            limit,
            ..Default::default()
        })
        .await
        .expect("list");
    rows.into_iter().map(|r| r.key).collect()
}

/// Events awaiting delivery are listed newest first by receipt, though their index orders them
/// by claim time: a hundred old events whose claims the stuck sweep refreshed (so they sort
/// first in every shard of the index) do not crowd out the two received since.
#[tokio::test]
async fn events_awaiting_delivery_are_listed_by_receipt_though_old_claims_were_refreshed() {
    use plumbline::adapters::dynamodb::Listing;
    use plumbline::ports::{EventRecord, EventStatus, EventStore};

    let p = Pipeline::new().await;
    let (store, requests) = counted_store(&p).await;
    let raw: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    let at = |secs: i64| Timestamp::from_unix(T0 + secs).expect("time");
    let awaiting = |id: &str, when: Timestamp| EventRecord {
        reason: None,
        ..crate::helpers::kept_stripe_event(id, EventStatus::Received, raw.clone(), when)
    };
    let old: Vec<EventRecord> = (0..100)
        .map(|n| awaiting(&format!("evt_old_{n:03}"), at(n)))
        .collect();
    for record in &old {
        store.claim(record).await.expect("claim");
        let refreshed = store
            .refresh_claim(&record.key, record.claimed_at, at(1_000))
            .await
            .expect("refresh");
        assert!(refreshed, "the stuck sweep's refresh");
    }
    for (id, secs) in [("evt_new_c", 150), ("evt_new_d", 160)] {
        store.claim(&awaiting(id, at(secs))).await.expect("claim");
    }

    requests.reset();
    assert_eq!(
        listed(&store, "received", None, 2).await,
        ["EVT#stripe#evt_new_d", "EVT#stripe#evt_new_c"]
    );
    assert_eq!(
        listed(&store, "received", None, 4).await,
        [
            "EVT#stripe#evt_new_d",
            "EVT#stripe#evt_new_c",
            "EVT#stripe#evt_old_099",
            "EVT#stripe#evt_old_098"
        ]
    );
    assert_eq!(
        listed(&store, "received", Some(at(155)), 10).await,
        ["EVT#stripe#evt_new_d"]
    );
    assert_eq!(
        listed(&store, "received", None, 200).await.len(),
        102,
        "every one, once"
    );
    let keys = store
        .list_keys(&Listing {
            status: Some("received"),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("keys");
    assert_eq!(keys, ["EVT#stripe#evt_new_d", "EVT#stripe#evt_new_c"]);
    let counts = requests.counts();
    assert_eq!(counts.get("Scan"), None, "{counts:?}");
}

/// `plumbline events list --aws --status …` for the statuses an incident asks about reads
/// their sparse index, newest first, and never scans the table: kept events (`quarantined`,
/// `unrouted`) the `kept` index, events awaiting delivery (`received`) the `pending` one. An
/// event leaves the kept index when it is reprocessed.
#[tokio::test]
async fn events_list_reads_an_index_for_kept_and_awaiting_events() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use plumbline::adapters::dynamodb::Listing;
    use plumbline::ports::{EventStatus, EventStore};

    let p = Pipeline::new().await;
    // Awaiting delivery: taken by the ingress, not yet delivered.
    let answer = p
        .ingest(stripe(&fixture("stripe/payment_intent.succeeded.json")))
        .await;
    assert_eq!(answer["status"], "accepted", "{answer}");

    let (store, requests) = counted_store(&p).await;
    let raw: Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
    let at = |secs: i64| Timestamp::from_unix(T0 + secs).expect("time");
    // Received within one second, with and without a fraction: the listing orders instants,
    // not texts.
    let whole = at(30);
    let fraction = Timestamp::parse(&format!("{}", at(30)).replace('Z', ".5Z")).expect("time");
    let kept = [
        ("evt_q_oldest", EventStatus::Quarantined, at(0)),
        ("evt_q_middle", EventStatus::Quarantined, whole),
        ("evt_q_newest", EventStatus::Quarantined, fraction),
        ("evt_unrouted", EventStatus::Unrouted, at(20)),
    ]
    .map(|(id, status, when)| crate::helpers::kept_stripe_event(id, status, raw.clone(), when));
    for record in &kept {
        store.claim(record).await.expect("claim");
    }

    requests.reset();
    assert_eq!(
        listed(&store, "quarantined", None, 2).await,
        ["EVT#stripe#evt_q_newest", "EVT#stripe#evt_q_middle"]
    );
    assert_eq!(
        listed(&store, "quarantined", Some(at(1)), 10).await,
        ["EVT#stripe#evt_q_newest", "EVT#stripe#evt_q_middle"]
    );
    assert_eq!(
        listed(&store, "unrouted", None, 10).await,
        ["EVT#stripe#evt_unrouted"]
    );
    let awaiting = format!("EVT#stripe#{}", raw["id"].as_str().expect("id"));
    assert_eq!(listed(&store, "received", None, 10).await, [awaiting]);
    let counts = requests.counts();
    assert_eq!(counts.get("Scan"), None, "{counts:?}");
    assert!(counts.get("Query").is_some_and(|&n| n > 0), "{counts:?}");

    // Reprocessed: no longer kept, so no longer in the kept index.
    let promoted = plumbline::ports::EventRecord {
        status: EventStatus::Received,
        raw: None,
        reason: None,
        ..kept[1].clone()
    };
    assert!(
        store
            .promote(EventStatus::Quarantined, &promoted)
            .await
            .expect("promote")
    );
    assert_eq!(
        listed(&store, "quarantined", None, 10).await,
        ["EVT#stripe#evt_q_newest", "EVT#stripe#evt_q_oldest"]
    );

    // Kept by a build before the index: found by a scan alone.
    aws_sdk_dynamodb::Client::new(&crate::helpers::aws().await)
        .update_item()
        .table_name(&p.table)
        .key("pk", AttributeValue::S("EVT#stripe#evt_q_oldest".into()))
        .key(
            "sk",
            AttributeValue::S(plumbline::adapters::dynamodb::EVENT_SK.into()),
        )
        .update_expression("REMOVE kept_shard, kept_at")
        .send()
        .await
        .expect("update");
    assert_eq!(
        listed(&store, "quarantined", None, 10).await,
        ["EVT#stripe#evt_q_newest"]
    );
    // What the binary lists, by key.
    let listed_by_binary = |extra: &[&str]| {
        let mut args = vec![
            "events",
            "list",
            "--aws",
            "--status",
            "quarantined",
            "--json",
        ];
        args.extend_from_slice(extra);
        let rows = plumbline(&p, &args);
        rows.as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["key"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let keys = listed_by_binary(&["--scan"]);
    assert_eq!(keys, ["EVT#stripe#evt_q_newest", "EVT#stripe#evt_q_oldest"]);
    // A scan keeps the newest `limit` of every event it reads, whatever the status.
    let newest = store
        .list_events(&Listing {
            limit: 2,
            scan: true,
            ..Default::default()
        })
        .await
        .expect("scan");
    let newest: Vec<&str> = newest.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        newest,
        ["EVT#stripe#evt_q_newest", "EVT#stripe#evt_q_middle"]
    );

    // The binary takes the same path: the newest quarantined event, by the index.
    assert_eq!(
        listed_by_binary(&["--limit", "1"]),
        ["EVT#stripe#evt_q_newest"]
    );
}

/// An event delivery never settles (every copy crashes the function) is enqueued again by
/// reconciliation, then given up on: `events show` and `events list` say so, and why.
#[tokio::test]
async fn events_show_says_why_reconciliation_gave_up_on_a_stuck_event() {
    use plumbline::adapters::dynamodb::DynamoStore;
    use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
    use plumbline::adapters::stripe_api::StripeEvents;
    use plumbline::reconcile::{Reconciler, STUCK_EVENTS, Settings};
    use plumbline::telemetry::RecordingMetrics;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let aws = crate::helpers::aws().await;
    let reconciler = Reconciler::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), p.table.clone()),
        SqsQueue::new(p.sqs.clone(), p.queue_url.clone()),
        SqsDeadLetters::new(p.sqs.clone(), p.dlq_url.clone()),
        BTreeMap::<_, (_, StripeEvents)>::new(),
        p.clock.clone(),
        RecordingMetrics::default(),
        Settings {
            max_requeues: 1,
            ..Settings::default()
        },
    );
    let mut found = Vec::new();
    for _ in 0..2 {
        // Delivery takes the copy and crashes on it: nothing settles the event.
        let taken = p.receive().await;
        assert_eq!(taken.records.len(), 1);
        p.clock.advance_secs(1_000);
        let report = reconciler
            .run(Instant::now() + Duration::from_secs(30))
            .await;
        let stuck = &report.checks[STUCK_EVENTS];
        found.push((stuck.repaired, stuck.unrepairable));
        if stuck.unrepairable > 0 {
            break;
        }
    }
    assert_eq!(
        found,
        [(1, 0), (0, 1)],
        "re-enqueued once, then given up on"
    );
    // The two copies taken are hidden for 30 s more; a third would be visible now.
    assert!(p.receive().await.records.is_empty(), "no third copy");

    let shown = show_fixture_event(&p);
    assert_eq!(shown["status"], "dead_lettered");
    assert_eq!(shown["requeues"], 1);
    let detail = shown["status_detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("not settled after 1 re-enqueues: delivery never finished it"),
        "{shown}"
    );
    let text = show_fixture_event_text(&p);
    assert!(
        text.contains("enqueued again 1 time(s) while unsettled")
            && text.contains(&format!("status: dead_lettered ({detail})")),
        "{text}"
    );
    let listed = plumbline(
        &p,
        &[
            "events",
            "list",
            "--status",
            "dead_lettered",
            "--aws",
            "--json",
        ],
    );
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["detail"], detail, "{listed}");

    // The letter reconciliation wrote says why; replayed once the cause is fixed, it delivers.
    let letters = plumbline(&p, &["dlq", "list", "--aws", "--json"]);
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert_eq!(letters[0]["attributes"]["reason"], detail);
    assert_eq!(
        letters[0]["event_key"],
        "EVT#stripe#evt_3PqLr2F7kS1mZk0a0pRoC4s5"
    );
    let report = plumbline(&p, &["replay", "--aws", "--json"]);
    assert_eq!(report["replayed"], 1);
    let (ids, failed) = p.deliver_visible().await;
    assert_eq!((ids.len(), failed.len()), (1, 0));
    assert_eq!(p.erp.requests().len(), 1, "delivered once");
    let shown = show_fixture_event(&p);
    assert_eq!(shown["status"], "delivered", "{shown}");
}

/// An operator on a slow link gives the commands' AWS requests longer than the functions'
/// defaults through the environment; a value they cannot use stops the command before any
/// request, naming the variable.
#[tokio::test]
async fn the_commands_take_their_aws_timeouts_from_the_environment() {
    let p = Pipeline::new().await;
    p.ingest(stripe(&fixture("stripe/payment_intent.processing.json")))
        .await;
    let run = |name: &str, value: &str| {
        Command::new(binary())
            .args(["events", "list", "--aws", "--json"])
            .env("PLUMBLINE_TABLE", &p.table)
            .env(name, value)
            .output()
            .expect("run plumbline")
    };

    let longer = run("PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS", "20000");
    let stderr = String::from_utf8_lossy(&longer.stderr);
    assert!(longer.status.success(), "{stderr}");
    let listed: Value = serde_json::from_slice(&longer.stdout).expect("a JSON listing");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    for (name, value) in [
        ("PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS", "20s"),
        ("PLUMBLINE_AWS_CONNECT_TIMEOUT_MS", "0"),
    ] {
        let refused = run(name, value);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{name}={value}: {stderr}");
        assert!(refused.stdout.is_empty(), "{name}={value}");
        assert!(
            stderr.contains(&format!(
                "{name} must be a whole number of milliseconds from 1 to 900000, not \"{value}\""
            )),
            "{name}={value}: {stderr}"
        );
    }
}

/// `plumbline config check --aws` on the table and queues the environment names: a table made
/// without the indexes and the expiry, and a queue that never dead-letters, are problems under
/// what they lack; put right, the same command passes.
#[tokio::test]
async fn config_check_with_aws_finds_what_a_hand_made_table_and_queue_lack() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TimeToLiveSpecification,
    };

    let aws = crate::helpers::aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    // Keyed as the store needs, but made by hand without the indexes or the expiry.
    let bare = crate::helpers::unique("bare");
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .expect("key")
    };
    let string = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    ddb.create_table()
        .table_name(&bare)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(string("pk"))
        .attribute_definitions(string("sk"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("a bare table");
    // The template's key and indexes, but no expiry yet.
    let table = crate::helpers::create_table(&ddb).await;
    let dlq = crate::helpers::create_queue(&sqs).await;
    let queue = crate::helpers::create_queue(&sqs).await;
    // Its secrets from the functions' environment: only the table and the queues are fetched.
    let config = std::env::temp_dir().join(crate::helpers::unique("plumbline-check-stack.toml"));
    std::fs::write(
        &config,
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:PLUMBLINE_TEST_UNSET_SECRET\"]\n",
    )
    .expect("config");

    let check = |table: &str| {
        let out = Command::new(binary())
            .args(["config", "check", "--aws", "--json"])
            .arg(&config)
            .env("PLUMBLINE_TABLE", table)
            .env("PLUMBLINE_QUEUE_URL", &queue)
            .env("PLUMBLINE_DLQ_URL", &dlq)
            .env_remove("PLUMBLINE_TEST_UNSET_SECRET")
            .output()
            .expect("run plumbline");
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), report)
    };
    let problems_of = |report: &Value, what: &str| -> Vec<String> {
        report["aws"]["resources"]
            .as_array()
            .and_then(|all| all.iter().find(|r| r["resource"] == what))
            .and_then(|r| r["problems"].as_array())
            .unwrap_or_else(|| panic!("{what} in {report}"))
            .iter()
            .filter_map(|p| p["key"].as_str().map(str::to_owned))
            .collect()
    };
    let queue_is = format!("queue {queue}");

    let (code, report) = check(&bare);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        problems_of(&report, &format!("table {bare}")),
        [
            "table.indexes.pending",
            "table.indexes.changed",
            "table.indexes.kept",
            "table.ttl"
        ]
    );
    assert_eq!(problems_of(&report, &queue_is), ["queue.redrive"]);

    ddb.update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .expect("ttl"),
        )
        .send()
        .await
        .expect("ttl on");
    crate::helpers::redrive(&sqs, &queue, &dlq, 5).await;
    let (code, report) = check(&table);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["aws"]["passed"], true, "{report}");
    assert!(problems_of(&report, &format!("table {table}")).is_empty());
    assert!(problems_of(&report, &queue_is).is_empty());
    std::fs::remove_file(&config).ok();
}
