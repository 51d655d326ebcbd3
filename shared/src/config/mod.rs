//! The deployment's TOML configuration: parsed once, validated whole, every problem reported
//! with the key it is about (and the line, where the parser knows it).
//!
//! Secrets are references (`env:NAME`), resolved by the component that needs them: the ingress
//! resolves only the source secrets, so it never holds a target's credentials.

#[cfg(test)]
mod documented;
mod raw;
mod secrets;

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretSlice;
use serde::Deserialize;

pub use secrets::{ChainSecrets, EnvSecrets, MapSecrets, SecretRef, SecretResolver};

/// Which of the configuration's secrets a process resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretPurpose {
    /// The sources' signing secrets: the ingress.
    Verify,
    /// The targets' secrets, tokens and secret headers: delivery.
    Deliver,
    /// The sources' API keys and the CRM targets' credentials: reconciliation.
    Reconcile,
}

/// Where a reference sits in the file.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Signing,
    ApiKey,
    Target(TargetKind),
}

impl Slot {
    /// The folder under the deployment's secrets prefix whose secrets the template's roles let
    /// the functions that need this slot read (infra/template.yaml): one folder per reader, so
    /// the ingress cannot read a target's credentials, nor delivery a webhook's signing secret.
    fn folder(self) -> &'static str {
        match self {
            Self::Signing => "sources",
            Self::ApiKey => "api-keys",
            // Delivery writes to the CRM and reconciliation reads it back: both roles read it.
            Self::Target(TargetKind::Hubspot) => "crm",
            Self::Target(_) => "targets",
        }
    }
}

use crate::contract::{SchemaPaths, SourceName};
use crate::reconcile::CHECKS;
use crate::sources::{SourceKind, Verifier};
use raw::{
    Problems, RawConfig, check_ownership, parse_delivery, parse_ingress, parse_routes,
    parse_sources, parse_targets,
};

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

impl ConfigError {
    /// `value` when nothing went wrong building it, else every problem found on the way.
    pub fn unless_any<T>(problems: Vec<ConfigProblem>, value: T) -> Result<T, Self> {
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(Self { problems })
        }
    }
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

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: SourceName,
    pub kind: SourceKind,
    pub secrets: Vec<SecretRef>,
    pub tolerance_secs: i64,
    pub api_key: Option<SecretRef>,
    pub api_base: Option<String>,
    /// The provider's id of the webhook endpoint that sends to this source (Stripe `we_…`,
    /// Paddle `ntfset_…`): the missed-webhook check then lists only the types it is subscribed
    /// to, and Paddle's undelivered notifications of that destination only.
    pub endpoint_id: Option<String>,
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

#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Retryable failures that open a target's circuit, when they are also half of its last
    /// calls (see `delivery::breaker`).
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
    /// `reconcile.max_requeues`: a claim enqueued again this often is left to reconciliation,
    /// which dead-letters it, rather than enqueued once more by a duplicate.
    pub max_requeues: u32,
}

