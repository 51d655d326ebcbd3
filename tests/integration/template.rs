//! The template and the code agree on the table's shape.

use crate::helpers::{template_resources as resources, template_table};

#[test]
fn the_table_declares_the_keys_the_store_writes() {
    let props = template_table();
    let keys: Vec<&str> = props["KeySchema"]
        .as_sequence()
        .expect("KeySchema")
        .iter()
        .filter_map(|k| k["AttributeName"].as_str())
        .collect();
    assert_eq!(keys, ["pk", "sk"]);
    // The indexes the store queries (and `config check --aws` looks for), each keyed as the
    // template keys it.
    let indexes: Vec<(&str, Vec<&str>)> = props["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .map(|g| {
            let keys = g["KeySchema"]
                .as_sequence()
                .expect("an index's KeySchema")
                .iter()
                .filter_map(|k| k["AttributeName"].as_str())
                .collect();
            (g["IndexName"].as_str().unwrap_or_default(), keys)
        })
        .collect();
    {
        use plumbline::adapters::dynamodb::{
            CHANGED_INDEX, EXPIRY_ATTRIBUTE, INDEXES, KEPT_INDEX, PENDING_INDEX,
        };
        let names: Vec<&str> = indexes.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, [PENDING_INDEX, CHANGED_INDEX, KEPT_INDEX]);
        let expected: Vec<(&str, Vec<&str>)> = INDEXES
            .iter()
            .map(|i| (i.name, vec![i.partition, i.sort]))
            .collect();
        assert_eq!(indexes, expected);
        assert_eq!(
            props["TimeToLiveSpecification"]["AttributeName"].as_str(),
            Some(EXPIRY_ATTRIBUTE)
        );
    }
    // What the deployed stack's check cannot see: moto's CloudFormation leaves these off.
    assert_eq!(
        props["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        props["SSESpecification"]["SSEEnabled"].as_bool(),
        Some(true)
    );
}

pub(crate) fn strings(value: &serde_yaml_ng::Value) -> Vec<String> {
    match value {
        serde_yaml_ng::Value::String(s) => vec![s.clone()],
        serde_yaml_ng::Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// The logical name a `!GetAtt Name.Attribute` or `!Ref Name` points at.
pub(crate) fn referenced(value: &serde_yaml_ng::Value) -> Option<&str> {
    match value {
        serde_yaml_ng::Value::Tagged(tagged)
            if ["!GetAtt", "!Ref"].contains(&tagged.tag.to_string().as_str()) =>
        {
            tagged.value.as_str().and_then(|v| v.split('.').next())
        }
        _ => None,
    }
}

/// The template's functions, by logical name.
pub(crate) fn functions(all: &serde_yaml_ng::Mapping) -> Vec<(&str, &serde_yaml_ng::Value)> {
    all.iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(name, r)| (name.as_str().expect("a resource name"), r))
        .collect()
}

/// Every statement of a role's inline policies.
fn statements(role: &serde_yaml_ng::Value) -> Vec<&serde_yaml_ng::Value> {
    role["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["PolicyDocument"]["Statement"]
                .as_sequence()
                .into_iter()
                .flatten()
        })
        .collect()
}

/// The statements of the role `function` runs under.
pub(crate) fn role_statements<'a>(
    all: &'a serde_yaml_ng::Mapping,
    function: &str,
) -> Vec<&'a serde_yaml_ng::Value> {
    let role = referenced(&all[function]["Properties"]["Role"])
        .unwrap_or_else(|| panic!("{function} names no role of the template's"));
    statements(&all[role])
}

/// SAM gives a function without a `Role` one of its own, with AWS managed policies attached
/// that allow their actions on every resource (logs on every log group; for an SQS event
/// source, receive and delete on every queue of the account). So each function runs under a
/// role the template writes, its own, with no managed policy and Lambda alone trusted.
#[test]
fn every_function_runs_under_its_own_role_with_no_managed_policy() {
    let all = resources();
    let mut roles = Vec::new();
    for (name, function) in functions(&all) {
        let props = &function["Properties"];
        assert!(
            props["Policies"].is_null(),
            "{name}: Policies would have SAM make a role with managed policies"
        );
        let role = referenced(&props["Role"]).unwrap_or_else(|| panic!("{name}: no !GetAtt role"));
        assert_eq!(
            all[role]["Type"].as_str(),
            Some("AWS::IAM::Role"),
            "{name}: {role}"
        );
        let role_props = &all[role]["Properties"];
        assert!(
            role_props["ManagedPolicyArns"].is_null(),
            "{role}: a managed policy"
        );
        let trust = role_props["AssumeRolePolicyDocument"]["Statement"]
            .as_sequence()
            .expect("a trust policy");
        assert_eq!(trust.len(), 1, "{role}");
        assert_eq!(
            trust[0]["Principal"],
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>("Service: lambda.amazonaws.com")
                .expect("yaml"),
            "{role}: trusts only Lambda"
        );
        assert!(!roles.contains(&role), "{role} is shared");
        roles.push(role);
    }
    assert_eq!(roles.len(), 3, "the three functions' roles");
}

