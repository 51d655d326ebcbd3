//! Target adapters over HTTP (reqwest with rustls): a generic signed webhook, and HubSpot.

mod http;
mod hubspot;
mod hubspot_read;

use std::time::Duration;

pub use http::HttpTarget;
pub use hubspot::{HubspotTarget, Upsert, upsert_for as hubspot_upsert};

use crate::config::{Config, ConfigError, ConfigProblem, SecretResolver, TargetConfig, TargetKind};
use crate::delivery::Document;
use crate::ports::{Target, TargetError};

/// A target as configured.
#[derive(Debug)]
pub enum ConfiguredTarget {
    Http(HttpTarget),
    Hubspot(HubspotTarget),
}

impl Target for ConfiguredTarget {
    async fn deliver(&self, document: &Document, idempotency_key: &str) -> Result<(), TargetError> {
        match self {
            Self::Http(t) => t.deliver(document, idempotency_key).await,
            Self::Hubspot(t) => t.deliver(document, idempotency_key).await,
        }
    }
}

/// The HubSpot targets, for reconciliation's read-back, by target name.
pub fn crm_targets(
    config: &Config,
    resolver: &impl SecretResolver,
) -> Result<std::collections::BTreeMap<String, HubspotTarget>, ConfigError> {
    let mut problems = Vec::new();
    let mut out = std::collections::BTreeMap::new();
    for (name, target) in &config.targets {
        if target.kind != TargetKind::Hubspot {
            continue;
        }
        match build(target, resolver) {
            Ok(ConfiguredTarget::Hubspot(t)) => {
                out.insert(name.clone(), t);
            }
            Ok(ConfiguredTarget::Http(_)) => {}
            Err((key, reason)) => problems.push(ConfigProblem {
                key: format!("targets.{name}.{key}"),
                reason,
                line: None,
            }),
        }
    }
    ConfigError::unless_any(problems, out)
}

/// Builds every configured target, resolving its secrets; fails with the key of each secret
/// that cannot be resolved.
pub fn build_all(
    config: &Config,
    resolver: &impl SecretResolver,
) -> Result<std::collections::BTreeMap<String, ConfiguredTarget>, ConfigError> {
    let mut problems = Vec::new();
    let mut out = std::collections::BTreeMap::new();
    for (name, target) in &config.targets {
        match build(target, resolver) {
            Ok(t) => {
                out.insert(name.clone(), t);
            }
            Err((key, reason)) => problems.push(ConfigProblem {
                key: format!("targets.{name}.{key}"),
                reason,
                line: None,
            }),
        }
    }
    ConfigError::unless_any(problems, out)
}

pub fn build(
    target: &TargetConfig,
    resolver: &impl SecretResolver,
) -> Result<ConfiguredTarget, (String, String)> {
    let client = crate::adapters::tls::http_client()
        .timeout(target.timeout)
        .connect_timeout(Duration::from_secs(5).min(target.timeout))
        .user_agent(concat!("plumbline/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ("(client)".to_owned(), e.to_string()))?;
    match target.kind {
        TargetKind::Http => HttpTarget::new(client, target, resolver).map(ConfiguredTarget::Http),
        TargetKind::Hubspot => {
            HubspotTarget::new(client, target, resolver).map(ConfiguredTarget::Hubspot)
        }
        TargetKind::Inbox => Err((
            "kind".to_owned(),
            "inbox targets exist only in plumbline dev".to_owned(),
        )),
    }
}

/// How an HTTP answer classifies: 2xx delivered; 408, 425, 429 and 5xx worth retrying (with
/// `Retry-After` in seconds when given); any other status refused for good. Only the status is
/// kept as the reason: a target's error body may echo personal data.
fn classify(response: &reqwest::Response) -> Result<(), TargetError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let reason = format!("HTTP {}", status.as_u16());
    let retry_after = super::retry_after(response);
    if matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error() {
        Err(TargetError::Retryable {
            reason,
            retry_after,
        })
    } else {
        Err(TargetError::Permanent { reason })
    }
}

/// A transport failure (timeout, refused connection, reset) is always worth retrying.
fn transport(err: &reqwest::Error) -> TargetError {
    let reason = if err.is_timeout() {
        "timeout".to_owned()
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else {
        "transport error".to_owned()
    };
    TargetError::Retryable {
        reason,
        retry_after: None,
    }
}
