//! One conformance suite, run against both backends: SQLite (the local stack) and DynamoDB + SQS
//! on moto's server. Both must give the same answers to the same operations.

use std::time::Duration;

use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqlite::SqliteStore;
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::contract::{EntityKind, EventId, SourceEventId, SourceName, Timestamp};
use plumbline::ingress::{Outgoing, QueueMessage};
use plumbline::ledger::Entity;
use plumbline::ports::{
    Alias, Attempt, Claim, DeadLetterSource, DeadLetters, DeliveryLog, DeliveryState, EventKey,
    EventQueue, EventRecord, EventStatus, EventStore, Intake, LedgerStore, PendingPage,
    QueueConsumer, QueueControl, ReconcileStore, Saved, Watermark, Watermarks,
};
use plumbline::sources::PayloadHash;

use crate::helpers::{aws, create_table, fixture, unique};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix(1_763_900_000 + secs).expect("in range")
}

fn record(id: &str, hash: &str) -> EventRecord {
    let source = SourceName::try_from("stripe").expect("source");
    let source_event_id = SourceEventId::try_from(id).expect("id");
    let envelope: plumbline::contract::Envelope = serde_json::from_slice(&fixture(
        "../../docs/contract/fixtures/v1/payment.succeeded.stripe.json",
    ))
    .expect("envelope");
    EventRecord {
        key: EventKey::new(&source, &source_event_id),
        event_id: EventId::generate(t(0)),
        source,
        source_event_id,
        source_type: "payment_intent.succeeded".into(),
        status: EventStatus::Received,
        payload_hash: PayloadHash::from_hex(hash.into()),
        claimed_at: t(0),
        received_at: t(0),
        expires_at: t(86_400),
        envelope: Some(envelope),
        raw: None,
        reason: None,
        header_time: None,
        requeues: 0,
    }
}

async fn events_conform(store: &impl EventStore) {
    // Conditional claim: the second claim sees the first record, unchanged.
    let first = record("evt_c1", "aa");
    assert_eq!(store.claim(&first).await.expect("claim"), Claim::Claimed);
    let Claim::Exists(existing) = store.claim(&record("evt_c1", "bb")).await.expect("claim") else {
        panic!("exists")
    };
    assert_eq!(
        (existing.event_id.clone(), existing.payload_hash.as_str()),
        (first.event_id.clone(), "aa")
    );
    assert_eq!(existing.envelope, first.envelope);
    // The same record met again is the claim itself: a retried write whose first answer was
    // lost. Any other arrival has an event id of its own.
    assert_eq!(
        store.claim(&first).await.expect("claim"),
        Claim::Claimed,
        "the claim's own record"
    );

    // Only the claimant releases, and only while received.
    store
        .release(&first.key, &EventId::generate(t(1)))
        .await
        .expect("release");
    assert!(
        store.get(&first.key).await.expect("get").is_some(),
        "another id does not release"
    );
    store
        .release(&first.key, &first.event_id)
        .await
        .expect("release");
    assert!(store.get(&first.key).await.expect("get").is_none());

    // One refresh wins.
    let second = record("evt_c2", "aa");
    store.claim(&second).await.expect("claim");
    assert!(
        store
            .refresh_claim(&second.key, t(0), t(400))
            .await
            .expect("refresh")
    );
    assert!(
        !store
            .refresh_claim(&second.key, t(0), t(401))
            .await
            .expect("refresh"),
        "the seen value moved on"
    );
    let refreshed = store.get(&second.key).await.expect("get").expect("event");
    assert_eq!(
        (refreshed.claimed_at, refreshed.requeues),
        (t(400), 1),
        "the winning refresh moved the claim and counted one re-enqueue, the losing one nothing"
    );
    store
        .set_status(&second.key, EventStatus::Delivered, None, t(500))
        .await
        .expect("status");
    assert_eq!(
        store
            .get(&second.key)
            .await
            .expect("get")
            .expect("event")
            .status,
        EventStatus::Delivered
    );
    assert!(
        !store
            .refresh_claim(&second.key, t(400), t(900))
            .await
            .expect("refresh"),
        "delivered: never re-enqueued"
    );

    // In the order asked: released, delivered, never claimed, delivered again.
    let never = EventKey::parse("EVT#stripe#evt_never").expect("key");
    let asked = [
        first.key.clone(),
        second.key.clone(),
        never,
        second.key.clone(),
    ];
    let records = store.get_many(&asked).await.expect("get many");
    assert_eq!(
        records
            .iter()
            .map(|r| r.as_ref().map(|r| (r.event_id.clone(), r.status)))
            .collect::<Vec<_>>(),
        [
            None,
            Some((second.event_id.clone(), EventStatus::Delivered)),
            None,
            Some((second.event_id.clone(), EventStatus::Delivered)),
        ]
    );
    assert_eq!(
        records[1].as_ref().and_then(|r| r.envelope.as_ref()),
        second.envelope.as_ref(),
        "whole records"
    );
}

