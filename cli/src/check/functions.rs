//! `config check --aws` on the functions the shell names (`PLUMBLINE_INGRESS_FUNCTION`,
//! `PLUMBLINE_DELIVERY_FUNCTION`, `PLUMBLINE_RECONCILE_FUNCTION`): whether each one's
//! configuration in Lambda is what it needs at cold start, names the table and queues checked
//! here, and, for delivery, whether its event source and retries fit the delivery queue. The
//! template sets all of it; a function deployed another way (cargo-lambda) is where a piece goes
//! missing, found by a function that stops at cold start or, worse, by one that runs and loses
//! its retries.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::operation::get_function_configuration::GetFunctionConfigurationError;
use plumbline::adapters::aws_sdk::Timeouts;
use plumbline::adapters::sqs::{Queues, Redrive};
use plumbline::config::{ConfigProblem, SecretPurpose};
use plumbline::delivery::{MAX_RECEIVES_VAR, parse_max_receives};

/// Which of the three functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Ingress,
    Delivery,
    Reconcile,
}

/// What the shell names the table and queues with, and what each function reads them from.
pub(super) const RESOURCE_VARS: [(&str, &str); 3] = [
    ("PLUMBLINE_TABLE", "table"),
    ("PLUMBLINE_QUEUE_URL", "delivery queue"),
    ("PLUMBLINE_DLQ_URL", "dead-letter queue"),
];

/// Lambda's own guidance for an SQS event source: the queue's visibility timeout at least six
/// times the function's timeout, so a batch retried after throttling is not received again
/// while it is still being delivered.
const VISIBILITY_FACTOR: u32 = 6;

impl Role {
    pub(super) const ALL: [Self; 3] = [Self::Ingress, Self::Delivery, Self::Reconcile];

    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Delivery => "delivery",
            Self::Reconcile => "reconcile",
        }
    }

    /// The secrets this function fetches and uses at cold start.
    pub(super) fn purpose(self) -> SecretPurpose {
        match self {
            Self::Ingress => SecretPurpose::Verify,
            Self::Delivery => SecretPurpose::Deliver,
            Self::Reconcile => SecretPurpose::Reconcile,
        }
    }

    /// The shell's variable that names this function (a name or an ARN).
    pub(super) fn variable(self) -> &'static str {
        match self {
            Self::Ingress => "PLUMBLINE_INGRESS_FUNCTION",
            Self::Delivery => "PLUMBLINE_DELIVERY_FUNCTION",
            Self::Reconcile => "PLUMBLINE_RECONCILE_FUNCTION",
        }
    }

    /// Whether the function reads `variable` (and stops at cold start without it).
    pub(super) fn reads(self, variable: &str) -> bool {
        self.required().contains(&variable)
    }

    /// The variables the function stops at cold start without.
    fn required(self) -> &'static [&'static str] {
        match self {
            Self::Ingress => &["PLUMBLINE_CONFIG", "PLUMBLINE_TABLE", "PLUMBLINE_QUEUE_URL"],
            Self::Delivery | Self::Reconcile => &[
                "PLUMBLINE_CONFIG",
                "PLUMBLINE_TABLE",
                "PLUMBLINE_QUEUE_URL",
                "PLUMBLINE_DLQ_URL",
            ],
        }
    }
}

/// A function's configuration in Lambda, as the check reads it.
#[derive(Debug, Clone, Default)]
pub(super) struct FunctionSetup {
    pub(super) timeout: Duration,
    pub(super) environment: HashMap<String, String>,
    /// Its event source mappings (read for delivery only).
    pub(super) sources: Vec<EventSource>,
    /// Its reserved concurrency, where it has one (read for delivery only).
    pub(super) reserved_concurrency: Option<i32>,
}

