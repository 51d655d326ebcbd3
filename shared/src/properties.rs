//! Property tests over the pure core: verifiers, normalizers, state precedence and mapping
//! formats, each checked on inputs proptest generates (and shrinks on failure).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use secrecy::SecretSlice;
use serde_json::Value;

use crate::contract::{
    EntityKind, EntityRef, Envelope, EventData, EventId, IdempotencyKey, Money, Origin, Refs,
    SCHEMA_V1, SourceEventId, SourceName, Timestamp, Trace,
};
use crate::delivery::mapping::{Format, decimal, format_value};
use crate::ledger::machine::rank;
use crate::ledger::{Entity, Ownership, apply};
use crate::sources::sign::{self, Envelope as SignMeta};
use crate::sources::{Inbound, Rejection, SourceKind, Verifier};

const NOW: i64 = 1_763_900_000;

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The secret as configured for `kind`, from raw key bytes.
fn secret_text(kind: SourceKind, key: &[u8]) -> String {
    match kind {
        SourceKind::StandardWebhooks => format!("whsec_{}", STANDARD.encode(key)),
        SourceKind::Adyen => hex::encode(key),
        _ => format!("whsec_{}", hex::encode(key)),
    }
}

fn verifier(kind: SourceKind, secret: &str) -> Verifier {
    Verifier {
        kind,
        keys: vec![SecretSlice::from(
            kind.decode_secret(secret).expect("a valid secret"),
        )],
        tolerance_secs: 300,
    }
}

fn headers(pairs: &[(&str, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            map.append(n, v);
        }
    }
    map
}

/// Signs `body` for `kind` with `signing_secret` at `NOW + offset`, and runs a verifier that
/// holds `checker` over it (`tamper`: flip one bit of the body first).
fn signed_run(
    kind: SourceKind,
    signing_secret: &str,
    checker: &str,
    body: &[u8],
    offset: i64,
    tamper: Option<usize>,
) -> Result<(), Rejection> {
    let meta = SignMeta {
        event_id: "evt_prop",
        timestamp: NOW + offset,
        topic: Some("orders/create"),
    };
    let signed = match sign::sign(kind, signing_secret, meta, body) {
        Ok(signed) => signed,
        // Adyen signs inside the body: one that is not its shape goes through unsigned.
        Err(_) if kind == SourceKind::Adyen => sign::Signed {
            headers: Vec::new(),
            body: body.to_vec(),
        },
        Err(e) => panic!("sign: {e}"),
    };
    let mut body = signed.body;
    if let Some(i) = tamper
        && !body.is_empty()
    {
        let i = i % body.len();
        body[i] ^= 0x01;
    }
    let h = headers(&signed.headers);
    verifier(kind, checker)
        .accept(
            Inbound {
                headers: &h,
                body: &body,
            },
            Timestamp::from_unix(NOW).expect("in range"),
        )
        .map(|_| ())
}

fn header_kinds() -> impl Strategy<Value = SourceKind> {
    prop_oneof![
        Just(SourceKind::Stripe),
        Just(SourceKind::StandardWebhooks),
        Just(SourceKind::Shopify),
        Just(SourceKind::Paddle),
    ]
}

