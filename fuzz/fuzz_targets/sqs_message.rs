//! The delivery queue's message decoder on arbitrary bodies: decoded or refused, never a panic;
//! and a decoded message encodes to a body that decodes to the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumbline::ingress::QueueMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = QueueMessage::decode(body) {
        let again = QueueMessage::decode(&message.body()).expect("a written body decodes");
        assert_eq!(again.key, message.key);
    }
});
