//! `PLUMBLINE_STACK`: the `--aws` commands find the table, queues and functions by the outputs
//! of the stack the template deployed, on moto's CloudFormation.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::helpers::dev::binary;

/// Runs `plumbline args` with only `PLUMBLINE_STACK` (and `extra`) naming the deployment.
fn plumbline(stack: &str, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command.args(args).env("PLUMBLINE_STACK", stack);
    for variable in [
        "PLUMBLINE_TABLE",
        "PLUMBLINE_QUEUE_URL",
        "PLUMBLINE_DLQ_URL",
        "PLUMBLINE_INGRESS_FUNCTION",
        "PLUMBLINE_DELIVERY_FUNCTION",
        "PLUMBLINE_RECONCILE_FUNCTION",
    ] {
        command.env_remove(variable);
    }
    command.envs(extra.iter().copied());
    command.output().expect("run plumbline")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn the_aws_commands_find_the_deployment_by_its_stacks_outputs() {
    let aws = crate::helpers::aws().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let cloudformation = aws_sdk_cloudformation::Client::new(&aws);
    let table = crate::helpers::create_table(&ddb).await;
    let dlq = crate::helpers::create_queue(&sqs).await;
    let queue = crate::helpers::create_queue(&sqs).await;
    crate::helpers::redrive(&sqs, &queue, &dlq, 5).await;
    // A stack whose outputs name them under the template's output names (its one resource is
    // there because a stack needs one).
    let stack = crate::helpers::unique("plumbline-stack");
    let template = json!({
        "Resources": { "Marker": { "Type": "AWS::SQS::Queue" } },
        "Outputs": {
            "EventsTableName": { "Value": table },
            "DeliveryQueueUrl": { "Value": queue },
            "DeadLetterQueueUrl": { "Value": dlq },
        },
    });
    cloudformation
        .create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .send()
        .await
        .expect("the stack");
    let config = std::env::temp_dir().join(crate::helpers::unique("plumbline-stack.toml"));
    std::fs::write(
        &config,
        "[sources.stripe]\nkind = \"stripe\"\nsecrets = [\"env:PLUMBLINE_TEST_UNSET_SECRET\"]\n",
    )
    .expect("config");
    let config = config.to_str().expect("a UTF-8 path");

    // The preflight checks the table and queues the stack names, and says where it looked
    // for the functions the stack does not name.
    let out = plumbline(&stack, &["config", "check", "--aws", "--json", config], &[]);
    let report = json_of(&out);
    let resources: Vec<(String, Vec<String>)> = report["aws"]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            let keys = r["problems"].as_array().expect("problems").iter();
            (
                r["resource"].as_str().unwrap_or_default().to_owned(),
                keys.map(|p| p["key"].as_str().unwrap_or_default().to_owned())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        resources,
        [
            (format!("table {table}"), vec!["table.ttl".to_owned()]),
            (format!("queue {queue}"), vec![]),
        ],
        "{report}"
    );
    let unnamed = report["aws"]["not_checked"]
        .as_array()
        .expect("not_checked")
        .iter()
        .find(|p| p["key"] == "PLUMBLINE_DELIVERY_FUNCTION")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        unnamed["reason"],
        format!(
            "not set in this shell nor among stack {stack}'s outputs: the function's configuration not checked"
        )
    );

    // The other commands read the same outputs: a letter on the stack's dead-letter queue.
    sqs.send_message()
        .queue_url(&dlq)
        .message_body(r#"{"key":"EVT#stripe#evt_by_stack"}"#)
        .send()
        .await
        .expect("a letter");
    let out = plumbline(&stack, &["dlq", "list", "--aws", "--json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let letters = json_of(&out);
    assert_eq!(letters.as_array().map(Vec::len), Some(1), "{letters}");
    assert_eq!(letters[0]["event_key"], "EVT#stripe#evt_by_stack");

    // A variable the shell sets too must agree with the stack: two tables are not guessed
    // between. One that agrees is fine.
    let other = format!("{table}-other");
    let out = plumbline(
        &stack,
        &["events", "list", "--aws", "--json"],
        &[("PLUMBLINE_TABLE", &other)],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "error: PLUMBLINE_TABLE is {other} in this shell, but stack {stack}'s output EventsTableName is {table}: unset one of them"
        )
    );
    assert!(out.stdout.is_empty());
    let out = plumbline(
        &stack,
        &["events", "list", "--aws", "--json"],
        &[("PLUMBLINE_TABLE", &table)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_of(&out), json!([]));

    // A stack that is not there stops a command before its first request to the deployment.
    let missing = crate::helpers::unique("plumbline-no-stack");
    let out = plumbline(&missing, &["dlq", "list", "--aws"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: PLUMBLINE_STACK: no stack {missing} in this account and region")
    );
    std::fs::remove_file(config).ok();
}
