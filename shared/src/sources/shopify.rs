//! Shopify: `X-Shopify-Hmac-Sha256` = base64 HMAC-SHA256 of the raw body. The scheme signs no
//! timestamp; the event id comes from `X-Shopify-Event-Id` (or `X-Shopify-Webhook-Id`), the
//! type from `X-Shopify-Topic`, the time from `X-Shopify-Triggered-At`: all unsigned.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::json::{Fingerprint, Value, Walk, decimal_money, id_at, opt_str, rfc3339_at};
use super::signature::any_matches;
use super::{Inbound, NormalizedEvent, Rejection, SourceEvent, Verifier};
use crate::contract::{
    Customer, EntityKind, EntityRef, EventData, EventType, LineItem, Money, Refs, SourceEventId,
    Timestamp,
};

pub(super) fn accept(
    v: &Verifier,
    req: Inbound<'_>,
    now: Timestamp,
) -> Result<Vec<SourceEvent>, Rejection> {
    let header = req
        .headers
        .get("x-shopify-hmac-sha256")
        .ok_or(Rejection::MissingHeader("X-Shopify-Hmac-Sha256"))?;
    let signature = header
        .to_str()
        .ok()
        .and_then(|s| STANDARD.decode(s.trim()).ok())
        .ok_or(Rejection::MalformedHeader("X-Shopify-Hmac-Sha256"))?;
    if !any_matches(&v.keys, &[req.body], &[signature]) {
        return Err(Rejection::BadSignature);
    }
    let text = |name: &str| {
        req.headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    };
    let id = text("x-shopify-event-id")
        .or_else(|| text("x-shopify-webhook-id"))
        .ok_or_else(|| "X-Shopify-Event-Id and X-Shopify-Webhook-Id are missing".to_owned())
        .and_then(|id| SourceEventId::try_from(id).map_err(|e| e.to_string()));
    // The ledger keeps a field's newest value by occurrence time, so an unsigned time in the
    // future would hold an order's fields against every later event until then. A header time
    // past the tolerance is not believed: the order's own signed time stands in, as when the
    // header is missing.
    let triggered_at = text("x-shopify-triggered-at")
        .and_then(|t| Timestamp::parse(&t))
        .filter(|t| t.unix().saturating_sub(now.unix()) <= v.tolerance_secs);
    let payload = super::parse_body(req.body)?;
    Ok(vec![super::single_event(
        &payload,
        Fingerprint::Content,
        id,
        text("x-shopify-topic"),
        triggered_at,
        |p, topic| normalize(p, topic, triggered_at),
    )])
}

pub(super) fn normalize(
    p: &Value<'_>,
    topic: &str,
    triggered_at: Option<Timestamp>,
) -> Result<Option<NormalizedEvent>, String> {
    let (event_type, entity, data, time_field) = match topic {
        "orders/create" => {
            let (e, d) = order(p, "created")?;
            ("order.created", e, d, "/created_at")
        }
        "orders/paid" => {
            body_supports_paid(p)?;
            let (e, d) = order(p, "paid")?;
            ("order.paid", e, d, "/updated_at")
        }
        "orders/cancelled" => {
            body_supports_cancelled(p)?;
            let (e, d) = order(p, "cancelled")?;
            ("order.cancelled", e, d, "/cancelled_at")
        }
        "refunds/create" => {
            let (e, d) = refund(p)?;
            ("order.refunded", e, d, "/created_at")
        }
        _ => return Ok(None),
    };
    let occurred_at = match triggered_at {
        Some(t) => t,
        None => rfc3339_at(p, time_field)?,
    };
    Ok(Some(NormalizedEvent {
        event_type: EventType::try_from(event_type).map_err(|e| e.to_string())?,
        occurred_at,
        entity,
        data,
    }))
}

// Shopify signs the body alone: the topic (which says what happened), the event id and the
// time are unsigned headers. The same order body comes with orders/create, orders/paid and
// orders/cancelled, so a captured body sent again under another topic would verify. A body
// must therefore bear out the topic it came with, or the event is quarantined for an
// operator to look at.

/// An orders/paid body is an order Shopify has taken payment for.
fn body_supports_paid(p: &Value<'_>) -> Result<(), String> {
    match opt_str(p, "/financial_status").as_deref() {
        // Paid, or paid and refunded since (the body is the order as it was when sent).
        Some("paid" | "partially_refunded" | "refunded") => Ok(()),
        Some(other) => Err(format!(
            "the topic is orders/paid but the signed order's financial_status is {other:?}"
        )),
        None => Err("the topic is orders/paid but financial_status is missing".into()),
    }
}

/// An orders/cancelled body is a cancelled order.
fn body_supports_cancelled(p: &Value<'_>) -> Result<(), String> {
    match opt_str(p, "/cancelled_at") {
        Some(_) => Ok(()),
        None => {
            Err("the topic is orders/cancelled but the signed order has no cancelled_at".into())
        }
    }
}

