//! What operators rely on in the template beyond the data path: the functions' logs, an alarm
//! topic the alarms can publish to and nothing else can, and scheduled runs that are not run
//! twice, and a page when they stop.

use crate::helpers::{dashboard_body, dashboard_sub, template, template_resources as resources};
use crate::template::{functions, referenced, role_statements, strings, sub_text};

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

/// The alarm topic's policy replaces SNS's default one (anything acting for the account may
/// publish): this account's alarms publish, and nothing else is granted.
#[test]
fn only_this_accounts_alarms_may_publish_to_the_alarm_topic() {
    let all = resources();
    let topics: Vec<&str> = all
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::SNS::Topic"))
        .map(|(name, _)| name.as_str().expect("a resource name"))
        .collect();
    assert!(!topics.is_empty());
    for topic in topics {
        let policies: Vec<&serde_yaml_ng::Value> = all
            .values()
            .filter(|r| r["Type"].as_str() == Some("AWS::SNS::TopicPolicy"))
            .filter(|r| {
                r["Properties"]["Topics"]
                    .as_sequence()
                    .is_some_and(|ts| ts.iter().any(|t| referenced(t) == Some(topic)))
            })
            .collect();
        assert_eq!(policies.len(), 1, "{topic}: one policy of the stack's");
        let statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
            .as_sequence()
            .expect("statements");
        assert_eq!(statements.len(), 1, "{topic}: {statements:?}");
        let statement = &statements[0];
        assert_eq!(statement["Effect"].as_str(), Some("Allow"));
        assert_eq!(
            statement["Principal"]["Service"].as_str(),
            Some("cloudwatch.amazonaws.com")
        );
        assert_eq!(strings(&statement["Action"]), ["sns:Publish"]);
        assert_eq!(referenced(&statement["Resource"]), Some(topic));
        let condition = &statement["Condition"];
        assert_eq!(
            referenced(&condition["StringEquals"]["aws:SourceAccount"]),
            Some("AWS::AccountId")
        );
        assert_eq!(
            sub_text(&condition["ArnLike"]["aws:SourceArn"]),
            Some("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:*"),
            "{topic}: published to by alarms only"
        );
    }
}

/// A scheduled function is invoked asynchronously, and Lambda by default retries a failed
/// invocation twice and keeps a throttled one for six hours: late copies of a run beside the
/// schedule's own. Each scheduled function is retried never and kept at most 15 minutes.
#[test]
fn scheduled_runs_are_neither_retried_nor_run_late() {
    let all = resources();
    let scheduled: Vec<(&str, &serde_yaml_ng::Value)> = functions(&all)
        .into_iter()
        .filter(|(_, f)| {
            f["Properties"]["Events"]
                .as_mapping()
                .is_some_and(|events| {
                    events
                        .values()
                        .any(|e| matches!(e["Type"].as_str(), Some("Schedule" | "ScheduleV2")))
                })
        })
        .collect();
    assert!(!scheduled.is_empty(), "reconciliation runs on a schedule");
    for (name, function) in scheduled {
        let config = &function["Properties"]["EventInvokeConfig"];
        assert_eq!(
            config["MaximumRetryAttempts"].as_u64(),
            Some(0),
            "{name}: a failed run waits for the next"
        );
        let age = config["MaximumEventAgeInSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: kept as long as Lambda's default, six hours"));
        assert!((60..=900).contains(&age), "{name}: {age} s");
    }
}

