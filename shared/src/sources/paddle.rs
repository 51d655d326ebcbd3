//! Paddle Billing: `Paddle-Signature: ts=…;h1=…[;h1=…]`, HMAC-SHA256 of `{ts}:{body}`, hex.

use super::json::{Fingerprint, Value, Walk, minor_money, opt_str, rfc3339_at, str_at};
use super::timestamped::Scheme;
use super::{Inbound, NormalizedEvent, Rejection, SourceEvent, Verifier};
use crate::contract::{EntityKind, EntityRef, EventData, EventType, Refs, Timestamp};

pub(super) const SCHEME: Scheme = Scheme {
    header: "paddle-signature",
    display: "Paddle-Signature",
    separator: ';',
    timestamp_key: "ts",
    signature_key: "h1",
    joiner: b":",
};

/// A Paddle event is a snapshot that never changes, but each notification of it has its own
/// `notification_id`: a replay from Paddle's dashboard or API (and every other destination) gets
/// a new one. So only the event's identity is hashed, and a replay is a duplicate.
const FINGERPRINT: Fingerprint =
    Fingerprint::Identity(&["/event_id", "/event_type", "/occurred_at", "/data/id"]);

pub(super) fn accept(
    v: &Verifier,
    req: Inbound<'_>,
    now: Timestamp,
) -> Result<Vec<SourceEvent>, Rejection> {
    SCHEME.verify(v, req, now)?;
    from_api(req.body)
}

/// An event body as the events API lists it (a webhook's without its `notification_id`, which
/// the fingerprint leaves out), already trusted.
pub(super) fn from_api(body: &[u8]) -> Result<Vec<SourceEvent>, Rejection> {
    let payload = super::parse_body(body)?;
    let id = super::json::event_id(&payload, "/event_id");
    let source_type = opt_str(&payload, "/event_type");
    Ok(vec![super::single_event(
        &payload,
        FINGERPRINT,
        id,
        source_type,
        None,
        normalize,
    )])
}

pub(super) fn normalize(
    p: &Value<'_>,
    source_type: &str,
) -> Result<Option<NormalizedEvent>, String> {
    let occurred_at = rfc3339_at(p, "/occurred_at")?;
    let d = p.at("/data").ok_or("data is missing")?;
    let (event_type, entity, data) = match source_type {
        "transaction.completed" => transaction(d, "payment.succeeded", "succeeded")?,
        "transaction.payment_failed" => transaction(d, "payment.failed", "failed")?,
        "adjustment.created" if opt_str(d, "/action").as_deref() == Some("refund") => refund(d)?,
        t if t.starts_with("subscription.") => subscription(d, t)?,
        _ => return Ok(None),
    };
    Ok(Some(NormalizedEvent {
        event_type: EventType::try_from(event_type).map_err(|e| e.to_string())?,
        occurred_at,
        entity,
        data,
    }))
}

/// The event types `normalize` reads (`adjustment.created` only as a refund); any other is
/// kept as `unrouted`. The missed-webhook check asks Paddle's list for these only.
pub(super) const TYPES: &[&str] = &[
    "transaction.completed",
    "transaction.payment_failed",
    "adjustment.created",
    "subscription.activated",
    "subscription.canceled",
    "subscription.created",
    "subscription.imported",
    "subscription.past_due",
    "subscription.paused",
    "subscription.resumed",
    "subscription.trialing",
    "subscription.updated",
];

fn transaction(
    d: &Value<'_>,
    event_type: &str,
    status: &str,
) -> Result<(String, EntityRef, EventData), String> {
    let refs = Refs {
        order_id: opt_str(d, "/custom_data/order_id"),
        customer_external_id: opt_str(d, "/customer_id"),
        ..Refs::default()
    };
    let data = EventData {
        status: Some(status.into()),
        amount: Some(minor_money(
            d,
            "/details/totals/grand_total",
            "/currency_code",
        )?),
        ..EventData::default()
    };
    let entity = EntityRef {
        kind: EntityKind::Payment,
        id: str_at(d, "/id")?.to_owned(),
        refs,
    };
    Ok((event_type.to_owned(), entity, data))
}

fn refund(d: &Value<'_>) -> Result<(String, EntityRef, EventData), String> {
    let refs = Refs {
        customer_external_id: opt_str(d, "/customer_id"),
        ..Refs::default()
    };
    let data = EventData {
        amount_refunded: Some(minor_money(d, "/totals/total", "/currency_code")?),
        failure_reason: opt_str(d, "/reason"),
        ..EventData::default()
    };
    let entity = EntityRef {
        kind: EntityKind::Payment,
        id: str_at(d, "/transaction_id")?.to_owned(),
        refs,
    };
    Ok(("payment.refund_created".to_owned(), entity, data))
}