/// Claims still awaiting delivery, oldest first, up to the limit, as whole records: what the
/// stuck sweep re-enqueues. Delivered claims and claims newer than the cutoff are not stuck. A
/// walk page after page takes each claim once, claims of the same instant included, and its
/// last page says no more follow.
async fn stuck_claims_conform(store: &(impl EventStore + ReconcileStore + DeliveryLog)) {
    let tied = ["evt_t1", "evt_t2", "evt_t3", "evt_t4", "evt_t5", "evt_t6"];
    let claimed = [
        ("evt_s1", 10),
        ("evt_s2", 5),
        ("evt_s3", 30),
        ("evt_s4", 1),
        ("evt_s5", 20),
    ]
    .into_iter()
    .chain(tied.iter().map(|id| (*id, 15)));
    for (id, at) in claimed {
        let mut event = record(id, "aa");
        event.claimed_at = t(at);
        store.claim(&event).await.expect("claim");
    }
    let delivered = EventKey::parse("EVT#stripe#evt_s2").expect("key");
    store
        .set_status(&delivered, EventStatus::Delivered, None, t(40))
        .await
        .expect("status");
    let ids = |page: &PendingPage| {
        page.claims
            .iter()
            .map(|claim| {
                let record = claim.as_ref().expect("readable");
                assert!(record.envelope.is_some(), "whole records");
                record.source_event_id.to_string()
            })
            .collect::<Vec<_>>()
    };
    let first = store.pending_before(t(25), None, 2).await.expect("pending");
    assert_eq!(ids(&first), ["evt_s4", "evt_s1"]);
    assert!(first.next.is_some(), "more follow");
    let all = store
        .pending_before(t(25), None, 100)
        .await
        .expect("pending");
    assert_eq!(all.claims.len(), 9);
    assert_eq!(all.next, None, "nothing after the last page");

    // Pages of two: each claim once, in claim order (the tied ones in either order).
    let mut walked = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = store
            .pending_before(t(25), after.as_ref(), 2)
            .await
            .expect("pending");
        assert!(page.claims.len() <= 2);
        walked.extend(ids(&page));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(after, None, "the walk ends");
    assert_eq!(walked[..2], ["evt_s4", "evt_s1"]);
    let mut middle = walked[2..walked.len() - 1].to_vec();
    middle.sort();
    assert_eq!(middle, tied);
    assert_eq!(walked.last().map(String::as_str), Some("evt_s5"));

    // A retry keeps its claim alive until its message is due back: out of the sweep's range
    // until then. A claim no longer received keeps its time.
    let retried = EventKey::parse("EVT#stripe#evt_s4").expect("key");
    store.retrying_until(&retried, t(60)).await.expect("retry");
    store
        .retrying_until(&delivered, t(60))
        .await
        .expect("retry");
    let before = store
        .pending_before(t(25), None, 100)
        .await
        .expect("pending");
    assert_eq!(before.claims.len(), 8);
    assert!(!ids(&before).contains(&"evt_s4".to_owned()));
    let after_due = ids(&store
        .pending_before(t(61), None, 100)
        .await
        .expect("pending"));
    assert_eq!(after_due.len(), 10);
    assert!(after_due.contains(&"evt_s4".to_owned()));
    let claimed_at = |record: Option<EventRecord>| record.expect("kept").claimed_at;
    let retried_record = store.get(&retried).await.expect("get");
    assert_eq!(
        retried_record.as_ref().map(|r| r.requeues),
        Some(0),
        "a retry is not a re-enqueue"
    );
    assert_eq!(claimed_at(retried_record), t(60));
    assert_eq!(claimed_at(store.get(&delivered).await.expect("get")), t(5));

    // Giving up on a stuck claim: only on the claim as read, once; it leaves the sweep's range
    // and is never re-enqueued after.
    let stuck = EventKey::parse("EVT#stripe#evt_s1").expect("key");
    let detail = "not settled after 3 re-enqueues";
    assert!(
        !store
            .give_up_stuck(&stuck, t(11), detail, t(70))
            .await
            .expect("give up"),
        "a claim that moved since it was read is left alone"
    );
    assert!(
        store
            .give_up_stuck(&stuck, t(10), detail, t(70))
            .await
            .expect("give up")
    );
    assert!(
        !store
            .give_up_stuck(&stuck, t(10), detail, t(71))
            .await
            .expect("give up"),
        "once"
    );
    let given_up = store.get(&stuck).await.expect("get").expect("kept");
    assert_eq!(given_up.status, EventStatus::DeadLettered);
    assert!(
        !ids(&store
            .pending_before(t(100), None, 100)
            .await
            .expect("pending"))
        .contains(&"evt_s1".to_owned())
    );
    assert!(
        !store
            .refresh_claim(&stuck, t(10), t(80))
            .await
            .expect("refresh"),
        "dead-lettered: never re-enqueued"
    );
    assert!(
        !store
            .give_up_stuck(&delivered, t(5), detail, t(70))
            .await
            .expect("give up"),
        "a delivered event is not given up on"
    );

    // The cutoff holds to the nanosecond: a claim on the whole second is before a cutoff a
    // fraction later, one a larger fraction later is not, however each time is written.
    for (id, nanos) in [("evt_n1", 0), ("evt_n2", 500_000_000)] {
        let mut event = record(id, "aa");
        event.claimed_at = t_nanos(200, nanos);
        store.claim(&event).await.expect("claim");
    }
    let found = ids(&store
        .pending_before(t_nanos(200, 300_000_000), None, 100)
        .await
        .expect("pending"));
    let within: Vec<&String> = found.iter().filter(|id| id.starts_with("evt_n")).collect();
    assert_eq!(within, ["evt_n1"]);
}

fn t_nanos(secs: i64, nanos: i64) -> Timestamp {
    let at = i128::from(t(secs).unix()) * 1_000_000_000 + i128::from(nanos);
    Timestamp::new(time::OffsetDateTime::from_unix_timestamp_nanos(at).expect("in range"))
}

