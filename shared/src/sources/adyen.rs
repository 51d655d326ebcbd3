//! Adyen standard notifications: a batch of `NotificationRequestItem`s, each signed on its own
//! with HMAC-SHA256 (hex key) over
//! `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:eventCode:success`,
//! base64 in `additionalData.hmacSignature`. The scheme signs no timestamp.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::json::{Value, Walk, minor_money, opt_str, rfc3339_at, str_at};
use super::signature::any_matches;
use super::{Inbound, Normalized, NormalizedEvent, Rejection, SourceEvent, Verifier};
use crate::contract::{EntityKind, EntityRef, EventData, EventType, Refs, SourceEventId};

pub(super) fn decode_secret(secret: &str) -> Result<Vec<u8>, &'static str> {
    match hex::decode(secret) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err("expected the HMAC key as hexadecimal"),
    }
}

pub(super) fn accept(v: &Verifier, req: Inbound<'_>) -> Result<Vec<SourceEvent>, Rejection> {
    let payload = super::parse_body(req.body)?;
    let items = payload
        .at("/notificationItems")
        .and_then(Value::as_array)
        .filter(|items| !items.is_empty())
        .ok_or_else(|| Rejection::MalformedBody("notificationItems is missing or empty".into()))?;
    let mut events = Vec::with_capacity(items.len());
    // Every item must verify before any is accepted: a request is taken whole or not at all.
    for item in items {
        let item = item.at("/NotificationRequestItem").ok_or_else(|| {
            Rejection::MalformedBody("an item has no NotificationRequestItem".into())
        })?;
        verify_item(v, item)?;
        events.push(event_of(item));
    }
    Ok(events)
}

