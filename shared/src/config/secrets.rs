//! Secret references in the configuration, and what resolves them.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;

/// Where a secret's value comes from. Only references live in the file, never values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretRef {
    /// `env:NAME`: the process environment.
    Env(String),
    /// `ssm:/path/name`: an SSM Parameter Store parameter (SecureString), decrypted.
    Ssm(String),
    /// `secretsmanager:name-or-arn` or `secretsmanager:name#field` for one field of a JSON secret.
    SecretsManager { id: String, field: Option<String> },
}

impl SecretRef {
    /// Whether a value where either may stand (a target's header) is a reference: it names
    /// one of the schemes `parse` reads.
    pub(super) fn is_reference(text: &str) -> bool {
        text.split_once(':')
            .is_some_and(|(scheme, _)| matches!(scheme, "env" | "ssm" | "secretsmanager"))
    }

    pub(super) fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            Some(("env", name)) if is_env_name(name) => Ok(Self::Env(name.to_owned())),
            Some(("env", _)) => {
                Err("env: must be followed by a variable name (A-Z, 0-9, _)".into())
            }
            Some(("ssm", name)) if !name.is_empty() && !name.contains(char::is_whitespace) => Ok(Self::Ssm(name.to_owned())),
            Some(("secretsmanager", rest)) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                let (id, field) = match rest.split_once('#') {
                    Some((id, field)) if !field.is_empty() => (id.to_owned(), Some(field.to_owned())),
                    Some(_) => return Err("secretsmanager:NAME#FIELD needs a field after #".into()),
                    None => (rest.to_owned(), None),
                };
                Ok(Self::SecretsManager { id, field })
            }
            _ => Err(
                "expected a reference such as env:NAME, ssm:/path or secretsmanager:NAME[#FIELD]; secret values never go in the file"
                    .into(),
            ),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::Ssm(name) => write!(f, "ssm:{name}"),
            Self::SecretsManager {
                id,
                field: Some(field),
            } => write!(f, "secretsmanager:{id}#{field}"),
            Self::SecretsManager { id, field: None } => write!(f, "secretsmanager:{id}"),
        }
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A resolved value, made known to the log redaction first: whatever its shape, no log line
/// shows it from now on.
fn known(value: String) -> SecretString {
    crate::telemetry::redact_value(&value);
    SecretString::from(value)
}

/// Resolves secret references to values. Every resolver hands out what [`EnvSecrets`] or
/// [`MapSecrets`] resolve, which make each value known to the log redaction.
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
                .map(known)
                .map_err(|_| format!("environment variable {name} is not set")),
            other => Err(format!("{other} is fetched at start-up; it was not")),
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
            .map(|v| known(v.clone()))
            .ok_or_else(|| format!("{key} is not set"))
    }
}

/// Tries `first`, then `second`: the environment, then values fetched at start-up.
#[derive(Debug, Clone)]
pub struct ChainSecrets<A, B>(pub A, pub B);

impl<A: SecretResolver, B: SecretResolver> SecretResolver for ChainSecrets<A, B> {
    fn resolve(&self, reference: &SecretRef) -> Result<SecretString, String> {
        self.0
            .resolve(reference)
            .or_else(|first| self.1.resolve(reference).map_err(|_| first))
    }
}
