use serde::{Deserialize, Serialize};

use crate::contract::Envelope;
use crate::ports::EventKey;

/// SQS's message size limit is larger, but staying under 256 KiB keeps every message in four
/// 64 KiB billing chunks at most.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What the delivery queue carries: the event's key, and its envelope while it fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueMessage {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Envelope>,
    #[serde(skip)]
    event_type: String,
    #[serde(skip)]
    source: String,
}

impl QueueMessage {
    pub fn new(key: &EventKey, envelope: &Envelope) -> Self {
        Self {
            key: key.as_str().to_owned(),
            event: Some(envelope.clone()),
            event_type: envelope.event_type.to_string(),
            source: envelope.source.to_string(),
        }
    }

    /// The message body: with the envelope when it fits, else the key alone (delivery then
    /// reads the envelope from the store).
    pub fn body(&self) -> String {
        let full = serde_json::to_string(self).expect("a message always serializes");
        if full.len() <= MAX_MESSAGE_BYTES {
            return full;
        }
        serde_json::json!({ "key": self.key }).to_string()
    }

    /// Message attributes, so consumers and filters need not parse the body.
    pub fn attributes(&self) -> [(&'static str, &str); 2] {
        [("event_type", &self.event_type), ("source", &self.source)]
    }

    /// Reads a body written by [`QueueMessage::body`].
    pub fn decode(body: &str) -> Result<Self, String> {
        let mut m: Self =
            serde_json::from_str(body).map_err(|e| format!("invalid message body: {e}"))?;
        if EventKey::parse(&m.key).is_none() {
            return Err(format!("invalid event key {:?}", m.key));
        }
        if let Some(e) = &m.event {
            m.event_type = e.event_type.to_string();
            m.source = e.source.to_string();
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/contract/fixtures/v1/payment.succeeded.stripe.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("envelope")
    }

    #[test]
    fn a_message_carries_the_envelope_while_it_fits_and_the_key_alone_otherwise() {
        let key = EventKey::parse("EVT#stripe#evt_1").expect("key");
        let small = QueueMessage::new(&key, &envelope());
        let decoded = QueueMessage::decode(&small.body()).expect("decodes");
        assert_eq!(
            decoded.event.as_ref().map(|e| e.id.clone()),
            Some(envelope().id)
        );

        let mut big = envelope();
        big.data.failure_reason = Some("x".repeat(MAX_MESSAGE_BYTES));
        let body = QueueMessage::new(&key, &big).body();
        assert!(body.len() < 1024, "only the key: {} bytes", body.len());
        let decoded = QueueMessage::decode(&body).expect("decodes");
        assert_eq!(
            (decoded.key.as_str(), decoded.event),
            ("EVT#stripe#evt_1", None)
        );
    }
}