/// A field of a verified item as text (empty when absent).
fn field(item: &Value<'_>, pointer: &str) -> String {
    match item.at(pointer) {
        Some(Value::Str(s)) => s.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A signed field as Adyen writes it into the signing string. Numbers must be integers: a
/// float goes through f64, whose digits need not be the ones Adyen signed, so such a body is
/// refused as malformed rather than checked against a string Adyen never made.
fn signed_field(item: &Value<'_>, pointer: &'static str) -> Result<String, Rejection> {
    Ok(match item.at(pointer) {
        Some(Value::Str(s)) => s.to_string(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(Value::Number(_)) => {
            return Err(Rejection::MalformedBody(format!(
                "{pointer} must be an integer"
            )));
        }
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    })
}

fn signing_string(item: &Value<'_>) -> Result<String, Rejection> {
    Ok([
        "/pspReference",
        "/originalReference",
        "/merchantAccountCode",
        "/merchantReference",
        "/amount/value",
        "/amount/currency",
        "/eventCode",
        "/success",
    ]
    .iter()
    .map(|p| signed_field(item, p))
    .collect::<Result<Vec<_>, _>>()?
    .join(":"))
}

/// Signs every item of a notification body, as Adyen does before sending it.
pub(super) fn sign_body(key: &[u8], body: &[u8]) -> Result<Vec<u8>, String> {
    let mut doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let items = doc
        .pointer_mut("/notificationItems")
        .and_then(serde_json::Value::as_array_mut)
        .ok_or("notificationItems is missing")?;
    for item in items {
        let item = item
            .pointer_mut("/NotificationRequestItem")
            .ok_or("an item has no NotificationRequestItem")?;
        let signature = STANDARD.encode(super::hmac_sha256(
            key,
            &[signing_string(&Value::from(&*item))
                .map_err(|e| e.to_string())?
                .as_bytes()],
        ));
        if let Some(data) = item
            .pointer_mut("/additionalData")
            .and_then(serde_json::Value::as_object_mut)
        {
            data.insert("hmacSignature".into(), serde_json::Value::String(signature));
        } else {
            let item = item
                .as_object_mut()
                .ok_or("a NotificationRequestItem is not an object")?;
            item.insert(
                "additionalData".into(),
                serde_json::json!({ "hmacSignature": signature }),
            );
        }
    }
    serde_json::to_vec(&doc).map_err(|e| e.to_string())
}

fn verify_item(v: &Verifier, item: &Value<'_>) -> Result<(), Rejection> {
    let signature = match item.at("/additionalData/hmacSignature") {
        Some(Value::Str(s)) => s,
        Some(_) => return Err(Rejection::MalformedHeader("additionalData.hmacSignature")),
        None => return Err(Rejection::MissingHeader("additionalData.hmacSignature")),
    };
    let signature = STANDARD
        .decode(signature.as_bytes())
        .map_err(|_| Rejection::MalformedHeader("additionalData.hmacSignature"))?;
    if any_matches(&v.keys, &[signing_string(item)?.as_bytes()], &[signature]) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

/// Adyen has no event id: `{pspReference}:{eventCode}:{success}` is unique per notification
/// and the same on every retry of it.
fn event_of(item: &Value<'_>) -> SourceEvent {
    let payload_hash = super::json::content_hash(item);
    let source_type = field(item, "/eventCode");
    let id = str_at(item, "/pspReference").and_then(|psp| {
        SourceEventId::try_from(format!("{psp}:{source_type}:{}", field(item, "/success")))
            .map_err(|e| e.to_string())
    });
    let (source_event_id, outcome) = match id {
        Ok(id) => (id, Normalized::of(normalize(item, &source_type))),
        Err(reason) => (
            payload_hash.derived_event_id(),
            Normalized::Quarantined(reason),
        ),
    };
    SourceEvent {
        source_event_id,
        source_type,
        payload_hash,
        payload: super::kept_payload(&outcome, item),
        header_time: None,
        outcome,
    }
}

pub(super) fn normalize(item: &Value<'_>, code: &str) -> Result<Option<NormalizedEvent>, String> {
    let success = field(item, "/success") == "true";
    let (event_type, status) = match (code, success) {
        ("AUTHORISATION", true) => ("payment.authorized", Some("authorized")),
        ("AUTHORISATION", false) => ("payment.failed", Some("failed")),
        ("CAPTURE", true) => ("payment.succeeded", Some("succeeded")),
        ("CAPTURE", false) => ("payment.capture_failed", None),
        ("REFUND", true) => ("payment.refund_created", None),
        ("REFUND", false) => ("payment.refund_failed", None),
        ("CHARGEBACK", _) => ("payment.disputed", Some("disputed")),
        ("CANCELLATION", true) => ("payment.canceled", Some("canceled")),
        ("CANCELLATION", false) => ("payment.cancel_failed", None),
        _ => return Ok(None),
    };
    let psp = str_at(item, "/pspReference")?;
    let id = opt_str(item, "/originalReference").unwrap_or_else(|| psp.to_owned());
    let money = minor_money(item, "/amount/value", "/amount/currency")?;
    let is_refund = code == "REFUND";
    let data = EventData {
        status: status.map(Into::into),
        amount: (!is_refund).then(|| money.clone()),
        amount_refunded: is_refund.then_some(money),
        failure_reason: opt_str(item, "/reason").filter(|_| !success),
        ..EventData::default()
    };
    let refs = Refs {
        order_id: opt_str(item, "/merchantReference"),
        payment_id: Some(psp.to_owned()),
        customer_email: opt_str(item, "/additionalData/shopperEmail"),
        customer_external_id: opt_str(item, "/additionalData/shopperReference"),
        ..Refs::default()
    };
    Ok(Some(NormalizedEvent {
        event_type: EventType::try_from(event_type).map_err(|e| e.to_string())?,
        occurred_at: rfc3339_at(item, "/eventDate")?,
        entity: EntityRef {
            kind: EntityKind::Payment,
            id,
            refs,
        },
        data,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::SourceKind;
    use super::super::test_support::{fixture, headers, verifier};
    use super::*;
    use crate::contract::Timestamp;

    // The key and item published in Adyen's HMAC documentation and client libraries.
    const DOC_KEY: &str = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    const KEY: &str = "6A7E1E2F3C4D5B6A79880B1C2D3E4F5061728394A5B6C7D8E9F0A1B2C3D4E5F6";

    /// Found by the `normalize` fuzz target: an amount beyond any integer type parses as a
    /// float, whose digits changed between signing and verifying. Signed numbers must now be
    /// integers; anything else is a malformed body (400), never a signature check on digits
    /// Adyen did not send.
    #[test]
    fn a_signed_number_that_is_not_an_integer_is_malformed_not_a_bad_signature() {
        let body = fixture("fuzz/adyen-huge-amount.json");
        let key = hex::decode(KEY).expect("hex");
        assert!(sign_body(&key, &body).is_err(), "the signer refuses it too");
        let mut doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
        // The item with the huge amount alone, so no other item's signature is checked first.
        let item = doc["notificationItems"][1].clone();
        doc["notificationItems"] = serde_json::json!([item]);
        doc["notificationItems"][0]["NotificationRequestItem"]["additionalData"]["hmacSignature"] =
            serde_json::Value::String(STANDARD.encode([0u8; 32]));
        let result = run(&serde_json::to_vec(&doc).expect("json"));
        assert!(
            matches!(&result, Err(Rejection::MalformedBody(m)) if m.contains("/amount/value")),
            "{result:?}"
        );
        let mut float = doc.clone();
        float["notificationItems"][0]["NotificationRequestItem"]["amount"]["value"] =
            serde_json::json!(11.5);
        assert!(matches!(
            run(&serde_json::to_vec(&float).expect("json")),
            Err(Rejection::MalformedBody(_))
        ));
    }

    fn run(body: &[u8]) -> Result<Vec<SourceEvent>, Rejection> {
        let v = verifier(SourceKind::Adyen, &[KEY, DOC_KEY]);
        v.accept(
            Inbound {
                headers: &headers(&[]),
                body,
            },
            Timestamp::from_unix(0).expect("epoch"),
        )
    }

    fn signed(fixture_body: &[u8], key: &str) -> Vec<u8> {
        sign_body(&hex::decode(key).expect("hex"), fixture_body).expect("signs")
    }

    #[test]
    fn verifies_the_documented_example() {
        let body = fixture("adyen/documented-example.json");
        let events = run(&body).expect("the documented signature verifies");
        assert_eq!(events.len(), 1);
        assert_eq!(
            events[0].source_event_id.as_str(),
            "7914073381342284:AUTHORISATION:true"
        );
        match &events[0].outcome {
            Normalized::Event(e) => assert_eq!(e.event_type.as_str(), "payment.authorized"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_batch_splits_into_events_and_normalizes_each_code() {
        let body = signed(&fixture("adyen/batch.json"), KEY);
        let events = run(&body).expect("verified");
        let types: Vec<_> = events
            .iter()
            .map(|e| match &e.outcome {
                Normalized::Event(n) => n.event_type.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            types,
            [
                "payment.authorized",
                "payment.failed",
                "payment.succeeded",
                "payment.refund_created",
                "payment.disputed",
                "payment.canceled",
                "Unrouted"
            ]
        );
        match &events[2].outcome {
            Normalized::Event(e) => assert_eq!(
                e.entity.id, "8815000000000001",
                "a capture belongs to the original payment"
            ),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn one_bad_item_refuses_the_whole_request() {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&signed(&fixture("adyen/batch.json"), KEY)).expect("json");
        doc["notificationItems"][1]["NotificationRequestItem"]["amount"]["value"] =
            serde_json::Value::from(1);
        let body = serde_json::to_vec(&doc).expect("json");
        assert_eq!(run(&body).err(), Some(Rejection::BadSignature));
    }

    #[test]
    fn negative_cases() {
        let body = signed(&fixture("adyen/batch.json"), "00112233");
        assert_eq!(run(&body).err(), Some(Rejection::BadSignature));
        let mut doc: serde_json::Value =
            serde_json::from_slice(&fixture("adyen/documented-example.json")).expect("json");
        doc["notificationItems"][0]["NotificationRequestItem"]["additionalData"] =
            serde_json::json!({});
        assert_eq!(
            run(&serde_json::to_vec(&doc).expect("json")).err(),
            Some(Rejection::MissingHeader("additionalData.hmacSignature"))
        );
        assert!(matches!(
            run(br#"{"live":"false"}"#),
            Err(Rejection::MalformedBody(_))
        ));
        assert!(matches!(
            run(b"[accepted]"),
            Err(Rejection::MalformedBody(_))
        ));
    }
}
