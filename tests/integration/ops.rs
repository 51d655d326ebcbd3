//! The status page, rendered by headless Chromium after real traffic: the DOM shows the queues,
//! the counts, the chart and the last events linking to their timelines.

use std::process::Command;
use std::time::Duration;

use plumbline::sources::SourceKind;
use serde_json::{Value, json};

use crate::helpers::dev::{Dev, eventually, post, signed};
use crate::helpers::{fixture, unique};

const STRIPE: &str = "whsec_ops_stripe";

/// The page's DOM after Chromium loaded and rendered it.
fn render(url: &str) -> String {
    let chromium = std::env::var("PLUMBLINE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = std::env::temp_dir().join(unique("plumbline-chromium"));
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
        ])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=2000", "--dump-dom", url])
        .output()
        .unwrap_or_else(|e| panic!("{chromium}: {e}; tests/run installs Debian's chromium"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 DOM")
}

#[tokio::test]
async fn the_status_page_shows_real_traffic_in_a_browser() {
    let dir = std::env::temp_dir().join(unique("plumbline-ops"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("plumbline.toml");
    std::fs::write(
        &config,
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:OPS_STRIPE_SECRET\"]\n\n[targets.inbox]\nkind = \"inbox\"\n\n[[routes]]\nevents = [\"*\"]\ntargets = [\"inbox\"]\n",
    )
    .expect("config");
    let dev = Dev::start(&config, &dir.join("data"), &[("OPS_STRIPE_SECRET", STRIPE)]);
    let client = crate::helpers::http();
    let url = format!("{}/webhooks/stripe", dev.url);
    for i in 0..3 {
        let mut doc: Value =
            serde_json::from_slice(&fixture("stripe/payment_intent.succeeded.json")).expect("json");
        doc["id"] = json!(format!("evt_ops_{i}"));
        let body = serde_json::to_vec(&doc).expect("json");
        assert_eq!(
            post(
                &client,
                &url,
                &signed(SourceKind::Stripe, STRIPE, "", None, &body)
            )
            .await,
            Some(200)
        );
    }
    let forged = signed(SourceKind::Stripe, "whsec_forged", "", None, b"{}");
    assert_eq!(post(&client, &url, &forged).await, Some(401));
    let delivered = eventually(Duration::from_secs(20), || {
        let list: Value =
            serde_json::from_str(&dev.cli(&["events", "list", "--json"])).expect("json");
        list.as_array()
            .is_some_and(|l| l.iter().filter(|e| e["status"] == "delivered").count() == 3)
    })
    .await;
    assert!(delivered);

    let dom = render(&format!("{}/ops", dev.url));
    assert!(dom.contains(r#"id="queue-depth">0<"#), "{dom}");
    assert!(dom.contains(r#"id="queue-in-flight">0<"#), "{dom}");
    assert!(dom.contains(r#"id="dlq-depth">0<"#));
    assert!(
        dom.contains(r#"id="rejected">1<"#),
        "the forged request is counted"
    );
    assert_eq!(
        dom.matches(r#"class="event" data-status="delivered""#)
            .count(),
        3
    );
    assert!(
        dom.contains(r#"<tr data-target="inbox"><td>inbox</td><td class="n">3</td>"#),
        "{dom}"
    );
    assert_eq!(
        dom.matches("<polyline").count(),
        3,
        "accepted, delivered and failed lines"
    );
    let link = dom
        .split("href=\"/ops/events/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("an event link");

    let timeline = render(&format!("{}/ops/events/{link}", dev.url));
    assert!(timeline.contains(r#"<ol id="timeline">"#));
    assert!(
        timeline.contains("inbox → Delivered after 1 attempt(s)"),
        "{timeline}"
    );
    assert!(timeline.contains("status: delivered"));
    dev.stop();
}