#[test]
fn every_policy_names_actions_and_resources_without_wildcards() {
    let mut statements_read = 0;
    for (name, resource) in resources() {
        if resource["Type"].as_str() != Some("AWS::IAM::Role") {
            continue;
        }
        for statement in statements(&resource) {
            statements_read += 1;
            for action in strings(&statement["Action"]) {
                assert!(!action.contains('*'), "{name:?}: wildcard action {action}");
            }
            assert_ne!(
                strings(&statement["Resource"]),
                ["*"],
                "{name:?}: a policy on every resource"
            );
            assert!(
                !statement["Resource"].is_null(),
                "{name:?}: a statement without a resource"
            );
        }
    }
    assert!(statements_read >= 9, "the functions' policies were read");
}

#[test]
fn every_queue_has_a_dead_letter_queue_or_is_one() {
    let all = resources();
    let queues: Vec<_> = all
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::SQS::Queue"))
        .collect();
    assert!(queues.len() >= 2);
    for (name, queue) in queues {
        let redrive = &queue["Properties"]["RedrivePolicy"];
        let is_target = !queue["Properties"]["RedriveAllowPolicy"].is_null();
        assert!(
            !redrive.is_null() || is_target,
            "{name:?} has no dead-letter queue"
        );
        if is_target {
            assert_eq!(
                queue["Properties"]["MessageRetentionPeriod"].as_u64(),
                Some(1_209_600),
                "{name:?}: keep dead letters 14 days"
            );
        }
    }
}

