//! The deployment's TOML configuration: parsed once, validated whole, every problem reported
//! with the key it is about (and the line, where the parser knows it).
//!
//! Secrets are references (`env:NAME`), resolved by the component that needs them: the ingress
//! resolves only the source secrets, so it never holds a target's credentials.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{SecretSlice, SecretString};
use serde::Deserialize;

use crate::contract::SourceName;
use crate::sources::{SourceKind, Verifier};

/// One problem with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the key, e.g. `sources.stripe.secrets[0]`.
    pub key: String,
    pub reason: String,
    pub line: Option<usize>,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration, so one run of `config check` shows them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        write!(f, "invalid configuration: {}", lines.join("; "))
    }
}

impl ConfigError {
    fn one(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            problems: vec![ConfigProblem {
                key: key.into(),
                reason: reason.into(),
                line: None,
            }],
        }
    }
}

/// Where a secret's value comes from. Only references live in the file, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
}

impl SecretRef {
    fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("env", name)) if is_env_name(name) => Ok(Self::Env(name.to_owned())),
            Some(("env", _)) => {
                Err("env: must be followed by a variable name (A-Z, 0-9, _)".into())
            }
            _ => Err(
                "expected a reference such as env:NAME; secret values never go in the file".into(),
            ),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
        }
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Resolves secret references to values.
pub trait SecretResolver {
    fn resolve(&self, reference: &SecretRef) -> Result<SecretString, String>;
}

/// Reads `env:` references from the process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSecrets;

impl SecretResolver for EnvSecrets {
    fn resolve(&self, reference: &SecretRef) -> Result<SecretString, String> {
        match reference {
            SecretRef::Env(name) => std::env::var(name)
                .map(SecretString::from)
                .map_err(|_| format!("environment variable {name} is not set")),
        }
    }
}

/// Resolves from a fixed map; for tests and for the local stack's demo secrets.
#[derive(Debug, Clone, Default)]
pub struct MapSecrets(pub BTreeMap<String, String>);

impl SecretResolver for MapSecrets {
    fn resolve(&self, reference: &SecretRef) -> Result<SecretString, String> {
        let key = reference.to_string();
        self.0
            .get(&key)
            .map(|v| SecretString::from(v.clone()))
            .ok_or_else(|| format!("{key} is not set"))
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: SourceName,
    pub kind: SourceKind,
    pub secrets: Vec<SecretRef>,
    pub tolerance_secs: i64,
    pub api_key: Option<SecretRef>,
    pub api_base: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Http,
    Hubspot,
    /// Records deliveries in the local database; only `plumbline dev` has it.
    Inbox,
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub kind: TargetKind,
    pub url: Option<String>,
    pub secret: Option<SecretRef>,
    pub token: Option<SecretRef>,
    pub timeout: std::time::Duration,
    /// Extra request headers: literal values, or secret references.
    pub headers: BTreeMap<String, HeaderValue>,
    /// Canonical field → target field; empty means "send the whole document".
    pub fields: Vec<crate::delivery::mapping::FieldMapping>,
    pub hubspot: HubspotSettings,
}

/// A configured header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Literal(String),
    Secret(SecretRef),
}

/// HubSpot specifics; defaults suit a portal with a `plumbline_id` unique deal property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubspotSettings {
    pub base_url: String,
    pub pipeline: String,
    /// Ledger state → deal stage id.
    pub stages: BTreeMap<String, String>,
    /// The unique contact property contacts are upserted by.
    pub contact_id_property: String,
    /// The unique deal property deals are upserted by.
    pub deal_id_property: String,
}

