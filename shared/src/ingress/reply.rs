use super::{Accepted, EventOutcome, IngressError};

/// An HTTP answer, independent of the server that sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// The one place where the ingress's results become HTTP answers.
pub fn reply(result: &Result<Accepted, IngressError>) -> Reply {
    match result {
        Ok(accepted) => {
            if let Some(body) = accepted.kind.accepted_body() {
                return Reply {
                    status: 200,
                    content_type: "text/plain",
                    body: body.to_owned(),
                };
            }
            let events: Vec<serde_json::Value> = accepted.events.iter().map(event_json).collect();
            let body = match events.as_slice() {
                [one] => one.clone(),
                _ => serde_json::json!({ "status": "accepted", "events": events }),
            };
            Reply {
                status: 200,
                content_type: "application/json",
                body: body.to_string(),
            }
        }
        Err(err) => {
            let body = serde_json::json!({ "error": err.label(), "message": err.public_message() });
            Reply {
                status: err.status(),
                content_type: "application/json",
                body: body.to_string(),
            }
        }
    }
}

fn event_json((id, outcome): &(crate::contract::EventId, EventOutcome)) -> serde_json::Value {
    let mut v = serde_json::json!({ "status": outcome.label(), "event_id": id });
    if let EventOutcome::Quarantined(reason) = outcome {
        v["reason"] = serde_json::Value::String(reason.clone());
    }
    v
}