#[test]
fn every_sqs_event_source_reports_batch_item_failures_and_knows_its_last_receive() {
    let mut sources = 0;
    let all = resources();
    for (name, resource) in &all {
        for (_, event) in resource["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
        {
            if event["Type"].as_str() == Some("SQS") {
                sources += 1;
                let types = strings(&event["Properties"]["FunctionResponseTypes"]);
                assert!(
                    types.iter().any(|t| t == "ReportBatchItemFailures"),
                    "{name:?}: reported failures would be dropped"
                );
                // The function knows the queue's last receive: the same value as the redrive's.
                let queue = referenced(&event["Properties"]["Queue"]).unwrap_or_else(|| {
                    panic!(
                        "{name:?}: the queue is not a !GetAtt: {:?}",
                        event["Properties"]["Queue"]
                    )
                });
                let redrive = &all[queue]["Properties"]["RedrivePolicy"];
                let told =
                    &resource["Properties"]["Environment"]["Variables"]["PLUMBLINE_MAX_RECEIVES"];
                assert!(
                    !told.is_null(),
                    "{name:?}: PLUMBLINE_MAX_RECEIVES is not set"
                );
                assert_eq!(
                    told, &redrive["maxReceiveCount"],
                    "{name:?} and {queue}'s redrive"
                );
            }
        }
    }
    assert_eq!(sources, 1);
}

/// Whoever is paged finds what to do: every alarm pages the topic and names a runbook that
/// exists, and every runbook page names the alarm it is for.
#[test]
fn every_alarm_pages_and_names_a_runbook_that_exists() {
    let mut alarms = 0;
    for (name, resource) in resources() {
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        alarms += 1;
        let name = name.as_str().expect("a resource name");
        let props = &resource["Properties"];
        assert!(
            props["AlarmActions"]
                .as_sequence()
                .is_some_and(|actions| !actions.is_empty()),
            "{name} pages no one"
        );
        let description = props["AlarmDescription"].as_str().unwrap_or_default();
        let Some((_, runbook)) = description.split_once("Runbook ") else {
            panic!("{name} names no runbook: {description:?}")
        };
        let runbook = runbook.trim();
        let page = std::fs::read_to_string(crate::helpers::repo_path(runbook))
            .unwrap_or_else(|e| panic!("{name}: {runbook}: {e}"));
        assert!(page.contains(name), "{runbook} does not name {name}");
    }
    assert!(
        alarms >= 10,
        "expected the template's alarms, found {alarms}"
    );
}

/// The text of a `!Sub "…"` value.
pub(crate) fn sub_text(value: &serde_yaml_ng::Value) -> Option<&str> {
    match value {
        serde_yaml_ng::Value::Tagged(tagged) => tagged.value.as_str(),
        _ => None,
    }
}

/// IAM's `*`: any run of characters, `/` included.
fn iam_matches(pattern: &str, arn: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = arn.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// The stack's `SecretsPrefix` when the deployer keeps the template's default.
fn default_secrets_prefix(template: &serde_yaml_ng::Value) -> String {
    template["Parameters"]["SecretsPrefix"]["Default"]
        .as_str()
        .expect("SecretsPrefix has a default")
        .to_owned()
}

/// One function's role as it bears on secrets: the ARN patterns it may fetch parameters and
/// secrets from, with the template's substitutions made for a stack in us-east-1 with the
/// default secrets prefix.
struct SecretReader {
    function: &'static str,
    purpose: plumbline::config::SecretPurpose,
    parameters: Vec<String>,
    secrets: Vec<String>,
}

impl SecretReader {
    /// The three functions' roles, read from the template once.
    fn all(template: &serde_yaml_ng::Value) -> Vec<Self> {
        use plumbline::config::SecretPurpose;
        let prefix = default_secrets_prefix(template);
        let allowed = |function: &str, action: &str| -> Vec<String> {
            let mut out = Vec::new();
            let all = template["Resources"].as_mapping().expect("Resources");
            for statement in role_statements(all, function) {
                if !strings(&statement["Action"]).iter().any(|a| a == action) {
                    continue;
                }
                let items: Vec<&serde_yaml_ng::Value> = match &statement["Resource"] {
                    serde_yaml_ng::Value::Sequence(items) => items.iter().collect(),
                    one => vec![one],
                };
                for item in items {
                    let text = sub_text(item).unwrap_or_else(|| {
                        panic!("{function}: {action} on a resource that is not a !Sub: {item:?}")
                    });
                    out.push(
                        text.replace("${AWS::Partition}", "aws")
                            .replace("${AWS::Region}", "us-east-1")
                            .replace("${AWS::AccountId}", "123456789012")
                            .replace("${SecretsPrefix}", &prefix),
                    );
                }
            }
            out
        };
        [
            ("IngressFunction", SecretPurpose::Verify),
            ("DeliveryFunction", SecretPurpose::Deliver),
            ("ReconcileFunction", SecretPurpose::Reconcile),
        ]
        .into_iter()
        .map(|(function, purpose)| Self {
            function,
            purpose,
            parameters: allowed(function, "ssm:GetParameters"),
            secrets: allowed(function, "secretsmanager:GetSecretValue"),
        })
        .collect()
    }

    /// Whether the role lets its function fetch `reference`, as IAM would decide: the ARN the
    /// request names against the role's `!Sub` resource patterns.
    fn may_read(&self, reference: &plumbline::config::SecretRef) -> bool {
        use plumbline::config::SecretRef;
        let (arn, patterns) = match reference {
            SecretRef::Ssm(name) => (
                format!("arn:aws:ssm:us-east-1:123456789012:parameter{name}"),
                &self.parameters,
            ),
            // Secrets Manager appends six characters of its own to a secret's name.
            SecretRef::SecretsManager { id, .. } => (
                format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{id}-AbCdEf"),
                &self.secrets,
            ),
            SecretRef::Env(_) => return true,
        };
        patterns.iter().any(|p| iam_matches(p, &arn))
    }
}

/// The keys of `config`'s secrets that a function needs and its role would refuse it.
fn refused(readers: &[SecretReader], config: &plumbline::config::Config) -> Vec<String> {
    let mut out: Vec<String> = readers
        .iter()
        .flat_map(|reader| {
            config
                .secret_refs_for(reader.purpose)
                .into_iter()
                .filter(|(_, reference)| !reader.may_read(reference))
                .map(|(key, _)| key)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn each_function_may_read_its_own_secrets_and_no_others() {
    use plumbline::config::{Config, SecretRef};
    let config = Config::load(&crate::helpers::repo_path(
        "tests/fixtures/config/every-secret.toml",
    ))
    .expect("the fixture loads");
    let template = crate::helpers::template();
    let warnings = config.check_warnings(&default_secrets_prefix(&template));
    assert!(warnings.is_empty(), "{warnings:?}");
    let every = config.secret_refs();
    assert_eq!(every.len(), 7, "one reference in every slot");
    assert!(
        every.iter().all(|(_, r)| !matches!(r, SecretRef::Env(_))),
        "the fixture's secrets are remote"
    );
    for reader in SecretReader::all(&template) {
        let function = reader.function;
        let own = config.secret_refs_for(reader.purpose);
        assert!(!own.is_empty(), "{function} reads some of the fixture's");
        for (key, reference) in &every {
            let readable = reader.may_read(reference);
            let needed = own.iter().any(|(k, _)| k == key);
            assert_eq!(
                readable, needed,
                "{function} and {key} ({reference}): readable {readable}, needed {needed}"
            );
        }
    }
}

#[test]
fn config_check_warns_of_exactly_the_secrets_a_role_would_refuse() {
    use plumbline::config::Config;
    let text = std::fs::read_to_string(crate::helpers::repo_path(
        "tests/fixtures/config/every-secret.toml",
    ))
    .expect("the fixture");
    let template = crate::helpers::template();
    let prefix = default_secrets_prefix(&template);
    let readers = SecretReader::all(&template);
    // Each moves one secret where some function that needs it may not read it.
    for (from, to) in [
        (
            "/plumbline/sources/stripe-webhook\"",
            "/other/sources/stripe-webhook\"",
        ),
        (
            "/plumbline/sources/stripe-webhook-old",
            "/plumbline-old/sources/stripe-webhook",
        ),
        ("plumbline/sources/site#", "plumbline/targets/site#"),
        ("plumbline/api-keys/stripe", "plumbline/sources/stripe"),
        ("/plumbline/targets/erp-signing", "/plumbline/erp-signing"),
        ("plumbline/targets/erp#", "plumbline/api-keys/erp#"),
        (
            "/plumbline/crm/hubspot-token",
            "/plumbline/api-keys/hubspot-token",
        ),
        (
            "/plumbline/crm/hubspot-token",
            "/acme/plumbline/crm/hubspot-token",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let config = Config::parse(&text.replacen(from, to, 1)).expect("still valid");
        let mut warned: Vec<String> = config
            .check_warnings(&prefix)
            .into_iter()
            .map(|w| w.key)
            .collect();
        warned.sort();
        let refused = refused(&readers, &config);
        assert_eq!(refused.len(), 1, "{to}: one secret moved out of reach");
        assert_eq!(warned, refused, "{from} -> {to}");
    }
    // Stricter than IAM where a folder has a second reader: a secret kept in crm/ is readable
    // by both delivery and reconcile, though only one of them has any use for it.
    for (from, to, key) in [
        (
            "plumbline/api-keys/",
            "plumbline/crm/",
            "sources.stripe.api_key",
        ),
        (
            "plumbline/targets/erp#",
            "plumbline/crm/erp#",
            "targets.erp.headers.X-Api-Key",
        ),
    ] {
        let config = Config::parse(&text.replacen(from, to, 1)).expect("still valid");
        assert!(refused(&readers, &config).is_empty(), "{to}");
        let warned: Vec<String> = config
            .check_warnings(&prefix)
            .into_iter()
            .map(|w| w.key)
            .collect();
        assert_eq!(warned, [key]);
    }
}

#[test]
fn iam_patterns_match_as_iam_does() {
    assert!(iam_matches("arn:p/a/*", "arn:p/a/b/c"));
    assert!(!iam_matches("arn:p/a/*", "arn:p/ab"));
    assert!(iam_matches("arn:*:x/*", "arn:aws:x/y"));
    assert!(!iam_matches("arn:*:x/*", "arn:aws:y/x"));
    assert!(iam_matches("exact", "exact"));
    assert!(!iam_matches("exact", "exactly"));
}

#[test]
fn every_bundled_source_has_its_endpoint_among_the_outputs() {
    use plumbline::config::Config;
    let doc = crate::helpers::template();
    let outputs = doc["Outputs"].as_mapping().expect("Outputs");
    let base = sub_text(&outputs["WebhookBaseUrl"]["Value"]).expect("a base URL");
    let mut endpoints: Vec<String> = outputs
        .iter()
        .filter_map(|(_, output)| sub_text(&output["Value"]))
        .filter_map(|url| {
            url.strip_prefix(&format!("{base}/webhooks/"))
                .map(str::to_owned)
        })
        .collect();
    endpoints.sort();
    let config = Config::load(&crate::helpers::repo_path("infra/config/plumbline.toml"))
        .expect("the bundled configuration");
    let sources: Vec<String> = config.sources.keys().map(ToString::to_string).collect();
    assert!(!sources.is_empty());
    assert_eq!(
        endpoints, sources,
        "one output per source, and none for another"
    );
}
