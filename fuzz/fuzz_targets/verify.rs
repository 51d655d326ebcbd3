//! Every verifier, on arbitrary headers and bodies: it must answer (accept or refuse), never
//! panic; and anything it accepts must carry a well-formed event id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumbline::sources::Inbound;
use plumbline_fuzz::{kind, now, split_request, verifier};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (headers, body) = split_request(rest);
    let verifier = verifier(kind(first));
    if let Ok(events) = verifier.accept(
        Inbound {
            headers: &headers,
            body,
        },
        now(),
    ) {
        for event in events {
            assert!(!event.source_event_id.as_str().is_empty());
        }
    }
});
