use serde::Deserialize;

use crate::contract::Envelope;
use crate::ports::EventKey;

/// SQS's message size limit is larger, but staying under 256 KiB keeps every message in four
/// 64 KiB billing chunks at most.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// A message as read from the delivery queue: the event's key, and its envelope when the
/// message carried it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueueMessage {
    pub key: String,
    #[serde(default)]
    pub event: Option<Envelope>,
}

impl QueueMessage {
    /// Reads a body written by [`Outgoing`].
    pub fn decode(body: &str) -> Result<Self, String> {
        let m: Self =
            serde_json::from_str(body).map_err(|e| format!("invalid message body: {e}"))?;
        if EventKey::parse(&m.key).is_none() {
            return Err(format!("invalid event key {:?}", m.key));
        }
        Ok(m)
    }
}

/// A message for the delivery queue, encoded: the event's key, and its envelope while it fits
/// (else the key alone, and delivery reads the envelope from the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    key: String,
    body: String,
    event_type: String,
    source: String,
}

impl Outgoing {
    pub fn new(key: &EventKey, envelope: &Envelope) -> Self {
        Self::encoded(key, envelope, &envelope.to_json())
    }

    /// With `json`, the envelope as [`Envelope::to_json`] wrote it: the ingress encodes each
    /// envelope once, for the claim and the message both.
    pub fn encoded(key: &EventKey, envelope: &Envelope, json: &str) -> Self {
        // What the body holds besides the key's and the envelope's JSON.
        const FRAME: usize = r#"{"key":,"event":}"#.len();
        let key_json = serde_json::to_string(key.as_str()).expect("a string always serializes");
        let mut body = String::with_capacity(FRAME + key_json.len() + json.len());
        body.push_str("{\"key\":");
        body.push_str(&key_json);
        if FRAME + key_json.len() + json.len() <= MAX_MESSAGE_BYTES {
            body.push_str(",\"event\":");
            body.push_str(json);
        }
        body.push('}');
        Self {
            key: key.as_str().to_owned(),
            body,
            event_type: envelope.event_type.to_string(),
            source: envelope.source.to_string(),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn body(&self) -> &str {
        &self.body
    }

    /// Message attributes, so consumers and filters need not parse the body.
    pub fn attributes(&self) -> [(&'static str, &str); 2] {
        [("event_type", &self.event_type), ("source", &self.source)]
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
        let small = Outgoing::new(&key, &envelope());
        let decoded = QueueMessage::decode(small.body()).expect("decodes");
        assert_eq!(
            decoded.event.as_ref().map(|e| e.id.clone()),
            Some(envelope().id)
        );

        let mut big = envelope();
        big.data.failure_reason = Some("x".repeat(MAX_MESSAGE_BYTES));
        let body = Outgoing::new(&key, &big).body().to_owned();
        assert!(body.len() < 1024, "only the key: {} bytes", body.len());
        let decoded = QueueMessage::decode(&body).expect("decodes");
        assert_eq!(
            (decoded.key.as_str(), decoded.event),
            ("EVT#stripe#evt_1", None)
        );
    }
}