/// One event source mapping of a function.
#[derive(Debug, Clone)]
pub(super) struct EventSource {
    pub(super) arn: String,
    pub(super) state: String,
    pub(super) reports_item_failures: bool,
    /// The most batches it runs at once (`ScalingConfig.MaximumConcurrency`).
    pub(super) maximum_concurrency: Option<i32>,
}

impl FunctionSetup {
    /// Reads the function's configuration (and, for delivery, its event source mappings);
    /// `None` when there is no such function.
    pub(super) async fn describe(
        client: &Client,
        function: &str,
        role: Role,
    ) -> anyhow::Result<Option<Self>> {
        let found = match client
            .get_function_configuration()
            .function_name(function)
            .send()
            .await
        {
            Ok(found) => found,
            Err(err)
                if err.as_service_error().is_some_and(
                    GetFunctionConfigurationError::is_resource_not_found_exception,
                ) =>
            {
                return Ok(None);
            }
            Err(err) => return Err(err).with_context(|| format!("describing function {function}")),
        };
        let (sources, reserved_concurrency) = if role == Role::Delivery {
            let sources = client
                .list_event_source_mappings()
                .function_name(function)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .with_context(|| format!("listing the event sources of function {function}"))?
                .into_iter()
                .map(|m| EventSource {
                    arn: m.event_source_arn.unwrap_or_default(),
                    state: m.state.unwrap_or_default(),
                    reports_item_failures: m.function_response_types.is_some_and(|types| {
                        types.contains(
                            &aws_sdk_lambda::types::FunctionResponseType::ReportBatchItemFailures,
                        )
                    }),
                    maximum_concurrency: m.scaling_config.and_then(|c| c.maximum_concurrency),
                })
                .collect();
            let reserved = client
                .get_function_concurrency()
                .function_name(function)
                .send()
                .await
                .with_context(|| format!("reading the concurrency of function {function}"))?
                .reserved_concurrent_executions;
            (sources, reserved)
        } else {
            (Vec::new(), None)
        };
        Ok(Some(Self {
            timeout: Duration::from_secs(
                found
                    .timeout
                    .and_then(|s| u64::try_from(s).ok())
                    .unwrap_or_default(),
            ),
            environment: found
                .environment
                .and_then(|e| e.variables)
                .unwrap_or_default(),
            sources,
            reserved_concurrency,
        }))
    }
}

/// What the function of `role`, configured as `setup`, lacks or does differently from what
/// this check read: `checked` gives the name of the table or queue a variable named for the
/// check, `queues` the delivery queue as described (when one was named). Of the function's environment, only the
/// names of a table or queue it disagrees on, and a timeout it would refuse, are quoted: no
/// other value (an `env:` secret among them) is.
pub(super) fn problems(
    role: Role,
    setup: &FunctionSetup,
    checked: impl Fn(&str) -> Option<String>,
    queues: Option<&Queues>,
) -> Vec<ConfigProblem> {
    let env = |name: &str| setup.environment.get(name).filter(|v| !v.is_empty());
    let mut found = Vec::new();
    for name in role.required() {
        if env(name).is_none() {
            found.push(problem(
                &format!("environment.{name}"),
                "not set: the function stops at cold start without it".to_owned(),
            ));
        }
    }
    for (name, what) in RESOURCE_VARS {
        if let (Some(theirs), Some(ours)) = (env(name), checked(name))
            && role.reads(name)
            && *theirs != ours
        {
            found.push(problem(
                &format!("environment.{name}"),
                format!(
                    "{theirs}, not the {what} this check read ({ours}): the function works on \
                     another {what}"
                ),
            ));
        }
    }
    if let Err(invalid) = Timeouts::from_vars(|name| env(name).cloned()) {
        found.push(problem(
            &format!("environment.{}", invalid.name),
            format!("{invalid}: the function stops at cold start"),
        ));
    }
    if role == Role::Delivery {
        found.extend(delivery_problems(setup, queues));
    }
    found
}

