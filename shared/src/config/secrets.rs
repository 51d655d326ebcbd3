//! Secret references in the configuration, and what resolves them.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;

/// Where a secret's value comes from. Only references live in the file, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
}

impl SecretRef {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
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
