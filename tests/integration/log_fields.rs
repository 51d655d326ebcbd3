//! What the functions' real binaries log, under a local Lambda Runtime API against moto's
//! server: every line written inside an invocation names it (`span.requestId`, Lambda's request
//! id), the ingress's lines name the source and the event, the delivery's the event and the
//! target, so one event can be followed through both functions' log groups by its id.

use serde_json::Value;

use crate::helpers::pipeline::sqs_event;
use crate::helpers::runtime::{function_binary, invoke};
use crate::helpers::{STRIPE_SECRET, drain, fixture};
use crate::metrics::{deployed, stripe_webhook};

/// The log lines among what a function printed (its metric documents left out).
fn log_lines(printed: &[String]) -> Vec<Value> {
    printed
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("message").is_some())
        .collect()
}

fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["message"] == message).collect()
}

#[tokio::test]
async fn every_line_of_an_invocation_names_it_and_the_event_and_target_it_is_about() {
    let stack = deployed().await;
    let now = crate::helpers::unix_now();
    let body = fixture("stripe/payment_intent.succeeded.json");
    let good = stripe_webhook(STRIPE_SECRET, now, &body);
    let forged = stripe_webhook("whsec_wrong", now, &body);
    let (answers, printed) = invoke(
        &function_binary("plumbline-ingress"),
        &stack.envs,
        &[good, forged],
    )
    .await;
    let accepted: Value = serde_json::from_str(
        answers[0].body["body"]
            .as_str()
            .unwrap_or_else(|| panic!("{answers:?}")),
    )
    .expect("a JSON answer");
    let event_id = accepted["event_id"].as_str().expect("an event id");
    let lines = log_lines(&printed);

    let taken = with_message(&lines, "event taken");
    assert_eq!(taken.len(), 1, "{lines:#?}");
    let taken = taken[0];
    assert_eq!(taken["event_id"], event_id, "{taken}");
    assert_eq!(taken["outcome"], "accepted", "{taken}");
    assert_eq!(taken["span"]["requestId"], "req-0", "{taken}");
    assert_eq!(taken["span"]["source"], "stripe", "{taken}");
    assert!(
        taken["span"]["request_id"].is_string(),
        "API Gateway's request id: {taken}"
    );
    let refused = with_message(&lines, "request refused");
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert_eq!(refused[0]["span"]["requestId"], "req-1", "{}", refused[0]);
    assert_eq!(refused[0]["span"]["source"], "stripe", "{}", refused[0]);

    let messages = drain(&stack.sqs, &stack.queue).await;
    assert_eq!(messages.len(), 1);
    let batch = serde_json::to_value(sqs_event(messages)).expect("event");
    let (_, printed) = invoke(
        &function_binary("plumbline-delivery"),
        &stack.envs,
        std::slice::from_ref(&batch),
    )
    .await;
    let lines = log_lines(&printed);
    let delivered = with_message(&lines, "delivered");
    assert_eq!(delivered.len(), 1, "{lines:#?}");
    assert_eq!(delivered[0]["span"]["target"], "erp", "{}", delivered[0]);
    // The three targets' lines: every one names the invocation and the event.
    let about_targets: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["target"].is_string() || l["target"].is_string())
        .collect();
    let targets: std::collections::BTreeSet<&str> = about_targets
        .iter()
        .filter_map(|l| l["span"]["target"].as_str().or(l["target"].as_str()))
        .collect();
    assert_eq!(
        targets,
        ["erp", "flaky", "strict"].into(),
        "a line about each target: {lines:#?}"
    );
    for line in about_targets {
        assert_eq!(line["span"]["requestId"], "req-0", "{line}");
        assert_eq!(line["span"]["event_id"], event_id, "{line}");
        assert_eq!(line["span"]["event_type"], "payment.succeeded", "{line}");
    }
}