/// Watermarks read together come back as saved, in the order asked, absent ones as `None`.
/// Runs list newest first by their start, to the nanosecond: four in one second and one after.
async fn runs_conform(store: &impl ReconcileStore) {
    let at = |nanos: i64| t_nanos(0, nanos);
    let started = [
        ("half", 500_000_000),
        ("whole", 0),
        ("next", 1_000_000_000),
        ("quarter", 250_000_000),
        ("quarter_and_a_bit", 250_000_001),
    ];
    for (id, nanos) in started {
        let report = plumbline::reconcile::Report {
            id: id.to_owned(),
            started_at: at(nanos),
            finished_at: at(nanos + 1_000),
            checks: std::collections::BTreeMap::new(),
            breached: Vec::new(),
        };
        store.save_run(&report).await.expect("save");
    }
    let ids: Vec<String> = store
        .recent_runs(10)
        .await
        .expect("runs")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        ids,
        ["next", "half", "quarter_and_a_bit", "quarter", "whole"]
    );
    let last = store.last_run().await.expect("last").expect("a run");
    assert_eq!(last.id, "next");
}

async fn watermarks_conform(store: &impl Watermarks) {
    let finished = Watermark::finished(t(100));
    let resumed = Watermark::resume(t(10), Some("cursor#1".into()), t(90));
    store
        .save_watermark("sweep:payment", &finished)
        .await
        .expect("save");
    store
        .save_watermark("sweep:order", &resumed)
        .await
        .expect("save");
    assert_eq!(
        store
            .load_watermarks(&["sweep:order", "sweep:lead", "sweep:payment"])
            .await
            .expect("load"),
        [Some(resumed), None, Some(finished)]
    );
}

async fn ledger_conforms(store: &impl LedgerStore) {
    // Versioned entities.
    let mut entity = Entity::new(EntityKind::Payment, "pi_c");
    entity.version = 1;
    assert_eq!(
        store.save_entity(&entity).await.expect("save"),
        Saved::Saved
    );
    // A refused write brings back the entity as stored.
    let refused = |saved: Saved| match saved {
        Saved::VersionConflict {
            stored: Some(stored),
        } => (stored.version, stored.state),
        other => panic!("expected a refusal with the stored entity, got {other:?}"),
    };
    entity.state = Some("pending".into());
    assert_eq!(
        refused(store.save_entity(&entity).await.expect("save")),
        (1, None),
        "version 1 exists"
    );
    entity.version = 2;
    entity.state = Some("succeeded".into());
    assert_eq!(
        store.save_entity(&entity).await.expect("save"),
        Saved::Saved
    );
    entity.version = 2;
    entity.state = Some("refunded".into());
    assert_eq!(
        refused(store.save_entity(&entity).await.expect("save")),
        (2, Some("succeeded".to_owned())),
        "stale version"
    );
    assert_eq!(
        store
            .load_entity(EntityKind::Payment, "pi_c")
            .await
            .expect("load")
            .expect("entity")
            .state
            .as_deref(),
        Some("succeeded")
    );

    // Reading several at once: found ones and absent ones are both known.
    let mut order = Entity::new(EntityKind::Order, "ord_c");
    order.version = 1;
    store.save_entity(&order).await.expect("save");
    let keys = [
        (EntityKind::Payment, "pi_c".to_owned()),
        (EntityKind::Order, "ord_c".to_owned()),
        (EntityKind::Payment, "pi_absent".to_owned()),
    ];
    let known = store.load_entities(&keys).await.expect("load several");
    assert_eq!(known.len(), 3);
    assert_eq!(
        known[&keys[0]]
            .as_ref()
            .map(|e| (e.version, e.state.as_deref())),
        Some((2, Some("succeeded")))
    );
    assert_eq!(
        known[&keys[1]].as_ref().map(|e| e.id.as_str()),
        Some("ord_c")
    );
    assert_eq!(known[&keys[2]], None);

    // Aliases: first writer wins, then compare-and-set.
    let a = Alias {
        entity_id: "e1".into(),
        at: t(0),
    };
    let b = Alias {
        entity_id: "e2".into(),
        at: t(5),
    };
    assert!(
        store
            .save_alias(EntityKind::Lead, "email:x@y.co", &a, None)
            .await
            .expect("alias")
    );
    assert!(
        !store
            .save_alias(EntityKind::Lead, "email:x@y.co", &b, None)
            .await
            .expect("alias")
    );
    assert!(
        !store
            .save_alias(EntityKind::Lead, "email:x@y.co", &b, Some(&b))
            .await
            .expect("alias")
    );
    assert!(
        store
            .save_alias(EntityKind::Lead, "email:x@y.co", &b, Some(&a))
            .await
            .expect("alias")
    );
    assert_eq!(
        store
            .load_alias(EntityKind::Lead, "email:x@y.co")
            .await
            .expect("alias"),
        Some(b)
    );
}