impl Default for HubspotSettings {
    fn default() -> Self {
        let stages = [
            ("created", "appointmentscheduled"),
            ("pending", "appointmentscheduled"),
            ("processing", "contractsent"),
            ("authorized", "contractsent"),
            ("paid", "closedwon"),
            ("succeeded", "closedwon"),
            ("fulfilled", "closedwon"),
            ("failed", "closedlost"),
            ("canceled", "closedlost"),
            ("cancelled", "closedlost"),
            ("refunded", "closedlost"),
            ("dispute_lost", "closedlost"),
        ];
        Self {
            base_url: "https://api.hubapi.com".into(),
            pipeline: "default".into(),
            stages: stages
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            contact_id_property: "email".into(),
            deal_id_property: "plumbline_id".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub events: Vec<String>,
    pub targets: Vec<String>,
    /// Dotted path into the envelope → required value (all must match).
    pub filter: BTreeMap<String, String>,
}

/// Retry, circuit breaker and lease settings of the delivery worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    pub backoff_base_secs: u64,
    pub backoff_cap_secs: u64,
    /// A target's `Retry-After` is honoured up to this.
    pub retry_after_cap_secs: u64,
    /// Consecutive retryable failures that open a target's circuit.
    pub breaker_threshold: u32,
    pub breaker_cooldown_secs: u64,
    /// How long one worker owns a target call; longer than any target timeout.
    pub lease_secs: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            backoff_base_secs: 2,
            backoff_cap_secs: 900,
            retry_after_cap_secs: 3600,
            breaker_threshold: 5,
            breaker_cooldown_secs: 30,
            lease_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerSettings {
    /// A second submission of the same form by the same person within this window is merged.
    pub lead_dedup_window_secs: i64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            lead_dedup_window_secs: 600,
        }
    }
}

/// Limits and horizons of the ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressSettings {
    pub max_body_bytes: usize,
    /// A duplicate of a claim older than this, still untouched by delivery, re-enqueues it.
    pub duplicate_horizon_secs: i64,
    /// How long event records are kept (the table's TTL attribute).
    pub retention_days: i64,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            duplicate_horizon_secs: 300,
            retention_days: 90,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub sources: BTreeMap<SourceName, SourceConfig>,
    pub targets: BTreeMap<String, TargetConfig>,
    pub routes: Vec<Route>,
    pub ownership: BTreeMap<String, String>,
    pub thresholds: BTreeMap<String, u64>,
    pub ingress: IngressSettings,
    pub delivery: DeliverySettings,
    pub ledger: LedgerSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    ownership: BTreeMap<String, String>,
    #[serde(default)]
    reconcile: RawReconcile,
    #[serde(default)]
    ingress: RawIngress,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    ledger: RawLedger,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    backoff_base_secs: Option<u64>,
    backoff_cap_secs: Option<u64>,
    retry_after_cap_secs: Option<u64>,
    breaker_threshold: Option<u32>,
    breaker_cooldown_secs: Option<u64>,
    lease_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    lead_dedup_window_secs: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: SourceKind,
    secrets: Vec<String>,
    tolerance_secs: Option<i64>,
    api_key: Option<String>,
    api_base: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: TargetKind,
    url: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    fields: Vec<crate::delivery::mapping::FieldMapping>,
    base_url: Option<String>,
    pipeline: Option<String>,
    #[serde(default)]
    stages: BTreeMap<String, String>,
    contact_id_property: Option<String>,
    deal_id_property: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    events: Vec<String>,
    targets: Vec<String>,
    #[serde(default, rename = "where")]
    filter: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReconcile {
    #[serde(default)]
    thresholds: BTreeMap<String, u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    max_body_bytes: Option<usize>,
    duplicate_horizon_secs: Option<i64>,
    retention_days: Option<i64>,
}

