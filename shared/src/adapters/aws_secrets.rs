//! Fetches `ssm:` and `secretsmanager:` references once, at cold start, and keeps the values in
//! memory for the life of the sandbox (a rotation is picked up by the next cold start; keep the
//! old value valid until then, as docs/operations.md describes).

use std::collections::BTreeMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;

use crate::config::{ConfigError, ConfigProblem, MapSecrets, SecretRef};

/// The values of the remote references among `refs`, keyed as `MapSecrets` expects. Each
/// reference is fetched once, however many keys use it, and all of them at once: a cold start
/// waits for one round trip, not one per parameter.
pub async fn fetch(
    refs: &[(String, SecretRef)],
    aws: &aws_config::SdkConfig,
) -> Result<MapSecrets, ConfigError> {
    // Each remote reference once, with the first key that names it.
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
    let ssm = aws_sdk_ssm::Client::new(aws);
    let manager = aws_sdk_secretsmanager::Client::new(aws);
    let fetched = futures_util::future::join_all(
        wanted
            .iter()
            .map(|(_, (_, reference))| fetch_one(&ssm, &manager, reference)),
    )
    .await;
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    for ((name, (key, _)), value) in wanted.into_iter().zip(fetched) {
        match value {
            Ok(value) => {
                values.insert(name, value);
            }
            // The reason names the reference and the service's error code, never a value.
            Err(reason) => problems.push(ConfigProblem {
                key: key.to_owned(),
                reason: format!("{name}: {reason}"),
                line: None,
            }),
        }
    }
    if problems.is_empty() {
        Ok(MapSecrets(values))
    } else {
        Err(ConfigError { problems })
    }
}

/// One remote reference's value, or the service's error code.
async fn fetch_one(
    ssm: &aws_sdk_ssm::Client,
    manager: &aws_sdk_secretsmanager::Client,
    reference: &SecretRef,
) -> Result<String, String> {
    match reference {
        SecretRef::Ssm(parameter) => ssm
            .get_parameter()
            .name(parameter)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("unreachable").to_owned())
            .and_then(|out| {
                out.parameter
                    .and_then(|p| p.value)
                    .ok_or_else(|| "the parameter has no value".to_owned())
            }),
        SecretRef::SecretsManager { id, field } => manager
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| e.code().unwrap_or("unreachable").to_owned())
            .and_then(|out| {
                out.secret_string
                    .ok_or_else(|| "the secret has no string value".to_owned())
            })
            .and_then(|text| match field {
                None => Ok(text),
                Some(field) => serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|json| json.get(field).and_then(|v| v.as_str().map(str::to_owned)))
                    .ok_or_else(|| format!("the secret has no text field {field:?}")),
            }),
        SecretRef::Env(_) => Err("an environment reference is not fetched".to_owned()),
    }
}
