//! Standard Webhooks (Svix-compatible senders and the company's own site): `webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64> [v1,<base64>…]`, HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` with the key decoded from `whsec_<base64>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::json::{
    Fingerprint, Value, Walk, decimal_money, i64_at, minor_money, minor_of, opt_str, rfc3339_at,
    str_at,
};
use super::signature::any_matches;
use super::{Inbound, NormalizedEvent, Rejection, SourceEvent, Verifier, check_timestamp};
use crate::contract::{
    Customer, EntityKind, EntityRef, EventData, EventType, LeadDetails, LineItem, Money, Refs,
    SourceEventId, Timestamp, Utm,
};

pub(super) fn decode_secret(secret: &str) -> Result<Vec<u8>, &'static str> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    match STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err("expected whsec_ followed by base64"),
    }
}

fn header<'a>(req: Inbound<'a>, name: &'static str) -> Result<&'a str, Rejection> {
    req.headers
        .get(name)
        .ok_or(Rejection::MissingHeader(name))?
        .to_str()
        .map_err(|_| Rejection::MalformedHeader(name))
}

pub(super) fn accept(
    v: &Verifier,
    req: Inbound<'_>,
    now: Timestamp,
) -> Result<Vec<SourceEvent>, Rejection> {
    let (id, signed_at) = verify(v, req, now)?;
    let payload = super::parse_body(req.body)?;
    let source_type = opt_str(&payload, "/type");
    let header_time = Timestamp::from_unix(signed_at);
    Ok(vec![super::single_event(
        &payload,
        Fingerprint::Content,
        Ok(id),
        source_type,
        header_time,
        |p, t| normalize(p, t, header_time),
    )])
}

/// Checks the headers' timestamp and signature against the raw body; returns the message id
/// and the signed time.
pub(super) fn verify(
    v: &Verifier,
    req: Inbound<'_>,
    now: Timestamp,
) -> Result<(SourceEventId, i64), Rejection> {
    let id = header(req, "webhook-id")?;
    let timestamp = header(req, "webhook-timestamp")?;
    let signature = header(req, "webhook-signature")?;
    let signed_at: i64 = timestamp
        .parse()
        .map_err(|_| Rejection::MalformedHeader("webhook-timestamp"))?;
    let id = SourceEventId::try_from(id).map_err(|_| Rejection::MalformedHeader("webhook-id"))?;
    check_timestamp(signed_at, now, v.tolerance_secs)?;
    let candidates = parse_signatures(signature)?;
    let parts: [&[u8]; 5] = [
        id.as_str().as_bytes(),
        b".",
        timestamp.as_bytes(),
        b".",
        req.body,
    ];
    if any_matches(&v.keys, &parts, &candidates) {
        Ok((id, signed_at))
    } else {
        Err(Rejection::BadSignature)
    }
}

/// Space-separated `version,base64` pairs; versions other than v1 are skipped (v1a is an
/// asymmetric scheme plumbline does not configure).
fn parse_signatures(header: &str) -> Result<Vec<Vec<u8>>, Rejection> {
    let malformed = Rejection::MalformedHeader("webhook-signature");
    let mut out = Vec::new();
    for item in header.split(' ').filter(|s| !s.is_empty()) {
        let (version, sig) = item.split_once(',').ok_or(malformed.clone())?;
        if version == "v1" {
            out.push(STANDARD.decode(sig).map_err(|_| malformed.clone())?);
        }
    }
    if out.is_empty() {
        Err(malformed)
    } else {
        Ok(out)
    }
}

