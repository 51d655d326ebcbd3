//! The file's shape as written, and its validation into the typed configuration.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    ConfigProblem, DeliverySettings, HeaderValue, HubspotSettings, IngressSettings, Route,
    SecretRef, SourceConfig, TargetConfig, TargetKind,
};
use crate::contract::{EntityKind, SourceName};
use crate::sources::SourceKind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) sources: BTreeMap<String, RawSource>,
    #[serde(default)]
    pub(super) targets: BTreeMap<String, RawTarget>,
    #[serde(default)]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) ownership: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) reconcile: RawReconcile,
    #[serde(default)]
    pub(super) ingress: RawIngress,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
    #[serde(default)]
    pub(super) ledger: RawLedger,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) backoff_base_secs: Option<u64>,
    pub(super) backoff_cap_secs: Option<u64>,
    pub(super) retry_after_cap_secs: Option<u64>,
    pub(super) breaker_threshold: Option<u32>,
    pub(super) breaker_cooldown_secs: Option<u64>,
    pub(super) lease_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    pub(super) lead_dedup_window_secs: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) kind: SourceKind,
    pub(super) secrets: Vec<String>,
    pub(super) tolerance_secs: Option<i64>,
    pub(super) api_key: Option<String>,
    pub(super) api_base: Option<String>,
    pub(super) endpoint_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    pub(super) kind: TargetKind,
    pub(super) url: Option<String>,
    pub(super) secret: Option<String>,
    pub(super) token: Option<String>,
    pub(super) timeout_ms: Option<u64>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) fields: Vec<crate::delivery::mapping::FieldMapping>,
    pub(super) base_url: Option<String>,
    pub(super) pipeline: Option<String>,
    #[serde(default)]
    pub(super) stages: BTreeMap<String, String>,
    pub(super) contact_id_property: Option<String>,
    pub(super) deal_id_property: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) events: Vec<String>,
    pub(super) targets: Vec<String>,
    #[serde(default, rename = "where")]
    pub(super) filter: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReconcile {
    #[serde(default)]
    pub(super) thresholds: BTreeMap<String, u64>,
    pub(super) stuck_after_secs: Option<i64>,
    pub(super) max_requeues: Option<u32>,
    pub(super) page_limit: Option<usize>,
    pub(super) max_pages: Option<usize>,
    pub(super) failed_only: Option<bool>,
    pub(super) first_walk_days: Option<i64>,
    pub(super) settle_secs: Option<i64>,
    pub(super) window_days: Option<i64>,
    pub(super) lead_days: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngress {
    pub(super) max_body_bytes: Option<usize>,
    pub(super) duplicate_horizon_secs: Option<i64>,
    pub(super) retention_days: Option<i64>,
}

/// Collects problems, each located in the text where possible.
pub(super) struct Problems<'a> {
    pub(super) text: &'a str,
    pub(super) list: Vec<ConfigProblem>,
    /// What is valid but almost certainly not meant.
    pub(super) warnings: Vec<ConfigProblem>,
}

impl Problems<'_> {
    pub(super) fn warn(&mut self, key: String, reason: impl Into<String>) {
        let problem = self.located(key, reason.into());
        self.warnings.push(problem);
    }

    pub(super) fn add(&mut self, key: String, reason: impl Into<String>) {
        let problem = self.located(key, reason.into());
        self.list.push(problem);
    }

    fn located(&self, key: String, reason: String) -> ConfigProblem {
        let line = line_of(self.text, &key);
        ConfigProblem { key, reason, line }
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

pub(super) fn parse_sources(
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
        if api_key.is_some() && !raw.kind.has_event_api() {
            problems.add(
                format!("{key}.api_key"),
                format!(
                    "{} has no events API plumbline reads (stripe and paddle do)",
                    raw.kind
                ),
            );
        }
        if let Some(base) = &raw.api_base
            && !(base.starts_with("https://") || base.starts_with("http://"))
        {
            problems.add(format!("{key}.api_base"), "must be an http(s) URL");
        }
        if let Some(id) = &raw.endpoint_id
            && let Some(reason) = endpoint_id_problem(raw.kind, id, api_key.is_some())
        {
            problems.add(format!("{key}.endpoint_id"), reason);
        }
        let config = SourceConfig {
            name: source_name.clone(),
            kind: raw.kind,
            secrets,
            tolerance_secs,
            api_key,
            api_base: raw.api_base,
            endpoint_id: raw.endpoint_id,
        };
        sources.insert(source_name, config);
    }
    sources
}