const ENTITY_KINDS: [&str; 5] = ["payment", "order", "customer", "lead", "subscription"];

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one("(file)", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            ConfigError {
                problems: vec![ConfigProblem {
                    key: "(syntax)".into(),
                    reason: e.message().trim().to_owned(),
                    line,
                }],
            }
        })?;
        let mut problems = Problems {
            text,
            list: Vec::new(),
        };
        let sources = parse_sources(raw.sources, &mut problems);
        let targets = parse_targets(raw.targets, &mut problems);
        let routes = parse_routes(raw.routes, &targets, &mut problems);
        check_ownership(&raw.ownership, &sources, &targets, &mut problems);
        let ingress = parse_ingress(&raw.ingress, &mut problems);
        let delivery = parse_delivery(&raw.delivery, &mut problems);
        let ledger = LedgerSettings {
            lead_dedup_window_secs: raw
                .ledger
                .lead_dedup_window_secs
                .unwrap_or(LedgerSettings::default().lead_dedup_window_secs),
        };
        if ledger.lead_dedup_window_secs < 0 {
            problems.add(
                "ledger.lead_dedup_window_secs".into(),
                "must not be negative",
            );
        }
        if !problems.list.is_empty() {
            return Err(ConfigError {
                problems: problems.list,
            });
        }
        Ok(Self {
            sources,
            targets,
            routes,
            ownership: raw.ownership,
            thresholds: raw.reconcile.thresholds,
            ingress,
            delivery,
            ledger,
        })
    }

    /// Resolves every source's secrets into verifiers; fails with the key of each secret that
    /// cannot be resolved or decoded.
    pub fn verifiers(
        &self,
        resolver: &impl SecretResolver,
    ) -> Result<BTreeMap<SourceName, Verifier>, ConfigError> {
        use secrecy::ExposeSecret;
        let mut problems = Vec::new();
        let mut out = BTreeMap::new();
        for (name, source) in &self.sources {
            let mut keys = Vec::new();
            for (i, reference) in source.secrets.iter().enumerate() {
                let key = format!("sources.{name}.secrets[{i}]");
                match resolver.resolve(reference) {
                    Ok(value) => match source.kind.decode_secret(value.expose_secret()) {
                        Ok(bytes) => keys.push(SecretSlice::from(bytes)),
                        Err(reason) => problems.push(ConfigProblem {
                            key,
                            reason: reason.into(),
                            line: None,
                        }),
                    },
                    Err(reason) => problems.push(ConfigProblem {
                        key,
                        reason,
                        line: None,
                    }),
                }
            }
            out.insert(
                name.clone(),
                Verifier {
                    kind: source.kind,
                    keys,
                    tolerance_secs: source.tolerance_secs,
                },
            );
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// Collects problems, each located in the text where possible.
struct Problems<'a> {
    text: &'a str,
    list: Vec<ConfigProblem>,
}

impl Problems<'_> {
    fn add(&mut self, key: String, reason: impl Into<String>) {
        let line = line_of(self.text, &key);
        self.list.push(ConfigProblem {
            key,
            reason: reason.into(),
            line,
        });
    }

    fn reference(&mut self, key: String, value: Option<&str>) -> Option<SecretRef> {
        match value.map(SecretRef::parse).transpose() {
            Ok(r) => r,
            Err(reason) => {
                self.add(key, reason);
                None
            }
        }
    }
}

fn parse_sources(
    raw: BTreeMap<String, RawSource>,
    problems: &mut Problems<'_>,
) -> BTreeMap<SourceName, SourceConfig> {
    let mut sources = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("sources.{name}");
        let Ok(source_name) = SourceName::try_from(name.as_str()) else {
            problems.add(key, "a source name is its route: use a-z, 0-9, '-' or '_'");
            continue;
        };
        if raw.secrets.is_empty() {
            problems.add(format!("{key}.secrets"), "at least one secret is required");
        }
        let secrets = raw
            .secrets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| problems.reference(format!("{key}.secrets[{i}]"), Some(s)))
            .collect();
        let tolerance_secs = raw.tolerance_secs.unwrap_or(300);
        if !(1..=86_400).contains(&tolerance_secs) {
            problems.add(
                format!("{key}.tolerance_secs"),
                "must be between 1 and 86400",
            );
        }
        if raw.tolerance_secs.is_some() && !raw.kind.has_timestamp() {
            problems.add(
                format!("{key}.tolerance_secs"),
                format!("{} signs no timestamp", raw.kind),
            );
        }
        let api_key = problems.reference(format!("{key}.api_key"), raw.api_key.as_deref());
        if let Some(base) = &raw.api_base
            && !(base.starts_with("https://") || base.starts_with("http://"))
        {
            problems.add(format!("{key}.api_base"), "must be an http(s) URL");
        }
        let config = SourceConfig {
            name: source_name.clone(),
            kind: raw.kind,
            secrets,
            tolerance_secs,
            api_key,
            api_base: raw.api_base,
        };
        sources.insert(source_name, config);
    }
    sources
}

