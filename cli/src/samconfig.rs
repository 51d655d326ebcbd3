//! The parameters a SAM configuration file deploys a stack with, so that `config check` can
//! judge a configuration against the stack it will run in rather than the template's defaults.

use std::path::Path;

use anyhow::{Context, bail};

/// The value `sam deploy --config-env ENV` gives the template parameter `name`, read from
/// `parameter_overrides` under `[ENV.deploy.parameters]`, else `[ENV.global.parameters]` (where
/// SAM looks for it); `None` when it is not overridden, so the template's default applies.
pub fn parameter(file: &Path, env: &str, name: &str) -> anyhow::Result<Option<String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", file.display()))?;
    let Some(environment) = doc.get(env).and_then(toml::Value::as_table) else {
        bail!("{} has no environment [{env}]", file.display());
    };
    let overrides = ["deploy", "global"].into_iter().find_map(|command| {
        environment
            .get(command)?
            .get("parameters")?
            .get("parameter_overrides")
    });
    let pairs = match overrides {
        None => return Ok(None),
        Some(toml::Value::String(s)) => split(s)?,
        Some(toml::Value::Array(items)) => {
            let mut pairs = Vec::new();
            for item in items {
                let Some(s) = item.as_str() else {
                    bail!("{env}: parameter_overrides holds a value that is not a string");
                };
                pairs.extend(split(s)?);
            }
            pairs
        }
        Some(_) => bail!("{env}: parameter_overrides is neither a string nor a list"),
    };
    Ok(pairs
        .into_iter()
        .filter(|(key, _)| key == name)
        .map(|(_, value)| value)
        .next_back())
}

/// `Key=Value` pairs as SAM reads them: words split as a shell does (a value in double or single
/// quotes may hold spaces), and the CloudFormation form `ParameterKey=K,ParameterValue=V` too.
fn split(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let Some(words) = shlex::split(text) else {
        bail!("parameter_overrides has an unclosed quote: {text:?}");
    };
    words
        .into_iter()
        .map(|w| {
            if let Some(rest) = w.strip_prefix("ParameterKey=")
                && let Some((key, value)) = rest.split_once(",ParameterValue=")
            {
                return Ok((key.to_owned(), value.to_owned()));
            }
            w.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("parameter_overrides: {w:?} is not Key=Value"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        split(text).expect("splits")
    }

    #[test]
    fn overrides_split_as_sam_reads_them() {
        let own = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            pairs("Architecture=arm64  MaxReceiveCount=8"),
            [own("Architecture", "arm64"), own("MaxReceiveCount", "8")]
        );
        assert_eq!(
            pairs(r#"AlarmEmail="ops team@example.com" SecretsPrefix='acme/prod' Empty="""#),
            [
                own("AlarmEmail", "ops team@example.com"),
                own("SecretsPrefix", "acme/prod"),
                own("Empty", "")
            ]
        );
        assert_eq!(
            pairs("ParameterKey=SecretsPrefix,ParameterValue=acme"),
            [own("SecretsPrefix", "acme")]
        );
        assert!(split("Architecture").is_err());
        assert!(split("SecretsPrefix=\"acme").is_err());
    }

    #[test]
    fn a_parameter_is_read_from_deploy_then_global_and_absent_means_the_default() {
        let dir = std::env::temp_dir().join(format!("plumbline-samconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("samconfig.toml");
        std::fs::write(
            &file,
            r#"version = 0.1
[default.deploy.parameters]
parameter_overrides = "Architecture=arm64 SecretsPrefix=acme"
[staging.global.parameters]
parameter_overrides = ["SecretsPrefix=stage", "Architecture=x86_64"]
[prod.deploy.parameters]
capabilities = "CAPABILITY_IAM"
"#,
        )
        .expect("write");
        let read = |env: &str| parameter(&file, env, "SecretsPrefix");
        assert_eq!(read("default").expect("read").as_deref(), Some("acme"));
        assert_eq!(read("staging").expect("read").as_deref(), Some("stage"));
        assert_eq!(read("prod").expect("read"), None);
        let missing = read("qa").expect_err("no such environment").to_string();
        assert!(missing.contains("no environment [qa]"), "{missing}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