impl Default for IngressSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 * 1024,
            duplicate_horizon_secs: 300,
            retention_days: 90,
            max_requeues: crate::reconcile::DEFAULT_MAX_REQUEUES,
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
    pub reconcile: crate::reconcile::Settings,
    pub ingress: IngressSettings,
    pub delivery: DeliverySettings,
    pub ledger: LedgerSettings,
    /// What is valid but almost certainly a mistake (a route that matches no event type):
    /// `plumbline config check` prints these, and loading the file logs each.
    pub warnings: Vec<ConfigProblem>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one("(file)", format!("cannot read {}: {e}", path.display()))
        })?;
        let config = Self::parse(&text)?;
        for warning in &config.warnings {
            tracing::warn!(key = %warning.key, reason = %warning.reason, "configuration warning");
        }
        Ok(config)
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
            warnings: Vec::new(),
        };
        let sources = parse_sources(raw.sources, &mut problems);
        let targets = parse_targets(raw.targets, &mut problems);
        let routes = parse_routes(raw.routes, &targets, &mut problems);
        check_ownership(&raw.ownership, &sources, &targets, &mut problems);
        // Reconciliation's bound, which the ingress keeps to as well.
        let max_requeues = raw
            .reconcile
            .max_requeues
            .unwrap_or(crate::reconcile::DEFAULT_MAX_REQUEUES);
        let ingress = parse_ingress(&raw.ingress, max_requeues, &mut problems);
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
        let thresholds = thresholds(&raw.reconcile.thresholds, &mut problems);
        let defaults = crate::reconcile::Settings::default();
        let reconcile = crate::reconcile::Settings {
            stuck_after_secs: raw
                .reconcile
                .stuck_after_secs
                .unwrap_or(defaults.stuck_after_secs),
            max_requeues,
            page_limit: raw.reconcile.page_limit.unwrap_or(defaults.page_limit),
            max_pages: raw.reconcile.max_pages.unwrap_or(defaults.max_pages),
            failed_only: raw.reconcile.failed_only.unwrap_or(false),
            first_walk_days: raw
                .reconcile
                .first_walk_days
                .unwrap_or(defaults.first_walk_days),
            retention_days: ingress.retention_days,
            thresholds: thresholds.clone(),
            settle_secs: raw.reconcile.settle_secs.unwrap_or(defaults.settle_secs),
            window_days: raw.reconcile.window_days.unwrap_or(defaults.window_days),
            lead_days: raw.reconcile.lead_days.unwrap_or(defaults.lead_days),
            routes: routes.clone(),
            ownership: crate::ledger::Ownership(raw.ownership.clone()),
        };
        if reconcile.settle_secs < 0 {
            problems.add("reconcile.settle_secs".into(), "must not be negative");
        }
        if !(0..=90).contains(&reconcile.first_walk_days) {
            problems.add("reconcile.first_walk_days".into(), "must be 0 to 90");
        }
        if !(1..=90).contains(&reconcile.window_days) {
            problems.add("reconcile.window_days".into(), "must be 1 to 90");
        }
        if !(1..=30).contains(&reconcile.lead_days) {
            problems.add("reconcile.lead_days".into(), "must be 1 to 30");
        }
        if reconcile.stuck_after_secs < 60 {
            problems.add("reconcile.stuck_after_secs".into(), "must be at least 60");
        }
        if reconcile.max_requeues > 100 {
            problems.add("reconcile.max_requeues".into(), "must be 0 to 100");
        }
        if reconcile.page_limit == 0 {
            problems.add("reconcile.page_limit".into(), "must be at least 1");
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
            thresholds,
            reconcile,
            ingress,
            delivery,
            ledger,
            warnings: problems.warnings,
        })
    }

    /// What `plumbline config check` warns of beyond the parser's own warnings: route filters
    /// on no field of the envelope, target fields mapped from no field of the delivery
    /// document, remote secrets outside their readers' folder under `secrets_prefix` (the
    /// stack's `SecretsPrefix` parameter), and sources whose missed webhooks go unchecked. The
    /// functions do not call it, so they carry no copy of the schemas it walks.
    pub fn check_warnings(&self, secrets_prefix: &str) -> Vec<ConfigProblem> {
        let mut out = self.missed_webhook_warnings();
        out.extend(self.schema_warnings());
        out.extend(self.secret_folder_warnings(secrets_prefix));
        out
    }

    /// Sources with an events API but no `api_key`: reconciliation cannot list their events,
    /// so `missed_webhooks` reports nothing for them, whatever they lost. With a key but no
    /// `endpoint_id`, it looks for every type plumbline reads, and finds "missed" each event of
    /// a type the endpoint is not subscribed to.
    fn missed_webhook_warnings(&self) -> Vec<ConfigProblem> {
        self.sources
            .iter()
            .filter(|(_, source)| source.kind.has_event_api())
            .filter_map(|(name, source)| {
                let (slot, reason) = match (&source.api_key, &source.endpoint_id) {
                    (None, _) => (
                        "api_key",
                        format!(
                            "not set: a {} webhook that never arrives is not found by \
                             reconciliation (missed_webhooks does not list this source's events)",
                            source.kind
                        ),
                    ),
                    (Some(_), None) => (
                        "endpoint_id",
                        "not set: reconciliation looks for every event type plumbline reads, \
                         and takes each of a type the endpoint is not sent for a missed webhook"
                            .to_owned(),
                    ),
                    (Some(_), Some(_)) => return None,
                };
                Some(ConfigProblem {
                    key: format!("sources.{name}.{slot}"),
                    reason,
                    line: None,
                })
            })
            .collect()
    }

    /// Route filters and target fields that name no field of the envelope or the delivery
    /// document: what `plumbline dev` warns of as it starts, as `config check` does.
    pub fn schema_warnings(&self) -> Vec<ConfigProblem> {
        let mut out = self.filter_warnings(&SchemaPaths::envelope());
        out.extend(self.mapping_warnings(&SchemaPaths::of::<crate::delivery::Document>()));
        out
    }

    /// Route filters (`[[routes]] where`) whose path is no field of the envelope: such a route
    /// would deliver nothing.
    fn filter_warnings(&self, envelope: &SchemaPaths) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            for path in route.filter.keys() {
                if !envelope.has(path) {
                    out.push(ConfigProblem {
                        key: format!("routes[{i}].where.{path:?}"),
                        reason: format!(
                            "{path:?} is no field of the envelope (docs/contract/README.md): \
                             this route would deliver nothing"
                        ),
                        line: None,
                    });
                }
            }
        }
        out
    }

    /// Target fields (`[[targets.NAME.fields]] from`) that name no field of the delivery
    /// document: a required one would fail every delivery, any other would never be sent.
    fn mapping_warnings(&self, document: &SchemaPaths) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (name, target) in &self.targets {
            for (i, field) in target.fields.iter().enumerate() {
                if !document.has(&field.from) {
                    out.push(ConfigProblem {
                        key: format!("targets.{name}.fields[{i}].from"),
                        reason: format!(
                            "{:?} is no field of the delivery document (event.…, entity.kind, \
                             entity.id, entity.version, entity.state, entity.fields.…, effect; \
                             docs/delivery.md): {}",
                            field.from,
                            if field.required {
                                "every delivery to this target would fail"
                            } else {
                                "this field would never be sent"
                            }
                        ),
                        line: None,
                    });
                }
            }
        }
        out
    }

    /// Remote secrets (`ssm:`, `secretsmanager:`) outside the folder the template's roles read
    /// them from (`{prefix}/sources/`, `api-keys/`, `targets/` or `crm/`, where `prefix` is the
    /// stack's `SecretsPrefix`): deployed with infra/template.yaml, the function that needs one
    /// would be refused it at cold start. For `plumbline config check`; a deployment with roles
    /// of its own may name them as it likes.
    fn secret_folder_warnings(&self, prefix: &str) -> Vec<ConfigProblem> {
        let prefix = prefix.trim_matches('/');
        self.slotted_refs(|_| true)
            .into_iter()
            .filter_map(|(key, reference, slot)| {
                let folder = slot.folder();
                if in_folder(&reference, prefix, folder)? {
                    return None;
                }
                let shown = match &reference {
                    SecretRef::Ssm(_) => format!("/{prefix}/{folder}/…"),
                    _ => format!("{prefix}/{folder}/…"),
                };
                Some(ConfigProblem {
                    reason: format!(
                        "{reference} is not under {shown}: the template's roles, with \
                         SecretsPrefix={prefix}, let the functions that use it read only there \
                         (docs/configuration.md, \"Secrets\")"
                    ),
                    key,
                    line: None,
                })
            })
            .collect()
    }

    /// Every secret reference in the file, with its key, for fetching remote ones at start-up.
    pub fn secret_refs(&self) -> Vec<(String, SecretRef)> {
        self.refs_where(|_| true)
    }

    /// The secret a sender signs a source's test webhooks with: its first (newest) one, keyed
    /// as its function would key it.
    pub fn signing_secret(&self, source: &SourceName) -> Option<(String, SecretRef)> {
        let first = self.sources.get(source)?.secrets.first()?;
        Some((signing_key(source, 0), first.clone()))
    }

    /// The secret references one function resolves, with their keys: each fetches only its own
    /// at cold start, so none holds another's credentials, and a parameter one of them cannot
    /// read stops only the function that needs it.
    pub fn secret_refs_for(&self, purpose: SecretPurpose) -> Vec<(String, SecretRef)> {
        self.refs_where(|slot| match purpose {
            SecretPurpose::Verify => matches!(slot, Slot::Signing),
            SecretPurpose::Deliver => matches!(slot, Slot::Target(_)),
            // The providers' event lists, and the CRM it reads back and delivers repairs to.
            SecretPurpose::Reconcile => {
                matches!(slot, Slot::ApiKey | Slot::Target(TargetKind::Hubspot))
            }
        })
    }

    fn refs_where(&self, wanted: impl Fn(Slot) -> bool) -> Vec<(String, SecretRef)> {
        self.slotted_refs(wanted)
            .into_iter()
            .map(|(key, reference, _)| (key, reference))
            .collect()
    }

    fn slotted_refs(&self, wanted: impl Fn(Slot) -> bool) -> Vec<(String, SecretRef, Slot)> {
        let mut out = Vec::new();
        for (name, source) in &self.sources {
            if wanted(Slot::Signing) {
                for (i, r) in source.secrets.iter().enumerate() {
                    out.push((signing_key(name, i), r.clone(), Slot::Signing));
                }
            }
            if let Some(r) = &source.api_key
                && wanted(Slot::ApiKey)
            {
                out.push((format!("sources.{name}.api_key"), r.clone(), Slot::ApiKey));
            }
        }
        for (name, target) in &self.targets {
            let slot = Slot::Target(target.kind);
            if !wanted(slot) {
                continue;
            }
            for (field, r) in [("secret", &target.secret), ("token", &target.token)] {
                if let Some(r) = r {
                    out.push((format!("targets.{name}.{field}"), r.clone(), slot));
                }
            }
            for (header, value) in &target.headers {
                if let HeaderValue::Secret(r) = value {
                    out.push((format!("targets.{name}.headers.{header}"), r.clone(), slot));
                }
            }
        }
        out
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
                let key = signing_key(name, i);
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
        ConfigError::unless_any(problems, out)
    }
}