fn parse_targets(
    raw: BTreeMap<String, RawTarget>,
    problems: &mut Problems<'_>,
) -> BTreeMap<String, TargetConfig> {
    let mut targets = BTreeMap::new();
    for (name, raw) in raw {
        let key = format!("targets.{name}");
        let secret = problems.reference(format!("{key}.secret"), raw.secret.as_deref());
        let token = problems.reference(format!("{key}.token"), raw.token.as_deref());
        match (raw.kind, &raw.url) {
            (TargetKind::Http, None) => {
                problems.add(format!("{key}.url"), "an http target needs a url");
            }
            (_, Some(url)) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                problems.add(format!("{key}.url"), "must be an http(s) URL");
            }
            _ => {}
        }
        if raw.kind == TargetKind::Hubspot && raw.token.is_none() {
            problems.add(
                format!("{key}.token"),
                "a hubspot target needs a token reference",
            );
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(10_000);
        if !(1..=300_000).contains(&timeout_ms) {
            problems.add(format!("{key}.timeout_ms"), "must be between 1 and 300000");
        }
        let mut headers = BTreeMap::new();
        for (header, value) in raw.headers {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.add(format!("{key}.headers.{header}"), "not a valid header name");
            }
            let value = if value.starts_with("env:") {
                problems
                    .reference(format!("{key}.headers.{header}"), Some(&value))
                    .map(HeaderValue::Secret)
            } else {
                Some(HeaderValue::Literal(value))
            };
            if let Some(value) = value {
                headers.insert(header, value);
            }
        }
        for (i, field) in raw.fields.iter().enumerate() {
            if field.to.is_empty() || field.from.is_empty() {
                problems.add(format!("{key}.fields[{i}]"), "needs both `from` and `to`");
            }
        }
        let defaults = HubspotSettings::default();
        let mut stages = defaults.stages;
        stages.extend(raw.stages);
        let hubspot = HubspotSettings {
            base_url: raw.base_url.unwrap_or(defaults.base_url),
            pipeline: raw.pipeline.unwrap_or(defaults.pipeline),
            stages,
            contact_id_property: raw
                .contact_id_property
                .unwrap_or(defaults.contact_id_property),
            deal_id_property: raw.deal_id_property.unwrap_or(defaults.deal_id_property),
        };
        let timeout = std::time::Duration::from_millis(timeout_ms);
        let config = TargetConfig {
            name: name.clone(),
            kind: raw.kind,
            url: raw.url,
            secret,
            token,
            timeout,
            headers,
            fields: raw.fields,
            hubspot,
        };
        targets.insert(name, config);
    }
    targets
}

fn parse_delivery(raw: &RawDelivery, problems: &mut Problems<'_>) -> DeliverySettings {
    let d = DeliverySettings::default();
    let settings = DeliverySettings {
        backoff_base_secs: raw.backoff_base_secs.unwrap_or(d.backoff_base_secs),
        backoff_cap_secs: raw.backoff_cap_secs.unwrap_or(d.backoff_cap_secs),
        retry_after_cap_secs: raw.retry_after_cap_secs.unwrap_or(d.retry_after_cap_secs),
        breaker_threshold: raw.breaker_threshold.unwrap_or(d.breaker_threshold),
        breaker_cooldown_secs: raw.breaker_cooldown_secs.unwrap_or(d.breaker_cooldown_secs),
        lease_secs: raw.lease_secs.unwrap_or(d.lease_secs),
    };
    // SQS caps a message's visibility at 12 hours.
    let max = 43_200;
    for (name, value) in [
        ("backoff_base_secs", settings.backoff_base_secs),
        ("backoff_cap_secs", settings.backoff_cap_secs),
        ("retry_after_cap_secs", settings.retry_after_cap_secs),
        ("breaker_cooldown_secs", settings.breaker_cooldown_secs),
        ("lease_secs", settings.lease_secs),
    ] {
        if !(1..=max).contains(&value) {
            problems.add(
                format!("delivery.{name}"),
                format!("must be between 1 and {max}"),
            );
        }
    }
    if settings.breaker_threshold == 0 {
        problems.add("delivery.breaker_threshold".into(), "must be at least 1");
    }
    settings
}