fn subscription(
    d: &Value<'_>,
    source_type: &str,
) -> Result<(String, EntityRef, EventData), String> {
    let suffix = source_type.trim_start_matches("subscription.");
    let refs = Refs {
        customer_external_id: opt_str(d, "/customer_id"),
        ..Refs::default()
    };
    let data = EventData {
        status: Some(str_at(d, "/status")?.to_owned()),
        ..EventData::default()
    };
    let entity = EntityRef {
        kind: EntityKind::Subscription,
        id: str_at(d, "/id")?.to_owned(),
        refs,
    };
    Ok((format!("subscription.{suffix}"), entity, data))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{
        fixture, headers, normalized_fixture_types, only_event, verifier,
    };
    use super::super::{Normalized, SourceKind, hmac_sha256};
    use super::*;

    const SECRET: &str = "pdl_ntfset_01test_secret";
    const NOW: i64 = 1_763_900_000;

    fn sign(secret: &str, ts: i64, body: &[u8]) -> String {
        format!(
            "ts={ts};h1={}",
            hex::encode(hmac_sha256(
                secret.as_bytes(),
                &[ts.to_string().as_bytes(), b":", body]
            ))
        )
    }

    fn run(header: &str, body: &[u8]) -> Result<Vec<SourceEvent>, Rejection> {
        let v = verifier(SourceKind::Paddle, &[SECRET]);
        v.accept(
            Inbound {
                headers: &headers(&[("Paddle-Signature", header)]),
                body,
            },
            Timestamp::from_unix(NOW).expect("ok"),
        )
    }

    /// A replay is a new notification of the same event: another `notification_id`, the same
    /// event. Another transaction under the same event id is not.
    #[test]
    fn a_replayed_notification_hashes_as_its_event_and_another_event_does_not() {
        let hash = |body: &[u8]| {
            run(&sign(SECRET, NOW, body), body).expect("accepted")[0]
                .payload_hash
                .clone()
        };
        let body = fixture("paddle/transaction.completed.json");
        let text = String::from_utf8(body.clone()).expect("utf-8");
        let replay = text.replace(
            "ntf_01hv8x2af4ah8r9bjh7s8xz9sn",
            "ntf_01hv9replay0000000000000",
        );
        assert_ne!(replay, text, "the notification id is in the fixture");
        assert_eq!(hash(replay.as_bytes()), hash(&body));
        let other = text.replace(
            "txn_01hv8wptq8987qeep44cyrewp9",
            "txn_01hv9other00000000000000",
        );
        assert_ne!(other, text, "the transaction id is in the fixture");
        assert_ne!(hash(other.as_bytes()), hash(&body));
    }

    /// `TYPES` and the normalizer agree: each listed type is read (a body without what the type
    /// needs is quarantined, not unrouted), and each type a fixture is read as is listed.
    #[test]
    fn the_listed_types_are_the_ones_the_normalizer_reads() {
        for t in TYPES {
            let action = if *t == "adjustment.created" {
                "refund"
            } else {
                "x"
            };
            let body = format!(
                r#"{{"event_id":"evt_t","event_type":"{t}","occurred_at":"2025-11-23T12:13:20Z","data":{{"action":"{action}"}}}}"#
            );
            let events = run(&sign(SECRET, NOW, body.as_bytes()), body.as_bytes()).expect(t);
            assert_ne!(events[0].outcome, Normalized::Unrouted, "{t}");
        }
        let read = normalized_fixture_types("paddle", |body| run(&sign(SECRET, NOW, body), body));
        for t in read {
            assert!(TYPES.contains(&t.as_str()), "{t} is read but not listed");
        }
    }

    #[test]
    fn normalizes_each_type() {
        let cases = [
            ("transaction.completed.json", "payment.succeeded"),
            ("transaction.payment_failed.json", "payment.failed"),
            ("adjustment.created.json", "payment.refund_created"),
            ("subscription.canceled.json", "subscription.canceled"),
        ];
        for (file, event_type) in cases {
            let body = fixture(&format!("paddle/{file}"));
            let event = only_event(run(&sign(SECRET, NOW, &body), &body).expect(file));
            assert_eq!(event.event_type.as_str(), event_type, "{file}");
        }
        let body = fixture("paddle/transaction.completed.json");
        let event = only_event(run(&sign(SECRET, NOW, &body), &body).expect("ok"));
        assert_eq!(
            event
                .data
                .amount
                .map(|m| (m.amount_minor, m.currency.to_string())),
            Some((2_400, "USD".into()))
        );
    }

    #[test]
    fn negative_cases() {
        let body = fixture("paddle/transaction.completed.json");
        let m = Rejection::MalformedHeader("Paddle-Signature");
        assert_eq!(
            run(&sign("wrong", NOW, &body), &body).err(),
            Some(Rejection::BadSignature)
        );
        assert_eq!(
            run(&sign(SECRET, NOW - 301, &body), &body).err(),
            Some(Rejection::StaleTimestamp)
        );
        assert_eq!(
            run(&sign(SECRET, NOW + 301, &body), &body).err(),
            Some(Rejection::FutureTimestamp)
        );
        assert_eq!(
            run("ts=1;h1=", &body).err(),
            Some(Rejection::StaleTimestamp)
        );
        assert_eq!(run(&format!("ts={NOW}"), &body).err(), Some(m.clone()));
        assert_eq!(run("garbage", &body).err(), Some(m));
    }

    #[test]
    fn non_refund_adjustments_are_unrouted() {
        let body = br#"{"event_id":"evt_1","event_type":"adjustment.created","occurred_at":"2025-11-23T12:00:00Z","data":{"action":"credit"}}"#;
        let events = run(&sign(SECRET, NOW, body), body).expect("verified");
        assert_eq!(events[0].outcome, Normalized::Unrouted);
    }
}
