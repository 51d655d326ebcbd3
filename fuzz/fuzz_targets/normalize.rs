//! Every normalizer, on arbitrary bodies that are correctly signed (so verification passes and
//! the normalizer runs): a correctly signed request is never refused as unauthentic, and no
//! body makes a normalizer panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumbline::sources::sign::{self, Envelope};
use plumbline::sources::{Inbound, Rejection, SourceKind};
use plumbline_fuzz::{NOW, SHOPIFY_TOPICS, kind, now, secret, verifier};

fuzz_target!(|data: &[u8]| {
    let [first, topic, body @ ..] = data else {
        return;
    };
    let kind = kind(*first);
    let meta = Envelope {
        event_id: "evt_fuzz",
        timestamp: NOW,
        topic: Some(SHOPIFY_TOPICS[usize::from(*topic) % SHOPIFY_TOPICS.len()]),
    };
    // Adyen signs inside the body: a body that is not Adyen's shape cannot be signed at all.
    let Ok(signed) = sign::sign(kind, secret(kind), meta, body) else {
        assert_eq!(kind, SourceKind::Adyen, "only Adyen refuses to sign a body");
        return;
    };
    let mut headers = http::HeaderMap::new();
    for (name, value) in &signed.headers {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes())
                .expect("signature header names are valid"),
            http::HeaderValue::from_str(value).expect("signature headers are ASCII"),
        );
    }
    let result = verifier(kind).accept(
        Inbound {
            headers: &headers,
            body: &signed.body,
        },
        now(),
    );
    match result {
        Ok(_) | Err(Rejection::MalformedBody(_)) => {}
        Err(other) => panic!("a correctly signed {kind} request was refused: {other}"),
    }
});
