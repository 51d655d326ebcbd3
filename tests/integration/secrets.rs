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