/// A schedule can stop invoking its function with nothing failing (disabled, deleted, its role
/// changed): each scheduled function's invocations are watched, and none in the alarm's period,
/// no data included, pages. At the defaults the period holds several of the schedule's runs,
/// so one late run does not page.
#[test]
fn a_scheduled_function_that_is_no_longer_invoked_pages() {
    let doc = template();
    let all = resources();
    let parameter_default = |value: &serde_yaml_ng::Value| -> u64 {
        let name = referenced(value).expect("a parameter");
        doc["Parameters"][name]["Default"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: a number"))
    };
    for (name, function) in functions(&all) {
        let Some(schedule) = function["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flat_map(|events| events.values())
            .find(|e| e["Type"].as_str() == Some("ScheduleV2"))
        else {
            continue;
        };
        let given = &schedule["Properties"]["ScheduleExpression"];
        let expression = referenced(given).map_or(given, |p| &doc["Parameters"][p]["Default"]);
        let interval = rate_seconds(expression.as_str().expect("an expression"));
        let watching: Vec<&serde_yaml_ng::Value> = all
            .values()
            .filter(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Alarm"))
            .map(|r| &r["Properties"])
            .filter(|p| {
                p["Namespace"].as_str() == Some("AWS/Lambda")
                    && p["MetricName"].as_str() == Some("Invocations")
                    && p["Dimensions"]
                        .as_sequence()
                        .is_some_and(|d| d.iter().any(|d| referenced(&d["Value"]) == Some(name)))
            })
            .collect();
        assert_eq!(watching.len(), 1, "{name}: one alarm on its invocations");
        let alarm = watching[0];
        assert_eq!(alarm["Statistic"].as_str(), Some("Sum"));
        assert_eq!(
            alarm["ComparisonOperator"].as_str(),
            Some("LessThanThreshold")
        );
        assert_eq!(alarm["Threshold"].as_u64(), Some(1));
        assert_eq!(
            alarm["TreatMissingData"].as_str(),
            Some("breaching"),
            "{name}: no data is no invocation"
        );
        let period = parameter_default(&alarm["Period"]);
        let silence = period
            * alarm["EvaluationPeriods"]
                .as_u64()
                .expect("evaluation periods");
        assert!(
            silence >= 3 * interval,
            "{name}: {silence} s of silence pages, against a run every {interval} s"
        );
        assert_eq!(
            period % 60,
            0,
            "CloudWatch takes periods over a minute in whole minutes"
        );
    }
}

/// `rate(5 minutes)` in seconds.
fn rate_seconds(expression: &str) -> u64 {
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a rate expression: {expression}"));
    let (count, unit) = inner.split_once(' ').expect("a count and a unit");
    let count: u64 = count.parse().expect("a count");
    count
        * match unit.trim_end_matches('s') {
            "minute" => 60,
            "hour" => 3600,
            "day" => 86400,
            other => panic!("a unit: {other}"),
        }
}

/// The dashboard opens on every alarm of the stack, those firing first: an alarm added to the
/// template and left off it would be missing where an operator looks first. Each alarm is
/// named after the stack and its logical name, and the dashboard builds its ARN from that.
#[test]
fn the_dashboard_shows_the_state_of_every_alarm() {
    let all = resources();
    let mut alarms: Vec<String> = Vec::new();
    for (name, resource) in &all {
        if resource["Type"].as_str() != Some("AWS::CloudWatch::Alarm") {
            continue;
        }
        let name = name.as_str().expect("a name");
        assert_eq!(
            sub_text(&resource["Properties"]["AlarmName"]),
            Some(format!("${{AWS::StackName}}-{name}").as_str())
        );
        alarms.push(format!("${{Alarms}}-{name}"));
    }
    alarms.sort();
    let (_, variables) = dashboard_sub();
    assert_eq!(
        sub_text(&variables["Alarms"]),
        Some(
            "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:${AWS::StackName}"
        )
    );
    let body = dashboard_body();
    let widgets = body["widgets"].as_array().expect("widgets");
    let first = &widgets[0];
    assert_eq!(first["type"], "alarm", "the alarms come first: {first}");
    assert_eq!(
        (first["x"].as_u64(), first["y"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(first["properties"]["sortBy"], "stateUpdatedTimestamp");
    let mut shown: Vec<String> = first["properties"]["alarms"]
        .as_array()
        .expect("alarms")
        .iter()
        .map(|a| a.as_str().expect("an ARN").to_owned())
        .collect();
    shown.sort();
    assert_eq!(shown, alarms);
    // Nothing else is drawn over it.
    let height = first["height"].as_u64().expect("a height");
    for widget in &widgets[1..] {
        assert!(widget["y"].as_u64().expect("a y") >= height, "{widget}");
    }
}
