//! What operators rely on in the template beyond the data path: the functions' logs, and an
//! alarm topic the alarms can publish to.

use crate::helpers::{template, template_resources as resources};
use crate::template::{functions, referenced, role_statements, strings};

/// Lambda's application log levels, most verbose first.
const LAMBDA_LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];

/// JSON, so that Lambda keeps each line's fields and filters by its level; at a level the
/// deployer may choose only where Lambda keeps the metric lines; into a log group of the
/// function's own, which the stack creates with a retention and the role may write to and no
/// other (Lambda's default group keeps everything forever).
#[test]
fn every_function_logs_json_to_its_own_log_group_at_a_level_that_keeps_the_metrics() {
    let doc = template();
    let logging = &doc["Globals"]["Function"]["LoggingConfig"];
    assert_eq!(logging["LogFormat"].as_str(), Some("JSON"));
    assert_eq!(
        referenced(&logging["ApplicationLogLevel"]),
        Some("LogLevel")
    );
    let parameter = &doc["Parameters"]["LogLevel"];
    assert_eq!(parameter["Default"].as_str(), Some("INFO"));
    let allowed = strings(&parameter["AllowedValues"]);
    for level in LAMBDA_LEVELS {
        assert_eq!(
            allowed.iter().any(|a| a == level),
            !plumbline::telemetry::lambda_drops_metrics(level, false),
            "LogLevel {level}: allowed exactly when Lambda keeps the metric lines"
        );
    }

    let all = resources();
    let mut groups = Vec::new();
    for (name, function) in functions(&all) {
        let group = referenced(&function["Properties"]["LoggingConfig"]["LogGroup"])
            .unwrap_or_else(|| panic!("{name} names no log group of the template's"));
        assert_eq!(
            all[group]["Type"].as_str(),
            Some("AWS::Logs::LogGroup"),
            "{name}"
        );
        assert_eq!(
            referenced(&all[group]["Properties"]["RetentionInDays"]),
            Some("LogRetentionDays"),
            "{group}: kept as long as the stack says"
        );
        assert!(!groups.contains(&group), "{group} is shared");
        groups.push(group);
        let writes: Vec<_> = role_statements(&all, name)
            .into_iter()
            .filter(|s| strings(&s["Action"]).iter().any(|a| a.starts_with("logs:")))
            .collect();
        assert_eq!(writes.len(), 1, "{name}: one statement about logs");
        let mut actions = strings(&writes[0]["Action"]);
        actions.sort();
        assert_eq!(
            actions,
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            "{name}"
        );
        assert_eq!(
            referenced(&writes[0]["Resource"]),
            Some(group),
            "{name}: its own log group only"
        );
    }
    assert_eq!(groups.len(), 3);
    let retention = &doc["Parameters"]["LogRetentionDays"];
    assert!(
        retention["AllowedValues"]
            .as_sequence()
            .is_some_and(|days| days.contains(&retention["Default"])),
        "the retention's default is one of the values CloudWatch Logs accepts"
    );
}

/// CloudWatch alarms can publish to an encrypted topic only when the key's policy lets
/// `cloudwatch.amazonaws.com` use it; SNS's AWS managed key (`alias/aws/sns`) does not and
/// cannot be made to, and an alarm whose action fails pages nobody.
#[test]
fn every_alarm_topic_is_encrypted_with_a_key_the_alarms_may_use() {
    let all = resources();
    let mut topics: Vec<&str> = all
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
        .flat_map(|r| {
            ["AlarmActions", "OKActions"]
                .into_iter()
                .flat_map(|key| r["Properties"][key].as_sequence().into_iter().flatten())
        })
        .map(|action| referenced(action).expect("an alarm action that is a topic of the stack's"))
        .collect();
    topics.sort_unstable();
    topics.dedup();
    assert!(!topics.is_empty(), "the alarms page a topic");
    for topic in topics {
        assert_eq!(all[topic]["Type"].as_str(), Some("AWS::SNS::Topic"));
        let key = referenced(&all[topic]["Properties"]["KmsMasterKeyId"]).unwrap_or_else(|| {
            panic!(
                "{topic}: encrypted with {:?}, not a key of the stack's",
                all[topic]["Properties"]["KmsMasterKeyId"]
            )
        });
        let key = &all[key];
        assert_eq!(key["Type"].as_str(), Some("AWS::KMS::Key"));
        assert_eq!(key["Properties"]["EnableKeyRotation"].as_bool(), Some(true));
        let statements = key["Properties"]["KeyPolicy"]["Statement"]
            .as_sequence()
            .expect("a key policy");
        let for_alarms = statements
            .iter()
            .find(|s| s["Principal"]["Service"].as_str() == Some("cloudwatch.amazonaws.com"))
            .unwrap_or_else(|| panic!("{topic}'s key does not let the alarms use it"));
        assert_eq!(for_alarms["Effect"].as_str(), Some("Allow"));
        let mut actions = strings(&for_alarms["Action"]);
        actions.sort();
        assert_eq!(actions, ["kms:Decrypt", "kms:GenerateDataKey*"]);
        assert_eq!(
            referenced(&for_alarms["Condition"]["StringEquals"]["aws:SourceAccount"]),
            Some("AWS::AccountId"),
            "only this account's alarms"
        );
    }
}