async fn deliveries_conform(store: &(impl DeliveryLog + EventStore)) {
    // Leased deliveries, recorded against a claimed event.
    let event = record("evt_d1", "aa");
    assert_eq!(store.claim(&event).await.expect("claim"), Claim::Claimed);
    let key = &event.key;
    let lease = Duration::from_secs(60);
    assert_eq!(
        store
            .begin(key, "erp", t(0), lease, false, None)
            .await
            .expect("begin"),
        Attempt::Go { attempt: 1 }
    );
    assert!(matches!(
        store
            .begin(key, "erp", t(10), lease, false, None)
            .await
            .expect("begin"),
        Attempt::Leased { .. }
    ));
    assert_eq!(
        store
            .begin(key, "erp", t(61), lease, false, None)
            .await
            .expect("begin"),
        Attempt::Go { attempt: 2 },
        "an expired lease is taken over"
    );
    store
        .failed(key, "erp", "HTTP 503", false, t(62))
        .await
        .expect("failed");
    assert_eq!(
        store
            .begin(key, "erp", t(63), lease, false, None)
            .await
            .expect("begin"),
        Attempt::Go { attempt: 3 },
        "a retryable failure frees the lease"
    );
    store.delivered(key, "erp", t(64)).await.expect("delivered");
    store
        .failed(key, "erp", "late report", true, t(65))
        .await
        .expect("failed");
    assert_eq!(
        store
            .begin(key, "erp", t(66), lease, true, None)
            .await
            .expect("begin"),
        Attempt::AlreadyDelivered,
        "delivered stays delivered"
    );
    assert_eq!(
        store
            .begin(key, "crm", t(0), lease, false, None)
            .await
            .expect("begin"),
        Attempt::Go { attempt: 1 }
    );
    store
        .failed(key, "crm", "HTTP 400", true, t(1))
        .await
        .expect("failed");
    assert_eq!(
        store
            .begin(key, "crm", t(2), lease, false, None)
            .await
            .expect("begin"),
        Attempt::FailedBefore {
            reason: Some("HTTP 400".into())
        },
        "with the reason it was refused for"
    );
    assert_eq!(
        store
            .begin(key, "crm", t(3), lease, true, None)
            .await
            .expect("begin"),
        Attempt::Go { attempt: 2 },
        "a replay retries"
    );
    let deliveries = store.deliveries(key).await.expect("deliveries");
    let states: Vec<(String, DeliveryState, u32)> = deliveries
        .iter()
        .map(|d| (d.target.clone(), d.state, d.attempts))
        .collect();
    assert_eq!(
        states,
        [
            ("crm".to_owned(), DeliveryState::InFlight, 2),
            ("erp".to_owned(), DeliveryState::Delivered, 3)
        ]
    );
    assert_eq!(
        store.get(key).await.expect("get").expect("event").status,
        EventStatus::Received,
        "delivery records leave the event's own fields alone"
    );

    // Settling records the deliveries and the final status together.
    store
        .settle(key, &["crm"], EventStatus::Delivered, None, t(4))
        .await
        .expect("settle");
    let crm = store
        .deliveries(key)
        .await
        .expect("deliveries")
        .into_iter()
        .find(|d| d.target == "crm")
        .expect("crm");
    assert_eq!(
        (crm.state, crm.lease_until, crm.delivered_at),
        (DeliveryState::Delivered, None, Some(t(4)))
    );
    assert_eq!(
        store.get(key).await.expect("get").expect("event").status,
        EventStatus::Delivered
    );
    assert_eq!(
        store
            .begin(key, "crm", t(5), lease, true, None)
            .await
            .expect("begin"),
        Attempt::AlreadyDelivered
    );

    // Nothing is recorded against an event that was never claimed.
    let unknown = &record("evt_d_unknown", "aa").key;
    assert!(
        store
            .settle(unknown, &["crm"], EventStatus::Delivered, None, t(6))
            .await
            .is_err()
    );
    assert!(
        store
            .begin(unknown, "crm", t(6), lease, false, None)
            .await
            .is_err()
    );
    assert!(store.get(unknown).await.expect("get").is_none());
}

/// The first attempt's lease, held by the entity's write (`held`): while it runs, a target
/// without a record of its own is leased; the outcome of the held attempt is recorded without
/// a lease before it, and from then on the target's record speaks for it.
async fn held_deliveries_conform(store: &(impl DeliveryLog + EventStore)) {
    let event = record("evt_d_held", "aa");
    assert_eq!(store.claim(&event).await.expect("claim"), Claim::Claimed);
    let key = &event.key;
    let lease = Duration::from_secs(60);
    let held = Some(t(60));
    let begin = |target: &'static str, at: i64, replay: bool| async move {
        store
            .begin(key, target, t(at), lease, replay, held)
            .await
            .expect("begin")
    };
    assert_eq!(
        begin("erp", 10, false).await,
        Attempt::Leased { until: t(60) },
        "held by the first attempt"
    );
    assert_eq!(
        begin("erp", 10, true).await,
        Attempt::Leased { until: t(60) }
    );
    assert_eq!(
        begin("erp", 61, false).await,
        Attempt::Go { attempt: 1 },
        "a hold that ran out is taken over"
    );

    store
        .failed(key, "crm", "HTTP 503", false, t(1))
        .await
        .expect("failed");
    store
        .failed(key, "hubspot", "HTTP 400", true, t(1))
        .await
        .expect("failed");
    store.delivered(key, "site", t(1)).await.expect("delivered");
    store
        .settle(key, &["ledger"], EventStatus::Delivered, None, t(2))
        .await
        .expect("settle");
    assert_eq!(
        begin("crm", 3, false).await,
        Attempt::Go { attempt: 2 },
        "a recorded retryable failure frees the target within the hold"
    );
    assert_eq!(
        begin("hubspot", 3, false).await,
        Attempt::FailedBefore {
            reason: Some("HTTP 400".into())
        }
    );
    assert_eq!(begin("site", 3, true).await, Attempt::AlreadyDelivered);
    assert_eq!(begin("ledger", 3, true).await, Attempt::AlreadyDelivered);
    let records: Vec<(String, DeliveryState, u32)> = store
        .deliveries(key)
        .await
        .expect("deliveries")
        .into_iter()
        .map(|d| (d.target, d.state, d.attempts))
        .collect();
    assert_eq!(
        records,
        [
            ("crm".to_owned(), DeliveryState::InFlight, 2),
            ("erp".to_owned(), DeliveryState::InFlight, 1),
            ("hubspot".to_owned(), DeliveryState::Failed, 1),
            ("ledger".to_owned(), DeliveryState::Delivered, 1),
            ("site".to_owned(), DeliveryState::Delivered, 1),
        ],
        "each held attempt's outcome counts as one attempt"
    );

    // Outcomes are never recorded against an event that was never claimed.
    let unknown = &record("evt_d_held_unknown", "aa").key;
    store
        .failed(unknown, "crm", "HTTP 503", false, t(4))
        .await
        .ok();
    store.delivered(unknown, "crm", t(4)).await.ok();
    assert!(
        store
            .deliveries(unknown)
            .await
            .expect("deliveries")
            .is_empty()
    );
}

