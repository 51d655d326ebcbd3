//! Providers: verify a request's signature, then split and normalize its events.
//!
//! Each provider module exposes one `accept` function with the same shape. Verification runs on
//! the raw body before any parsing; comparison is constant-time; every configured secret is tried
//! so a rotation needs no downtime. Normalization never rejects a verified request: an event it
//! cannot read is quarantined with a reason, an event type it does not know is marked unrouted.

mod adyen;
mod json;
mod paddle;
mod shopify;
pub mod sign;
mod signature;
mod standard_webhooks;
mod stripe;
mod timestamped;

use std::fmt;

use secrecy::SecretSlice;
use serde::{Deserialize, Serialize};

use crate::contract::{EntityRef, EventData, EventType, SourceEventId, Timestamp};

pub use signature::{PayloadHash, hmac_sha256};

/// The signature schemes plumbline verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Stripe,
    StandardWebhooks,
    Shopify,
    Adyen,
    Paddle,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Shopify => "shopify",
            Self::Adyen => "adyen",
            Self::Paddle => "paddle",
        }
    }

    /// Whether the scheme signs a timestamp (and so `tolerance_secs` applies).
    pub fn has_timestamp(self) -> bool {
        matches!(self, Self::Stripe | Self::StandardWebhooks | Self::Paddle)
    }

    /// Whether the provider has an events API the missed-webhook check reads (and so `api_key`
    /// applies).
    pub fn has_event_api(self) -> bool {
        self.event_window_days().is_some()
    }

    /// How the provider's ids of a webhook endpoint begin (Stripe's webhook endpoints,
    /// Paddle's notification destinations); `None` for a provider without an events API.
    pub fn endpoint_id_prefix(self) -> Option<&'static str> {
        match self {
            Self::Stripe => Some("we_"),
            Self::Paddle => Some("ntfset_"),
            Self::StandardWebhooks | Self::Shopify | Self::Adyen => None,
        }
    }

    /// The provider's event types plumbline reads; any other is kept as `unrouted`. The
    /// missed-webhook check asks the provider's list for these only, so an event of a type the
    /// endpoint is never sent (and would ignore) is not taken for a missed webhook.
    pub fn read_types(self) -> &'static [&'static str] {
        match self {
            Self::Stripe => stripe::TYPES,
            Self::Paddle => paddle::TYPES,
            Self::StandardWebhooks | Self::Shopify | Self::Adyen => &[],
        }
    }

    /// How many days of events the provider's events API keeps: Stripe lists the last 30,
    /// Paddle the last 90. `None` for a provider without one.
    pub fn event_window_days(self) -> Option<i64> {
        match self {
            Self::Stripe => Some(30),
            Self::Paddle => Some(90),
            Self::StandardWebhooks | Self::Shopify | Self::Adyen => None,
        }
    }

    /// Turns a configured secret into the HMAC key the scheme uses.
    pub fn decode_secret(self, secret: &str) -> Result<Vec<u8>, &'static str> {
        match self {
            Self::StandardWebhooks => standard_webhooks::decode_secret(secret),
            Self::Adyen => adyen::decode_secret(secret),
            Self::Stripe | Self::Shopify | Self::Paddle => {
                if secret.is_empty() {
                    Err("the secret is empty")
                } else {
                    Ok(secret.as_bytes().to_vec())
                }
            }
        }
    }

    /// The body of a successful answer: Adyen requires `[accepted]`, the others take JSON.
    pub fn accepted_body(self) -> Option<&'static str> {
        matches!(self, Self::Adyen).then_some("[accepted]")
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a verifier needs to know about one configured source.
#[derive(Debug)]
pub struct Verifier {
    pub kind: SourceKind,
    /// HMAC keys, newest first; any of them may have signed the request.
    pub keys: Vec<SecretSlice<u8>>,
    pub tolerance_secs: i64,
}

