//! What the fuzz targets share: the input layout, the configured secrets and a fixed clock.
//!
//! Verifier and normalizer inputs start with one byte that picks the source scheme, so one
//! target (and one corpus) covers every scheme and libFuzzer's coverage feedback steers between
//! them.

use plumbline::contract::Timestamp;
use plumbline::sources::{SourceKind, Verifier};
use secrecy::SecretSlice;

pub const KINDS: [SourceKind; 5] = [
    SourceKind::Stripe,
    SourceKind::StandardWebhooks,
    SourceKind::Shopify,
    SourceKind::Adyen,
    SourceKind::Paddle,
];

/// Shopify routes by topic header; the normalize target picks one of these by its second byte.
pub const SHOPIFY_TOPICS: [&str; 5] = [
    "orders/create",
    "orders/paid",
    "orders/cancelled",
    "refunds/create",
    "customers/create",
];

/// The clock every target verifies against (signatures in the seeds are made at this time).
pub const NOW: i64 = 1_763_900_000;

pub fn now() -> Timestamp {
    Timestamp::from_unix(NOW).expect("a valid time")
}

/// The secret each scheme is configured with, in the form an operator writes it.
pub fn secret(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::StandardWebhooks => "whsec_ZnV6ei1rZXktZnV6ei1rZXktZnV6eg==",
        SourceKind::Adyen => "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
        SourceKind::Stripe | SourceKind::Shopify | SourceKind::Paddle => "whsec_fuzz_secret",
    }
}

pub fn verifier(kind: SourceKind) -> Verifier {
    Verifier {
        kind,
        keys: vec![SecretSlice::from(
            kind.decode_secret(secret(kind)).expect("a valid secret"),
        )],
        tolerance_secs: 300,
    }
}

pub fn kind(byte: u8) -> SourceKind {
    KINDS[usize::from(byte) % KINDS.len()]
}

/// `headers\n\nbody`: header lines are `name: value`; no blank line means no headers.
pub fn split_request(data: &[u8]) -> (http::HeaderMap, &[u8]) {
    let Some(at) = data.windows(2).position(|w| w == b"\n\n") else {
        return (http::HeaderMap::new(), data);
    };
    let mut headers = http::HeaderMap::new();
    for line in data[..at].split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    (headers, &data[at + 2..])
}

/// The inverse of [`split_request`], for the seed corpus.
pub fn join_request(headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    out.extend_from_slice(b"\n");
    out.extend_from_slice(body);
    out
}
