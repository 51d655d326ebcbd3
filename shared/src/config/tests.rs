use super::*;

const DESIGN_EXAMPLE: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_WEBHOOK_SECRET"]
tolerance_secs = 300
api_key = "env:STRIPE_API_KEY"
api_base = "https://api.stripe.com"

[sources.site]
kind = "standard-webhooks"
secrets = ["env:SITE_WEBHOOK_SECRET"]

[targets.erp]
kind = "http"
url = "https://erp.example.com/plumbline"
secret = "env:ERP_SIGNING_SECRET"

[targets.crm]
kind = "hubspot"
token = "env:HUBSPOT_TOKEN"

[[routes]]
events = ["payment.*", "order.*"]
targets = ["erp"]

[[routes]]
events = ["lead.*", "payment.succeeded"]
targets = ["crm"]

[ownership]
"payment.status" = "stripe"
"customer.email" = "crm"
"order.fulfillment_status" = "erp"

[reconcile.thresholds]
missed_events = 0
status_mismatches = 5
dlq_messages = 0
"#;

#[test]
fn the_documented_shape_parses() {
    let config = Config::parse(DESIGN_EXAMPLE).expect("valid");
    assert_eq!(config.sources.len(), 2);
    let stripe = &config.sources[&SourceName::try_from("stripe").expect("valid")];
    assert_eq!(stripe.kind, SourceKind::Stripe);
    assert_eq!(
        stripe.secrets,
        vec![SecretRef::Env("STRIPE_WEBHOOK_SECRET".into())]
    );
    assert_eq!(config.routes.len(), 2);
    // The design's names, read as the checks they describe.
    assert_eq!(
        config.thresholds,
        BTreeMap::from([
            ("dlq_messages".to_owned(), 0),
            ("missed_webhooks".to_owned(), 0),
            ("payment_order_parity".to_owned(), 5),
        ])
    );
    assert_eq!(config.reconcile.thresholds, config.thresholds);
    assert_eq!(config.ingress, IngressSettings::default());
}

#[test]
fn an_owned_field_the_ledger_does_not_keep_is_a_warning() {
    // The design's example owns an order field no event writes: said at load (so in the
    // functions' start-up log too), with its line.
    let design = Config::parse(DESIGN_EXAMPLE).expect("valid");
    let keys: Vec<(&str, Option<usize>)> = design
        .warnings
        .iter()
        .map(|w| (w.key.as_str(), w.line))
        .collect();
    let line = DESIGN_EXAMPLE
        .lines()
        .position(|l| l.starts_with("\"order.fulfillment_status\""))
        .map(|i| i + 1);
    assert_eq!(keys, [("ownership.\"order.fulfillment_status\"", line)]);
    assert!(line.is_some());

    let text = DESIGN_EXAMPLE.replace(
        "\"order.fulfillment_status\" = \"erp\"",
        "\"order.status\" = \"erp\"\n\"lead.utm_source\" = \"site\"\n\
         \"payment.amount_refundd\" = \"stripe\"\n\"customer.amount\" = \"crm\"\n\
         \"subscription.failure_reason\" = \"stripe\"",
    );
    let config = Config::parse(&text).expect("valid");
    let warnings = &config.warnings;
    let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "ownership.\"customer.amount\"",
            "ownership.\"payment.amount_refundd\""
        ]
    );
    assert!(
        warnings[1].reason.contains("\"amount_refundd\"")
            && warnings[1].reason.contains("amount_refunded"),
        "{}",
        warnings[1].reason
    );
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
[sources.stripe]
kind = "stripe"
secrets = ["not-a-reference-plaintext"]
tolerance_secs = 0

[sources.shop]
kind = "shopify"
secrets = []
tolerance_secs = 60
api_key = "env:SHOP_API_KEY"

[[routes]]
events = ["Payment"]
targets = ["nowhere"]

[ownership]
"invoice.total" = "erp"
"#;
    let err = Config::parse(text).expect_err("invalid");
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sources.shop.secrets",
            "sources.shop.tolerance_secs",
            "sources.shop.api_key",
            "sources.stripe.secrets[0]",
            "sources.stripe.tolerance_secs",
            "routes[0].events[0]",
            "routes[0].targets[0]",
            "ownership.\"invoice.total\"",
            "ownership.\"invoice.total\"",
        ]
    );
    let secret = err
        .problems
        .iter()
        .find(|p| p.key == "sources.stripe.secrets[0]")
        .expect("present");
    assert_eq!(secret.line, Some(4));
    assert!(
        !err.to_string().contains("not-a-reference-plaintext"),
        "a secret value is never echoed"
    );
}