/// A request as it reached the ingress: headers and the raw body, untouched.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// Why a request is refused. Nothing of a refused request is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    #[error("the signed timestamp is older than the tolerance")]
    StaleTimestamp,
    #[error("the signed timestamp is in the future beyond the tolerance")]
    FutureTimestamp,
    #[error("no signature matches any configured secret")]
    BadSignature,
    #[error("malformed body: {0}")]
    MalformedBody(String),
}

impl Rejection {
    /// 401 for anything about authenticity; 400 for a body that cannot be read at all.
    pub fn is_unauthorized(&self) -> bool {
        !matches!(self, Self::MalformedBody(_))
    }

    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader(_) => "malformed_header",
            Self::StaleTimestamp => "stale_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::BadSignature => "bad_signature",
            Self::MalformedBody(_) => "malformed_body",
        }
    }
}

/// One provider event out of a verified request (Adyen may carry several per request).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceEvent {
    pub source_event_id: SourceEventId,
    pub source_type: String,
    pub payload_hash: PayloadHash,
    /// The provider's own JSON for this event, kept for quarantined and unrouted events (a
    /// normalized event's envelope carries what plumbline uses; its body is not copied).
    pub payload: Option<serde_json::Value>,
    /// The time the provider put in a header (Standard Webhooks' signed timestamp, Shopify's
    /// `X-Shopify-Triggered-At`), which its normalizer reads as the occurrence time. A kept
    /// event keeps it, so reading its payload again later sees what arrived.
    pub header_time: Option<Timestamp>,
    pub outcome: Normalized,
}

/// What normalization made of a verified event.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    Event(Box<NormalizedEvent>),
    /// A type this source does not map: kept, answered 2xx, not delivered.
    Unrouted,
    /// The event could not be read into the contract: kept with the reason, not delivered.
    Quarantined(String),
}

impl Normalized {
    /// A normalizer's answer as the outcome kept with the event: `None` is a type it does not
    /// map, an error the reason the event is quarantined.
    fn of(read: Result<Option<NormalizedEvent>, String>) -> Self {
        match read {
            Ok(Some(event)) => Self::Event(Box::new(event)),
            Ok(None) => Self::Unrouted,
            Err(reason) => Self::Quarantined(reason),
        }
    }

    /// [`Normalized::of`] the normalizer's reading of an event of `source_type`; an event
    /// without a type is quarantined unread.
    fn read(
        source_type: &str,
        normalize: impl FnOnce(&str) -> Result<Option<NormalizedEvent>, String>,
    ) -> Self {
        if source_type.is_empty() {
            Self::Quarantined("the event type is missing".into())
        } else {
            Self::of(normalize(source_type))
        }
    }
}

/// The provider-independent part of an envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedEvent {
    pub event_type: EventType,
    pub occurred_at: Timestamp,
    pub entity: EntityRef,
    pub data: EventData,
}

impl Verifier {
    /// Verifies the request and returns its events, normalized.
    pub fn accept(&self, req: Inbound<'_>, now: Timestamp) -> Result<Vec<SourceEvent>, Rejection> {
        match self.kind {
            SourceKind::Stripe => stripe::accept(self, req, now),
            SourceKind::StandardWebhooks => standard_webhooks::accept(self, req, now),
            SourceKind::Shopify => shopify::accept(self, req, now),
            SourceKind::Adyen => adyen::accept(self, req),
            SourceKind::Paddle => paddle::accept(self, req, now),
        }
    }

    /// Checks a Standard Webhooks signature and timestamp only, whatever the body holds: what
    /// a receiver of plumbline's own deliveries (HTTP targets sign that way) needs.
    pub fn verify_standard_webhook(
        &self,
        req: Inbound<'_>,
        now: Timestamp,
    ) -> Result<(), Rejection> {
        standard_webhooks::verify(self, req, now).map(|_| ())
    }
}

