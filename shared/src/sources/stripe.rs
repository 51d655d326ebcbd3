//! Stripe: `Stripe-Signature: t=…,v1=…[,v1=…]`, HMAC-SHA256 of `{t}.{body}`, hex-encoded.

use super::json::{Fingerprint, Value, Walk, id_at, minor_money, opt_str, str_at, unix_at};
use super::timestamped::Scheme;
use super::{Inbound, NormalizedEvent, Rejection, SourceEvent, Verifier};
use crate::contract::{Customer, EntityKind, EntityRef, EventData, EventType, Refs, Timestamp};

pub(super) const SCHEME: Scheme = Scheme {
    header: "stripe-signature",
    display: "Stripe-Signature",
    separator: ',',
    timestamp_key: "t",
    signature_key: "v1",
    joiner: b".",
};

pub(super) fn accept(
    v: &Verifier,
    req: Inbound<'_>,
    now: Timestamp,
) -> Result<Vec<SourceEvent>, Rejection> {
    SCHEME.verify(v, req, now)?;
    from_api(req.body)
}

/// A Stripe event never changes once made, but its copies differ: the events list and each
/// webhook delivery count the endpoints still waiting (`pending_webhooks`) differently, and an
/// endpoint pinned to another API version than the account's gets `data.object` rendered in
/// that version. So a second arrival of an id is the same event whatever its body; only its
/// identity is hashed.
const FINGERPRINT: Fingerprint =
    Fingerprint::Identity(&["/id", "/type", "/created", "/livemode", "/data/object/id"]);

/// The event types `normalize` reads; any other is kept as `unrouted`. The missed-webhook
/// check asks Stripe's list for these only (at most 20, Stripe's limit for `types`).
pub(super) const TYPES: &[&str] = &[
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "charge.refund.updated",
    "charge.dispute.created",
    "charge.dispute.closed",
    "checkout.session.completed",
    "customer.created",
    "customer.updated",
];

/// An event body as the events API and webhooks both carry it, already trusted.
pub(super) fn from_api(body: &[u8]) -> Result<Vec<SourceEvent>, Rejection> {
    let payload = super::parse_body(body)?;
    let id = super::json::event_id(&payload, "/id");
    let source_type = opt_str(&payload, "/type");
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
    let occurred_at = unix_at(p, "/created")?;
    let obj = p.at("/data/object").ok_or("data.object is missing")?;
    let (event_type, entity, data) = match source_type {
        "payment_intent.succeeded"
        | "payment_intent.payment_failed"
        | "payment_intent.canceled"
        | "payment_intent.processing"
        | "payment_intent.requires_action" => payment_intent(obj, source_type)?,
        "charge.refunded" => charge_refunded(obj)?,
        "refund.created" | "refund.updated" | "charge.refund.updated" => refund(obj, source_type)?,
        "charge.dispute.created" | "charge.dispute.closed" => dispute(obj, source_type)?,
        "checkout.session.completed" => checkout(obj)?,
        "customer.created" | "customer.updated" => customer(obj, source_type)?,
        _ => return Ok(None),
    };
    let event_type = EventType::try_from(event_type).map_err(|e| e.to_string())?;
    Ok(Some(NormalizedEvent {
        event_type,
        occurred_at,
        entity,
        data,
    }))
}