#[test]
fn syntax_errors_and_unknown_keys_carry_a_line() {
    let err =
        Config::parse("[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:A\"]\nsecret = 1\n")
            .expect_err("unknown key");
    assert_eq!(err.problems[0].line, Some(4));
    assert!(
        err.problems[0].reason.contains("secret"),
        "{}",
        err.problems[0].reason
    );
    let err = Config::parse("[sources.stripe\n").expect_err("syntax");
    assert_eq!(err.problems[0].line, Some(1));
    let err = Config::parse("[sources.x]\nkind = \"mailchimp\"\nsecrets = [\"env:A\"]\n")
        .expect_err("kind");
    assert!(
        err.problems[0].reason.contains("unknown variant"),
        "{}",
        err.problems[0].reason
    );
}

#[test]
fn verifiers_resolve_and_decode_secrets() {
    let config = Config::parse(DESIGN_EXAMPLE).expect("valid");
    let resolver = MapSecrets(BTreeMap::from([
        ("env:STRIPE_WEBHOOK_SECRET".into(), "whsec_abc".into()),
        ("env:SITE_WEBHOOK_SECRET".into(), "whsec_not base64!".into()),
    ]));
    let err = config
        .verifiers(&resolver)
        .expect_err("site secret is not base64");
    assert_eq!(err.problems[0].key, "sources.site.secrets[0]");
    let resolver = MapSecrets(BTreeMap::from([
        ("env:STRIPE_WEBHOOK_SECRET".into(), "whsec_abc".into()),
        ("env:SITE_WEBHOOK_SECRET".into(), "whsec_c2VjcmV0".into()),
    ]));
    let verifiers = config.verifiers(&resolver).expect("resolved");
    assert_eq!(verifiers.len(), 2);
    let missing = config.verifiers(&MapSecrets::default()).expect_err("unset");
    assert_eq!(missing.problems.len(), 2);
    assert!(missing.problems[0].reason.contains("is not set"));
}

#[test]
fn each_function_resolves_only_its_own_secrets() {
    let config = Config::parse(DESIGN_EXAMPLE).expect("parses");
    let keys = |purpose| -> Vec<String> {
        config
            .secret_refs_for(purpose)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    };
    assert_eq!(
        keys(SecretPurpose::Verify),
        ["sources.site.secrets[0]", "sources.stripe.secrets[0]"]
    );
    assert_eq!(
        keys(SecretPurpose::Deliver),
        ["targets.crm.token", "targets.erp.secret"]
    );
    assert_eq!(
        keys(SecretPurpose::Reconcile),
        ["sources.stripe.api_key", "targets.crm.token"]
    );
    assert_eq!(config.secret_refs().len(), 5, "every reference");
}

#[test]
fn a_threshold_must_name_a_check() {
    let base =
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:S\"]\n\n[reconcile.thresholds]\n";
    let err = Config::parse(&format!("{base}dlq_messages = 0\nmissed_webhook = 0\n"))
        .expect_err("a misspelt check");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].key, "reconcile.thresholds.missed_webhook");
    assert_eq!(err.problems[0].line, Some(7));
    assert!(
        err.problems[0]
            .reason
            .contains("missed_webhooks, stuck_events"),
        "{}",
        err.problems[0].reason
    );
    let err = Config::parse(&format!("{base}missed_events = 0\nmissed_webhooks = 1\n"))
        .expect_err("one check, two thresholds");
    assert_eq!(err.problems.len(), 1, "{err}");
    for check in CHECKS {
        let config = Config::parse(&format!("{base}{check} = 3\n")).expect("a check's own name");
        assert_eq!(config.thresholds[check], 3);
    }
}

#[test]
fn a_route_that_matches_no_event_type_is_a_warning() {
    let text = "[sources.s]\nkind = \"stripe\"\nsecrets = [\"env:S\"]\n\n[targets.erp]\nkind = \"http\"\nurl = \"https://erp.example.com/\"\nsecret = \"env:E\"\n\n[[routes]]\nevents = [\"payment.succeeded\", \"payment.succeded\", \"payments.*\", \"order.*\", \"*\"]\ntargets = [\"erp\"]\n";
    let config = Config::parse(text).expect("valid, with warnings");
    let keys: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["routes[0].events[1]", "routes[0].events[2]"]);
    assert!(
        config.warnings[0]
            .reason
            .contains("\"payment.succeded\" matches none"),
        "{}",
        config.warnings[0].reason
    );
    // The design's routes all match (its one warning is of an owned field, below).
    let design = Config::parse(DESIGN_EXAMPLE).expect("valid");
    assert!(
        design.warnings.iter().all(|w| !w.key.starts_with("routes")),
        "{:?}",
        design.warnings
    );
}

