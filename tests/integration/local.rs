//! End to end: the real `plumbline dev` process, real signed requests, a recording HTTP server
//! standing in for the ERP, and the CLI reading the story back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plumbline::sources::SourceKind;
use serde_json::{Value, json};

use crate::helpers::dev::{Dev, eventually, post, signed};
use crate::helpers::recorder::{Recorder, Reply};
use crate::helpers::{fixture, unique};

const STRIPE: &str = "whsec_e2e_stripe";
const SITE: &str = "whsec_ZTJlLXNpdGUtc2VjcmV0";
const SHOPIFY: &str = "shpss_e2e";

const ENVS: [(&str, &str); 3] = [
    ("E2E_STRIPE_SECRET", STRIPE),
    ("E2E_SITE_SECRET", SITE),
    ("E2E_SHOPIFY_SECRET", SHOPIFY),
];

fn config(erp: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:E2E_STRIPE_SECRET"]

[sources.site]
kind = "standard-webhooks"
secrets = ["env:E2E_SITE_SECRET"]

[sources.shopify]
kind = "shopify"
secrets = ["env:E2E_SHOPIFY_SECRET"]

[targets.erp]
kind = "http"
url = "{erp}/erp"
timeout_ms = 2000

[[routes]]
events = ["payment.*", "order.*", "lead.*"]
targets = ["erp"]

[delivery]
backoff_base_secs = 1
backoff_cap_secs = 1
{extra}
"#
    );
    let dir = std::env::temp_dir().join(unique("plumbline-e2e"));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("plumbline.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn stripe_event(file: &str, id: &str, created: i64) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(&fixture(&format!("stripe/{file}"))).expect("json");
    doc["id"] = json!(id);
    doc["created"] = json!(created);
    serde_json::to_vec(&doc).expect("json")
}