fn parse_routes(
    raw: Vec<RawRoute>,
    targets: &BTreeMap<String, TargetConfig>,
    problems: &mut Problems<'_>,
) -> Vec<Route> {
    let mut routes = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        for (j, pattern) in raw.events.iter().enumerate() {
            if !is_event_pattern(pattern) {
                problems.add(
                    format!("routes[{i}].events[{j}]"),
                    format!("{pattern:?} is not a type or glob such as payment.*"),
                );
            }
        }
        for (j, target) in raw.targets.iter().enumerate() {
            if !targets.contains_key(target) {
                problems.add(
                    format!("routes[{i}].targets[{j}]"),
                    format!("no target named {target:?}"),
                );
            }
        }
        routes.push(Route {
            events: raw.events,
            targets: raw.targets,
            filter: raw.filter,
        });
    }
    routes
}

fn check_ownership(
    ownership: &BTreeMap<String, String>,
    sources: &BTreeMap<SourceName, SourceConfig>,
    targets: &BTreeMap<String, TargetConfig>,
    problems: &mut Problems<'_>,
) {
    for (field, owner) in ownership {
        let key = format!("ownership.{field:?}");
        let entity_ok = field
            .split_once('.')
            .is_some_and(|(kind, f)| ENTITY_KINDS.contains(&kind) && !f.is_empty());
        if !entity_ok {
            problems.add(
                key.clone(),
                format!(
                    "expected entity.field with entity one of {}",
                    ENTITY_KINDS.join(", ")
                ),
            );
        }
        let known = SourceName::try_from(owner.as_str()).is_ok_and(|s| sources.contains_key(&s))
            || targets.contains_key(owner);
        if !known {
            problems.add(key, format!("{owner:?} is neither a source nor a target"));
        }
    }
}

fn parse_ingress(raw: &RawIngress, problems: &mut Problems<'_>) -> IngressSettings {
    let defaults = IngressSettings::default();
    let ingress = IngressSettings {
        max_body_bytes: raw.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        duplicate_horizon_secs: raw
            .duplicate_horizon_secs
            .unwrap_or(defaults.duplicate_horizon_secs),
        retention_days: raw.retention_days.unwrap_or(defaults.retention_days),
    };
    if !(1..=6 * 1024 * 1024).contains(&ingress.max_body_bytes) {
        problems.add(
            "ingress.max_body_bytes".into(),
            "must be between 1 and 6291456 (Lambda's payload limit)",
        );
    }
    if ingress.duplicate_horizon_secs < 1 {
        problems.add("ingress.duplicate_horizon_secs".into(), "must be positive");
    }
    if !(1..=3650).contains(&ingress.retention_days) {
        problems.add(
            "ingress.retention_days".into(),
            "must be between 1 and 3650",
        );
    }
    ingress
}