#[test]
fn a_route_filter_on_no_field_of_the_envelope_is_a_warning() {
    let text = "[sources.s]\nkind = \"stripe\"\nsecrets = [\"env:S\"]\n\n[targets.erp]\nkind = \"http\"\nurl = \"https://erp.example.com/\"\nsecret = \"env:E\"\n\n[[routes]]\nevents = [\"payment.*\"]\ntargets = [\"erp\"]\nwhere = { \"data.amount.currency\" = \"EUR\", \"data.currency\" = \"EUR\", \"source\" = \"s\" }\n";
    let config = Config::parse(text).expect("valid, with a warning");
    let warnings = config.schema_warnings();
    let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(keys, ["routes[0].where.\"data.currency\""]);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn a_source_with_an_events_api_but_no_api_key_is_a_warning() {
    let text = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:S"]

[sources.paddle]
kind = "paddle"
secrets = ["env:P"]
api_key = "env:PADDLE_API_KEY"

[sources.shop]
kind = "shopify"
secrets = ["env:SHOP"]
"#;
    let config = Config::parse(text).expect("valid, with a warning");
    let warnings = config.check_warnings("plumbline");
    let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        ["sources.paddle.endpoint_id", "sources.stripe.api_key"],
        "shopify has no events API"
    );
    assert!(
        warnings[0].reason.contains("looks for every event type"),
        "{}",
        warnings[0].reason
    );
    assert!(
        warnings[1]
            .reason
            .contains("a stripe webhook that never arrives is not found"),
        "{}",
        warnings[1].reason
    );
    let named = text.replace(
        "api_key = \"env:PADDLE_API_KEY\"",
        "api_key = \"env:PADDLE_API_KEY\"\nendpoint_id = \"ntfset_01h8\"",
    );
    let warned = Config::parse(&named)
        .expect("valid")
        .check_warnings("plumbline");
    assert_eq!(warned.len(), 1, "{warned:?}");
}

#[test]
fn a_remote_secret_outside_its_readers_folder_is_a_warning() {
    let text = r#"
[sources.stripe]
kind = "stripe"
secrets = ["ssm:/plumbline/sources/stripe-webhook", "ssm:/plumbline/stripe-old"]
api_key = "secretsmanager:arn:aws:secretsmanager:eu-west-1:123456789012:secret:plumbline/api-keys/stripe-AbCdEf"

[targets.erp]
kind = "http"
url = "https://erp.example.com/"
secret = "ssm:/plumbline/crm/erp-signing"

[targets.crm]
kind = "hubspot"
token = "secretsmanager:plumbline/crm/hubspot#token"
headers = { "X-Env" = "env:ERP_ENV" }

[[routes]]
events = ["payment.*"]
targets = ["erp", "crm"]
"#;
    let config = Config::parse(text).expect("valid");
    let warnings = config.secret_folder_warnings("plumbline");
    let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    // The old signing secret is in no folder; the ERP's is in the CRM's, which delivery's role
    // reads but so does reconciliation's, which has no business with the ERP's secret.
    assert_eq!(keys, ["sources.stripe.secrets[1]", "targets.erp.secret"]);
    assert!(
        warnings[1]
            .reason
            .contains("not under /plumbline/targets/…"),
        "{}",
        warnings[1].reason
    );
    assert!(
        Config::parse(DESIGN_EXAMPLE)
            .expect("valid")
            .secret_folder_warnings("plumbline")
            .is_empty(),
        "env: references are the process's own"
    );
}

