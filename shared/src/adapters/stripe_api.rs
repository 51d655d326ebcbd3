//! Stripe's events API (`GET /v1/events`), for the missed-webhook check: newest first,
//! `created[gte]`, pages by `starting_after`, `delivery_success=false` for the events Stripe
//! could not deliver. A 429 is retried with exponential backoff before giving up for this run.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::contract::Timestamp;
use crate::ports::{ProviderError, ProviderEvents, ProviderPage};

const RETRIES: u32 = 4;

#[derive(Debug)]
pub struct StripeEvents {
    client: reqwest::Client,
    base: String,
    key: SecretString,
    /// The first backoff after a 429; it doubles each time.
    backoff: Duration,
}

impl StripeEvents {
    pub fn new(base: Option<&str>, key: SecretString) -> Result<Self, String> {
        let client = crate::adapters::tls::http_client()
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("plumbline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        let base = base
            .unwrap_or("https://api.stripe.com")
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            client,
            base,
            key,
            backoff: Duration::from_millis(500),
        })
    }

    /// A shorter first backoff, for tests against a local server.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
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
        let mut query = vec![
            ("created[gte]", since.unix().to_string()),
            ("limit", page_size.clamp(1, 100).to_string()),
        ];
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        if failed_only {
            query.push(("delivery_success", "false".to_owned()));
        }
        let mut wait = self.backoff;
        for attempt in 0..=RETRIES {
            let response = self
                .client
                .get(format!("{}/v1/events", self.base))
                .bearer_auth(self.key.expose_secret())
                .query(&query)
                .send()
                .await
                .map_err(|e| {
                    ProviderError::Unavailable(if e.is_timeout() {
                        "timeout".into()
                    } else {
                        "connection failed".into()
                    })
                })?;
            let status = response.status().as_u16();
            if status == 429 {
                if attempt == RETRIES {
                    return Err(ProviderError::RateLimited);
                }
                tokio::time::sleep(wait).await;
                wait *= 2;
                continue;
            }
            if status >= 500 {
                return Err(ProviderError::Unavailable(format!("HTTP {status}")));
            }
            if status >= 400 {
                return Err(ProviderError::Refused(format!("HTTP {status}")));
            }
            let body: Value = response
                .json()
                .await
                .map_err(|e| ProviderError::Unavailable(format!("unreadable list: {e}")))?;
            let data = body["data"].as_array().cloned().unwrap_or_default();
            let last_id = data
                .last()
                .and_then(|e| e["id"].as_str())
                .map(str::to_owned);
            let events = data
                .iter()
                .map(|e| serde_json::to_vec(e).expect("JSON serializes"))
                .collect();
            return Ok(ProviderPage {
                events,
                last_id,
                has_more: body["has_more"].as_bool().unwrap_or(false),
            });
        }
        Err(ProviderError::RateLimited)
    }
}

/// The event APIs of the configured sources that have one and an `api_key`: Stripe's today.
pub fn from_config(
    config: &crate::config::Config,
    resolver: &impl crate::config::SecretResolver,
) -> Result<
    std::collections::BTreeMap<
        crate::contract::SourceName,
        (crate::sources::SourceKind, StripeEvents),
    >,
    crate::config::ConfigError,
> {
    let mut out = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for (name, source) in &config.sources {
        let (crate::sources::SourceKind::Stripe, Some(reference)) = (source.kind, &source.api_key)
        else {
            continue;
        };
        let key = format!("sources.{name}.api_key");
        match resolver
            .resolve(reference)
            .and_then(|secret| StripeEvents::new(source.api_base.as_deref(), secret))
        {
            Ok(api) => {
                out.insert(name.clone(), (source.kind, api));
            }
            Err(reason) => problems.push(crate::config::ConfigProblem {
                key,
                reason,
                line: None,
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(crate::config::ConfigError { problems })
    }
}
