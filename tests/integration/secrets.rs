//! Secret references to SSM Parameter Store and Secrets Manager, fetched once at start-up from
//! moto's server, then used exactly as environment secrets are.

use plumbline::adapters::aws_secrets::fetch;
use plumbline::config::{ChainSecrets, Config, EnvSecrets};
use plumbline::contract::{SourceName, Timestamp};
use plumbline::sources::Inbound;

use crate::helpers::{T0, aws, fixture, stripe_header_map, unique};

#[tokio::test]
async fn ssm_and_secrets_manager_references_resolve_at_start_up() {
    let aws = aws().await;
    let (parameter, secret) = (
        format!("/plumbline/{}/stripe", unique("test")),
        unique("plumbline-site"),
    );
    aws_sdk_ssm::Client::new(&aws)
        .put_parameter()
        .name(&parameter)
        .value("whsec_from_parameter_store")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("parameter");
    aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(&secret)
        .secret_string(r#"{"signing": "whsec_c2VjcmV0cy1tYW5hZ2VyLXNpdGU=", "other": "x"}"#)
        .send()
        .await
        .expect("secret");
    let config = Config::parse(&format!(
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"ssm:{parameter}\"]\n\n[sources.site]\nkind = \"standard-webhooks\"\nsecrets = [\"secretsmanager:{secret}#signing\"]\n"
    ))
    .expect("config");

    let remote = fetch(&config.secret_refs(), &aws).await.expect("fetched");
    let verifiers = config
        .verifiers(&ChainSecrets(EnvSecrets, remote))
        .expect("resolved");
    let body = fixture("stripe/payment_intent.succeeded.json");
    let headers = stripe_header_map("whsec_from_parameter_store", T0, &body);
    let stripe = &verifiers[&SourceName::try_from("stripe").expect("name")];
    assert!(
        stripe
            .accept(
                Inbound {
                    headers: &headers,
                    body: &body
                },
                Timestamp::from_unix(T0).expect("ok")
            )
            .is_ok(),
        "the parameter's value signs"
    );
    assert_eq!(
        verifiers[&SourceName::try_from("site").expect("name")]
            .keys
            .len(),
        1
    );
}

#[tokio::test]
async fn a_missing_reference_fails_start_up_with_its_key_and_no_value() {
    let aws = aws().await;
    let config = Config::parse(
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"ssm:/plumbline/does-not-exist\"]\n",
    )
    .expect("config");
    let err = fetch(&config.secret_refs(), &aws)
        .await
        .expect_err("missing");
    assert_eq!(err.problems[0].key, "sources.stripe.secrets[0]");
    assert!(
        err.problems[0]
            .reason
            .starts_with("ssm:/plumbline/does-not-exist: "),
        "{}",
        err.problems[0].reason
    );
    assert!(
        Config::parse("[sources.s]\nkind = \"stripe\"\nsecrets = [\"secretsmanager:x#\"]\n")
            .is_err(),
        "an empty field is refused"
    );
}

/// The CLI reads `ssm:` references as the functions do: `plumbline dev` with the deployment's
/// configuration verifies with the parameter's value, and `plumbline send` signs with it.
#[tokio::test]
async fn plumbline_dev_and_send_read_the_configurations_ssm_secrets() {
    use crate::helpers::dev::{Dev, binary, post, signed};
    use plumbline::sources::SourceKind;

    let aws = aws().await;
    let parameter = format!("/plumbline/{}/stripe", unique("cli"));
    let value = format!("whsec_{}", unique("from_ssm"));
    aws_sdk_ssm::Client::new(&aws)
        .put_parameter()
        .name(&parameter)
        .value(&value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("parameter");
    let dir = std::env::temp_dir().join(unique("plumbline-ssm-cli"));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("plumbline.toml");
    std::fs::write(
        &config,
        format!("[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"ssm:{parameter}\"]\n"),
    )
    .expect("config");
    let dev = Dev::start(&config, &dir.join("data"), &[]);
    let url = format!("{}/webhooks/stripe", dev.url);
    let client = crate::helpers::http();
    let body = fixture("stripe/payment_intent.succeeded.json");
    let with = |secret: &str| signed(SourceKind::Stripe, secret, "evt_ssm_cli", None, &body);
    assert_eq!(
        post(&client, &url, &with("whsec_not_the_parameter")).await,
        Some(401)
    );
    assert_eq!(post(&client, &url, &with(&value)).await, Some(200));

    let sent = std::process::Command::new(binary())
        .args([
            "send",
            "stripe",
            "payment_intent.processing",
            "--json",
            "--url",
            &dev.url,
        ])
        .arg("--config")
        .arg(&config)
        .output()
        .expect("send");
    let answers = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{answers} {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(answers.contains("\"status\":200"), "{answers}");
    std::fs::remove_dir_all(&dir).ok();
}
