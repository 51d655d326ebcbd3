//! Stripe's events API (`GET /v1/events`), for the missed-webhook check: newest first,
//! `created[gte]`, pages by `starting_after`, `types[i]` for the types plumbline reads, and
//! `delivery_success=false` for the events Stripe could not deliver. Given the webhook endpoint
//! (`GET /v1/webhook_endpoints/{id}`), only the types among those that it is sent.

use std::time::Duration;

use secrecy::SecretString;

use super::provider_api::{Api, Listed, page_of, sent_types};
use crate::contract::Timestamp;
use crate::ports::{ProviderError, ProviderEvents, ProviderPage};
use crate::sources::SourceKind;

#[derive(Debug)]
pub struct StripeEvents {
    api: Api,
    endpoint: Option<String>,
}

impl StripeEvents {
    pub fn new(base: Option<&str>, key: SecretString) -> Result<Self, String> {
        Api::new(base, "https://api.stripe.com", key).map(|api| Self {
            api,
            endpoint: None,
        })
    }

    /// The webhook endpoint (`we_…`) whose subscribed types the list is held to.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// The types to list: those plumbline reads, and of them only the ones the endpoint is
    /// sent when it is named. Read on each page: a subscription changed meanwhile counts from
    /// the next page on. A disabled endpoint (Stripe disables one after days of failed
    /// deliveries) is sent nothing, and said.
    async fn listed_types(&self) -> Result<Listed, ProviderError> {
        let read = SourceKind::Stripe.read_types();
        let Some(id) = &self.endpoint else {
            return Ok(Listed::all(SourceKind::Stripe));
        };
        let body = self
            .api
            .get_json(&format!("/v1/webhook_endpoints/{id}"), &[])
            .await?;
        let enabled: Vec<&str> = body["enabled_events"]
            .as_array()
            .ok_or_else(|| ProviderError::Unavailable("unreadable webhook endpoint".into()))?
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        let warning = (body["status"].as_str() == Some("disabled"))
            .then(|| format!("webhook endpoint {id} is disabled: Stripe sends it no webhooks"));
        Ok(Listed {
            types: sent_types(read, &enabled),
            warning,
        })
    }

    /// A shorter first backoff after a 429, for tests against a local server.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.api.backoff = backoff;
        self
    }
}

impl ProviderEvents for StripeEvents {
    async fn list(
        &self,
        since: Timestamp,
        starting_after: Option<&str>,
        page_size: usize,
        failed_only: bool,
    ) -> Result<ProviderPage, ProviderError> {
        // Only the types plumbline reads: any other was never a webhook it acts on.
        let listed = self.listed_types().await?;
        // No type to ask for: an empty `types` would list every type.
        if listed.types.is_empty() {
            return Ok(listed.empty_page());
        }
        let types = &listed.types;
        let type_keys: Vec<String> = (0..types.len()).map(|i| format!("types[{i}]")).collect();
        let mut query = vec![
            ("created[gte]", since.unix().to_string()),
            ("limit", page_size.clamp(1, 100).to_string()),
        ];
        query.extend(
            type_keys
                .iter()
                .map(String::as_str)
                .zip(types.iter().map(|t| (*t).to_owned())),
        );
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        if failed_only {
            query.push(("delivery_success", "false".to_owned()));
        }
        let body = self.api.get_json("/v1/events", &query).await?;
        let data = body["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let has_more = body["has_more"].as_bool().unwrap_or(false);
        Ok(ProviderPage {
            warning: listed.warning,
            ..page_of(data, "id", has_more)
        })
    }
}
