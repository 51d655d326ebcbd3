//! Secret references to SSM Parameter Store and Secrets Manager, fetched once at start-up from
//! moto's server, then used exactly as environment secrets are.

use plumbline::adapters::aws_secrets::fetch;
use plumbline::config::{ChainSecrets, Config, EnvSecrets};
use plumbline::contract::{SourceName, Timestamp};
use plumbline::sources::Inbound;

use crate::helpers::{T0, aws, fixture, stripe_header_map, unique};

/// A directory of the test's own, holding `text` as its `plumbline.toml`: the directory (for
/// the test to remove) and the file.
fn config_dir(prefix: &str, text: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("plumbline.toml");
    std::fs::write(&config, text).expect("config");
    (dir, config)
}

/// Puts a SecureString parameter in moto's SSM.
async fn put_parameter(aws: &aws_config::SdkConfig, name: &str, value: &str) {
    aws_sdk_ssm::Client::new(aws)
        .put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .expect("parameter");
}

#[tokio::test]
async fn ssm_and_secrets_manager_references_resolve_at_start_up() {
    let aws = aws().await;
    let (parameter, secret) = (
        format!("/plumbline/{}/stripe", unique("test")),
        unique("plumbline-site"),
    );
    put_parameter(&aws, &parameter, "whsec_from_parameter_store").await;
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
    put_parameter(&aws, &parameter, &value).await;
    let (dir, config) = config_dir(
        "plumbline-ssm-cli",
        &format!("[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"ssm:{parameter}\"]\n"),
    );
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

/// A function that cannot start (here: its configuration file is missing, names a secret that
/// is not set, or a variable holds what it cannot use) exits with failure after one structured log line that says why, never
/// Rust's `Debug` dump of the error.
#[test]
fn a_function_that_cannot_start_says_why_in_one_log_line() {
    use crate::helpers::runtime::function_binary;

    let (dir, unset_secret) = config_dir(
        "plumbline-start",
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:PLUMBLINE_TEST_UNSET_SECRET\"]\n",
    );
    let missing = dir.join("missing.toml");
    // The fourth: a variable, where the case sets one.
    let attempt = Some(("PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS", "3s"));
    let attempt_reason = "PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS must be a whole number of milliseconds";
    let cases = [
        (
            "plumbline-ingress",
            &unset_secret,
            "sources.stripe.secrets[0]",
            None,
        ),
        ("plumbline-ingress", &missing, "cannot read", None),
        ("plumbline-delivery", &missing, "cannot read", None),
        (
            "plumbline-delivery",
            &unset_secret,
            "PLUMBLINE_MAX_RECEIVES is not a count: 0",
            Some(("PLUMBLINE_MAX_RECEIVES", "0")),
        ),
        ("plumbline-reconcile", &missing, "cannot read", None),
        ("plumbline-ingress", &unset_secret, attempt_reason, attempt),
        ("plumbline-delivery", &unset_secret, attempt_reason, attempt),
        (
            "plumbline-reconcile",
            &unset_secret,
            attempt_reason,
            attempt,
        ),
    ];
    for (function, config, reason, variable) in cases {
        let out = std::process::Command::new(function_binary(function))
            .envs(variable)
            .env("PLUMBLINE_CONFIG", config)
            .env("PLUMBLINE_TABLE", "t")
            .env("PLUMBLINE_QUEUE_URL", "http://127.0.0.1:9/q")
            .env("PLUMBLINE_DLQ_URL", "http://127.0.0.1:9/d")
            .env_remove("PLUMBLINE_TEST_UNSET_SECRET")
            .env_remove("AWS_LAMBDA_LOG_FORMAT")
            .output()
            .expect("run the function");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{function}: {stdout}");
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{function}: {e}: {l}")))
            .collect();
        let stopped: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["message"] == "the function stopped")
            .collect();
        assert_eq!(stopped.len(), 1, "{function}: {stdout}");
        assert_eq!(stopped[0]["level"], "ERROR", "{function}: {stdout}");
        let error = stopped[0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{function}: {error}");
        assert!(!stderr.contains("ConfigError {"), "{function}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Each function fetches at cold start only the references it resolves: with the delivery
/// target's parameter missing, the ingress and reconcile start and answer, and delivery, the
/// one that needs it, stops and names it.
#[tokio::test]
async fn each_function_fetches_only_its_own_secrets_at_start_up() {
    use crate::helpers::runtime::{function_binary, invoke};
    use crate::helpers::{STRIPE_SECRET, apigw_event, create_queue, create_table, stripe_headers};

    let aws = aws().await;
    let present = format!("/plumbline/{}/stripe", unique("own"));
    let absent = format!("/plumbline/{}/erp", unique("own"));
    put_parameter(&aws, &present, STRIPE_SECRET).await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (dir, config) = config_dir(
        "plumbline-own-secrets",
        &format!(
            "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"ssm:{present}\"]\n\n\
             [targets.erp]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/erp\"\nsecret = \"ssm:{absent}\"\n\n\
             [[routes]]\nevents = [\"payment.*\"]\ntargets = [\"erp\"]\n"
        ),
    );
    let envs = vec![
        ("PLUMBLINE_CONFIG", config.display().to_string()),
        ("PLUMBLINE_TABLE", create_table(&ddb).await),
        ("PLUMBLINE_QUEUE_URL", create_queue(&sqs).await),
        ("PLUMBLINE_DLQ_URL", create_queue(&sqs).await),
    ];

    let body = fixture("stripe/payment_intent.succeeded.json");
    let now = crate::helpers::unix_now();
    let webhook = apigw_event(
        "POST",
        "stripe",
        &stripe_headers(STRIPE_SECRET, now, &body),
        &body,
    );
    let (answers, _) = invoke(&function_binary("plumbline-ingress"), &envs, &[webhook]).await;
    assert_eq!(answers[0].body["statusCode"], 200, "{answers:?}");
    let scheduled = crate::helpers::scheduled_event();
    let (answers, _) = invoke(&function_binary("plumbline-reconcile"), &envs, &[scheduled]).await;
    assert!(!answers[0].error, "{answers:?}");

    let out = std::process::Command::new(function_binary("plumbline-delivery"))
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("AWS_LAMBDA_LOG_FORMAT")
        .output()
        .expect("run delivery");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let stopped = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "the function stopped")
        .unwrap_or_else(|| panic!("no stop line: {stdout}"));
    let error = stopped["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("targets.erp.secret") && error.contains(&absent),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// More parameters than one `GetParameters` answers (ten): each key still gets its own
/// parameter's value, and a missing one is named by its key alone.
#[tokio::test]
async fn many_parameters_resolve_each_to_its_own_value() {
    use plumbline::config::{SecretRef, SecretResolver};
    use secrecy::ExposeSecret;

    let aws = aws().await;
    let prefix = format!("/plumbline/{}", unique("many"));
    let mut refs = Vec::new();
    for i in 0..12 {
        let name = format!("{prefix}/p{i}");
        put_parameter(&aws, &name, &format!("value-{i}")).await;
        refs.push((format!("key{i}"), SecretRef::Ssm(name)));
    }
    let remote = fetch(&refs, &aws).await.expect("fetched");
    for (i, (_, reference)) in refs.iter().enumerate() {
        let value = remote.resolve(reference).expect("resolved");
        assert_eq!(value.expose_secret(), format!("value-{i}"));
    }

    refs.push((
        "absent".to_owned(),
        SecretRef::Ssm(format!("{prefix}/absent")),
    ));
    let err = fetch(&refs, &aws).await.expect_err("one is missing");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["absent"], "{err}");
    assert!(
        err.problems[0].reason.ends_with(": ParameterNotFound"),
        "{}",
        err.problems[0].reason
    );
}

/// A target's header may hold a secret from Parameter Store: delivery fetches it at cold start
/// and sends its value, never the reference's text.
#[tokio::test]
async fn a_targets_header_from_parameter_store_is_sent_with_its_value() {
    use crate::helpers::pipeline::{ERP_SIGNING_SECRET, sqs_event};
    use crate::helpers::recorder::Recorder;
    use crate::helpers::runtime::{function_binary, invoke};
    use crate::helpers::{STRIPE_SECRET, apigw_event, create_queue, create_table, drain};
    use crate::helpers::{stripe_headers, unix_now};

    let aws = aws().await;
    let parameter = format!("/plumbline/targets/{}", unique("erp-key"));
    let value = unique("erp-api-key");
    put_parameter(&aws, &parameter, &value).await;
    let (ddb, sqs) = (
        aws_sdk_dynamodb::Client::new(&aws),
        aws_sdk_sqs::Client::new(&aws),
    );
    let erp = Recorder::start().await;
    let (dir, config) = config_dir(
        "plumbline-header-secret",
        &format!(
            "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:STRIPE_WEBHOOK_SECRET\"]\n\n\
             [targets.erp]\nkind = \"http\"\nurl = \"{}/erp\"\nsecret = \"env:ERP_SIGNING_SECRET\"\n\
             headers = {{ \"X-Api-Key\" = \"ssm:{parameter}\", \"X-Env\" = \"production\" }}\n\n\
             [[routes]]\nevents = [\"payment.*\"]\ntargets = [\"erp\"]\n",
            erp.url
        ),
    );
    let queue = create_queue(&sqs).await;
    let envs = vec![
        ("PLUMBLINE_CONFIG", config.display().to_string()),
        ("PLUMBLINE_TABLE", create_table(&ddb).await),
        ("PLUMBLINE_QUEUE_URL", queue.clone()),
        ("PLUMBLINE_DLQ_URL", create_queue(&sqs).await),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET.to_owned()),
        ("ERP_SIGNING_SECRET", ERP_SIGNING_SECRET.to_owned()),
    ];
    let body = fixture("stripe/payment_intent.succeeded.json");
    let webhook = apigw_event(
        "POST",
        "stripe",
        &stripe_headers(STRIPE_SECRET, unix_now(), &body),
        &body,
    );
    let (answers, _) = invoke(&function_binary("plumbline-ingress"), &envs, &[webhook]).await;
    assert_eq!(answers[0].body["statusCode"], 200, "{answers:?}");
    let event = serde_json::to_value(sqs_event(drain(&sqs, &queue).await)).expect("event");
    let (answers, _) = invoke(&function_binary("plumbline-delivery"), &envs, &[event]).await;
    assert_eq!(
        answers[0].body["batchItemFailures"],
        serde_json::json!([]),
        "{answers:?}"
    );
    let received = erp.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].header("x-api-key"), Some(value.as_str()));
    assert_eq!(received[0].header("x-env"), Some("production"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `plumbline config check --aws`, run before a deploy or after a rotation: every secret each
/// function fetches at cold start is fetched and put to its use. A missing parameter and a key
/// that is no key are problems under their keys, in the function that would stop on them; an
/// `env:` reference this shell lacks is left to the function's environment; no value is
/// printed. Once they are put right, it passes.
#[tokio::test]
async fn config_check_with_aws_fetches_and_uses_every_functions_secrets() {
    use crate::helpers::dev::binary;

    let aws = aws().await;
    let (stripe, erp, adyen) = (
        format!("/plumbline/{}/stripe", unique("check")),
        format!("/plumbline/{}/erp", unique("check")),
        unique("plumbline-adyen"),
    );
    let stripe_value = "whsec_checked_by_config_check";
    let not_hex = "this-is-no-hexadecimal-hmac-key";
    let erp_value = "whsec_ZXJwLXNpZ25pbmctc2VjcmV0";
    put_parameter(&aws, &stripe, stripe_value).await;
    let manager = aws_sdk_secretsmanager::Client::new(&aws);
    manager
        .create_secret()
        .name(&adyen)
        .secret_string(format!(r#"{{"hmac": "{not_hex}"}}"#))
        .send()
        .await
        .expect("secret");
    let (dir, config) = config_dir(
        "plumbline-check-aws",
        &format!(
            "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"ssm:{stripe}\"]\n\n\
             [sources.adyen]\nkind = \"adyen\"\nsecrets = [\"secretsmanager:{adyen}#hmac\"]\n\n\
             [sources.site]\nkind = \"standard-webhooks\"\nsecrets = [\"env:PLUMBLINE_TEST_UNSET_SECRET\"]\n\n\
             [targets.erp]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/erp\"\nsecret = \"ssm:{erp}\"\n\n\
             [[routes]]\nevents = [\"payment.*\"]\ntargets = [\"erp\"]\n"
        ),
    );
    let check = |json: bool| {
        std::process::Command::new(binary())
            .args(["config", "check", "--aws"])
            .args(json.then_some("--json"))
            .arg(&config)
            .env_remove("PLUMBLINE_TEST_UNSET_SECRET")
            .env_remove("PLUMBLINE_TABLE")
            .env_remove("PLUMBLINE_QUEUE_URL")
            .output()
            .expect("run plumbline")
    };

    let out = check(true);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    for value in [stripe_value, not_hex] {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "{stdout}"
        );
    }
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["aws"]["passed"], false, "{report}");
    let function = |name: &str| {
        report["aws"]["functions"]
            .as_array()
            .and_then(|all| all.iter().find(|f| f["function"] == name))
            .unwrap_or_else(|| panic!("{name} in {report}"))
            .clone()
    };
    let ingress = function("ingress");
    assert_eq!(ingress["fetched"], 2, "{ingress}");
    assert_eq!(
        ingress["problems"].as_array().map(Vec::len),
        Some(1),
        "{ingress}"
    );
    assert_eq!(ingress["problems"][0]["key"], "sources.adyen.secrets[0]");
    assert_eq!(
        ingress["problems"][0]["reason"],
        "expected the HMAC key as hexadecimal"
    );
    let delivery = function("delivery");
    assert_eq!(
        delivery["problems"].as_array().map(Vec::len),
        Some(1),
        "{delivery}"
    );
    assert_eq!(delivery["problems"][0]["key"], "targets.erp.secret");
    let reason = delivery["problems"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.starts_with(&format!("ssm:{erp}: ")), "{reason}");
    let reconcile = function("reconcile");
    assert_eq!(reconcile["problems"], serde_json::json!([]), "{reconcile}");
    assert_eq!(
        report["aws"]["not_checked"][0]["key"], "sources.site.secrets[0]",
        "{report}"
    );

    put_parameter(&aws, &erp, erp_value).await;
    manager
        .put_secret_value()
        .secret_id(&adyen)
        .secret_string(
            r#"{"hmac": "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"}"#,
        )
        .send()
        .await
        .expect("a new version");
    let out = check(false);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.contains("ingress: 2 secrets fetched from AWS, usable"),
        "{stdout}"
    );
    assert!(
        stdout.contains("delivery: 1 secret fetched from AWS, usable"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reconcile: nothing to fetch from AWS"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "sources.site.secrets[0]: env:PLUMBLINE_TEST_UNSET_SECRET is not set in this shell"
        ),
        "{stderr}"
    );
    assert!(
        !stdout.contains(erp_value) && !stderr.contains(erp_value),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