/// Delivery's retries and event source against the delivery queue.
fn delivery_problems(setup: &FunctionSetup, queues: Option<&Queues>) -> Vec<ConfigProblem> {
    let queue = queues.and_then(|q| q.queue.as_ref());
    let mut found: Vec<ConfigProblem> =
        max_receives_problem(setup, queue.and_then(|q| q.redrive.as_ref()))
            .into_iter()
            .collect();
    let Some(queue) = queue else {
        return found;
    };
    let longest = setup.timeout.saturating_mul(VISIBILITY_FACTOR);
    if queue.visibility_timeout < longest {
        found.push(problem(
            "queue.visibility_timeout",
            format!(
                "{} s, under {VISIBILITY_FACTOR} times the function's timeout ({} s): a batch \
                 retried after throttling can be received again while it is still being \
                 delivered",
                queue.visibility_timeout.as_secs(),
                setup.timeout.as_secs()
            ),
        ));
    }
    found.extend(event_source_problems(setup, &queue.arn));
    found
}

/// Whether delivery gives up on a failing target on the queue's last receive: its
/// `PLUMBLINE_MAX_RECEIVES` against the queue's `maxReceiveCount` (when the queue has one).
fn max_receives_problem(setup: &FunctionSetup, redrive: Option<&Redrive>) -> Option<ConfigProblem> {
    let key = format!("environment.{MAX_RECEIVES_VAR}");
    let Some(value) = setup.environment.get(MAX_RECEIVES_VAR) else {
        let count = redrive.map_or(String::new(), |r| {
            format!(" (the queue's maxReceiveCount is {})", r.max_receive_count)
        });
        return Some(problem(
            &key,
            format!(
                "not set{count}: a message whose target keeps failing reaches the dead-letter \
                 queue by the redrive alone, without the target's failure, and its event stays \
                 received"
            ),
        ));
    };
    let Some(given) = parse_max_receives(value) else {
        return Some(problem(
            &key,
            "not a count of at least one: the function stops at cold start".to_owned(),
        ));
    };
    let most = redrive?.max_receive_count;
    let reason = match given.cmp(&most) {
        Ordering::Greater => format!(
            "{given}, above the queue's maxReceiveCount ({most}): the redrive dead-letters a \
             failing message before delivery gives up on it, without the target's failure, and \
             its event stays received"
        ),
        Ordering::Less => format!(
            "{given}, below the queue's maxReceiveCount ({most}): delivery gives up on a failing \
             target after {given} receives, before the queue's retries are spent"
        ),
        Ordering::Equal => return None,
    };
    Some(problem(&key, reason))
}

/// Whether the delivery queue (`queue_arn`) is mapped to the function, enabled, with the
/// failures of single records reported.
fn event_source_problems(setup: &FunctionSetup, queue_arn: &str) -> Vec<ConfigProblem> {
    let from_queue: Vec<&EventSource> = setup
        .sources
        .iter()
        .filter(|s| s.arn == queue_arn)
        .collect();
    if from_queue.is_empty() {
        return vec![problem(
            "event_source",
            format!(
                "no event source mapping from the delivery queue ({queue_arn}): nothing \
                 receives its messages"
            ),
        )];
    }
    let mut found = Vec::new();
    for source in from_queue {
        if matches!(source.state.as_str(), "Disabled" | "Disabling") {
            found.push(problem(
                "event_source",
                format!(
                    "the mapping from the delivery queue is {}: nothing receives its messages",
                    source.state
                ),
            ));
        }
        if let Some(reserved) = setup.reserved_concurrency
            && source
                .maximum_concurrency
                .is_none_or(|most| most > reserved)
        {
            let most = source
                .maximum_concurrency
                .map_or("no maximum".to_owned(), |m| m.to_string());
            found.push(problem(
                "concurrency",
                format!(
                    "the function's reserved concurrency ({reserved}) is under what the mapping \
                     from the delivery queue may run at once ({most}): Lambda throttles the \
                     batches beyond it, a throttled batch goes back to the queue with its \
                     receives counted, and a message can reach the dead-letter queue without a \
                     delivery; set the mapping's MaximumConcurrency to at most {reserved}, or \
                     drop the reservation"
                ),
            ));
        }
        if !source.reports_item_failures {
            found.push(problem(
                "event_source",
                "the mapping from the delivery queue does not report batch item failures: \
                 Lambda deletes a whole batch once the function returns, so a record delivery \
                 hands back to retry leaves the queue, until reconciliation's stuck sweep \
                 enqueues it again"
                    .to_owned(),
            ));
        }
    }
    found
}

