//! Verify + normalize + envelope encode, per source, on realistic payloads; the ingress's whole
//! own work per event (the same, then the claim's item, its envelope deflated, and the queue
//! message's body: everything but the AWS SDK's requests); and the floor both are measured
//! against: one HMAC-SHA256 over the same body.
//!
//! Run: `cargo bench -p plumbline --bench sources`

use std::hint::black_box;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use plumbline::adapters::dynamodb::claim_item;
use plumbline::contract::{Envelope, Origin, SourceName, Timestamp, Trace};
use plumbline::ingress::{Outgoing, build_record};
use plumbline::sources::{Inbound, SourceKind, Verifier, hmac_sha256};
use secrecy::SecretSlice;

const NOW: i64 = 1_763_900_000;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

fn verifier(kind: SourceKind, secret: &str) -> Verifier {
    let key = SecretSlice::from(kind.decode_secret(secret).expect("secret"));
    Verifier {
        kind,
        keys: vec![key],
        tolerance_secs: 300,
    }
}

fn header(pairs: &[(&str, String)]) -> http::HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (k.parse().expect("name"), v.parse().expect("value")))
        .collect()
}

struct Case {
    name: &'static str,
    verifier: Verifier,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let stripe_body = fixture("stripe/payment_intent.succeeded.json");
    let stripe_sig = hmac_sha256(
        b"whsec_bench",
        &[NOW.to_string().as_bytes(), b".", &stripe_body],
    );
    let site_secret = "whsec_YmVuY2gtc2l0ZS1zZWNyZXQ=";
    let site_body = fixture("site/order.created.json");
    let site_key = SourceKind::StandardWebhooks
        .decode_secret(site_secret)
        .expect("secret");
    let site_sig = hmac_sha256(
        &site_key,
        &[b"msg_1.", NOW.to_string().as_bytes(), b".", &site_body],
    );
    let shop_body = fixture("shopify/orders.paid.json");
    let paddle_body = fixture("paddle/transaction.completed.json");
    let paddle_sig = hmac_sha256(
        b"pdl_bench",
        &[NOW.to_string().as_bytes(), b":", &paddle_body],
    );
    let adyen_body = fixture("adyen/documented-example.json");
    vec![
        Case {
            name: "stripe",
            verifier: verifier(SourceKind::Stripe, "whsec_bench"),
            headers: header(&[(
                "stripe-signature",
                format!("t={NOW},v1={}", hex::encode(stripe_sig)),
            )]),
            body: stripe_body,
        },
        Case {
            name: "standard-webhooks",
            verifier: verifier(SourceKind::StandardWebhooks, site_secret),
            headers: header(&[
                ("webhook-id", "msg_1".into()),
                ("webhook-timestamp", NOW.to_string()),
                (
                    "webhook-signature",
                    format!("v1,{}", STANDARD.encode(site_sig)),
                ),
            ]),
            body: site_body,
        },
        Case {
            name: "shopify",
            verifier: verifier(SourceKind::Shopify, "shpss_bench"),
            headers: header(&[
                (
                    "x-shopify-hmac-sha256",
                    STANDARD.encode(hmac_sha256(b"shpss_bench", &[&shop_body])),
                ),
                ("x-shopify-topic", "orders/paid".into()),
                (
                    "x-shopify-event-id",
                    "98880550-7158-44d4-b7cd-2c97c8a091b5".into(),
                ),
            ]),
            body: shop_body,
        },
        Case {
            name: "adyen",
            verifier: verifier(
                SourceKind::Adyen,
                "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
            ),
            headers: http::HeaderMap::new(),
            body: adyen_body,
        },
        Case {
            name: "paddle",
            verifier: verifier(SourceKind::Paddle, "pdl_bench"),
            headers: header(&[(
                "paddle-signature",
                format!("ts={NOW};h1={}", hex::encode(paddle_sig)),
            )]),
            body: paddle_body,
        },
    ]
}

/// One webhook through the ingress's own work: verify, normalize, the record and its envelope's
/// JSON; with `whole`, also the claim's item (envelope deflated) and the queue message's body.
fn own_work(case: &Case, source: &SourceName, now: Timestamp, whole: bool) {
    let events = case
        .verifier
        .accept(
            Inbound {
                headers: &case.headers,
                body: black_box(&case.body),
            },
            now,
        )
        .expect("verifies");
    for event in events {
        let trace = Trace {
            request_id: None,
            origin: Origin::Webhook,
        };
        let record = build_record(source, event, now, trace, 90);
        if !whole {
            black_box(record.envelope.as_ref().map(Envelope::to_json));
            continue;
        }
        // As the ingress does: the envelope encoded once, for the item and the message.
        let json = record.envelope.as_ref().map(Envelope::to_json);
        black_box(claim_item(&record, json.as_deref()).expect("an item"));
        if let (Some(envelope), Some(json)) = (&record.envelope, &json) {
            black_box(Outgoing::encoded(&record.key, envelope, json).body());
        }
    }
}

fn bench(c: &mut Criterion) {
    let now = Timestamp::from_unix(NOW).expect("in range");
    for (group, whole) in [
        ("verify_normalize_encode", false),
        ("ingress_own_work", true),
    ] {
        let mut group = c.benchmark_group(group);
        for case in cases() {
            let source =
                SourceName::try_from(case.name.replace("standard-webhooks", "site")).expect("name");
            group.throughput(Throughput::Elements(1));
            group.bench_function(case.name, |b| {
                b.iter(|| own_work(&case, &source, now, whole));
            });
        }
        group.finish();
    }

    let mut floor = c.benchmark_group("hmac_sha256_floor");
    for case in cases() {
        floor.bench_function(case.name, |b| {
            b.iter(|| hmac_sha256(b"whsec_bench", &[black_box(&case.body)]));
        });
    }
    floor.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