#[test]
fn a_remote_secret_must_be_under_the_stacks_prefix_as_its_role_names_it() {
    let warned = |reference: &str, prefix: &str| {
        let text = format!("[sources.s]\nkind = \"stripe\"\nsecrets = [\"{reference}\"]\n");
        let config = Config::parse(&text).expect("valid");
        !config.secret_folder_warnings(prefix).is_empty()
    };
    let arn = "arn:aws:ssm:eu-west-1:123456789012:parameter";
    let secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret";
    // (reference, the stack's prefix, warned)
    let cases = [
        ("ssm:/plumbline/sources/stripe", "plumbline", false),
        ("ssm:/plumbline/sources/stripe/2026", "plumbline", false),
        (
            &format!("ssm:{arn}/plumbline/sources/stripe"),
            "plumbline",
            false,
        ),
        (
            "secretsmanager:plumbline/sources/stripe#key",
            "plumbline",
            false,
        ),
        (
            &format!("secretsmanager:{secret}:plumbline/sources/stripe-AbCdEf"),
            "plumbline",
            false,
        ),
        (
            "ssm:/acme/plumbline/sources/stripe",
            "acme/plumbline",
            false,
        ),
        (
            "ssm:/acme/plumbline/sources/stripe",
            "/acme/plumbline/",
            false,
        ),
        // Another stack's prefix: the role names this stack's alone.
        ("ssm:/other/sources/stripe", "plumbline", true),
        ("ssm:/other/sources/stripe", "other", false),
        ("ssm:/plumbline-old/sources/stripe", "plumbline", true),
        ("ssm:/acme/plumbline/sources/stripe", "plumbline", true),
        // The folder must be a folder with something in it.
        ("ssm:/plumbline/sources", "plumbline", true),
        ("ssm:/plumbline/sources/", "plumbline", true),
        ("ssm:/plumbline/sourcesx/stripe", "plumbline", true),
        // Another reader's folder.
        ("ssm:/plumbline/api-keys/stripe", "plumbline", true),
        ("secretsmanager:plumbline/targets/stripe", "plumbline", true),
    ];
    for (reference, prefix, expected) in cases {
        assert_eq!(
            warned(reference, prefix),
            expected,
            "{reference} with SecretsPrefix={prefix}"
        );
    }
}

#[test]
fn a_sender_signs_with_the_sources_first_secret() {
    let config = Config::parse(DESIGN_EXAMPLE).expect("valid");
    let stripe = SourceName::try_from("stripe").expect("a name");
    let (key, reference) = config.signing_secret(&stripe).expect("stripe has one");
    assert_eq!(key, "sources.stripe.secrets[0]");
    assert_eq!(reference, config.sources[&stripe].secrets[0]);
    let verify = config.secret_refs_for(SecretPurpose::Verify);
    assert!(
        verify.contains(&(key, reference)),
        "keyed as the ingress keys it"
    );
    let nobody = SourceName::try_from("nobody").expect("a name");
    assert!(config.signing_secret(&nobody).is_none());
}

#[test]
fn a_header_may_hold_a_secret_from_any_store() {
    let text = "[targets.erp]\nkind = \"http\"\nurl = \"https://erp.example.com/\"\nheaders = { \"X-Api-Key\" = \"ssm:/plumbline/targets/erp-key\", \"X-Token\" = \"secretsmanager:plumbline/targets/erp#token\", \"X-Env\" = \"env:ERP_ENV\", \"X-Plain\" = \"production\", \"X-Colon\" = \"a:b\" }\n";
    let config = Config::parse(text).expect("valid");
    let headers = &config.targets["erp"].headers;
    assert_eq!(
        headers["X-Api-Key"],
        HeaderValue::Secret(SecretRef::Ssm("/plumbline/targets/erp-key".into()))
    );
    assert!(matches!(
        headers["X-Token"],
        HeaderValue::Secret(SecretRef::SecretsManager { .. })
    ));
    assert!(matches!(
        headers["X-Env"],
        HeaderValue::Secret(SecretRef::Env(_))
    ));
    assert_eq!(
        headers["X-Plain"],
        HeaderValue::Literal("production".into())
    );
    assert_eq!(headers["X-Colon"], HeaderValue::Literal("a:b".into()));
    let keys: Vec<String> = config
        .secret_refs_for(SecretPurpose::Deliver)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(
        keys,
        [
            "targets.erp.headers.X-Api-Key",
            "targets.erp.headers.X-Env",
            "targets.erp.headers.X-Token"
        ]
    );
}