/// Whether a receive finds no visible message (one it finds stays hidden for `hide`).
async fn nothing_visible(queue: &impl QueueConsumer, hide: Duration) -> bool {
    queue.receive(10, hide).await.expect("receive").is_empty()
}

/// The ingress's write: a new claim awaiting delivery is on the queue once it is answered; a
/// second arrival and an event not to be delivered put nothing there.
async fn intake_conforms<Q: EventQueue + QueueConsumer>(store: &impl Intake<Q>, queue: &Q) {
    let fresh = record("evt_intake", "aa");
    assert_eq!(
        store
            .claim_and_enqueue(queue, &fresh)
            .await
            .expect("claim and enqueue"),
        Claim::Claimed
    );
    let stored = store.get(&fresh.key).await.expect("get").expect("claimed");
    assert_eq!(stored.status, EventStatus::Received);
    let got = queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1, "the claim's message is on the queue");
    assert_eq!(
        QueueMessage::decode(&got[0].body).expect("decodes"),
        QueueMessage::decode(
            Outgoing::new(&fresh.key, fresh.envelope.as_ref().expect("envelope")).body()
        )
        .expect("decodes")
    );
    queue.ack(&got[0].receipt_handle).await.expect("ack");

    let again = store
        .claim_and_enqueue(queue, &record("evt_intake", "aa"))
        .await
        .expect("second arrival");
    assert!(matches!(again, Claim::Exists(existing) if existing.event_id == fresh.event_id));
    let mut held = record("evt_intake_held", "bb");
    held.status = EventStatus::Quarantined;
    held.reason = Some("no route".into());
    assert_eq!(
        store.claim_and_enqueue(queue, &held).await.expect("held"),
        Claim::Claimed
    );
    assert!(
        nothing_visible(queue, Duration::from_secs(0)).await,
        "neither a duplicate nor a held event is enqueued"
    );
}

/// `plumbline events reprocess` over each backend: a kept event that today's normalizers read
/// is stored as received under its own id and enqueued once; the rest stay as they were.
async fn reprocess_conforms<Q: EventQueue + QueueConsumer>(
    store: &(impl EventStore + ReconcileStore),
    queue: &Q,
) {
    use plumbline::contract::{EventType, Origin};
    use plumbline::ingress::{Reprocessed, reprocess};
    use plumbline::sources::SourceKind;

    let webhook: serde_json::Value =
        serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("JSON");
    let kept = |id: &str, status: EventStatus, raw: serde_json::Value| {
        let mut r = record(id, "aa");
        r.status = status;
        raw["type"]
            .as_str()
            .unwrap_or_default()
            .clone_into(&mut r.source_type);
        r.envelope = None;
        r.reason = (status == EventStatus::Quarantined).then(|| "an older reading".to_owned());
        r.raw = Some(raw);
        r
    };
    // As an older normalizer would have kept it: quarantined, though today it reads. Stripe
    // reads no header time, but the store keeps whichever a kept event came with.
    let mut readable = kept("evt_kept_ok", EventStatus::Quarantined, webhook.clone());
    readable.header_time = Some(t(7));
    let mut broken = webhook.clone();
    broken["data"]["object"]
        .as_object_mut()
        .expect("object")
        .remove("amount");
    let broken = kept("evt_kept_broken", EventStatus::Quarantined, broken);
    let mut unknown = webhook.clone();
    unknown["type"] = "plumbline.unknown_type".into();
    let unknown = kept("evt_kept_unknown", EventStatus::Unrouted, unknown);
    for r in [&readable, &broken, &unknown] {
        assert_eq!(store.claim(r).await.expect("claim"), Claim::Claimed);
    }
    let go = |r: &EventRecord, dry_run: bool| {
        let r = r.clone();
        async move {
            reprocess(store, queue, SourceKind::Stripe, &r, t(100), dry_run)
                .await
                .expect("reprocess")
        }
    };

    assert_eq!(go(&readable, true).await, Reprocessed::WouldEnqueue);
    let untouched = store.get(&readable.key).await.expect("get").expect("kept");
    assert_eq!(
        untouched.status,
        EventStatus::Quarantined,
        "a dry run writes nothing"
    );
    assert_eq!(
        untouched.header_time,
        Some(t(7)),
        "a kept event's header time is stored"
    );
    assert!(
        nothing_visible(queue, Duration::from_secs(0)).await,
        "nor sends"
    );

    assert_eq!(go(&readable, false).await, Reprocessed::Enqueued);
    let now = store.get(&readable.key).await.expect("get").expect("kept");
    assert_eq!(
        (
            now.status,
            now.event_id.clone(),
            now.raw.clone(),
            now.reason.clone(),
            now.header_time
        ),
        (
            EventStatus::Received,
            readable.event_id.clone(),
            None,
            None,
            None
        )
    );
    let envelope = now.envelope.as_ref().expect("an envelope");
    assert_eq!(envelope.id, readable.event_id, "the same event");
    assert_eq!(
        envelope.event_type,
        EventType::try_from("payment.succeeded").expect("type")
    );
    assert_eq!(envelope.trace.origin, Origin::Replay);
    assert_eq!(envelope.received_at, readable.received_at);
    let got = queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1, "enqueued once");
    assert_eq!(
        QueueMessage::decode(&got[0].body).expect("decodes"),
        QueueMessage::decode(Outgoing::new(&readable.key, envelope).body()).expect("decodes")
    );
    queue.ack(&got[0].receipt_handle).await.expect("ack");
    let pending = store
        .pending_before(t(101), None, 100)
        .await
        .expect("pending");
    assert!(
        pending
            .claims
            .iter()
            .any(|c| c.as_ref().is_ok_and(|r| r.key == readable.key)),
        "in the pending index, so a lost send is re-enqueued"
    );

    // A second run that read the record before the first one wrote finds it changed.
    assert_eq!(go(&readable, false).await, Reprocessed::Changed);
    let Reprocessed::StillQuarantined(reason) = go(&broken, false).await else {
        panic!("still quarantined")
    };
    assert!(reason.contains("amount"), "{reason}");
    assert_eq!(go(&unknown, false).await, Reprocessed::StillUnrouted);
    for r in [&broken, &unknown] {
        let still = store.get(&r.key).await.expect("get").expect("kept");
        assert_eq!((still.status, still.raw.is_some()), (r.status, true));
    }
    assert_eq!(
        go(&now, false).await,
        Reprocessed::NotKept,
        "a received event is not read again"
    );
    assert!(nothing_visible(queue, Duration::from_secs(0)).await);
}