/// Reads events fetched from a provider's own API (over TLS, with plumbline's API key), which
/// carry no webhook signature. Stripe and Paddle have the event APIs plumbline reads.
pub fn accept_from_api(kind: SourceKind, body: &[u8]) -> Result<Vec<SourceEvent>, Rejection> {
    match kind {
        SourceKind::Stripe => stripe::from_api(body),
        SourceKind::Paddle => paddle::from_api(body),
        other => Err(Rejection::MalformedBody(format!(
            "{other} has no event API plumbline reads"
        ))),
    }
}

/// Checks a signed Unix timestamp against `now` and the tolerance, in both directions.
fn check_timestamp(signed_at: i64, now: Timestamp, tolerance_secs: i64) -> Result<(), Rejection> {
    let skew = now.unix().saturating_sub(signed_at);
    if skew > tolerance_secs {
        Err(Rejection::StaleTimestamp)
    } else if -skew > tolerance_secs {
        Err(Rejection::FutureTimestamp)
    } else {
        Ok(())
    }
}

/// Parses the whole body as one JSON value; the only body check that can answer 400.
fn parse_body(body: &[u8]) -> Result<json::Value<'_>, Rejection> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Rejection::MalformedBody("the body is not UTF-8".into()))?;
    json::parse(text).map_err(|e| Rejection::MalformedBody(format!("invalid JSON: {e}")))
}

/// Reads a kept event's payload (the JSON an unrouted or quarantined event was stored with)
/// with today's normalizers: what `plumbline events reprocess` does once a normalizer has
/// learned a type or a field. The payload was verified when it arrived, so no signature is
/// checked. `header_time` is the header time the event was kept with
/// ([`SourceEvent::header_time`]). An event kept before plumbline kept header times has none:
/// a Standard Webhooks event was signed within the tolerance of `received_at`, which then
/// stands in for its signed time; a Shopify event falls back to its payload's own time, as
/// one that arrived without the header does.
pub fn reread(
    kind: SourceKind,
    source_type: &str,
    payload: &serde_json::Value,
    header_time: Option<Timestamp>,
    received_at: Timestamp,
) -> Normalized {
    let text = payload.to_string();
    let payload = match json::parse(&text) {
        Ok(payload) => payload,
        Err(e) => return Normalized::Quarantined(format!("invalid JSON: {e}")),
    };
    Normalized::read(source_type, |t| match kind {
        SourceKind::Stripe => stripe::normalize(&payload, t),
        SourceKind::StandardWebhooks => {
            standard_webhooks::normalize(&payload, t, header_time.or(Some(received_at)))
        }
        SourceKind::Shopify => shopify::normalize(&payload, t, header_time),
        SourceKind::Adyen => adyen::normalize(&payload, t),
        SourceKind::Paddle => paddle::normalize(&payload, t),
    })
}