/// A signed Stripe `payment_intent.succeeded` webhook with event id `id`, created at `now`.
fn paid(id: &str, now: i64) -> (Vec<(&'static str, String)>, Vec<u8>) {
    signed(
        SourceKind::Stripe,
        STRIPE,
        "",
        None,
        &stripe_event("payment_intent.succeeded.json", id, now),
    )
}

/// Requests per idempotency key the recorder saw on `path`.
fn effects(recorder: &Recorder, path: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in recorder.requests().iter().filter(|r| r.path == path) {
        *out.entry(r.header("idempotency-key").unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn the_local_stack_tells_the_whole_story() {
    let erp = Recorder::start().await;
    erp.script([Reply::status(503)]);
    let ledgerbook = r#"
[targets.ledgerbook]
kind = "http"
url = "{ERP}/ledgerbook"

[[targets.ledgerbook.fields]]
to = "amount"
from = "entity.fields.amount"
format = "decimal"
required = true

[[routes]]
events = ["lead.*"]
targets = ["ledgerbook"]
"#
    .replace("{ERP}", &erp.url);
    let config = config(&erp.url, &ledgerbook);
    let dev = Dev::start(&config, &config.with_file_name("data"), &ENVS);
    let client = crate::helpers::http();
    let url = |source: &str| format!("{}/webhooks/{source}", dev.url);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let succeeded = signed(
        SourceKind::Stripe,
        STRIPE,
        "",
        None,
        &stripe_event("payment_intent.succeeded.json", "evt_e2e_a", now - 10),
    );
    let processing = signed(
        SourceKind::Stripe,
        STRIPE,
        "",
        None,
        &stripe_event("payment_intent.processing.json", "evt_e2e_b", now - 20),
    );
    let lead = signed(
        SourceKind::StandardWebhooks,
        SITE,
        "msg_e2e_lead",
        None,
        &fixture("site/lead.submitted.json"),
    );
    let order = signed(
        SourceKind::Shopify,
        SHOPIFY,
        "e2e-order-1",
        Some("orders/create"),
        &fixture("shopify/orders.create.json"),
    );
    assert_eq!(post(&client, &url("stripe"), &succeeded).await, Some(200));
    // The older event must reach the ledger after the newer one, which deliveries running in
    // parallel do not promise for two events sent back to back: wait for the first to apply.
    let first_applied = eventually(Duration::from_secs(30), || {
        let shown: Value =
            serde_json::from_str(&dev.cli(&["events", "show", "stripe:evt_e2e_a", "--json"]))
                .unwrap_or(Value::Null);
        shown["ledger"]["effect"] == "applied"
    })
    .await;
    assert!(first_applied, "the newer payment event reaches the ledger");
    for (source, request) in [
        ("stripe", &processing),
        ("stripe", &succeeded),
        ("site", &lead),
        ("shopify", &order),
    ] {
        assert_eq!(
            post(&client, &url(source), request).await,
            Some(200),
            "{source}"
        );
    }
    // A second instance on the same data directory is refused: recovery at start-up would take
    // over the first one's work.
    let second = std::process::Command::new(crate::helpers::dev::binary())
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dev.data_dir)
        .arg("--config")
        .arg(&config)
        .envs(ENVS)
        .output()
        .expect("run a second plumbline dev");
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another plumbline dev is running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // Refused: nothing stored.
    let forged = signed(
        SourceKind::Stripe,
        "whsec_forged",
        "",
        None,
        &stripe_event("payment_intent.succeeded.json", "evt_e2e_forged", now),
    );
    assert_eq!(post(&client, &url("stripe"), &forged).await, Some(401));

    let expected: BTreeSet<String> = [
        "stripe:evt_e2e_a",
        "stripe:evt_e2e_b",
        "site:msg_e2e_lead",
        "shopify:e2e-order-1",
    ]
    .map(str::to_owned)
    .into();
    let settled = eventually(Duration::from_secs(30), || {
        let list: Value =
            serde_json::from_str(&dev.cli(&["events", "list", "--json"])).expect("json");
        let all_final = list
            .as_array()
            .is_some_and(|l| l.len() == 4 && l.iter().all(|e| e["status"] != "received"));
        all_final
            && effects(&erp, "/erp")
                .keys()
                .cloned()
                .collect::<BTreeSet<_>>()
                == expected
    })
    .await;
    assert!(settled, "did not settle: {:?}", effects(&erp, "/erp"));

    // Exactly the expected set, each effect once; the 503 was retried with the same key.
    let erp_effects = effects(&erp, "/erp");
    assert_eq!(
        erp_effects.keys().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(
        erp_effects.values().sum::<usize>(),
        5,
        "four events, one retried after the 503"
    );
    assert!(
        effects(&erp, "/ledgerbook").is_empty(),
        "a mapping failure never calls the target"
    );

    // The dead-letter queue holds exactly the permanent failure, with its reason.
    let letters: Value = serde_json::from_str(&dev.cli(&["dlq", "list", "--json"])).expect("json");
    let letters = letters.as_array().expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["attributes"]["target"], "ledgerbook");
    assert_eq!(
        letters[0]["attributes"]["reason"],
        "amount (from entity.fields.amount) is required but missing"
    );

    // `events show` tells the story of the late event.
    let late: Value =
        serde_json::from_str(&dev.cli(&["events", "show", "stripe:evt_e2e_b", "--json"]))
            .expect("json");
    assert_eq!(late["ledger"]["effect"], "late");
    assert_eq!(late["status"], "delivered");
    assert_eq!(late["deliveries"][0]["state"], "delivered");
    let text = dev.cli(&["events", "show", "site:msg_e2e_lead"]);
    assert!(
        text.contains("ledgerbook → Failed") && text.contains("required but missing"),
        "{text}"
    );
    assert!(text.contains("status: dead_lettered"), "{text}");

    // The status page agrees.
    let status = dev.status().await;
    assert_eq!(status["dead_letters"]["depth"], 1);
    assert_eq!(status["rejected_requests"], 1);
    assert_eq!(status["targets"]["erp"]["delivered"], 4);
    assert!(dev.stop().success(), "Ctrl-C (SIGTERM) exits cleanly");
}

/// A target down for longer than the queue's receives: each message is dead-lettered on its
/// last receive with what the target did (its error, or the open circuit and the error that
/// opened it), and its event is marked dead-lettered rather than left as received. The
/// reconciliation timer counts the letters against their threshold, and the status page shows
/// that check breached.
#[tokio::test]
async fn events_whose_target_stays_down_are_dead_lettered_with_the_targets_failure_and_flagged() {
    const EVENTS: usize = 6;
    let erp = Recorder::start().await;
    erp.set_default(Reply::status(503));
    // The circuit opens on the first failures; messages it holds back come again after the
    // cool-down. The local inbox takes each event at once.
    let inbox = r#"breaker_threshold = 2
breaker_cooldown_secs = 3

[targets.inbox]
kind = "inbox"

[[routes]]
events = ["payment.*"]
targets = ["inbox"]

[reconcile.thresholds]
dlq_messages = 0
"#;
    let config = config(&erp.url, inbox);
    let dev = Dev::start_with(
        &config,
        &config.with_file_name("data"),
        &ENVS,
        &["--max-receives", "2", "--reconcile-every", "1"],
    );
    let client = crate::helpers::http();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for i in 0..EVENTS {
        let request = paid(&format!("evt_down_{i}"), now);
        assert_eq!(
            post(&client, &format!("{}/webhooks/stripe", dev.url), &request).await,
            Some(200)
        );
    }
    let list = || -> Vec<Value> {
        serde_json::from_str(&dev.cli(&["events", "list", "--json"])).expect("json")
    };
    let settled = eventually(Duration::from_secs(30), || {
        let events = list();
        events.len() == EVENTS && events.iter().all(|e| e["status"] != "received")
    })
    .await;
    assert!(settled, "not settled: {:?}", list());
    assert!(list().iter().all(|e| e["status"] == "dead_lettered"));
    // The listing says why: the first refusing target's reason.
    assert!(
        list().iter().all(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("erp: ") && d.ends_with("(gave up after 2 receives)"))),
        "{:?}",
        list()
    );

    let letters: Value = serde_json::from_str(&dev.cli(&["dlq", "list", "--json"])).expect("json");
    let reasons: Vec<&str> = letters
        .as_array()
        .expect("list")
        .iter()
        .map(|l| {
            assert_eq!(l["attributes"]["target"], "erp");
            l["attributes"]["reason"].as_str().expect("a reason")
        })
        .collect();
    assert_eq!(reasons.len(), EVENTS, "one letter per event: {reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("HTTP 503") && r.ends_with("(gave up after 2 receives)")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("circuit open; last failure: HTTP 503")),
        "{reasons:?}"
    );
    let text = dev.cli(&["events", "show", "stripe:evt_down_0"]);
    assert!(
        text.contains("erp → Failed") && text.contains("(gave up after 2 receives)"),
        "{text}"
    );
    // The timeline is in time order: the inbox took it before erp gave up.
    let at = |target: &str| text.find(&format!("{target} → ")).expect(target);
    assert!(at("inbox") < at("erp"), "{text}");
    assert!(text.contains("status: dead_lettered"), "{text}");
    assert_eq!(dev.status().await["dead_letters"]["depth"], EVENTS);

    // A run of the timer after the last letter counts them all, over the threshold of 0.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let report = loop {
        let report = dev.status().await["last_reconciliation"].clone();
        if report["checks"]["dlq_messages"]["found"] == EVENTS {
            break report;
        }
        assert!(std::time::Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["breached"], json!(["dlq_messages"]));
    let page = crate::helpers::http()
        .get(format!("{}/ops", dev.url))
        .send()
        .await
        .expect("the status page")
        .text()
        .await
        .expect("HTML");
    assert!(
        page.contains(&format!(
            r#"<tr data-check="dlq_messages" class="breached"><td>dlq_messages (breached)</td><td class="n">{EVENTS}</td>"#
        )),
        "{page}"
    );
    assert!(
        page.contains(r#"<tr data-check="stuck_events"><td>stuck_events</td><td class="n">0</td>"#),
        "{page}"
    );
    // The runs before it are listed too, so an operator sees when the breach began.
    let id = report["id"].as_str().expect("a run id");
    let row = page
        .split("<tr data-run=")
        .find(|row| row.starts_with(&format!(r#""{id}""#)))
        .unwrap_or_else(|| panic!("run {id} listed: {page}"));
    assert!(
        row.contains(r#"class="breached""#)
            && row.contains(&format!("dlq_messages {EVENTS} (breached)")),
        "{row}"
    );
    // And from the CLI, newest first.
    let history = dev.cli(&["reconcile", "--history", "3"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three runs: {history}");
    let started: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().expect("a start time"))
        .collect();
    let mut newest_first = started.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(started, newest_first, "{history}");
    assert!(
        lines[1].contains("breached")
            && lines[1].contains(&format!("dlq_messages {EVENTS} (breached)")),
        "the letters are still there: {history}"
    );
    assert!(dev.stop().success());
}

/// Locally too, `plumbline events redeliver` sends dead-lettered events back from the store once
/// the target is back, and each is delivered; their letters, replayed afterwards, call the
/// target for nothing more.
#[tokio::test]
async fn dead_lettered_events_are_redelivered_from_the_store_and_their_letters_then_add_nothing() {
    const EVENTS: usize = 2;
    let erp = Recorder::start().await;
    erp.set_default(Reply::status(400));
    let config = config(&erp.url, "");
    let dev = Dev::start_with(&config, &config.with_file_name("data"), &ENVS, &[]);
    let client = crate::helpers::http();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for i in 0..EVENTS {
        let request = paid(&format!("evt_refused_{i}"), now);
        assert_eq!(
            post(&client, &format!("{}/webhooks/stripe", dev.url), &request).await,
            Some(200)
        );
    }
    let statuses = || -> Vec<String> {
        let events: Vec<Value> =
            serde_json::from_str(&dev.cli(&["events", "list", "--json"])).expect("json");
        events
            .iter()
            .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let all = |status: &str| {
        let statuses = statuses();
        statuses.len() == EVENTS && statuses.iter().all(|s| s == status)
    };
    assert!(
        eventually(Duration::from_secs(30), || all("dead_lettered")).await,
        "{:?}",
        statuses()
    );

    erp.set_default(Reply::status(200));
    let for_crm: Value = serde_json::from_str(&dev.cli(&[
        "events",
        "redeliver",
        "--target",
        "crm",
        "--dry-run",
        "--json",
    ]))
    .expect("json");
    assert_eq!(
        (&for_crm["redelivered"], &for_crm["not_owed_by_target"]),
        (&Value::from(0), &Value::from(EVENTS)),
        "the events were never routed to a crm: {for_crm}"
    );
    let sent: Value =
        serde_json::from_str(&dev.cli(&["events", "redeliver", "--json"])).expect("json");
    assert_eq!(sent["redelivered"], EVENTS, "{sent}");
    assert!(
        eventually(Duration::from_secs(30), || all("delivered")).await,
        "{:?}",
        statuses()
    );
    let calls = erp.count();
    assert_eq!(
        calls,
        2 * EVENTS,
        "refused once each, then delivered once each"
    );

    let replayed: Value = serde_json::from_str(&dev.cli(&["replay", "--json"])).expect("json");
    assert_eq!(replayed["replayed"], EVENTS, "{replayed}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = dev.status().await;
        if status["queue"]["depth"] == 0 && status["dead_letters"]["depth"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        erp.count(),
        calls,
        "the replayed letters called the target for nothing"
    );
    assert!(all("delivered"));
    assert!(dev.stop().success());
}

/// Process chaos: ten SIGKILLs at seeded random moments while 10,000 signed webhooks stream in
/// from eight connections and deliveries run, each followed by a restart on the same data; the
/// provider retries whatever it did not get a 2xx for. Nothing is lost; every event has exactly
/// one effect per key at the target. `PLUMBLINE_CHAOS_SEED` replays a run.
#[tokio::test]
async fn ten_sigkills_during_ten_thousand_events_lose_nothing_and_repeat_no_effect() {
    const EVENTS: usize = 10_000;
    const KILLS: usize = 10;
    let seed = std::env::var("PLUMBLINE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    eprintln!("chaos seed {seed} (PLUMBLINE_CHAOS_SEED={seed} replays this run)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let erp = Recorder::start().await;
    let config = config(&erp.url, "");
    let data = config.with_file_name("data");
    let client = crate::helpers::http();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let requests: Arc<Vec<_>> = Arc::new(
        (0..EVENTS)
            .map(|i| paid(&format!("evt_kill_{i:05}"), now))
            .collect(),
    );
    let accepted: Arc<Vec<AtomicUsize>> =
        Arc::new((0..EVENTS).map(|_| AtomicUsize::new(0)).collect());

    for kill in 0..KILLS {
        let dev = Dev::start(&config, &data, &ENVS);
        let url = format!("{}/webhooks/stripe", dev.url);
        let pending: Arc<Vec<usize>> = Arc::new(
            (0..EVENTS)
                .filter(|i| accepted[*i].load(Ordering::SeqCst) == 0)
                .collect(),
        );
        // The kill lands once a random 2–15 % of what is left has been acknowledged.
        let threshold = (pending.len() * rng.usize(2..15) / 100).max(1);
        let count = Arc::new(AtomicUsize::new(0));
        let senders: Vec<_> = (0..8)
            .map(|lane| {
                let (client, url, requests, accepted, count, pending) = (
                    client.clone(),
                    url.clone(),
                    Arc::clone(&requests),
                    Arc::clone(&accepted),
                    Arc::clone(&count),
                    Arc::clone(&pending),
                );
                tokio::spawn(async move {
                    for &i in pending.iter().skip(lane).step_by(8) {
                        if post(&client, &url, &requests[i]).await != Some(200) {
                            return;
                        }
                        accepted[i].store(1, Ordering::SeqCst);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        assert!(
            eventually(Duration::from_secs(60), || count.load(Ordering::SeqCst)
                >= threshold)
            .await,
            "seed {seed}, kill {kill}: the stream started"
        );
        dev.kill();
        for sender in senders {
            sender.await.expect("sender");
        }
        eprintln!(
            "kill {kill}: {} acknowledged in this life",
            count.load(Ordering::SeqCst)
        );
    }

    // The last restart; the provider retries everything it did not get a 2xx for.
    let dev = Dev::start(&config, &data, &ENVS);
    let url = format!("{}/webhooks/stripe", dev.url);
    let rest: Arc<Vec<usize>> = Arc::new(
        (0..EVENTS)
            .filter(|i| accepted[*i].load(Ordering::SeqCst) == 0)
            .collect(),
    );
    let senders: Vec<_> = (0..8)
        .map(|lane| {
            let (client, url, requests, rest) = (
                client.clone(),
                url.clone(),
                Arc::clone(&requests),
                Arc::clone(&rest),
            );
            tokio::spawn(async move {
                for &i in rest.iter().skip(lane).step_by(8) {
                    assert_eq!(post(&client, &url, &requests[i]).await, Some(200));
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("the last life takes every retry");
    }
    let all_delivered = eventually(Duration::from_secs(300), || {
        effects(&erp, "/erp").len() == EVENTS
    })
    .await;
    let per_key = effects(&erp, "/erp");
    if !all_delivered {
        let missing: Vec<String> = (0..EVENTS)
            .map(|i| format!("stripe:evt_kill_{i:05}"))
            .filter(|key| !per_key.contains_key(key))
            .collect();
        panic!(
            "seed {seed}: {} of {EVENTS} delivered; missing {missing:?}; data in {}, logs in {}; status {}",
            per_key.len(),
            data.display(),
            data.with_extension("stderr.log").display(),
            dev.status().await
        );
    }
    let sent: BTreeSet<String> = (0..EVENTS)
        .map(|i| format!("stripe:evt_kill_{i:05}"))
        .collect();
    assert_eq!(
        per_key.keys().cloned().collect::<BTreeSet<_>>(),
        sent,
        "seed {seed}: every accepted event delivered, nothing else"
    );
    // A delivery a kill cut between the call and its record is made again with the same key,
    // which the receiver deduplicates: one effect per key. Count how often that happened.
    let repeated: usize = per_key.values().map(|n| n - 1).sum();
    eprintln!("calls repeated by the crashes: {repeated}");
    assert!(
        repeated <= KILLS * 8 * 10,
        "seed {seed}: repeats are bounded by the batches in flight at each kill"
    );
    let status = dev.status().await;
    assert_eq!(status["dead_letters"]["depth"], 0, "seed {seed}: {status}");
    assert_eq!(
        status["queue"]["depth"], 0,
        "seed {seed}: nothing stuck: {status}"
    );
    dev.stop();
}

/// Fills `path`'s filesystem with one file; returns the bytes written when the disk refused.
fn fill_disk(path: &std::path::Path) -> usize {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => return written,
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return written,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

/// A full disk: the data directory is a small tmpfs, filled to the last byte while the stack
/// runs. Every webhook is answered either 200 (and is then durable and delivered) or 503 (so
/// the provider retries); the process stays up; once space returns, the retries are taken,
/// every event has exactly one effect, and the database passes SQLite's integrity check.
#[tokio::test]
async fn a_full_disk_answers_503_keeps_nothing_half_written_and_recovers() {
    let erp = Recorder::start().await;
    let config = config(&erp.url, "");
    let dev = Dev::start_on_tmpfs(&config, &config.with_file_name("data"), &ENVS, "16m");
    let url = format!("{}/webhooks/stripe", dev.url);
    let client = crate::helpers::http();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let request = |i: usize| paid(&format!("evt_disk_{i:04}"), now);

    for i in 0..20 {
        assert_eq!(post(&client, &url, &request(i)).await, Some(200));
    }
    assert!(
        eventually(Duration::from_secs(30), || effects(&erp, "/erp").len()
            == 20)
        .await,
        "delivered before the disk fills"
    );

    let filler = dev.host_path("filler");
    let filler_bytes = fill_disk(&filler);
    eprintln!("filled the data disk with {filler_bytes} bytes");
    // Send until the store refuses: pages SQLite already owns can still be reused for a while.
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    let mut sent = 20;
    while answers.get(&503).copied().unwrap_or(0) < 20 && sent < 5_000 {
        let status = post(&client, &url, &request(sent))
            .await
            .expect("the stack answers while its disk is full");
        *answers.entry(status).or_insert(0) += 1;
        sent += 1;
    }
    eprintln!("answers while the disk was full: {answers:?}");
    assert_eq!(
        answers.get(&503).copied().unwrap_or(0),
        20,
        "a full disk is answered 503: {answers:?}"
    );
    assert!(
        answers.keys().all(|s| *s == 200 || *s == 503),
        "only 200 or 503 while the disk is full: {answers:?}"
    );
    let status = client
        .get(format!("{}/ops/status", dev.url))
        .send()
        .await
        .expect("the status page answers while the disk is full");
    assert!(status.status().is_success());

    std::fs::remove_file(&filler).expect("space returns");
    // The provider retries everything it did not get a 2xx for; each is taken now.
    for i in 0..sent {
        let request = request(i);
        let mut status = post(&client, &url, &request).await;
        for _ in 0..50 {
            if status == Some(200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            status = post(&client, &url, &request).await;
        }
        assert_eq!(
            status,
            Some(200),
            "evt_disk_{i:04} is taken once space returns"
        );
    }
    assert!(
        eventually(Duration::from_secs(120), || effects(&erp, "/erp").len()
            == sent)
        .await,
        "every event delivered after recovery: {} of {sent}",
        effects(&erp, "/erp").len()
    );
    let per_key = effects(&erp, "/erp");
    let expected: BTreeSet<String> = (0..sent)
        .map(|i| format!("stripe:evt_disk_{i:04}"))
        .collect();
    assert_eq!(per_key.keys().cloned().collect::<BTreeSet<_>>(), expected);

    // SQLite will not open a path through /proc/<pid>/root, so check a copy, taken while the
    // stack is idle (everything delivered) so that no commit lands during the copy.
    let copy = config.with_file_name("copy");
    std::fs::create_dir_all(&copy).expect("copy dir");
    for file in ["plumbline.db", "plumbline.db-wal"] {
        std::fs::copy(dev.host_path(file), copy.join(file)).expect("copy the database");
    }
    let db = rusqlite::Connection::open(copy.join("plumbline.db")).expect("open the copy");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok", "nothing half-written");
    let stored: usize = db
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .expect("count");
    assert_eq!(
        stored, sent,
        "each event stored once, none of the refused twice"
    );
    let status = dev.status().await;
    assert_eq!(status["dead_letters"]["depth"], 0, "{status}");
    assert_eq!(status["queue"]["depth"], 0, "nothing stuck: {status}");
    dev.stop();
}

/// An event an older normalizer quarantined keeps its payload; once the normalizer reads it,
/// `plumbline events reprocess` sends it down the pipeline: the target gets it once, a second
/// run finds nothing left to do.
#[tokio::test]
async fn a_kept_event_that_now_reads_is_reprocessed_and_delivered_once() {
    use plumbline::adapters::sqlite::SqliteStore;
    use plumbline::contract::Timestamp;
    use plumbline::ports::{Claim, EventStatus, EventStore};

    let erp = Recorder::start().await;
    let config = config(&erp.url, "");
    let dev = Dev::start(&config, &config.with_file_name("data"), &ENVS);
    let now = time::OffsetDateTime::now_utc();
    let id = unique("evt_kept");
    let raw: Value = serde_json::from_slice(&stripe_event(
        "payment_intent.succeeded.json",
        &id,
        now.unix_timestamp() - 60,
    ))
    .expect("json");
    // What an older build wrote: verified, claimed, kept with its payload and a reason (and a
    // header time, which Stripe's normalizer does not read but the store keeps).
    let mut kept =
        crate::helpers::kept_stripe_event(&id, EventStatus::Quarantined, raw, Timestamp::new(now));
    let header_time = kept.received_at.plus_secs(-30);
    kept.header_time = Some(header_time);
    let store = SqliteStore::open(&dev.data_dir, 8).expect("open the dev database");
    assert_eq!(store.claim(&kept).await.expect("claim"), Claim::Claimed);
    store
        .record_conflict(
            &kept.key,
            &plumbline::sources::PayloadHash::of(b"other"),
            kept.received_at,
        )
        .await
        .expect("conflict");
    drop(store);

    let key = format!("stripe:{id}");
    let before: Value =
        serde_json::from_str(&dev.cli(&["events", "show", &key, "--json"])).expect("json");
    assert_eq!(
        (before["status"].as_str(), before["header_time"].as_str()),
        (Some("quarantined"), Some(header_time.to_string().as_str())),
        "{before}"
    );

    let config_arg = config.to_str().expect("utf8 path");
    let dry = dev.cli(&["events", "reprocess", "--dry-run", "--config", config_arg]);
    assert!(dry.contains("examined 1, would enqueue 1"), "{dry}");
    let first = dev.cli(&["events", "reprocess", "--config", config_arg]);
    assert!(first.contains(kept.event_id.as_str()), "{first}");
    assert!(first.contains("examined 1, enqueued 1"), "{first}");
    let delivered = eventually(Duration::from_secs(30), || {
        effects(&erp, "/erp").contains_key(&key)
    })
    .await;
    assert!(
        delivered,
        "erp got the reprocessed event: {:?}",
        effects(&erp, "/erp")
    );
    let shown: Value =
        serde_json::from_str(&dev.cli(&["events", "show", &key, "--json"])).expect("json");
    assert_eq!(shown["event_id"], kept.event_id.as_str(), "{shown}");
    let settled = eventually(Duration::from_secs(30), || {
        let shown: Value = serde_json::from_str(&dev.cli(&["events", "show", &key, "--json"]))
            .unwrap_or(Value::Null);
        shown["status"] == "delivered"
    })
    .await;
    assert!(settled, "the event settles as delivered");
    assert_eq!(
        shown["payload_conflicts"], 1,
        "the conflict counted while kept stays: {shown}"
    );

    let second = dev.cli(&["events", "reprocess", "--config", config_arg]);
    assert!(second.contains("examined 0, enqueued 0"), "{second}");
    assert_eq!(effects(&erp, "/erp").get(&key), Some(&1), "delivered once");
}

#[tokio::test]
async fn plumbline_dev_warns_as_it_starts_of_filters_and_fields_that_name_nothing_in_plain_text() {
    let stderr_of = |dev: &Dev| {
        std::fs::read_to_string(dev.data_dir.with_extension("stderr.log")).expect("stderr log")
    };
    let clean = config("http://127.0.0.1:9", "");
    let dev = Dev::start(&clean, &clean.with_file_name("data"), &ENVS);
    let said = stderr_of(&dev);
    dev.kill();
    assert!(!said.contains("configuration warning"), "{said}");

    let mistaken = config(
        "http://127.0.0.1:9",
        r#"
[[targets.erp.fields]]
to = "amount"
from = "entity.feilds.amount"

[[routes]]
events = ["payment.*"]
targets = ["erp"]
where = { "data.objekt.id" = "pi_1" }
"#,
    );
    // The warnings are written before the server listens, so they are in the log by the time
    // `start` has read the banner.
    let dev = Dev::start(&mistaken, &mistaken.with_file_name("data"), &ENVS);
    let said = stderr_of(&dev);
    dev.kill();
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("configuration warning"))
        .collect();
    assert_eq!(warnings.len(), 2, "{said}");
    assert!(
        !said.contains('\x1b'),
        "a log written to a file holds no terminal colour codes: {said:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("targets.erp.fields[0].from")
                && l.contains("no field of the delivery document")),
        "{said}"
    );
    assert!(
        warnings.iter().any(|l| l.contains("routes[1].where")
            && l.contains("data.objekt.id")
            && l.contains("no field of the envelope")),
        "{said}"
    );
}

/// `plumbline dev` under `RUST_LOG=trace`: the dependencies' debug lines (the HTTP server's and
/// clients') are written, their trace lines are not, as in the functions.
#[tokio::test]
async fn at_trace_the_dependencies_stop_at_debug() {
    let erp = Recorder::start().await;
    let config = config(&erp.url, "");
    let data = config.with_file_name("data");
    let mut envs = ENVS.to_vec();
    envs.push(("RUST_LOG", "trace"));
    let dev = Dev::start(&config, &data, &envs);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let webhook = paid("evt_e2e_trace", now);
    let client = crate::helpers::http();
    assert_eq!(
        post(&client, &format!("{}/webhooks/stripe", dev.url), &webhook).await,
        Some(200)
    );
    assert!(
        eventually(Duration::from_secs(10), || !erp.requests().is_empty()).await,
        "delivered"
    );
    assert!(dev.stop().success());
    let log = std::fs::read_to_string(data.with_extension("stderr.log")).expect("stderr");
    assert!(
        log.lines().filter(|l| l.contains("DEBUG")).count() >= 3,
        "the dependencies' debug lines were written:\n{log}"
    );
    assert!(!log.contains("TRACE"), "a trace line was written:\n{log}");
}