fn signing_key(source: &SourceName, i: usize) -> String {
    format!("sources.{source}.secrets[{i}]")
}

/// `[reconcile.thresholds]` keyed by the checks' own names. A key that names no check is a
/// problem: a threshold nobody compares with would leave its check's drift unalarmed. The two
/// names of the design's example are read as the checks they describe.
fn thresholds(raw: &BTreeMap<String, u64>, problems: &mut Problems<'_>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, limit) in raw {
        let check = match key.as_str() {
            "missed_events" => Some(crate::reconcile::MISSED_WEBHOOKS),
            "status_mismatches" => Some(crate::reconcile::PAYMENT_ORDER_PARITY),
            other => CHECKS.into_iter().find(|c| *c == other),
        };
        let Some(check) = check else {
            problems.add(
                format!("reconcile.thresholds.{key}"),
                format!("no such check; the checks are {}", CHECKS.join(", ")),
            );
            continue;
        };
        if out.insert(check.to_owned(), *limit).is_some() {
            problems.add(
                format!("reconcile.thresholds.{key}"),
                format!("{check} has a threshold already"),
            );
        }
    }
    out
}

/// Whether a remote secret's name is under `{prefix}/{folder}/`, as the template's IAM
/// resources name it (`parameter/{prefix}/{folder}/*`, `secret:{prefix}/{folder}/*`); `None`
/// for an `env:` reference, which no role governs.
fn in_folder(reference: &SecretRef, prefix: &str, folder: &str) -> Option<bool> {
    let name = match reference {
        SecretRef::Env(_) => return None,
        // A parameter's ARN names it without the leading slash.
        SecretRef::Ssm(name) => name
            .split_once(":parameter/")
            .map_or(name.as_str(), |(_, name)| name),
        // A secret's ARN names it after `:secret:`.
        SecretRef::SecretsManager { id, .. } => id
            .split_once(":secret:")
            .map_or(id.as_str(), |(_, name)| name),
    };
    let leaf = name
        .trim_start_matches('/')
        .strip_prefix(&format!("{prefix}/{folder}/"));
    Some(leaf.is_some_and(|leaf| !leaf.is_empty()))
}

#[cfg(test)]
mod tests;
