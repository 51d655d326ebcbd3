//! The providers' event APIs the missed-webhook check walks (Stripe's, Paddle's), as one type
//! for the reconciler, and the HTTP they share: a GET with the source's read-only API key as a
//! bearer token, a 429 retried with exponential backoff (or after the `Retry-After` the provider
//! asks for, up to 10 s) before the run gives up on the provider, and errors named by status
//! only (a body could echo the key back).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::paddle_api::PaddleEvents;
use super::stripe_api::StripeEvents;
use crate::config::{Config, ConfigError, ConfigProblem, SecretResolver};
use crate::contract::{SourceName, Timestamp};
use crate::ports::{ProviderError, ProviderEvents, ProviderPage, Subscription};
use crate::sources::SourceKind;

const RETRIES: u32 = 4;

/// The longest `Retry-After` a run waits out; past it, the run leaves the provider to the next
/// run rather than spend its budget asleep.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(10);

/// One provider's API: where it is, the key, the first backoff after a 429 (it doubles), and
/// the webhook endpoint (the provider's id) that sends to the source, if named.
#[derive(Debug)]
pub(super) struct Api {
    client: reqwest::Client,
    base: String,
    key: SecretString,
    pub(super) backoff: Duration,
    pub(super) endpoint: Option<String>,
}

impl Api {
    pub(super) fn new(
        base: Option<&str>,
        default: &str,
        key: SecretString,
    ) -> Result<Self, String> {
        let client = crate::adapters::tls::http_client()
            .timeout(Duration::from_secs(20))
            .user_agent(concat!("plumbline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            base: base.unwrap_or(default).trim_end_matches('/').to_owned(),
            key,
            backoff: Duration::from_millis(500),
            endpoint: None,
        })
    }

    /// The JSON at `path` with `query`.
    pub(super) async fn get_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, ProviderError> {
        let mut wait = self.backoff;
        for attempt in 0..=RETRIES {
            let response = self
                .client
                .get(format!("{}{path}", self.base))
                .bearer_auth(self.key.expose_secret())
                .query(query)
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
                let asked = super::retry_after(&response);
                if attempt == RETRIES || asked.is_some_and(|asked| asked > LONGEST_RETRY_AFTER) {
                    break;
                }
                tokio::time::sleep(wait.max(asked.unwrap_or_default())).await;
                wait *= 2;
                continue;
            }
            if status >= 500 {
                return Err(ProviderError::Unavailable(format!("HTTP {status}")));
            }
            if status >= 400 {
                return Err(ProviderError::Refused(format!("HTTP {status}")));
            }
            return response
                .json()
                .await
                .map_err(|e| ProviderError::Unavailable(format!("unreadable list: {e}")));
        }
        Err(ProviderError::RateLimited)
    }
}

/// How a provider describes a webhook endpoint: where it is read (`path` and the id), where
/// its subscribed types are, whether it is switched off, and how it is named when it is.
pub(super) struct EndpointShape {
    pub(super) kind: SourceKind,
    pub(super) path: &'static str,
    pub(super) subscribed: fn(&Value) -> Option<Vec<&str>>,
    pub(super) switched_off: fn(&Value) -> bool,
    pub(super) name: &'static str,
    pub(super) off: &'static str,
}

impl Api {
    /// The types of `shape.kind` plumbline reads that the named endpoint is sent; all of them
    /// when none is named.
    pub(super) async fn subscription(
        &self,
        shape: &EndpointShape,
    ) -> Result<Subscription, ProviderError> {
        let read = shape.kind.read_types();
        let Some(id) = &self.endpoint else {
            return Ok(Subscription {
                types: read.to_vec(),
                warning: None,
            });
        };
        let body = self.get_json(&format!("{}{id}", shape.path), &[]).await?;
        let subscribed = (shape.subscribed)(&body)
            .ok_or_else(|| ProviderError::Unavailable(format!("unreadable {}", shape.name)))?;
        let warning =
            (shape.switched_off)(&body).then(|| format!("{} {id} {}", shape.name, shape.off));
        Ok(Subscription {
            types: sent_types(read, &subscribed),
            warning,
        })
    }
}