/// A single-event body's outcome, with a derived id when the provider's id cannot be read.
fn single_event(
    payload: &json::Value<'_>,
    fingerprint: json::Fingerprint,
    id: Result<SourceEventId, String>,
    source_type: Option<String>,
    header_time: Option<Timestamp>,
    normalize: impl FnOnce(&json::Value<'_>, &str) -> Result<Option<NormalizedEvent>, String>,
) -> SourceEvent {
    let (source_event_id, id_problem, payload_hash) = match id {
        Ok(id) => (id, None, json::payload_hash(payload, fingerprint)),
        // Without an id the whole content identifies the event, whatever the fingerprint.
        Err(reason) => {
            let hash = json::content_hash(payload);
            (hash.derived_event_id(), Some(reason), hash)
        }
    };
    let source_type = source_type.unwrap_or_default();
    let outcome = match id_problem {
        Some(reason) => Normalized::Quarantined(reason),
        None => Normalized::read(&source_type, |t| normalize(payload, t)),
    };
    let payload = kept_payload(&outcome, payload);
    SourceEvent {
        source_event_id,
        source_type,
        payload_hash,
        payload,
        header_time,
        outcome,
    }
}

/// The provider's JSON as an unrouted or quarantined event keeps it for operators; a normalized
/// event keeps none (its envelope carries what plumbline uses).
fn kept_payload(outcome: &Normalized, payload: &json::Value<'_>) -> Option<serde_json::Value> {
    match outcome {
        Normalized::Event(_) => None,
        Normalized::Unrouted | Normalized::Quarantined(_) => Some(json::to_owned_json(payload)),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The provider's type of each fixture under `tests/fixtures/{dir}` that its normalizer
    /// reads into an event, by way of `run` (a signed request of the fixture's body).
    pub fn normalized_fixture_types(
        dir: &str,
        run: impl Fn(&[u8]) -> Result<Vec<SourceEvent>, Rejection>,
    ) -> Vec<String> {
        let path = format!("{}/../tests/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut types = Vec::new();
        for entry in std::fs::read_dir(&path).expect("the fixtures") {
            let body = std::fs::read(entry.expect("an entry").path()).expect("a fixture");
            for event in run(&body).expect("a fixture verifies") {
                if matches!(event.outcome, Normalized::Event(_)) {
                    types.push(event.source_type);
                }
            }
        }
        assert!(
            !types.is_empty(),
            "{path} has fixtures the normalizer reads"
        );
        types
    }

    pub fn verifier(kind: SourceKind, secrets: &[&str]) -> Verifier {
        Verifier {
            kind,
            keys: secrets
                .iter()
                .map(|s| SecretSlice::from(kind.decode_secret(s).expect("valid test secret")))
                .collect(),
            tolerance_secs: 300,
        }
    }

    pub fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
                http::HeaderValue::from_str(value).expect("valid value"),
            );
        }
        map
    }

    pub fn only_event(events: Vec<SourceEvent>) -> NormalizedEvent {
        assert_eq!(events.len(), 1);
        match events.into_iter().next().map(|e| e.outcome) {
            Some(Normalized::Event(event)) => *event,
            other => panic!("expected a normalized event, got {other:?}"),
        }
    }

    pub fn fixture(path: &str) -> Vec<u8> {
        let full = format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }
}

#[cfg(test)]
mod reread_tests {
    use super::test_support::fixture;
    use super::*;

    fn json(path: &str) -> serde_json::Value {
        serde_json::from_slice(&fixture(path)).expect("JSON fixture")
    }

    fn event_type(n: &Normalized) -> Option<String> {
        match n {
            Normalized::Event(e) => Some(e.event_type.to_string()),
            _ => None,
        }
    }

    fn at() -> Timestamp {
        Timestamp::parse("2026-12-02T12:00:00Z").expect("time")
    }

    #[test]
    fn a_kept_payload_reads_as_the_webhook_did() {
        let stripe = json("stripe/payment_intent.succeeded.json");
        let via_api = from_api_outcome(&stripe);
        assert_eq!(
            reread(
                SourceKind::Stripe,
                "payment_intent.succeeded",
                &stripe,
                None,
                at()
            ),
            via_api,
            "the same normalizer, the same event"
        );
        let adyen = json("adyen/documented-example.json")["notificationItems"][0]
            ["NotificationRequestItem"]
            .clone();
        for (kind, source_type, payload, expected) in [
            (
                SourceKind::StandardWebhooks,
                "lead.submitted",
                json("site/lead.submitted.json"),
                "lead.submitted",
            ),
            (
                SourceKind::Shopify,
                "orders/paid",
                json("shopify/orders.paid.json"),
                "order.paid",
            ),
            (
                SourceKind::Adyen,
                "AUTHORISATION",
                adyen,
                "payment.authorized",
            ),
            (
                SourceKind::Paddle,
                "transaction.completed",
                json("paddle/transaction.completed.json"),
                "payment.succeeded",
            ),
        ] {
            let read = reread(kind, source_type, &payload, None, at());
            assert_eq!(
                event_type(&read).as_deref(),
                Some(expected),
                "{kind}: {read:?}"
            );
        }
    }

