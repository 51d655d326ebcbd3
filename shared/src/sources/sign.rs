//! Signs requests the way each provider does: for `plumbline send`, the load generator, tests
//! and benchmarks. The verifiers never use this module, so a shared mistake cannot hide.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{SourceKind, hmac_sha256};

/// A request ready to send: extra headers and the body (Adyen's body carries its signatures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// What a provider puts around a body besides the signature.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// The provider's event id, for schemes that carry it in a header (standard-webhooks, shopify).
    pub event_id: &'a str,
    /// Unix seconds, for schemes that sign a timestamp.
    pub timestamp: i64,
    /// The topic, for shopify.
    pub topic: Option<&'a str>,
}

/// Signs `body` for `kind` with `secret` (as configured: `whsec_…`, a hex key for Adyen, …).
pub fn sign(
    kind: SourceKind,
    secret: &str,
    meta: Envelope<'_>,
    body: &[u8],
) -> Result<Signed, String> {
    let key = kind.decode_secret(secret).map_err(str::to_owned)?;
    let t = meta.timestamp;
    let headers = match kind {
        SourceKind::Stripe => vec![(
            "Stripe-Signature",
            super::stripe::SCHEME.sign(&key, t, body),
        )],
        SourceKind::Paddle => vec![(
            "Paddle-Signature",
            super::paddle::SCHEME.sign(&key, t, body),
        )],
        SourceKind::StandardWebhooks => {
            let mac = hmac_sha256(
                &key,
                &[
                    meta.event_id.as_bytes(),
                    b".",
                    t.to_string().as_bytes(),
                    b".",
                    body,
                ],
            );
            vec![
                ("webhook-id", meta.event_id.to_owned()),
                ("webhook-timestamp", t.to_string()),
                ("webhook-signature", format!("v1,{}", STANDARD.encode(mac))),
            ]
        }
        SourceKind::Shopify => vec![
            (
                "X-Shopify-Hmac-Sha256",
                STANDARD.encode(hmac_sha256(&key, &[body])),
            ),
            ("X-Shopify-Event-Id", meta.event_id.to_owned()),
            (
                "X-Shopify-Topic",
                meta.topic.ok_or("shopify needs a topic")?.to_owned(),
            ),
        ],
        SourceKind::Adyen => {
            return Ok(Signed {
                headers: Vec::new(),
                body: super::adyen::sign_body(&key, body)?,
            });
        }
    };
    Ok(Signed {
        headers: [
            vec![("Content-Type", "application/json".to_owned())],
            headers,
        ]
        .concat(),
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{fixture, verifier};
    use super::super::{Inbound, Normalized};
    use super::*;
    use crate::contract::Timestamp;

    #[test]
    fn every_kind_signs_what_its_verifier_accepts() {
        let cases = [
            (
                SourceKind::Stripe,
                "whsec_x",
                "stripe/payment_intent.succeeded.json",
                None,
            ),
            (
                SourceKind::StandardWebhooks,
                "whsec_c2VjcmV0",
                "site/lead.submitted.json",
                None,
            ),
            (
                SourceKind::Shopify,
                "shpss_x",
                "shopify/orders.paid.json",
                Some("orders/paid"),
            ),
            (SourceKind::Adyen, "00ff11ee", "adyen/batch.json", None),
            (
                SourceKind::Paddle,
                "pdl_x",
                "paddle/transaction.completed.json",
                None,
            ),
        ];
        let now = 1_763_900_000;
        for (kind, secret, file, topic) in cases {
            let meta = Envelope {
                event_id: "evt_sign_1",
                timestamp: now,
                topic,
            };
            let signed = sign(kind, secret, meta, &fixture(file)).expect("signs");
            let headers: http::HeaderMap = signed
                .headers
                .iter()
                .map(|(k, v)| (k.parse().expect("name"), v.parse().expect("value")))
                .collect();
            let events = verifier(kind, &[secret])
                .accept(
                    Inbound {
                        headers: &headers,
                        body: &signed.body,
                    },
                    Timestamp::from_unix(now).expect("ok"),
                )
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e.outcome, Normalized::Event(_))),
                "{kind}"
            );
            let other = verifier(
                kind,
                &[if kind == SourceKind::Adyen {
                    "0011"
                } else {
                    "whsec_b3RoZXI="
                }],
            );
            assert!(
                other
                    .accept(
                        Inbound {
                            headers: &headers,
                            body: &signed.body
                        },
                        Timestamp::from_unix(now).expect("ok")
                    )
                    .is_err()
            );
        }
    }
}