#[test]
fn a_target_field_from_no_field_of_the_delivery_document_is_a_warning() {
    let fields = [
        ("entity.fields.amount", false),
        ("event.occurred_at", false),
        ("entity.kind", false),
        ("effect", false),
        ("event.data.customer.email", false),
        ("event.data.amout", true),
        ("entity.status", false),
        ("envelope.id", false),
        ("entity.fields.", false),
        ("event.entity.refs.order_id", false),
        ("entity.fields.amout", false),
        ("entity.fields.amount.currency", false),
        ("entity.fields.lead_source", true),
    ];
    let mut text =
        String::from("[targets.erp]\nkind = \"http\"\nurl = \"https://erp.example.com/\"\n");
    for (i, (from, required)) in fields.iter().enumerate() {
        fmt::Write::write_fmt(
            &mut text,
            format_args!("\n[[targets.erp.fields]]\nto = \"f{i}\"\nfrom = \"{from}\"\nrequired = {required}\n"),
        )
        .expect("writing to a String");
    }
    let text = text.as_str();
    let config = Config::parse(text).expect("valid, with warnings");
    let warnings = config.check_warnings("plumbline");
    let keys: Vec<&str> = warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "targets.erp.fields[5].from",
            "targets.erp.fields[6].from",
            "targets.erp.fields[7].from",
            "targets.erp.fields[8].from",
            "targets.erp.fields[10].from"
        ]
    );
    assert!(
        warnings[0]
            .reason
            .contains("every delivery to this target would fail"),
        "{}",
        warnings[0].reason
    );
    assert!(
        warnings[1].reason.contains("never be sent"),
        "{}",
        warnings[1].reason
    );
}

#[test]
fn max_requeues_is_read_and_bounded() {
    let base = "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:S\"]\n\n[reconcile]\n";
    assert_eq!(
        Config::parse(base).expect("valid").reconcile.max_requeues,
        3,
        "the default"
    );
    let config = Config::parse(&format!("{base}max_requeues = 0\n")).expect("valid");
    assert_eq!(config.reconcile.max_requeues, 0, "give up at once");
    let err = Config::parse(&format!("{base}max_requeues = 101\n")).expect_err("too many");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].key, "reconcile.max_requeues");
    assert_eq!(err.problems[0].line, Some(6));
    Config::parse(&format!("{base}max_requeues = -1\n")).expect_err("not a count");
}

#[test]
fn first_walk_days_is_read_and_bounded() {
    let base = "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:S\"]\n\n[reconcile]\n";
    assert_eq!(
        Config::parse(base)
            .expect("valid")
            .reconcile
            .first_walk_days,
        30,
        "the default"
    );
    let config = Config::parse(&format!("{base}first_walk_days = 0\n")).expect("valid");
    assert_eq!(config.reconcile.first_walk_days, 0, "from the first run on");
    let err = Config::parse(&format!("{base}first_walk_days = 91\n")).expect_err("too far");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!(err.problems[0].key, "reconcile.first_walk_days");
    assert_eq!(err.problems[0].line, Some(6));
}

#[test]
fn an_endpoint_id_is_held_to_its_providers_id_shape_and_needs_the_api_key() {
    let source = |kind: &str, extra: &str| {
        format!("[sources.s]\nkind = \"{kind}\"\nsecrets = [\"env:S\"]\n{extra}")
    };
    let key = "api_key = \"env:K\"\n";
    let stripe = Config::parse(&source(
        "stripe",
        &format!("{key}endpoint_id = \"we_1Abc\"\n"),
    ))
    .expect("valid");
    assert_eq!(
        stripe.sources[&SourceName::try_from("s").expect("valid")]
            .endpoint_id
            .as_deref(),
        Some("we_1Abc")
    );
    let paddle = format!("{key}endpoint_id = \"ntfset_01h8\"\n");
    assert!(Config::parse(&source("paddle", &paddle)).is_ok());
    for (kind, extra, reason) in [
        (
            "stripe",
            format!("{key}endpoint_id = \"ntfset_01h8\"\n"),
            "must be a stripe endpoint id",
        ),
        (
            "stripe",
            format!("{key}endpoint_id = \"we_../../v1/charges\"\n"),
            "must be a stripe endpoint id",
        ),
        (
            "stripe",
            format!("{key}endpoint_id = \"we_\"\n"),
            "must be a stripe endpoint id",
        ),
        (
            "stripe",
            "endpoint_id = \"we_1Abc\"\n".to_owned(),
            "needs api_key",
        ),
        (
            "shopify",
            "endpoint_id = \"we_1Abc\"\n".to_owned(),
            "has no events API",
        ),
    ] {
        let err = Config::parse(&source(kind, &extra)).expect_err(&extra);
        let problem = err
            .problems
            .iter()
            .find(|p| p.key == "sources.s.endpoint_id")
            .unwrap_or_else(|| panic!("{extra}: {err}"));
        assert!(
            problem.reason.contains(reason),
            "{extra}: {}",
            problem.reason
        );
    }
}
