//! Stripe's events API (`GET /v1/events`), for the missed-webhook check: newest first,
//! `created[gte]`, pages by `starting_after`, `types[i]` for the types plumbline reads, and
//! `delivery_success=false` for the events Stripe could not deliver. Given the webhook endpoint
//! (`GET /v1/webhook_endpoints/{id}`), only the types among those that it is sent.

use super::provider_api::{EndpointShape, EventsApi, Provider, page_of};
use crate::contract::Timestamp;
use crate::ports::{ProviderError, ProviderEvents, ProviderPage, Subscription};
use crate::sources::SourceKind;

/// A webhook endpoint (`GET /v1/webhook_endpoints/{id}`): `enabled_events` (`*` for all), and
/// `status`, which Stripe sets to `disabled` after days of failed deliveries.
const ENDPOINT: EndpointShape = EndpointShape {
    kind: SourceKind::Stripe,
    path: "/v1/webhook_endpoints/",
    subscribed: |body| {
        body["enabled_events"].as_array().map(|events| {
            events
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect()
        })
    },
    switched_off: |body| body["status"].as_str() == Some("disabled"),
    name: "webhook endpoint",
    off: "is disabled: Stripe sends it no webhooks",
};

/// Stripe's events API.
#[derive(Debug)]
pub struct Stripe;

impl Provider for Stripe {
    const DEFAULT_BASE: &'static str = "https://api.stripe.com";
}

pub type StripeEvents = EventsApi<Stripe>;

impl ProviderEvents for StripeEvents {
    async fn subscription(&self) -> Result<Subscription, ProviderError> {
        self.api.subscription(&ENDPOINT).await
    }

    async fn list(
        &self,
        since: Timestamp,
        starting_after: Option<&str>,
        page_size: usize,
        failed_only: bool,
        types: &[&str],
    ) -> Result<ProviderPage, ProviderError> {
        // Only the types plumbline reads: any other was never a webhook it acts on.
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
        Ok(page_of(data, "id", has_more))
    }
}