/// `payment.succeeded`, `payment.*`, `*`.
fn is_event_pattern(pattern: &str) -> bool {
    pattern == "*"
        || pattern.split('.').all(|seg| {
            seg == "*"
                || (!seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        }) && pattern.contains('.')
}

/// The first line that mentions the last segment of `key`, to point an operator at it.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let table = key.split('.').take(2).collect::<Vec<_>>().join(".");
    let table = table.split('[').next().unwrap_or(&table);
    let header = format!("[{table}]");
    let start = text.lines().position(|l| l.trim() == header)?;
    let leaf = key.rsplit('.').next()?.split('[').next()?;
    text.lines()
        .enumerate()
        .skip(start)
        .find(|(_, l)| l.trim_start().starts_with(leaf))
        .map_or(Some(start + 1), |(i, _)| Some(i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_WEBHOOK_SECRET"]
tolerance_secs = 300
api_key = "env:STRIPE_API_KEY"
api_base = "https://api.stripe.com"

[sources.site]
kind = "standard-webhooks"
secrets = ["env:SITE_WEBHOOK_SECRET"]

[targets.erp]
kind = "http"
url = "https://erp.example.com/plumbline"
secret = "env:ERP_SIGNING_SECRET"

[targets.crm]
kind = "hubspot"
token = "env:HUBSPOT_TOKEN"

[[routes]]
events = ["payment.*", "order.*"]
targets = ["erp"]

[[routes]]
events = ["lead.*", "payment.succeeded"]
targets = ["crm"]

[ownership]
"payment.status" = "stripe"
"customer.email" = "crm"
"order.fulfillment_status" = "erp"

[reconcile.thresholds]
missed_events = 0
status_mismatches = 5
dlq_messages = 0
"#;

    #[test]
    fn the_documented_shape_parses() {
        let config = Config::parse(DESIGN_EXAMPLE).expect("valid");
        assert_eq!(config.sources.len(), 2);
        let stripe = &config.sources[&SourceName::try_from("stripe").expect("valid")];
        assert_eq!(stripe.kind, SourceKind::Stripe);
        assert_eq!(
            stripe.secrets,
            vec![SecretRef::Env("STRIPE_WEBHOOK_SECRET".into())]
        );
        assert_eq!(config.routes.len(), 2);
        assert_eq!(config.thresholds["status_mismatches"], 5);
        assert_eq!(config.ingress, IngressSettings::default());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
[sources.stripe]
kind = "stripe"
secrets = ["sk_live_plaintext"]
tolerance_secs = 0

[sources.shop]
kind = "shopify"
secrets = []
tolerance_secs = 60

[[routes]]
events = ["Payment"]
targets = ["nowhere"]

[ownership]
"invoice.total" = "erp"
"#;
        let err = Config::parse(text).expect_err("invalid");
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sources.shop.secrets",
                "sources.shop.tolerance_secs",
                "sources.stripe.secrets[0]",
                "sources.stripe.tolerance_secs",
                "routes[0].events[0]",
                "routes[0].targets[0]",
                "ownership.\"invoice.total\"",
                "ownership.\"invoice.total\"",
            ]
        );
        let secret = err
            .problems
            .iter()
            .find(|p| p.key == "sources.stripe.secrets[0]")
            .expect("present");
        assert_eq!(secret.line, Some(4));
        assert!(
            !err.to_string().contains("sk_live_plaintext"),
            "a secret value is never echoed"
        );
    }

    #[test]
    fn syntax_errors_and_unknown_keys_carry_a_line() {
        let err = Config::parse(
            "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:A\"]\nsecret = 1\n",
        )
        .expect_err("unknown key");
        assert_eq!(err.problems[0].line, Some(4));
        assert!(
            err.problems[0].reason.contains("secret"),
            "{}",
            err.problems[0].reason
        );
        let err = Config::parse("[sources.stripe\n").expect_err("syntax");
        assert_eq!(err.problems[0].line, Some(1));
        let err = Config::parse("[sources.x]\nkind = \"mailchimp\"\nsecrets = [\"env:A\"]\n")
            .expect_err("kind");
        assert!(
            err.problems[0].reason.contains("unknown variant"),
            "{}",
            err.problems[0].reason
        );
    }

    #[test]
    fn verifiers_resolve_and_decode_secrets() {
        let config = Config::parse(DESIGN_EXAMPLE).expect("valid");
        let resolver = MapSecrets(BTreeMap::from([
            ("env:STRIPE_WEBHOOK_SECRET".into(), "whsec_abc".into()),
            ("env:SITE_WEBHOOK_SECRET".into(), "whsec_not base64!".into()),
        ]));
        let err = config
            .verifiers(&resolver)
            .expect_err("site secret is not base64");
        assert_eq!(err.problems[0].key, "sources.site.secrets[0]");
        let resolver = MapSecrets(BTreeMap::from([
            ("env:STRIPE_WEBHOOK_SECRET".into(), "whsec_abc".into()),
            ("env:SITE_WEBHOOK_SECRET".into(), "whsec_c2VjcmV0".into()),
        ]));
        let verifiers = config.verifiers(&resolver).expect("resolved");
        assert_eq!(verifiers.len(), 2);
        let missing = config.verifiers(&MapSecrets::default()).expect_err("unset");
        assert_eq!(missing.problems.len(), 2);
        assert!(missing.problems[0].reason.contains("is not set"));
    }
}