/// The types of `read` an endpoint subscribed to `subscribed` is sent (Stripe's `*` is all of
/// them), in `read`'s order.
pub(super) fn sent_types(read: &[&'static str], subscribed: &[&str]) -> Vec<&'static str> {
    if subscribed.contains(&"*") {
        return read.to_vec();
    }
    read.iter()
        .copied()
        .filter(|t| subscribed.contains(t))
        .collect()
}

/// A page of a provider's list: each listed event's JSON, and the id (`id_field`) of the last,
/// where the next page starts.
pub(super) fn page_of(listed: &[Value], id_field: &str, has_more: bool) -> ProviderPage {
    ProviderPage {
        events: listed
            .iter()
            .map(|e| serde_json::to_vec(e).expect("JSON serializes"))
            .collect(),
        last_id: listed
            .last()
            .and_then(|e| e[id_field].as_str())
            .map(str::to_owned),
        has_more,
    }
}

/// A provider whose events API the missed-webhook check reads.
pub trait Provider {
    /// Where its API is unless `sources.<name>.api_base` says otherwise.
    const DEFAULT_BASE: &'static str;
}

/// One provider's events API client ([`StripeEvents`], [`PaddleEvents`]): what they share is
/// built here once; how each lists its events is its own module's.
#[derive(Debug)]
pub struct EventsApi<P> {
    pub(super) api: Api,
    provider: PhantomData<P>,
}

impl<P: Provider> EventsApi<P> {
    pub fn new(base: Option<&str>, key: SecretString) -> Result<Self, String> {
        Api::new(base, P::DEFAULT_BASE, key).map(|api| Self {
            api,
            provider: PhantomData,
        })
    }

    /// The provider's id of the webhook endpoint that sends to the source (a Stripe webhook
    /// endpoint `we_…`, a Paddle notification destination `ntfset_…`): the list is held to the
    /// types it is sent.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: Option<String>) -> Self {
        self.api.endpoint = endpoint;
        self
    }

    /// A shorter first backoff after a 429, for tests against a local server.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.api.backoff = backoff;
        self
    }
}

/// The event API of a source the reconciler walks.
#[derive(Debug)]
pub enum ProviderApi {
    Stripe(StripeEvents),
    Paddle(PaddleEvents),
}

impl ProviderEvents for ProviderApi {
    async fn subscription(&self) -> Result<Subscription, ProviderError> {
        match self {
            Self::Stripe(api) => api.subscription().await,
            Self::Paddle(api) => api.subscription().await,
        }
    }

    async fn list(
        &self,
        since: Timestamp,
        starting_after: Option<&str>,
        page_size: usize,
        failed_only: bool,
        types: &[&str],
    ) -> Result<ProviderPage, ProviderError> {
        match self {
            Self::Stripe(api) => {
                api.list(since, starting_after, page_size, failed_only, types)
                    .await
            }
            Self::Paddle(api) => {
                api.list(since, starting_after, page_size, failed_only, types)
                    .await
            }
        }
    }
}

/// The event APIs of the configured sources that have one (Stripe, Paddle) and an `api_key`.
pub fn from_config(
    config: &Config,
    resolver: &impl SecretResolver,
) -> Result<BTreeMap<SourceName, (SourceKind, ProviderApi)>, ConfigError> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, source) in &config.sources {
        let Some(reference) = &source.api_key else {
            continue;
        };
        let (base, endpoint) = (source.api_base.as_deref(), source.endpoint_id.clone());
        let api = match source.kind {
            SourceKind::Stripe => resolver
                .resolve(reference)
                .and_then(|key| StripeEvents::new(base, key))
                .map(|api| ProviderApi::Stripe(api.with_endpoint(endpoint))),
            SourceKind::Paddle => resolver
                .resolve(reference)
                .and_then(|key| PaddleEvents::new(base, key))
                .map(|api| ProviderApi::Paddle(api.with_endpoint(endpoint))),
            _ => continue,
        };
        match api {
            Ok(api) => {
                out.insert(name.clone(), (source.kind, api));
            }
            Err(reason) => problems.push(ConfigProblem {
                key: format!("sources.{name}.api_key"),
                reason,
                line: None,
            }),
        }
    }
    ConfigError::unless_any(problems, out)
}
