//! Fetches `ssm:` and `secretsmanager:` references once, at cold start, and keeps the values in
//! memory for the life of the sandbox (a rotation is picked up by the next cold start; keep the
//! old value valid until then, as docs/operations.md describes).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;

use crate::config::{
    ChainSecrets, Config, ConfigError, ConfigProblem, EnvSecrets, MapSecrets, SecretPurpose,
    SecretRef,
};

/// SSM answers at most this many names in one `GetParameters`.
const SSM_NAMES_PER_REQUEST: usize = 10;

/// What a function resolves its secrets with: the remote references it uses (`purpose`),
/// fetched at cold start, and the environment for `env:` ones.
pub async fn resolver_for(
    config: &Config,
    purpose: SecretPurpose,
    aws: &aws_config::SdkConfig,
) -> Result<ChainSecrets<EnvSecrets, MapSecrets>, ConfigError> {
    let remote = fetch(&config.secret_refs_for(purpose), aws).await?;
    Ok(ChainSecrets(EnvSecrets, remote))
}

/// The values of the remote references among `refs`, keyed as `MapSecrets` expects. Each
/// reference is fetched once, however many keys use it, and all of them at once: a cold start
/// waits for one round trip, not one per reference. SSM parameters go ten to a
/// `GetParameters`: SSM's default throughput (40 requests a second per account and region) is
/// shared by every sandbox starting at the same moment, so a burst of cold starts spends one
/// request each, not one per parameter.
pub async fn fetch(
    refs: &[(String, SecretRef)],
    aws: &aws_config::SdkConfig,
) -> Result<MapSecrets, ConfigError> {
    // Each remote reference once (by its text, as `MapSecrets` keys it), with the first key
    // that names it.
    let mut wanted: BTreeMap<String, (&str, &SecretRef)> = BTreeMap::new();
    for (key, reference) in refs {
        if !matches!(reference, SecretRef::Env(_)) {
            wanted
                .entry(reference.to_string())
                .or_insert((key.as_str(), reference));
        }
    }
    if wanted.is_empty() {
        // Nothing remote: no clients to build at cold start.
        return Ok(MapSecrets::default());
    }
    let mut parameters: Vec<(&str, &str)> = Vec::new();
    let mut secrets: Vec<(&str, &str, Option<&str>)> = Vec::new();
    for (name, (_, reference)) in &wanted {
        match reference {
            SecretRef::Ssm(parameter) => parameters.push((name, parameter)),
            SecretRef::SecretsManager { id, field } => secrets.push((name, id, field.as_deref())),
            SecretRef::Env(_) => {}
        }
    }
    let ssm = aws_sdk_ssm::Client::new(aws);
    let manager = aws_sdk_secretsmanager::Client::new(aws);
    let (from_ssm, from_manager) = futures_util::future::join(
        futures_util::future::join_all(
            parameters
                .chunks(SSM_NAMES_PER_REQUEST)
                .map(|chunk| get_parameters(&ssm, chunk.iter().map(|(_, p)| *p).collect())),
        ),
        futures_util::future::join_all(
            secrets
                .iter()
                .map(|(_, id, field)| get_secret(&manager, id, *field)),
        ),
    )
    .await;
    // Answers come back in the order asked, so each lines up with its reference's text.
    let mut found: BTreeMap<&str, Result<String, String>> = parameters
        .iter()
        .map(|(name, _)| *name)
        .zip(from_ssm.into_iter().flatten())
        .chain(secrets.iter().map(|(name, _, _)| *name).zip(from_manager))
        .collect();
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, (key, _)) in &wanted {
        match found
            .remove(name.as_str())
            .unwrap_or_else(|| Err("not fetched".to_owned()))
        {
            Ok(value) => {
                values.insert(name.clone(), value);
            }
            // The reason names the reference and the service's error code, never a value.
            Err(reason) => problems.push(ConfigProblem {
                key: (*key).to_owned(),
                reason: format!("{name}: {reason}"),
                line: None,
            }),
        }
    }
    ConfigError::unless_any(problems, MapSecrets(values))
}

/// Up to ten parameters in one request: each name's value in the order asked, or the reason it
/// has none (`ParameterNotFound` for a name SSM does not know, the service's error code when
/// the request failed as a whole).
async fn get_parameters(
    ssm: &aws_sdk_ssm::Client,
    names: Vec<&str>,
) -> Vec<Result<String, String>> {
    let answer = ssm
        .get_parameters()
        .set_names(Some(names.iter().map(|n| (*n).to_owned()).collect()))
        .with_decryption(true)
        .send()
        .await;
    let parameters = match answer {
        Ok(out) => out.parameters.unwrap_or_default(),
        Err(e) => {
            let code = e.code().unwrap_or("unreachable").to_owned();
            return names.iter().map(|_| Err(code.clone())).collect();
        }
    };
    names
        .iter()
        .map(|name| {
            // A name may be asked for as the parameter's name, its ARN, or with a version or
            // label selector (`name:3`); the answer carries each of those forms.
            parameters
                .iter()
                .find(|p| {
                    let selected = match (&p.name, &p.selector) {
                        (Some(n), Some(s)) => format!("{n}{s}"),
                        _ => String::new(),
                    };
                    p.name.as_deref() == Some(*name)
                        || p.arn.as_deref() == Some(*name)
                        || selected == *name
                })
                .map_or_else(
                    || Err("ParameterNotFound".to_owned()),
                    |p| {
                        p.value
                            .clone()
                            .ok_or_else(|| "the parameter has no value".to_owned())
                    },
                )
        })
        .collect()
}

/// One Secrets Manager secret's string, or one text field of it.
async fn get_secret(
    manager: &aws_sdk_secretsmanager::Client,
    id: &str,
    field: Option<&str>,
) -> Result<String, String> {
    let text = manager
        .get_secret_value()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| e.code().unwrap_or("unreachable").to_owned())?
        .secret_string
        .ok_or_else(|| "the secret has no string value".to_owned())?;
    match field {
        None => Ok(text),
        Some(field) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|json| json.get(field).and_then(|v| v.as_str().map(str::to_owned)))
            .ok_or_else(|| format!("the secret has no text field {field:?}")),
    }
}
