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
    let indexes: Vec<&str> = props["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .filter_map(|g| g["IndexName"].as_str())
        .collect();
    {
        use plumbline::adapters::dynamodb::{CHANGED_INDEX, KEPT_INDEX, PENDING_INDEX};
        assert_eq!(indexes, [PENDING_INDEX, CHANGED_INDEX, KEPT_INDEX]);
    }
    assert_eq!(
        props["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some("expires_at")
    );
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

fn strings(value: &serde_yaml_ng::Value) -> Vec<String> {
    match value {
        serde_yaml_ng::Value::String(s) => vec![s.clone()],
        serde_yaml_ng::Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_policy_names_actions_and_resources_without_wildcards() {
    let mut statements = 0;
    for (name, resource) in resources() {
        for policy in resource["Properties"]["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            for statement in policy["Statement"].as_sequence().into_iter().flatten() {
                statements += 1;
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
    }
    assert!(statements >= 6, "the functions' policies were read");
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
fn every_sqs_event_source_reports_batch_item_failures() {
    let mut sources = 0;
    for (name, resource) in resources() {
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