pub(super) fn normalize(
    p: &Value<'_>,
    source_type: &str,
    header_time: Option<Timestamp>,
) -> Result<Option<NormalizedEvent>, String> {
    let occurred_at = match p.at("/timestamp") {
        Some(_) => rfc3339_at(p, "/timestamp")?,
        None => header_time.ok_or("timestamp is missing")?,
    };
    let d = p.at("/data").ok_or("data is missing")?;
    let (event_type, entity, data) = match source_type {
        "lead.submitted" => lead(d)?,
        "order.created" => order_created(d)?,
        "order.cancelled" => order_cancelled(d)?,
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

fn customer_of(d: &Value<'_>, prefix: &str) -> Customer {
    Customer {
        external_id: opt_str(d, &format!("{prefix}/id")),
        name: opt_str(d, &format!("{prefix}/name")),
        email: opt_str(d, &format!("{prefix}/email")),
        phone: opt_str(d, &format!("{prefix}/phone")),
    }
}

fn lead(d: &Value<'_>) -> Result<Parts, String> {
    let id = str_at(d, "/id")?.to_owned();
    let person = customer_of(d, "");
    if person.email.is_none() && person.phone.is_none() {
        return Err("data has neither email nor phone".into());
    }
    let utm = Utm {
        source: opt_str(d, "/utm/source"),
        medium: opt_str(d, "/utm/medium"),
        campaign: opt_str(d, "/utm/campaign"),
        term: opt_str(d, "/utm/term"),
        content: opt_str(d, "/utm/content"),
    };
    let refs = Refs {
        customer_email: person.email.clone(),
        customer_phone: person.phone.clone(),
        ..Refs::default()
    };
    let data = EventData {
        lead: Some(LeadDetails {
            form_id: Some(str_at(d, "/formId")?.to_owned()),
            lead_source: opt_str(d, "/leadSource"),
            utm,
        }),
        customer: Some(Customer {
            external_id: None,
            ..person
        }),
        ..EventData::default()
    };
    Ok((
        "lead.submitted",
        EntityRef {
            kind: EntityKind::Lead,
            id,
            refs,
        },
        data,
    ))
}

fn order_created(d: &Value<'_>) -> Result<Parts, String> {
    let id = str_at(d, "/id")?.to_owned();
    let currency = str_at(d, "/currency")?;
    let customer = customer_of(d, "/customer");
    let items = d
        .at("/lineItems")
        .and_then(Value::as_array)
        .ok_or("lineItems is missing")?;
    let line_items = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            Ok(LineItem {
                sku: opt_str(item, "/sku"),
                name: str_at(item, "/name")
                    .map_err(|e| format!("lineItems[{i}].{e}"))?
                    .to_owned(),
                quantity: i64_at(item, "/quantity").map_err(|e| format!("lineItems[{i}].{e}"))?,
                unit_price: match item.at("/unitPrice") {
                    Some(Value::Str(s)) => Some(
                        Money::from_decimal(s, currency)
                            .map_err(|e| format!("lineItems[{i}].unitPrice: {e}"))?,
                    ),
                    Some(value) => Some(
                        minor_of(value, currency)
                            .map_err(|e| format!("lineItems[{i}].unitPrice: {e}"))?,
                    ),
                    None => None,
                },
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let amount = match d.at("/total") {
        Some(Value::Str(_)) => decimal_money(d, "/total", "/currency")?,
        _ => minor_money(d, "/total", "/currency")?,
    };
    let refs = Refs {
        customer_email: customer.email.clone(),
        customer_phone: customer.phone.clone(),
        customer_external_id: customer.external_id.clone(),
        payment_id: opt_str(d, "/paymentId"),
        ..Refs::default()
    };
    let data = EventData {
        status: Some("created".into()),
        amount: Some(amount),
        customer: Some(customer),
        line_items,
        ..EventData::default()
    };
    Ok((
        "order.created",
        EntityRef {
            kind: EntityKind::Order,
            id,
            refs,
        },
        data,
    ))
}

fn order_cancelled(d: &Value<'_>) -> Result<Parts, String> {
    let id = str_at(d, "/id")?.to_owned();
    let data = EventData {
        status: Some("cancelled".into()),
        failure_reason: opt_str(d, "/reason"),
        ..EventData::default()
    };
    Ok((
        "order.cancelled",
        EntityRef {
            kind: EntityKind::Order,
            id,
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

    // The example published with the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1_614_265_330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    const SECRET: &str = "whsec_c2l0ZS13ZWJob29rLXNlY3JldC1mb3ItdGVzdHM=";
    const NOW: i64 = 1_763_900_000;

    fn signed(secret: &str, id: &str, ts: i64, body: &[u8]) -> http::HeaderMap {
        let key = decode_secret(secret).expect("valid");
        let mac = hmac_sha256(
            &key,
            &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
        );
        let sig = format!("v1,{}", STANDARD.encode(mac));
        headers(&[
            ("webhook-id", id),
            ("webhook-timestamp", &ts.to_string()),
            ("webhook-signature", &sig),
        ])
    }

    fn run(
        headers: &http::HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Vec<SourceEvent>, Rejection> {
        let v = verifier(SourceKind::StandardWebhooks, &[SECRET, SPEC_SECRET]);
        v.accept(
            Inbound { headers, body },
            Timestamp::from_unix(now).expect("in range"),
        )
    }

    #[test]
    fn verifies_the_specification_example() {
        let h = headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", &SPEC_TS.to_string()),
            ("webhook-signature", SPEC_SIG),
        ]);
        let events = run(&h, SPEC_BODY.as_bytes(), SPEC_TS).expect("the spec example verifies");
        assert_eq!(
            events[0].outcome,
            Normalized::Quarantined("the event type is missing".into())
        );
        let h = headers(&[
            ("webhook-id", SPEC_ID),
            ("webhook-timestamp", &SPEC_TS.to_string()),
            (
                "webhook-signature",
                "v1,h0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        assert_eq!(
            run(&h, SPEC_BODY.as_bytes(), SPEC_TS).err(),
            Some(Rejection::BadSignature)
        );
    }

    #[test]
    fn normalizes_a_lead() {
        let body = fixture("site/lead.submitted.json");
        let event =
            only_event(run(&signed(SECRET, "msg_lead_1", NOW, &body), &body, NOW).expect("ok"));
        assert_eq!(event.event_type.as_str(), "lead.submitted");
        assert_eq!(event.entity.kind, EntityKind::Lead);
        let lead = event.data.lead.expect("lead");
        assert_eq!(lead.lead_source.as_deref(), Some("google-ads"));
        assert_eq!(lead.form_id.as_deref(), Some("contact-v2"));
        assert_eq!(lead.utm.campaign.as_deref(), Some("winter-sale"));
        assert_eq!(
            event.entity.refs.customer_email.as_deref(),
            Some("Jane.Doe@Example.com")
        );
    }

    #[test]
    fn normalizes_orders_with_line_items() {
        let body = fixture("site/order.created.json");
        let event =
            only_event(run(&signed(SECRET, "msg_order_1", NOW, &body), &body, NOW).expect("ok"));
        assert_eq!(event.event_type.as_str(), "order.created");
        assert_eq!(event.entity.id, "ord_1001");
        assert_eq!(event.data.amount.map(|m| m.amount_minor), Some(2000));
        assert_eq!(event.data.line_items.len(), 2);
        assert_eq!(
            event.data.line_items[1]
                .unit_price
                .as_ref()
                .map(|m| m.amount_minor),
            Some(500)
        );

        let body = fixture("site/order.cancelled.json");
        let event =
            only_event(run(&signed(SECRET, "msg_order_2", NOW, &body), &body, NOW).expect("ok"));
        assert_eq!(event.event_type.as_str(), "order.cancelled");
        assert_eq!(event.data.status.as_deref(), Some("cancelled"));
    }

    #[test]
    fn negative_cases() {
        let body = fixture("site/lead.submitted.json");
        let good = signed(SECRET, "msg_1", NOW, &body);
        assert_eq!(
            run(&signed("whsec_d3Jvbmc=", "msg_1", NOW, &body), &body, NOW).err(),
            Some(Rejection::BadSignature)
        );
        assert_eq!(
            run(&good, &body, NOW + 301).err(),
            Some(Rejection::StaleTimestamp)
        );
        assert_eq!(
            run(&good, &body, NOW - 301).err(),
            Some(Rejection::FutureTimestamp)
        );
        let mut other_id = good.clone();
        other_id.insert("webhook-id", http::HeaderValue::from_static("msg_2"));
        assert_eq!(
            run(&other_id, &body, NOW).err(),
            Some(Rejection::BadSignature)
        );
        let mut no_sig = good.clone();
        no_sig.remove("webhook-signature");
        assert_eq!(
            run(&no_sig, &body, NOW).err(),
            Some(Rejection::MissingHeader("webhook-signature"))
        );
        let mut bad_sig = good.clone();
        bad_sig.insert(
            "webhook-signature",
            http::HeaderValue::from_static("v1,@@@"),
        );
        assert_eq!(
            run(&bad_sig, &body, NOW).err(),
            Some(Rejection::MalformedHeader("webhook-signature"))
        );
        let mut bad_ts = good;
        bad_ts.insert("webhook-timestamp", http::HeaderValue::from_static("soon"));
        assert_eq!(
            run(&bad_ts, &body, NOW).err(),
            Some(Rejection::MalformedHeader("webhook-timestamp"))
        );
    }

    #[test]
    fn a_lead_without_contact_is_quarantined() {
        let body = br#"{"type":"lead.submitted","timestamp":"2025-11-23T12:00:00Z","data":{"id":"l1","formId":"f","name":"x"}}"#;
        let events = run(&signed(SECRET, "msg_3", NOW, body), body, NOW).expect("verified");
        assert_eq!(
            events[0].outcome,
            Normalized::Quarantined("data has neither email nor phone".into())
        );
        assert_eq!(
            events[0].header_time,
            Timestamp::from_unix(NOW),
            "kept with the signed time, for reading it again"
        );
    }
}