fn problem(key: &str, reason: String) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        reason,
        line: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumbline::adapters::sqs::QueueSetup;

    const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:delivery";

    fn delivery() -> FunctionSetup {
        FunctionSetup {
            timeout: Duration::from_secs(30),
            environment: [
                ("PLUMBLINE_CONFIG", "/opt/plumbline.toml"),
                ("PLUMBLINE_TABLE", "events"),
                ("PLUMBLINE_QUEUE_URL", "https://sqs/delivery"),
                ("PLUMBLINE_DLQ_URL", "https://sqs/dlq"),
                ("PLUMBLINE_MAX_RECEIVES", "5"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            sources: vec![EventSource {
                arn: QUEUE_ARN.to_owned(),
                state: "Enabled".to_owned(),
                reports_item_failures: true,
                maximum_concurrency: Some(10),
            }],
            reserved_concurrency: None,
        }
    }

    fn queues() -> Queues {
        Queues {
            queue: Some(QueueSetup {
                arn: QUEUE_ARN.to_owned(),
                visibility_timeout: Duration::from_secs(180),
                redrive: Some(Redrive {
                    dead_letter_target_arn: "arn:aws:sqs:us-east-1:123456789012:dlq".to_owned(),
                    max_receive_count: 5,
                }),
            }),
            dlq_arn: Some("arn:aws:sqs:us-east-1:123456789012:dlq".to_owned()),
        }
    }

    fn shell(name: &str) -> Option<String> {
        match name {
            "PLUMBLINE_TABLE" => Some("events".to_owned()),
            "PLUMBLINE_QUEUE_URL" => Some("https://sqs/delivery".to_owned()),
            "PLUMBLINE_DLQ_URL" => Some("https://sqs/dlq".to_owned()),
            _ => None,
        }
    }

    fn keys(problems: &[ConfigProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn a_delivery_function_as_the_template_makes_it_passes() {
        assert!(problems(Role::Delivery, &delivery(), shell, Some(&queues())).is_empty());
        // The ingress reads no dead-letter queue: one named differently is not its problem.
        let mut ingress = delivery();
        ingress.environment.remove("PLUMBLINE_MAX_RECEIVES");
        ingress.environment.insert(
            "PLUMBLINE_DLQ_URL".to_owned(),
            "https://sqs/other".to_owned(),
        );
        assert!(problems(Role::Ingress, &ingress, shell, None).is_empty());
    }

    #[test]
    fn a_missing_variable_or_another_table_is_named_by_its_variable() {
        let mut setup = delivery();
        setup.environment.remove("PLUMBLINE_CONFIG");
        setup
            .environment
            .insert("PLUMBLINE_TABLE".to_owned(), "events-old".to_owned());
        setup.environment.insert(
            "PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS".to_owned(),
            "3s".to_owned(),
        );
        let found = problems(Role::Reconcile, &setup, shell, Some(&queues()));
        assert_eq!(
            keys(&found),
            [
                "environment.PLUMBLINE_CONFIG",
                "environment.PLUMBLINE_TABLE",
                "environment.PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS"
            ]
        );
        assert!(
            found[1]
                .reason
                .starts_with("events-old, not the table this check read (events)"),
            "{found:?}"
        );
        // Without the shell's value there is nothing to hold the function's to.
        let found = problems(Role::Reconcile, &setup, |_| None, None);
        assert_eq!(
            keys(&found),
            [
                "environment.PLUMBLINE_CONFIG",
                "environment.PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS"
            ]
        );
    }

    #[test]
    fn delivery_gives_up_on_the_queues_last_receive_or_it_is_a_problem() {
        let reason = |value: Option<&str>| {
            let mut setup = delivery();
            match value {
                Some(v) => setup
                    .environment
                    .insert(MAX_RECEIVES_VAR.to_owned(), v.to_owned()),
                None => setup.environment.remove(MAX_RECEIVES_VAR),
            };
            let found = problems(Role::Delivery, &setup, shell, Some(&queues()));
            assert_eq!(
                keys(&found),
                ["environment.PLUMBLINE_MAX_RECEIVES"],
                "{value:?}"
            );
            found[0].reason.clone()
        };
        assert!(reason(None).starts_with("not set (the queue's maxReceiveCount is 5)"));
        assert!(reason(Some("0")).starts_with("not a count"));
        assert!(reason(Some("8")).starts_with("8, above the queue's maxReceiveCount (5)"));
        assert!(reason(Some("3")).starts_with("3, below the queue's maxReceiveCount (5)"));
    }

    #[test]
    fn delivery_needs_its_queue_mapped_with_item_failures_and_time_to_finish() {
        let mut setup = delivery();
        setup.sources[0].reports_item_failures = false;
        setup.timeout = Duration::from_secs(31);
        let found = problems(Role::Delivery, &setup, shell, Some(&queues()));
        assert_eq!(keys(&found), ["queue.visibility_timeout", "event_source"]);
        assert!(
            found[0]
                .reason
                .starts_with("180 s, under 6 times the function's timeout (31 s)")
        );
        assert!(
            found[1]
                .reason
                .contains("does not report batch item failures")
        );

        setup.sources[0].state = "Disabled".to_owned();
        setup.sources[0].reports_item_failures = true;
        setup.sources[0].arn = "arn:aws:sqs:us-east-1:123456789012:other".to_owned();
        let found = problems(
            Role::Delivery,
            &delivery_with(setup.sources.clone()),
            shell,
            Some(&queues()),
        );
        assert_eq!(keys(&found), ["event_source"]);
        assert!(
            found[0]
                .reason
                .starts_with("no event source mapping from the delivery queue")
        );

        setup.sources[0].arn = QUEUE_ARN.to_owned();
        let found = problems(
            Role::Delivery,
            &delivery_with(setup.sources),
            shell,
            Some(&queues()),
        );
        assert_eq!(keys(&found), ["event_source"]);
        assert!(found[0].reason.contains("is Disabled"), "{found:?}");
    }

    #[test]
    fn a_reservation_under_what_the_queue_may_run_at_once_is_a_problem() {
        let with = |reserved: Option<i32>, most: Option<i32>| {
            let mut setup = delivery();
            setup.reserved_concurrency = reserved;
            setup.sources[0].maximum_concurrency = most;
            problems(Role::Delivery, &setup, shell, Some(&queues()))
        };
        assert!(with(None, Some(10)).is_empty());
        assert!(with(None, None).is_empty());
        assert!(with(Some(10), Some(10)).is_empty());
        assert!(with(Some(20), Some(10)).is_empty());
        let under = with(Some(5), Some(10));
        assert_eq!(keys(&under), ["concurrency"]);
        assert!(
            under[0]
                .reason
                .starts_with("the function's reserved concurrency (5) is under what the mapping from the delivery queue may run at once (10)"),
            "{under:?}"
        );
        assert!(with(Some(5), None)[0].reason.contains("(no maximum)"));
        assert_eq!(keys(&with(Some(0), Some(2))), ["concurrency"]);
    }

    fn delivery_with(sources: Vec<EventSource>) -> FunctionSetup {
        FunctionSetup {
            sources,
            ..delivery()
        }
    }
}
