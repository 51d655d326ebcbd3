//! A generic HTTP target: POSTs the delivery document (or its mapping) signed with Standard
//! Webhooks headers, so the receiving tool can verify it with any Standard Webhooks library.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::{classify, transport};
use crate::config::{HeaderValue, SecretResolver, TargetConfig};
use crate::delivery::{Document, mapping};
use crate::ports::TargetError;
use crate::sources::{SourceKind, hmac_sha256};

#[derive(Debug)]
pub struct HttpTarget {
    client: reqwest::Client,
    url: String,
    signing_key: Option<SecretSlice<u8>>,
    headers: Vec<(String, SecretString)>,
    fields: Vec<mapping::FieldMapping>,
}

impl HttpTarget {
    pub(super) fn new(
        client: reqwest::Client,
        target: &TargetConfig,
        resolver: &impl SecretResolver,
    ) -> Result<Self, (String, String)> {
        let signing_key = match &target.secret {
            Some(reference) => {
                let secret = resolver
                    .resolve(reference)
                    .map_err(|e| ("secret".to_owned(), e))?;
                let key = SourceKind::StandardWebhooks
                    .decode_secret(secret.expose_secret())
                    .map_err(|e| ("secret".to_owned(), e.to_owned()))?;
                Some(SecretSlice::from(key))
            }
            None => None,
        };
        let mut headers = Vec::new();
        for (name, value) in &target.headers {
            let value = match value {
                HeaderValue::Literal(v) => SecretString::from(v.clone()),
                HeaderValue::Secret(r) => resolver
                    .resolve(r)
                    .map_err(|e| (format!("headers.{name}"), e))?,
            };
            headers.push((name.clone(), value));
        }
        Ok(Self {
            client,
            url: target.url.clone().unwrap_or_default(),
            signing_key,
            headers,
            fields: target.fields.clone(),
        })
    }

    pub(super) async fn deliver(
        &self,
        document: &Document,
        idempotency_key: &str,
    ) -> Result<(), TargetError> {
        let doc = document.to_json();
        let body = if self.fields.is_empty() {
            doc
        } else {
            mapping::map(&doc, &self.fields).map_err(|reason| TargetError::Permanent { reason })?
        };
        let body = serde_json::to_vec(&body).expect("JSON always serializes");
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key);
        if let Some(key) = &self.signing_key {
            // The message id is the event's id: the same on every retry, as the scheme expects.
            let id = document.event.id.to_string();
            let timestamp = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
            let mac = hmac_sha256(
                key.expose_secret(),
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", &body],
            );
            request = request
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp)
                .header("webhook-signature", format!("v1,{}", STANDARD.encode(mac)));
        }
        for (name, value) in &self.headers {
            request = request.header(name, value.expose_secret());
        }
        let response = request.body(body).send().await.map_err(|e| transport(&e))?;
        classify(&response)
    }
}