fn all_kinds() -> impl Strategy<Value = SourceKind> {
    prop_oneof![header_kinds(), Just(SourceKind::Adyen)]
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer to a leaf or container of `v`.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_owned());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                pointers(
                    child,
                    &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

const FIXTURES: [(SourceKind, &str); 10] = [
    (SourceKind::Stripe, "stripe/payment_intent.succeeded.json"),
    (SourceKind::Stripe, "stripe/charge.refunded.partial.json"),
    (SourceKind::Stripe, "stripe/charge.dispute.created.json"),
    (SourceKind::Stripe, "stripe/checkout.session.completed.json"),
    (SourceKind::StandardWebhooks, "site/lead.submitted.json"),
    (SourceKind::StandardWebhooks, "site/order.created.json"),
    (SourceKind::Shopify, "shopify/orders.create.json"),
    (SourceKind::Shopify, "shopify/refunds.create.json"),
    (SourceKind::Adyen, "adyen/batch.json"),
    (SourceKind::Paddle, "paddle/transaction.completed.json"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Signed with the configured secret within the tolerance: never refused as unauthentic
    /// (the body may still be unreadable). Another secret, a changed byte, or a timestamp
    /// outside the tolerance: always refused.
    #[test]
    fn verifiers_accept_exactly_the_correctly_signed(
        kind in header_kinds(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        key in prop::collection::vec(any::<u8>(), 1..64),
        other in prop::collection::vec(any::<u8>(), 1..64),
        offset in -299_i64..=299,
        late in 301_i64..100_000,
        flip in any::<usize>(),
    ) {
        let secret = secret_text(kind, &key);
        let ok = signed_run(kind, &secret, &secret, &body, offset, None);
        prop_assert!(!matches!(&ok, Err(r) if r.is_unauthorized()), "{ok:?}");
        if other != key {
            let wrong = secret_text(kind, &other);
            let refused = signed_run(kind, &wrong, &secret, &body, offset, None);
            prop_assert!(matches!(&refused, Err(r) if r.is_unauthorized()), "{refused:?}");
        }
        if !body.is_empty() {
            let tampered = signed_run(kind, &secret, &secret, &body, offset, Some(flip));
            prop_assert!(matches!(&tampered, Err(r) if r.is_unauthorized()), "{tampered:?}");
        }
        if kind != SourceKind::Shopify {
            for at in [late, -late] {
                let stale = signed_run(kind, &secret, &secret, &body, at, None);
                prop_assert!(
                    matches!(stale, Err(Rejection::StaleTimestamp | Rejection::FutureTimestamp)),
                    "{stale:?}"
                );
            }
        }
    }

    /// Adyen signs fields inside the body: any amount and reference verify when signed, and a
    /// changed amount does not.
    #[test]
    fn adyen_accepts_exactly_the_correctly_signed(
        key in prop::collection::vec(any::<u8>(), 1..64),
        value in 0_i64..1_000_000_000,
        reference in "[0-9]{16}",
    ) {
        let mut doc: Value = serde_json::from_slice(&fixture("adyen/batch.json")).expect("json");
        let item = &mut doc["notificationItems"][0]["NotificationRequestItem"];
        item["amount"]["value"] = Value::from(value);
        item["pspReference"] = Value::String(reference);
        let body = serde_json::to_vec(&doc).expect("json");
        let secret = secret_text(SourceKind::Adyen, &key);
        prop_assert!(signed_run(SourceKind::Adyen, &secret, &secret, &body, 0, None).is_ok());
        let signed = sign::sign(
            SourceKind::Adyen,
            &secret,
            SignMeta { event_id: "-", timestamp: NOW, topic: None },
            &body,
        )
        .expect("sign");
        let text = String::from_utf8(signed.body).expect("utf-8");
        let changed = text.replacen(&format!("\"value\":{value}"), &format!("\"value\":{}", value + 1), 1);
        prop_assume!(changed != text);
        let h = http::HeaderMap::new();
        let refused = verifier(SourceKind::Adyen, &secret).accept(
            Inbound { headers: &h, body: changed.as_bytes() },
            Timestamp::from_unix(NOW).expect("in range"),
        );
        prop_assert!(matches!(&refused, Err(r) if r.is_unauthorized()), "{refused:?}");
    }

    /// Arbitrary headers and bodies never panic a verifier.
    #[test]
    fn verifiers_never_panic(
        kind in all_kinds(),
        pairs in prop::collection::vec((
            prop_oneof![
                Just("stripe-signature".to_owned()),
                Just("paddle-signature".to_owned()),
                Just("webhook-id".to_owned()),
                Just("webhook-timestamp".to_owned()),
                Just("webhook-signature".to_owned()),
                Just("x-shopify-hmac-sha256".to_owned()),
                Just("x-shopify-topic".to_owned()),
                "[a-z-]{1,20}",
            ],
            "[ -~]{0,200}",
        ), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let h = headers(&pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect::<Vec<_>>());
        let secret = secret_text(kind, b"prop-key");
        let _ = verifier(kind, &secret).accept(
            Inbound { headers: &h, body: &body },
            Timestamp::from_unix(NOW).expect("in range"),
        );
    }

    /// Normalizers never panic: any part of a real payload replaced by arbitrary JSON, signed,
    /// is either normalized, quarantined, or refused as unreadable.
    #[test]
    fn normalizers_never_panic_on_arbitrary_json(
        which in 0..FIXTURES.len(),
        pick in any::<prop::sample::Index>(),
        replacement in json(),
    ) {
        let (kind, path) = FIXTURES[which];
        let mut doc: Value = serde_json::from_slice(&fixture(path)).expect("json");
        let mut all = Vec::new();
        pointers(&doc, "", &mut all);
        let at = pick.get(&all).clone();
        if at.is_empty() {
            doc = replacement;
        } else if let Some(slot) = doc.pointer_mut(&at) {
            *slot = replacement;
        }
        let body = serde_json::to_vec(&doc).expect("json");
        let secret = secret_text(kind, b"prop-key");
        let _ = signed_run(kind, &secret, &secret, &body, 0, None);
        let _ = crate::sources::accept_from_api(kind, &body);
    }

    /// The same events in any order leave a payment and an order in the same state, and no
    /// event ever moves a state back.
    #[test]
    fn state_machines_are_order_independent_and_never_regress(
        kind in prop_oneof![Just(EntityKind::Payment), Just(EntityKind::Order)],
        events in prop::collection::vec((0_usize..12, 0_i64..50), 1..8),
        order in any::<prop::sample::Index>(),
    ) {
        let states: Vec<&str> = match kind {
            EntityKind::Payment => crate::ledger::machine::PAYMENT_RANKS.iter().map(|(s, _)| *s).collect(),
            _ => crate::ledger::machine::ORDER_RANKS.iter().map(|(s, _)| *s).collect(),
        };
        let envelopes: Vec<Envelope> = events
            .iter()
            .enumerate()
            .map(|(i, (s, t))| event(kind, states[s % states.len()], *t, i))
            .collect();
        let run = |list: &[&Envelope]| {
            let mut entity = Entity::new(kind, "x");
            let mut last_rank = None;
            for e in list {
                entity = apply(entity, e, &Ownership::default()).entity;
                let r = entity.state.as_deref().and_then(|s| rank(kind, s));
                assert!(r >= last_rank, "regressed to {:?}", entity.state);
                last_rank = r;
            }
            entity.state
        };
        let forward: Vec<&Envelope> = envelopes.iter().collect();
        let mut backward = forward.clone();
        backward.reverse();
        let mut rotated = forward.clone();
        rotated.rotate_left(order.index(forward.len()));
        let expected = run(&forward);
        prop_assert_eq!(&run(&backward), &expected);
        prop_assert_eq!(&run(&rotated), &expected);
    }

    /// Money formats round-trip exactly, in currencies of 0, 2 and 3 minor digits.
    #[test]
    fn money_formats_round_trip(
        amount in any::<i64>(),
        currency in prop_oneof![Just("USD"), Just("JPY"), Just("KWD"), Just("EUR")],
    ) {
        let money = Money::new(amount, currency.try_into().expect("currency"));
        let json = serde_json::to_value(&money).expect("money");
        let text = decimal(&money);
        prop_assert_eq!(Money::from_decimal(&text, currency).expect("parses"), money.clone());
        prop_assert_eq!(
            format_value(&json, Format::Decimal).expect("decimal"),
            Value::String(text)
        );
        let minor = format_value(&json, Format::MinorUnits).expect("minor");
        prop_assert_eq!(Money::from_minor_json(&minor, currency).expect("minor"), money);
    }

    /// Date-times round-trip through their format; emails and phones normalize idempotently.
    #[test]
    fn text_formats_are_stable(
        secs in 0_i64..4_000_000_000,
        local in "[a-zA-Z0-9._%+-]{1,20}",
        domain in "[a-zA-Z0-9-]{1,20}\\.[a-zA-Z]{2,6}",
        digits in "[1-9][0-9]{7,13}",
    ) {
        let t = Timestamp::from_unix(secs).expect("in range");
        let formatted = format_value(&Value::String(t.to_string()), Format::DateTime).expect("date-time");
        prop_assert_eq!(formatted.as_str().and_then(Timestamp::parse), Some(t));
        for (value, format) in [
            (format!(" {local}@{domain} "), Format::Email),
            (format!("+{digits}"), Format::Phone),
        ] {
            if let Ok(once) = format_value(&Value::String(value), format) {
                prop_assert_eq!(format_value(&once, format).expect("again"), once);
            }
        }
    }
}

fn event(kind: EntityKind, state: &str, at: i64, n: usize) -> Envelope {
    let t = Timestamp::from_unix(NOW + at).expect("in range");
    let source = SourceName::try_from("stripe").expect("name");
    let id = SourceEventId::try_from(format!("evt_{n}")).expect("id");
    Envelope {
        schema: SCHEMA_V1.into(),
        id: EventId::generate(t),
        idempotency_key: IdempotencyKey::for_event(&source, &id),
        source: source.clone(),
        source_event_id: id,
        event_type: format!("{}.{state}", kind.as_str())
            .as_str()
            .try_into()
            .expect("type"),
        source_type: state.into(),
        occurred_at: t,
        received_at: t,
        entity: EntityRef {
            kind,
            id: "x".into(),
            refs: Refs::default(),
        },
        data: EventData {
            status: Some(state.into()),
            ..EventData::default()
        },
        trace: Trace {
            request_id: None,
            origin: Origin::Webhook,
        },
    }
}

/// The extremes proptest may not draw: every representable amount round-trips.
#[test]
fn money_extremes_round_trip() {
    for amount in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX] {
        for currency in ["USD", "JPY", "KWD"] {
            let money = Money::new(amount, currency.try_into().expect("currency"));
            assert_eq!(
                Money::from_decimal(&decimal(&money), currency).ok(),
                Some(money.clone()),
                "{amount} {currency}"
            );
        }
    }
}