fn order(p: &Value<'_>, status: &str) -> Result<(EntityRef, EventData), String> {
    let id = id_at(p, "/id")?;
    let currency = super::json::str_at(p, "/currency")?;
    let items = p
        .at("/line_items")
        .and_then(Value::as_array)
        .unwrap_or_default();
    let line_items = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let name = opt_str(item, "/title").or_else(|| opt_str(item, "/name"));
            Ok(LineItem {
                sku: opt_str(item, "/sku"),
                name: name.ok_or_else(|| format!("line_items[{i}].title is missing"))?,
                quantity: super::json::i64_at(item, "/quantity")
                    .map_err(|e| format!("line_items[{i}].{e}"))?,
                unit_price: opt_str(item, "/price")
                    .map(|price| Money::from_decimal(&price, currency))
                    .transpose()
                    .map_err(|e| format!("line_items[{i}].price: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let first = opt_str(p, "/customer/first_name");
    let last = opt_str(p, "/customer/last_name");
    let name = match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (f, l) => f.or(l),
    };
    let customer = Customer {
        external_id: opt_str(p, "/customer/id"),
        name,
        email: opt_str(p, "/email").or_else(|| opt_str(p, "/customer/email")),
        phone: opt_str(p, "/phone").or_else(|| opt_str(p, "/customer/phone")),
    };
    let refs = Refs {
        customer_email: customer.email.clone(),
        customer_phone: customer.phone.clone(),
        customer_external_id: customer.external_id.clone(),
        ..Refs::default()
    };
    let data = EventData {
        status: Some(status.into()),
        amount: Some(decimal_money(p, "/total_price", "/currency")?),
        failure_reason: opt_str(p, "/cancel_reason"),
        customer: Some(customer),
        line_items,
        ..EventData::default()
    };
    Ok((
        EntityRef {
            kind: EntityKind::Order,
            id,
            refs,
        },
        data,
    ))
}

/// The refund total is the sum of its `refund` transactions, exactly, in minor units.
fn refund(p: &Value<'_>) -> Result<(EntityRef, EventData), String> {
    let order_id = id_at(p, "/order_id")?;
    let transactions = p
        .at("/transactions")
        .and_then(Value::as_array)
        .ok_or("transactions is missing")?;
    let mut total: Option<Money> = None;
    for (i, t) in transactions.iter().enumerate() {
        if opt_str(t, "/kind").as_deref() != Some("refund") {
            continue;
        }
        let m = decimal_money(t, "/amount", "/currency")
            .map_err(|e| format!("transactions[{i}].{e}"))?;
        total = Some(match total {
            None => m,
            Some(sum) if sum.currency == m.currency => {
                Money::new(sum.amount_minor + m.amount_minor, sum.currency)
            }
            Some(_) => {
                return Err(format!(
                    "transactions[{i}].currency differs from the others"
                ));
            }
        });
    }
    let data = EventData {
        amount_refunded: Some(total.ok_or("transactions has no refund")?),
        ..EventData::default()
    };
    Ok((
        EntityRef {
            kind: EntityKind::Order,
            id: order_id,
            refs: Refs::default(),
        },
        data,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{fixture, headers, only_event, verifier};
    use super::super::{Normalized, SourceKind, hmac_sha256};
    use super::*;

    const SECRET: &str = "shpss_test_app_secret";

    fn run(topic: &str, sig: &str, body: &[u8]) -> Result<Vec<SourceEvent>, Rejection> {
        let v = verifier(SourceKind::Shopify, &[SECRET]);
        let h = headers(&[
            ("X-Shopify-Hmac-Sha256", sig),
            ("X-Shopify-Topic", topic),
            ("X-Shopify-Event-Id", "98880550-7158-44d4-b7cd-2c97c8a091b5"),
            ("X-Shopify-Triggered-At", "2025-11-23T12:00:00.123Z"),
        ]);
        v.accept(Inbound { headers: &h, body }, now())
    }

    /// A minute after the fixtures' `X-Shopify-Triggered-At`.
    fn now() -> Timestamp {
        Timestamp::parse("2025-11-23T12:01:00Z").expect("time")
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        STANDARD.encode(hmac_sha256(secret.as_bytes(), &[body]))
    }

    #[test]
    fn normalizes_each_topic() {
        let cases = [
            ("orders/create", "orders.create.json", "order.created"),
            ("orders/paid", "orders.paid.json", "order.paid"),
            (
                "orders/cancelled",
                "orders.cancelled.json",
                "order.cancelled",
            ),
        ];
        for (topic, file, event_type) in cases {
            let body = fixture(&format!("shopify/{file}"));
            let event = only_event(run(topic, &sign(SECRET, &body), &body).expect(file));
            assert_eq!(event.event_type.as_str(), event_type);
            assert_eq!(event.entity.id, "820982911946154508");
            assert_eq!(
                event.data.amount.as_ref().map(|m| m.amount_minor),
                Some(59_800)
            );
        }
        let body = fixture("shopify/refunds.create.json");
        let event = only_event(run("refunds/create", &sign(SECRET, &body), &body).expect("refund"));
        assert_eq!(event.event_type.as_str(), "order.refunded");
        assert_eq!(
            event.data.amount_refunded.map(|m| m.amount_minor),
            Some(4_150)
        );
    }

    #[test]
    fn negative_cases() {
        let body = fixture("shopify/orders.paid.json");
        assert_eq!(
            run("orders/paid", &sign("wrong", &body), &body).err(),
            Some(Rejection::BadSignature)
        );
        let mut tampered = body.clone();
        tampered[5] ^= 1;
        assert_eq!(
            run("orders/paid", &sign(SECRET, &body), &tampered).err(),
            Some(Rejection::BadSignature)
        );
        assert_eq!(
            run("orders/paid", "***", &body).err(),
            Some(Rejection::MalformedHeader("X-Shopify-Hmac-Sha256"))
        );
        let v = verifier(SourceKind::Shopify, &[SECRET]);
        let missing = v.accept(
            Inbound {
                headers: &headers(&[]),
                body: &body,
            },
            now(),
        );
        assert_eq!(
            missing.err(),
            Some(Rejection::MissingHeader("X-Shopify-Hmac-Sha256"))
        );
    }

    /// The topic is not signed: a signed order sent again under a topic its body does not
    /// bear out is quarantined, with the reason, rather than read as that topic's event.
    #[test]
    fn a_topic_the_signed_order_does_not_bear_out_is_quarantined() {
        let outcome = |topic: &str, file: &str| {
            let body = fixture(&format!("shopify/{file}"));
            run(topic, &sign(SECRET, &body), &body).expect("verified")[0]
                .outcome
                .clone()
        };
        let reason = |outcome: Normalized| match outcome {
            Normalized::Quarantined(reason) => reason,
            other => panic!("quarantined: {other:?}"),
        };
        assert!(
            reason(outcome("orders/paid", "orders.create.json"))
                .contains(r#"financial_status is "pending""#)
        );
        assert!(
            reason(outcome("orders/cancelled", "orders.paid.json")).contains("has no cancelled_at")
        );
        assert!(
            reason(outcome("orders/cancelled", "orders.create.json"))
                .contains("has no cancelled_at")
        );
        // A cancelled order that was never paid is still not a paid one.
        assert!(reason(outcome("orders/paid", "orders.cancelled.json")).contains("pending"));

        let mut refunded: serde_json::Value =
            serde_json::from_slice(&fixture("shopify/orders.paid.json")).expect("JSON");
        refunded["financial_status"] = "partially_refunded".into();
        let body = refunded.to_string().into_bytes();
        let events = run("orders/paid", &sign(SECRET, &body), &body).expect("verified");
        assert!(
            matches!(&events[0].outcome, Normalized::Event(e) if e.event_type.as_str() == "order.paid"),
            "paid, and partly refunded by the time it was sent: {:?}",
            events[0].outcome
        );
        refunded
            .as_object_mut()
            .expect("object")
            .remove("financial_status");
        let body = refunded.to_string().into_bytes();
        let events = run("orders/paid", &sign(SECRET, &body), &body).expect("verified");
        assert_eq!(
            events[0].outcome,
            Normalized::Quarantined(
                "the topic is orders/paid but financial_status is missing".into()
            )
        );
    }

    /// The unsigned time is believed up to the tolerance past now; later than that, the
    /// order's own signed time is the occurrence time, as when the header is missing.
    #[test]
    fn a_triggered_at_past_the_tolerance_is_not_believed() {
        let body = fixture("shopify/orders.paid.json");
        let occurred = |triggered_at: &str| {
            let h = headers(&[
                ("X-Shopify-Hmac-Sha256", &sign(SECRET, &body)),
                ("X-Shopify-Topic", "orders/paid"),
                ("X-Shopify-Event-Id", "98880550-7158-44d4-b7cd-2c97c8a091b5"),
                ("X-Shopify-Triggered-At", triggered_at),
            ]);
            let events = verifier(SourceKind::Shopify, &[SECRET])
                .accept(
                    Inbound {
                        headers: &h,
                        body: &body,
                    },
                    now(),
                )
                .expect("verified");
            (
                only_event(events.clone()).occurred_at,
                events[0].header_time,
            )
        };
        let soon = now().plus_secs(300);
        assert_eq!(
            occurred(&soon.to_string()),
            (soon, Some(soon)),
            "within the tolerance"
        );
        let signed = Timestamp::parse("2025-11-23T07:22:47-05:00").expect("updated_at");
        assert_eq!(
            occurred(&now().plus_secs(301).to_string()),
            (signed, None),
            "past it: the order's signed updated_at"
        );
        assert_eq!(occurred("2030-01-01T00:00:00Z"), (signed, None));
        let earlier = now().plus_secs(-86_400);
        assert_eq!(
            occurred(&earlier.to_string()),
            (earlier, Some(earlier)),
            "a retry's original time"
        );
    }

    #[test]
    fn unknown_topics_are_unrouted() {
        let body = br#"{"id":1}"#;
        let events = run("products/update", &sign(SECRET, body), body).expect("verified");
        assert_eq!(events[0].outcome, Normalized::Unrouted);
    }
}