/// What is wrong with `id` as the endpoint of a `kind` source, if anything. It goes into a
/// URL path of the provider's API, so it is held to the provider's id shape.
fn endpoint_id_problem(kind: SourceKind, id: &str, has_api_key: bool) -> Option<String> {
    let Some(prefix) = kind.endpoint_id_prefix() else {
        return Some(format!(
            "{kind} has no events API plumbline reads (stripe and paddle do)"
        ));
    };
    let shaped = id
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !shaped {
        return Some(format!(
            "must be a {kind} endpoint id ({prefix} and letters or digits)"
        ));
    }
    (!has_api_key).then(|| "needs api_key: reconciliation reads the endpoint with it".to_owned())
}

pub(super) fn parse_targets(
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
            let value = if SecretRef::is_reference(&value) {
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

pub(super) fn parse_delivery(raw: &RawDelivery, problems: &mut Problems<'_>) -> DeliverySettings {
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

pub(super) fn parse_routes(
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
            } else if !crate::contract::EVENT_TYPES
                .iter()
                .any(|t| crate::delivery::routes::type_matches(pattern, t))
            {
                // A warning, not a refusal: a type added to the contract later must not stop a
                // deployment that already routes it.
                problems.warn(
                    format!("routes[{i}].events[{j}]"),
                    format!(
                        "{pattern:?} matches none of the event types plumbline produces \
                         (docs/sources.md): this route would deliver nothing"
                    ),
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

pub(super) fn check_ownership(
    ownership: &BTreeMap<String, String>,
    sources: &BTreeMap<SourceName, SourceConfig>,
    targets: &BTreeMap<String, TargetConfig>,
    problems: &mut Problems<'_>,
) {
    for (field, owner) in ownership {
        let key = format!("ownership.{field:?}");
        let entity = field
            .split_once('.')
            .and_then(|(kind, f)| Some((EntityKind::parse(kind)?, f)))
            .filter(|(_, f)| !f.is_empty());
        if let Some((kind, name)) = entity {
            let names = crate::ledger::field_names(kind);
            if name != "status" && !names.contains(&name) {
                // No event writes it, so the declaration protects nothing: most often a typo.
                problems.warn(
                    key.clone(),
                    format!(
                        "the ledger keeps no field {name:?} on {kind} entities (status, {}; \
                         docs/ledger.md): this ownership protects nothing",
                        names.join(", "),
                        kind = kind.as_str(),
                    ),
                );
            }
        } else {
            problems.add(
                key.clone(),
                format!(
                    "expected entity.field with entity one of {}",
                    EntityKind::ALL.map(EntityKind::as_str).join(", ")
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

pub(super) fn parse_ingress(
    raw: &RawIngress,
    max_requeues: u32,
    problems: &mut Problems<'_>,
) -> IngressSettings {
    let defaults = IngressSettings::default();
    let ingress = IngressSettings {
        max_body_bytes: raw.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        duplicate_horizon_secs: raw
            .duplicate_horizon_secs
            .unwrap_or(defaults.duplicate_horizon_secs),
        retention_days: raw.retention_days.unwrap_or(defaults.retention_days),
        max_requeues,
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
pub(super) fn is_event_pattern(pattern: &str) -> bool {
    pattern == "*"
        || pattern.split('.').all(|seg| {
            seg == "*"
                || (!seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        }) && pattern.contains('.')
}

/// The first line that mentions the last segment of `key`, to point an operator at it. A quoted
/// last segment (`ownership."order.status"`) is one segment, dots and all.
pub(super) fn line_of(text: &str, key: &str) -> Option<usize> {
    let (path, quoted) = match key.split_once(".\"") {
        Some((path, leaf)) => (path, Some(format!("\"{leaf}"))),
        None => (key, None),
    };
    let table = path.split('.').take(2).collect::<Vec<_>>().join(".");
    let table = table.split('[').next().unwrap_or(&table);
    let at = |table: &str| {
        let header = format!("[{table}]");
        text.lines().position(|l| l.trim() == header)
    };
    // `sources.stripe.secrets` is in `[sources.stripe]`, `reconcile.page_limit` in `[reconcile]`.
    let start = at(table).or_else(|| at(path.split('.').next()?))?;
    let leaf = match &quoted {
        Some(leaf) => leaf.as_str(),
        None => key.rsplit('.').next()?.split('[').next()?,
    };
    text.lines()
        .enumerate()
        .skip(start)
        .find(|(_, l)| l.trim_start().starts_with(leaf))
        .map_or(Some(start + 1), |(i, _)| Some(i + 1))
}