async fn queue_conforms(
    queue: &(impl EventQueue + QueueConsumer + QueueControl),
    dlq: &(impl DeadLetters + DeadLetterSource),
) {
    let message = Outgoing::new(
        &record("evt_q", "aa").key,
        record("evt_q", "aa").envelope.as_ref().expect("envelope"),
    );
    queue.enqueue(&message).await.expect("enqueue");
    let got = queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].receive_count, 1);
    assert_eq!(
        got[0].attributes.get("event_type").map(String::as_str),
        Some("payment.succeeded")
    );
    assert_eq!(
        QueueMessage::decode(&got[0].body).expect("decodes"),
        QueueMessage::decode(message.body()).expect("decodes")
    );
    assert!(
        nothing_visible(queue, Duration::from_secs(30)).await,
        "hidden while in flight"
    );
    queue
        .retry_after(&got[0].receipt_handle, Duration::ZERO)
        .await
        .expect("visibility");
    let again = queue
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(again.len(), 1, "visible again after the retry delay");
    assert_eq!(again[0].receive_count, 2);
    queue.ack(&again[0].receipt_handle).await.expect("ack");
    queue
        .retry_after(&again[0].receipt_handle, Duration::ZERO)
        .await
        .ok();
    assert!(
        nothing_visible(queue, Duration::from_secs(0)).await,
        "acknowledged for good"
    );

    dlq.dead_letter(
        "{\"key\":\"EVT#stripe#x\"}",
        &[("reason", "HTTP 400".into()), ("target", "erp".into())],
    )
    .await
    .expect("dead letter");
    let letters = dlq
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].attributes.get("reason").map(String::as_str),
        Some("HTTP 400")
    );
    dlq.release(&letters[0].receipt_handle)
        .await
        .expect("release");
    let letters = dlq
        .receive(10, Duration::from_secs(30))
        .await
        .expect("receive");
    assert_eq!(letters.len(), 1, "released letters are visible at once");
    dlq.delete(&letters[0].receipt_handle)
        .await
        .expect("delete");
    assert!(
        dlq.receive(10, Duration::from_secs(0))
            .await
            .expect("receive")
            .is_empty()
    );
}