    fn from_api_outcome(payload: &serde_json::Value) -> Normalized {
        let body = payload.to_string();
        let mut events = accept_from_api(SourceKind::Stripe, body.as_bytes()).expect("reads");
        events.remove(0).outcome
    }

    #[test]
    fn a_kept_header_time_is_the_occurrence_time_when_read_again() {
        let occurred = |kind, source_type, payload: &serde_json::Value, header_time| match reread(
            kind,
            source_type,
            payload,
            header_time,
            at(),
        ) {
            Normalized::Event(e) => e.occurred_at,
            other => panic!("{kind} reads: {other:?}"),
        };
        let mut lead = json("site/lead.submitted.json");
        lead.as_object_mut().expect("object").remove("timestamp");
        let signed = at().plus_secs(-240);
        let lead_at = |t| occurred(SourceKind::StandardWebhooks, "lead.submitted", &lead, t);
        assert_eq!(
            lead_at(Some(signed)),
            signed,
            "the signed time it arrived with"
        );
        assert_eq!(
            lead_at(None),
            at(),
            "kept before header times were: the receipt time stands in for the signed one"
        );

        let order = json("shopify/orders.paid.json");
        let triggered = at().plus_secs(-3_600);
        let order_at = |t| occurred(SourceKind::Shopify, "orders/paid", &order, t);
        assert_eq!(
            order_at(Some(triggered)),
            triggered,
            "X-Shopify-Triggered-At"
        );
        assert_eq!(
            order_at(None),
            Timestamp::parse("2025-11-23T07:22:47-05:00").expect("time"),
            "without the header, the order's own updated_at, as on arrival"
        );
    }

    #[test]
    fn what_still_does_not_read_says_why() {
        let mut stripe = json("stripe/payment_intent.succeeded.json");
        stripe["data"]["object"]
            .as_object_mut()
            .expect("object")
            .remove("amount");
        let read = reread(
            SourceKind::Stripe,
            "payment_intent.succeeded",
            &stripe,
            None,
            at(),
        );
        assert!(
            matches!(&read, Normalized::Quarantined(reason) if reason.contains("amount")),
            "{read:?}"
        );
        assert_eq!(
            reread(SourceKind::Stripe, "plumbline.unknown", &stripe, None, at()),
            Normalized::Unrouted
        );
        assert!(matches!(
            reread(SourceKind::Paddle, "", &stripe, None, at()),
            Normalized::Quarantined(_)
        ));
    }
}

#[cfg(test)]
mod catalog_tests {
    use crate::contract::EVENT_TYPES;

    /// Every canonical type a normalizer writes is in the contract's catalog, and every
    /// catalogued type is written by a normalizer or by reconciliation's corrective events; so
    /// `plumbline config check` warns about a route exactly when it can match nothing.
    #[test]
    fn the_catalog_is_what_the_normalizers_and_reconciliation_write() {
        let sources = [
            include_str!("stripe.rs"),
            include_str!("standard_webhooks.rs"),
            include_str!("shopify.rs"),
            include_str!("adyen.rs"),
            include_str!("paddle.rs"),
        ];
        let mut written = std::collections::BTreeSet::new();
        for text in sources {
            // Literals such as "payment.succeeded" in the mapping tables (skipping the tests).
            let code = text.split("#[cfg(test)]").next().unwrap_or(text);
            for literal in code.split('"').skip(1).step_by(2) {
                let Some((kind, name)) = literal.split_once('.') else {
                    continue;
                };
                let canonical = ["payment", "order", "customer", "lead"].contains(&kind)
                    && !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                if canonical {
                    written.insert(literal.to_owned());
                }
            }
        }
        // Reconciliation's corrective events move an order to the state its payment implies.
        for state in ["paid", "partially_refunded", "refunded"] {
            written.insert(format!("order.{state}"));
        }
        let catalog: std::collections::BTreeSet<String> =
            EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect();
        assert_eq!(written, catalog);
    }
}