type Parts = (&'static str, EntityRef, EventData);

fn payment_refs(obj: &Value<'_>) -> Refs {
    Refs {
        order_id: opt_str(obj, "/metadata/order_id"),
        customer_external_id: opt_str(obj, "/customer"),
        customer_email: opt_str(obj, "/receipt_email")
            .or_else(|| opt_str(obj, "/billing_details/email")),
        ..Refs::default()
    }
}

fn payment(id: String, refs: Refs) -> EntityRef {
    EntityRef {
        kind: EntityKind::Payment,
        id,
        refs,
    }
}

fn payment_intent(obj: &Value<'_>, source_type: &str) -> Result<Parts, String> {
    let (event_type, status) = match source_type {
        "payment_intent.succeeded" => ("payment.succeeded", "succeeded"),
        "payment_intent.payment_failed" => ("payment.failed", "failed"),
        "payment_intent.canceled" => ("payment.canceled", "canceled"),
        "payment_intent.processing" => ("payment.processing", "processing"),
        _ => ("payment.requires_action", "requires_action"),
    };
    let data = EventData {
        status: Some(status.into()),
        amount: Some(minor_money(obj, "/amount", "/currency")?),
        failure_reason: opt_str(obj, "/last_payment_error/code")
            .or_else(|| opt_str(obj, "/cancellation_reason")),
        ..EventData::default()
    };
    Ok((
        event_type,
        payment(str_at(obj, "/id")?.to_owned(), payment_refs(obj)),
        data,
    ))
}

fn charge_refunded(obj: &Value<'_>) -> Result<Parts, String> {
    let amount = minor_money(obj, "/amount", "/currency")?;
    let refunded = minor_money(obj, "/amount_refunded", "/currency")?;
    let full = obj
        .at("/refunded")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || refunded.amount_minor >= amount.amount_minor;
    let (event_type, status) = if full {
        ("payment.refunded", "refunded")
    } else {
        ("payment.partially_refunded", "partially_refunded")
    };
    let id = opt_str(obj, "/payment_intent").unwrap_or(str_at(obj, "/id")?.to_owned());
    let mut refs = payment_refs(obj);
    refs.payment_id = Some(str_at(obj, "/id")?.to_owned());
    let data = EventData {
        status: Some(status.into()),
        amount: Some(amount),
        amount_refunded: Some(refunded),
        ..EventData::default()
    };
    Ok((event_type, payment(id, refs), data))
}

/// A refund object on its own does not tell a partial refund from a full one; the ledger
/// decides from the payment's amount.
fn refund(obj: &Value<'_>, source_type: &str) -> Result<Parts, String> {
    let event_type = if source_type == "refund.created" {
        "payment.refund_created"
    } else {
        "payment.refund_updated"
    };
    let id = opt_str(obj, "/payment_intent")
        .map_or_else(|| str_at(obj, "/charge").map(str::to_owned), Ok)?;
    let data = EventData {
        amount_refunded: Some(minor_money(obj, "/amount", "/currency")?),
        failure_reason: opt_str(obj, "/failure_reason"),
        ..EventData::default()
    };
    Ok((event_type, payment(id, payment_refs(obj)), data))
}

fn dispute(obj: &Value<'_>, source_type: &str) -> Result<Parts, String> {
    let (event_type, status) = if source_type == "charge.dispute.created" {
        ("payment.disputed", Some("disputed"))
    } else {
        match str_at(obj, "/status")? {
            "won" => ("payment.dispute_won", Some("dispute_won")),
            "lost" => ("payment.dispute_lost", Some("dispute_lost")),
            _ => ("payment.dispute_closed", None),
        }
    };
    let id = opt_str(obj, "/payment_intent")
        .map_or_else(|| str_at(obj, "/charge").map(str::to_owned), Ok)?;
    let data = EventData {
        status: status.map(Into::into),
        amount: Some(minor_money(obj, "/amount", "/currency")?),
        failure_reason: opt_str(obj, "/reason"),
        ..EventData::default()
    };
    Ok((event_type, payment(id, payment_refs(obj)), data))
}

fn checkout(obj: &Value<'_>) -> Result<Parts, String> {
    let session = str_at(obj, "/id")?;
    let order_id = opt_str(obj, "/client_reference_id")
        .or_else(|| opt_str(obj, "/metadata/order_id"))
        .unwrap_or_else(|| session.to_owned());
    let refs = Refs {
        payment_id: opt_str(obj, "/payment_intent"),
        customer_email: opt_str(obj, "/customer_details/email"),
        customer_phone: opt_str(obj, "/customer_details/phone"),
        customer_external_id: opt_str(obj, "/customer"),
        ..Refs::default()
    };
    let data = EventData {
        status: opt_str(obj, "/payment_status").filter(|s| s == "paid"),
        amount: Some(minor_money(obj, "/amount_total", "/currency")?),
        customer: Some(Customer {
            external_id: opt_str(obj, "/customer"),
            name: opt_str(obj, "/customer_details/name"),
            email: opt_str(obj, "/customer_details/email"),
            phone: opt_str(obj, "/customer_details/phone"),
        }),
        ..EventData::default()
    };
    Ok((
        "checkout.completed",
        EntityRef {
            kind: EntityKind::Order,
            id: order_id,
            refs,
        },
        data,
    ))
}

fn customer(obj: &Value<'_>, source_type: &str) -> Result<Parts, String> {
    let id = id_at(obj, "/id")?;
    let event_type = if source_type == "customer.created" {
        "customer.created"
    } else {
        "customer.updated"
    };
    let data = EventData {
        customer: Some(Customer {
            external_id: Some(id.clone()),
            name: opt_str(obj, "/name"),
            email: opt_str(obj, "/email"),
            phone: opt_str(obj, "/phone"),
        }),
        ..EventData::default()
    };
    let refs = Refs {
        customer_external_id: Some(id.clone()),
        customer_email: opt_str(obj, "/email"),
        customer_phone: opt_str(obj, "/phone"),
        ..Refs::default()
    };
    Ok((
        event_type,
        EntityRef {
            kind: EntityKind::Customer,
            id,
            refs,
        },
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{
        fixture, headers, normalized_fixture_types, only_event, verifier,
    };
    use super::super::{Normalized, SourceKind, hmac_sha256};
    use super::*;

    const SECRET: &str = "whsec_test_stripe_secret";
    const NOW: i64 = 1_763_900_000;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mac = hmac_sha256(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
        format!("t={t},v1={}", hex::encode(mac))
    }

    fn run(header: &str, body: &[u8]) -> Result<Vec<SourceEvent>, Rejection> {
        let v = verifier(SourceKind::Stripe, &[SECRET, "whsec_old_secret"]);
        let now = Timestamp::from_unix(NOW).expect("in range");
        v.accept(
            Inbound {
                headers: &headers(&[("Stripe-Signature", header)]),
                body,
            },
            now,
        )
    }

    #[test]
    fn accepts_a_signed_payment_intent_succeeded() {
        let body = fixture("stripe/payment_intent.succeeded.json");
        let event = only_event(run(&sign(SECRET, NOW, &body), &body).expect("verified"));
        assert_eq!(event.event_type.as_str(), "payment.succeeded");
        assert_eq!(event.entity.kind, EntityKind::Payment);
        assert_eq!(event.entity.id, "pi_3PqLr2F7kS1mZk0a1Qw2Ey3R");
        assert_eq!(event.entity.refs.order_id.as_deref(), Some("ord_1001"));
        let amount = event.data.amount.expect("amount");
        assert_eq!(
            (amount.amount_minor, amount.currency.as_str()),
            (2000, "USD")
        );
    }

    #[test]
    fn a_rotated_secret_still_verifies() {
        let body = fixture("stripe/payment_intent.succeeded.json");
        assert!(run(&sign("whsec_old_secret", NOW, &body), &body).is_ok());
    }

    #[test]
    fn several_v1_signatures_any_may_match() {
        let body = fixture("stripe/payment_intent.succeeded.json");
        let good = sign(SECRET, NOW, &body);
        let header = format!(
            "t={NOW},v1={},{}",
            "00".repeat(32),
            good.split_once(',').expect("two parts").1
        );
        assert!(run(&header, &body).is_ok());
    }

    #[test]
    fn negative_cases_are_refused_with_the_right_reason() {
        let body = fixture("stripe/payment_intent.succeeded.json");
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        let cases: Vec<(String, Vec<u8>, Rejection)> = vec![
            (
                sign("whsec_wrong", NOW, &body),
                body.clone(),
                Rejection::BadSignature,
            ),
            (sign(SECRET, NOW, &body), tampered, Rejection::BadSignature),
            (
                sign(SECRET, NOW - 301, &body),
                body.clone(),
                Rejection::StaleTimestamp,
            ),
            (
                sign(SECRET, NOW + 301, &body),
                body.clone(),
                Rejection::FutureTimestamp,
            ),
            (
                "t=abc,v1=00".into(),
                body.clone(),
                Rejection::MalformedHeader("Stripe-Signature"),
            ),
            (
                format!("t={NOW}"),
                body.clone(),
                Rejection::MalformedHeader("Stripe-Signature"),
            ),
            (
                format!("t={NOW},v1=zz"),
                body.clone(),
                Rejection::MalformedHeader("Stripe-Signature"),
            ),
            (
                format!("t={NOW},t={NOW},v1=00"),
                body.clone(),
                Rejection::MalformedHeader("Stripe-Signature"),
            ),
        ];
        for (header, body, expected) in cases {
            assert_eq!(run(&header, &body).err(), Some(expected), "header {header}");
        }
        let v = verifier(SourceKind::Stripe, &[SECRET]);
        let now = Timestamp::from_unix(NOW).expect("in range");
        let missing = v.accept(
            Inbound {
                headers: &headers(&[]),
                body: &body,
            },
            now,
        );
        assert_eq!(
            missing.err(),
            Some(Rejection::MissingHeader("Stripe-Signature"))
        );
    }

    #[test]
    fn signed_but_not_json_is_a_malformed_body() {
        let body = b"not json";
        assert!(matches!(
            run(&sign(SECRET, NOW, body), body),
            Err(Rejection::MalformedBody(_))
        ));
    }

    /// The events list writes an event compactly, in its own key order, with its own count of
    /// endpoints still waiting, and in the account's API version; the webhook writes it
    /// indented, in the endpoint's version. Both are the same event: a duplicate, not a
    /// conflict, or every webhook that arrives after reconciliation took its event in would be
    /// one. Another event (type, object) under the same id is a conflict.
    #[test]
    fn copies_of_one_event_hash_alike_and_another_event_under_its_id_does_not() {
        let hash = |body: &[u8]| from_api(body).expect("reads")[0].payload_hash.clone();
        let webhook = fixture("stripe/payment_intent.succeeded.json");
        let mut listed: serde_json::Value = serde_json::from_slice(&webhook).expect("json");
        listed["pending_webhooks"] = serde_json::json!(0);
        listed["api_version"] = serde_json::json!("2025-03-31.basil");
        listed["data"]["object"]
            .as_object_mut()
            .expect("object")
            .remove("amount_received");
        let listed = serde_json::to_vec(&listed).expect("json");
        assert_eq!(hash(&listed), hash(&webhook));

        let text = String::from_utf8(webhook.clone()).expect("utf-8");
        for (from, to) in [
            (
                "\"payment_intent.succeeded\"",
                "\"payment_intent.canceled\"",
            ),
            (
                "\"id\": \"pi_3PqLr2F7kS1mZk0a1Qw2Ey3R\"",
                "\"id\": \"pi_other\"",
            ),
            ("\"created\": 1763899990", "\"created\": 1763899991"),
        ] {
            let other = text.replace(from, to);
            assert_ne!(other, text, "{from} is in the fixture");
            assert_ne!(hash(other.as_bytes()), hash(&webhook), "{from} -> {to}");
        }
    }

    #[test]
    fn normalizes_every_supported_type() {
        let cases = [
            (
                "payment_intent.payment_failed.json",
                "payment.failed",
                Some("failed"),
            ),
            (
                "payment_intent.canceled.json",
                "payment.canceled",
                Some("canceled"),
            ),
            (
                "payment_intent.processing.json",
                "payment.processing",
                Some("processing"),
            ),
            (
                "payment_intent.requires_action.json",
                "payment.requires_action",
                Some("requires_action"),
            ),
            (
                "charge.refunded.partial.json",
                "payment.partially_refunded",
                Some("partially_refunded"),
            ),
            (
                "charge.refunded.full.json",
                "payment.refunded",
                Some("refunded"),
            ),
            ("refund.created.json", "payment.refund_created", None),
            (
                "charge.dispute.created.json",
                "payment.disputed",
                Some("disputed"),
            ),
            (
                "charge.dispute.closed.won.json",
                "payment.dispute_won",
                Some("dispute_won"),
            ),
            (
                "charge.dispute.closed.lost.json",
                "payment.dispute_lost",
                Some("dispute_lost"),
            ),
            (
                "checkout.session.completed.json",
                "checkout.completed",
                Some("paid"),
            ),
            ("customer.created.json", "customer.created", None),
            ("customer.updated.json", "customer.updated", None),
        ];
        for (file, event_type, status) in cases {
            let body = fixture(&format!("stripe/{file}"));
            let event = only_event(run(&sign(SECRET, NOW, &body), &body).expect(file));
            assert_eq!(event.event_type.as_str(), event_type, "{file}");
            assert_eq!(event.data.status.as_deref(), status, "{file}");
        }
    }

    /// `TYPES` and the normalizer agree: each listed type is read (a body without what the type
    /// needs is quarantined, not unrouted), and each type a fixture is read as is listed.
    #[test]
    fn the_listed_types_are_the_ones_the_normalizer_reads() {
        assert!(TYPES.len() <= 20, "Stripe filters by at most 20 types");
        for t in TYPES {
            let body = format!(
                r#"{{"id":"evt_t","type":"{t}","created":1763900000,"data":{{"object":{{}}}}}}"#
            );
            let events = run(&sign(SECRET, NOW, body.as_bytes()), body.as_bytes()).expect(t);
            assert_ne!(events[0].outcome, Normalized::Unrouted, "{t}");
        }
        let read = normalized_fixture_types("stripe", |body| run(&sign(SECRET, NOW, body), body));
        for t in read {
            assert!(TYPES.contains(&t.as_str()), "{t} is read but not listed");
        }
    }

    #[test]
    fn unknown_types_are_unrouted_and_bad_payloads_quarantined() {
        let body =
            br#"{"id":"evt_x","type":"invoice.paid","created":1763900000,"data":{"object":{}}}"#;
        let events = run(&sign(SECRET, NOW, body), body).expect("verified");
        assert_eq!(events[0].outcome, Normalized::Unrouted);

        let body = br#"{"id":"evt_y","type":"payment_intent.succeeded","created":1763900000,"data":{"object":{"id":"pi_1","currency":"usd"}}}"#;
        let events = run(&sign(SECRET, NOW, body), body).expect("verified");
        assert_eq!(
            events[0].outcome,
            Normalized::Quarantined("amount is missing".into())
        );

        let body = br#"{"type":"payment_intent.succeeded"}"#;
        let events = run(&sign(SECRET, NOW, body), body).expect("verified");
        assert!(events[0].source_event_id.as_str().starts_with("sha256:"));
        assert_eq!(
            events[0].outcome,
            Normalized::Quarantined("id is missing".into())
        );
    }
}