#[tokio::test]
async fn sqlite_conforms() {
    let dir = std::env::temp_dir().join(unique("plumbline-conformance"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    stuck_claims_conform(&store).await;
    runs_conform(&store).await;
    watermarks_conform(&store).await;
    events_conform(&store).await;
    ledger_conforms(&store).await;
    deliveries_conform(&store).await;
    held_deliveries_conform(&store).await;
    intake_conforms(&store, &store).await;
    reprocess_conforms(&store, &store).await;
    queue_conforms(&store, &store).await;
    std::fs::remove_dir_all(&dir).ok();
}

/// A local database made before kept events kept their header time and claims counted their
/// re-enqueues opens with the columns added: its events read as before (no header time, no
/// re-enqueue), and new ones keep theirs.
#[tokio::test]
async fn a_local_database_from_before_header_times_and_requeues_gains_the_columns() {
    let dir = std::env::temp_dir().join(unique("plumbline-header-times"));
    let older = record("evt_before_header_times", "aa");
    let store = SqliteStore::open(&dir, 8).expect("open");
    store.claim(&older).await.expect("claim");
    drop(store);
    rusqlite::Connection::open(dir.join("plumbline.db"))
        .expect("open")
        .execute_batch(
            "ALTER TABLE events DROP COLUMN header_time; ALTER TABLE events DROP COLUMN requeues",
        )
        .expect("back to the older schema");

    let store = SqliteStore::open(&dir, 8).expect("reopen");
    assert_eq!(
        store.get(&older.key).await.expect("get").as_ref(),
        Some(&older)
    );
    let mut kept = record("evt_after_header_times", "bb");
    kept.status = EventStatus::Unrouted;
    kept.envelope = None;
    kept.raw = Some(serde_json::json!({ "type": "site.unknown" }));
    kept.header_time = Some(t(-120));
    store.claim(&kept).await.expect("claim");
    assert_eq!(store.get(&kept.key).await.expect("get"), Some(kept));
    assert!(
        store
            .refresh_claim(&older.key, t(0), t(400))
            .await
            .expect("refresh")
    );
    assert_eq!(
        store
            .get(&older.key)
            .await
            .expect("get")
            .map(|r| r.requeues),
        Some(1),
        "the older claim counts its re-enqueues from now on"
    );
    drop(store);
    std::fs::remove_dir_all(&dir).ok();
}

/// `plumbline dev` starts by freeing what a dead process held, first attempts held by entity
/// writes included: a hold taken before the restart no longer keeps a target waiting, one
/// taken after it does.
#[tokio::test]
async fn a_local_restart_frees_the_first_attempts_a_dead_process_held() {
    let dir = std::env::temp_dir().join(unique("plumbline-holds"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let event = record("evt_hold_restart", "aa");
    store.claim(&event).await.expect("claim");
    let lease = Duration::from_secs(60);
    let now = Timestamp::new(time::OffsetDateTime::now_utc());
    let before = Some(now.plus_secs(30));
    let begin = |held| store.begin(&event.key, "erp", now, lease, false, held);
    assert!(matches!(
        begin(before).await.expect("begin"),
        Attempt::Leased { .. }
    ));

    store.recover_in_flight(lease).await.expect("recover");
    assert_eq!(
        begin(before).await.expect("begin"),
        Attempt::Go { attempt: 1 },
        "held by the process before the restart"
    );
    let after = Some(Timestamp::new(time::OffsetDateTime::now_utc()).plus_secs(61));
    let other = record("evt_hold_restart_2", "aa");
    store.claim(&other).await.expect("claim");
    assert!(matches!(
        store
            .begin(&other.key, "erp", now, lease, false, after)
            .await
            .expect("begin"),
        Attempt::Leased { .. }
    ));
    std::fs::remove_dir_all(&dir).ok();
}

/// Locally the claim and its message are one transaction: a send that fails takes the claim
/// with it, so no claim waits for a sweep to find it unqueued.
#[tokio::test]
async fn a_local_claim_whose_enqueue_fails_is_not_kept() {
    let dir = std::env::temp_dir().join(unique("plumbline-intake"));
    let store = SqliteStore::open(&dir, 8).expect("open");
    let refusing = rusqlite::Connection::open(dir.join("plumbline.db")).expect("second connection");
    refusing
        .execute_batch(
            "CREATE TRIGGER refuse_sends BEFORE INSERT ON messages \
             BEGIN SELECT RAISE(ABORT, 'the queue refuses'); END;",
        )
        .expect("trigger");
    let fresh = record("evt_refused", "aa");
    let err = store
        .claim_and_enqueue(&store, &fresh)
        .await
        .expect_err("the send fails");
    assert!(err.is_retryable(), "the sender is told to retry: {err}");
    assert!(
        store.get(&fresh.key).await.expect("get").is_none(),
        "the claim was rolled back with its message"
    );

    refusing
        .execute_batch("DROP TRIGGER refuse_sends;")
        .expect("drop trigger");
    assert_eq!(
        store
            .claim_and_enqueue(&store, &fresh)
            .await
            .expect("the retry"),
        Claim::Claimed,
        "the sender's retry claims afresh"
    );
    assert_eq!(
        QueueConsumer::receive(&store, 10, Duration::from_secs(30))
            .await
            .expect("receive")
            .len(),
        1
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A queue in another database cannot share the claim's transaction: the message still lands
/// on that queue, and nothing is enqueued in the store's own.
#[tokio::test]
async fn a_local_claim_enqueues_on_the_queue_it_is_given() {
    let (a, b) = (
        std::env::temp_dir().join(unique("plumbline-intake-a")),
        std::env::temp_dir().join(unique("plumbline-intake-b")),
    );
    let (store, other) = (
        SqliteStore::open(&a, 8).expect("open"),
        SqliteStore::open(&b, 8).expect("open"),
    );
    let fresh = record("evt_elsewhere", "aa");
    assert_eq!(
        store
            .claim_and_enqueue(&other, &fresh)
            .await
            .expect("claim"),
        Claim::Claimed
    );
    let receive = |q: &SqliteStore| {
        let q = q.clone();
        async move {
            QueueConsumer::receive(&q, 10, Duration::from_secs(30))
                .await
                .expect("receive")
                .len()
        }
    };
    assert_eq!(receive(&other).await, 1);
    assert_eq!(receive(&store).await, 0);
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// A batch read DynamoDB answers in part (here its 16 MB answer limit; throttling leaves keys
/// unprocessed the same way) asks again for the rest: every record comes back.
#[tokio::test]
async fn a_batch_read_answered_in_part_asks_again_for_the_rest() {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let store = DynamoStore::new(ddb.clone(), create_table(&ddb).await);
    // 50 items of about 380 KB: 19 MB, more than one answer may carry.
    let bulk = serde_json::Value::String("x".repeat(380_000));
    let mut keys = Vec::new();
    for i in 0..50 {
        let mut event = record(&format!("evt_bulky_{i:02}"), "aa");
        event.raw = Some(bulk.clone());
        store.claim(&event).await.expect("claim");
        keys.push(event.key);
    }
    let records = store.get_many(&keys).await.expect("get many");
    let found: Vec<_> = records
        .iter()
        .map(|r| r.as_ref().map(|r| r.key.clone()))
        .collect();
    assert_eq!(found, keys.into_iter().map(Some).collect::<Vec<_>>());
}

/// DynamoDB throttles a batch read by leaving keys unprocessed (moto never does: a front in
/// its place answers so). The store asks again, with a pause, a few times; a key still left
/// after that is a retryable throttling error for a caller that needs every record, and stays
/// unknown to the ledger: never taken for absent.
#[tokio::test]
async fn keys_a_throttled_batch_read_leaves_are_asked_again_then_reported() {
    use crate::helpers::unprocessed::UnprocessedFront;
    use plumbline::ports::StoreError;

    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let table = create_table(&ddb).await;
    let direct = DynamoStore::new(ddb, table.clone());
    let mut keys = Vec::new();
    for id in ["evt_throttled_1", "evt_throttled_2"] {
        let event = record(id, "aa");
        direct.claim(&event).await.expect("claim");
        keys.push(event.key);
    }
    let mut entity = Entity::new(EntityKind::Payment, "pi_throttled");
    entity.version = 1;
    assert_eq!(
        direct.save_entity(&entity).await.expect("save"),
        Saved::Saved
    );
    let moto = crate::helpers::moto_url();
    let through = |front: &UnprocessedFront| {
        let config = crate::helpers::dynamodb_config(&aws, Some(&front.url)).build();
        DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), table.clone())
    };

    let once = UnprocessedFront::start(&moto, 1).await;
    let found = through(&once).get_many(&keys).await.expect("asked again");
    assert_eq!(
        found
            .iter()
            .map(|r| r.as_ref().map(|r| &r.key))
            .collect::<Vec<_>>(),
        keys.iter().map(Some).collect::<Vec<_>>()
    );
    assert_eq!(once.batch_gets(), 2, "one throttled answer, then moto's");

    let always = UnprocessedFront::start(&moto, usize::MAX).await;
    let store = through(&always);
    let err = store.get_many(&keys).await.expect_err("still throttled");
    assert!(
        matches!(&err, StoreError::Throttled(why) if why.to_string() == "2 of 2 keys left unprocessed"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert_eq!(always.batch_gets(), 3, "the first ask and two more");

    let asked = [
        (EntityKind::Payment, "pi_throttled".to_owned()),
        (EntityKind::Payment, "pi_never_written".to_owned()),
    ];
    let known = store.load_entities(&asked).await.expect("load");
    assert!(known.is_empty(), "unprocessed is unknown: {known:?}");
    let known = direct.load_entities(&asked).await.expect("load");
    assert_eq!(
        (
            known[&asked[0]].as_ref().map(|e| e.version),
            known.get(&asked[1])
        ),
        (Some(1), Some(&None)),
        "answered: one present, one absent"
    );
}

#[tokio::test]
async fn dynamodb_and_sqs_conform() {
    let aws = aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let store = DynamoStore::new(ddb.clone(), create_table(&ddb).await);
    stuck_claims_conform(&store).await;
    runs_conform(&store).await;
    watermarks_conform(&store).await;
    events_conform(&store).await;
    ledger_conforms(&store).await;
    deliveries_conform(&store).await;
    held_deliveries_conform(&store).await;
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("conformance"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let dlq_url = sqs
        .create_queue()
        .queue_name(unique("conformance-dlq"))
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("url");
    let queue = SqsQueue::new(sqs.clone(), queue_url);
    intake_conforms(&store, &queue).await;
    reprocess_conforms(&store, &queue).await;
    queue_conforms(&queue, &SqsDeadLetters::new(sqs, dlq_url)).await;
}

/// A message handed out `max` times without being acknowledged moves to the dead-letter queue.
async fn redrive_conforms(
    queue: &(impl EventQueue + QueueConsumer),
    dlq: &impl DeadLetterSource,
    max: u32,
) {
    let message = Outgoing::new(
        &record("evt_r", "aa").key,
        record("evt_r", "aa").envelope.as_ref().expect("envelope"),
    );
    queue.enqueue(&message).await.expect("enqueue");
    for attempt in 1..=max {
        let got = queue.receive(10, Duration::ZERO).await.expect("receive");
        assert_eq!(got.len(), 1, "receive {attempt}");
        assert_eq!(got[0].receive_count, attempt);
    }
    let mut letters = Vec::new();
    for _ in 0..50 {
        assert!(
            nothing_visible(queue, Duration::ZERO).await,
            "moved, not handed out again"
        );
        letters = dlq
            .receive(10, Duration::from_secs(30))
            .await
            .expect("receive");
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(letters.len(), 1, "on the dead-letter queue");
    assert_eq!(
        QueueMessage::decode(&letters[0].body).expect("decodes"),
        QueueMessage::decode(message.body()).expect("decodes")
    );
    let reason = letters[0].attributes.get("reason").map(String::as_str);
    assert!(
        reason.is_some_and(|r| r.contains("times without success")),
        "a letter the redrive moved says so: {reason:?}"
    );
    let filter = plumbline::delivery::replay::Filter {
        reason: Some("without success".into()),
        ..Default::default()
    };
    assert!(
        filter.matches(&letters[0]),
        "and `replay --reason` finds it"
    );
}

#[tokio::test]
async fn sqlite_dead_letters_after_the_maximum_receives() {
    let dir = std::env::temp_dir().join(unique("plumbline-redrive"));
    let store = SqliteStore::open(&dir, 2).expect("open");
    redrive_conforms(&store, &store, 2).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn sqs_dead_letters_after_the_maximum_receives() {
    let sqs = aws_sdk_sqs::Client::new(&aws().await);
    let dlq_url = sqs
        .create_queue()
        .queue_name(unique("redrive-dlq"))
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("url");
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .expect("arn");
    let queue_url = sqs
        .create_queue()
        .queue_name(unique("redrive"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2 }).to_string(),
        )
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    redrive_conforms(
        &SqsQueue::new(sqs.clone(), queue_url),
        &SqsDeadLetters::new(sqs, dlq_url),
        2,
    )
    .await;
}
