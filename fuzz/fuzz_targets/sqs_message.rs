//! The delivery queue's message decoder on arbitrary bodies: decoded or refused, never a panic;
//! and a decoded message with an envelope encodes to a body that decodes to the same key and
//! an envelope again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plumbline::ingress::{MAX_MESSAGE_BYTES, Outgoing, QueueMessage};
use plumbline::ports::EventKey;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(message) = QueueMessage::decode(body) else {
        return;
    };
    let key = EventKey::parse(&message.key).expect("decode checked the key");
    if let Some(envelope) = &message.event {
        let outgoing = Outgoing::new(&key, envelope);
        let again = QueueMessage::decode(outgoing.body()).expect("a written body decodes");
        assert_eq!(again.key, message.key);
        // The envelope rides along unless the message would pass the size limit.
        let key_json = serde_json::to_string(key.as_str()).expect("a string");
        let whole = r#"{"key":,"event":}"#.len() + key_json.len() + envelope.to_json().len();
        let too_big = whole > MAX_MESSAGE_BYTES;
        assert_eq!(again.event.is_some(), !too_big);
    }
});
