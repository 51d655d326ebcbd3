//! What `plumbline config check --aws` reads of the delivery queue and its dead-letter queue:
//! the settings delivery depends on, which the template sets and a queue made another way
//! (Terraform, by hand, for the cargo-lambda path) may lack.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;

use super::classify;
use crate::config::ConfigProblem;
use crate::ports::QueueError;

/// The delivery queue's settings that delivery depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSetup {
    pub arn: String,
    pub visibility_timeout: Duration,
    /// `None` when the queue has no redrive policy, or one without both of these fields.
    pub redrive: Option<Redrive>,
}

/// A queue's `RedrivePolicy`: where a message goes after how many receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_target_arn: String,
    pub max_receive_count: u32,
}

impl Redrive {
    /// Reads the policy's JSON. SQS hands `maxReceiveCount` back as it was given: a number,
    /// or a string (as CloudFormation passes a parameter).
    pub fn parse(policy: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(policy).ok()?;
        let count = &value["maxReceiveCount"];
        let max_receive_count = match count {
            serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }?;
        Some(Self {
            dead_letter_target_arn: value["deadLetterTargetArn"].as_str()?.to_owned(),
            max_receive_count,
        })
    }
}

/// The delivery queue and its dead-letter queue as SQS describes them; `None` for a queue
/// that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queues {
    pub queue: Option<QueueSetup>,
    pub dlq_arn: Option<String>,
}

impl Queues {
    /// Describes the queue at `queue_url` and the dead-letter queue at `dlq_url` (one request
    /// each, together).
    pub async fn describe(
        client: &Client,
        queue_url: &str,
        dlq_url: &str,
    ) -> Result<Self, QueueError> {
        let (queue, dlq) = futures_util::future::try_join(
            attributes(
                client,
                queue_url,
                &[
                    QueueAttributeName::QueueArn,
                    QueueAttributeName::VisibilityTimeout,
                    QueueAttributeName::RedrivePolicy,
                ],
            ),
            attributes(client, dlq_url, &[QueueAttributeName::QueueArn]),
        )
        .await?;
        let queue = queue.map(|mut found| QueueSetup {
            arn: found
                .remove(&QueueAttributeName::QueueArn)
                .unwrap_or_default(),
            visibility_timeout: Duration::from_secs(
                found
                    .get(&QueueAttributeName::VisibilityTimeout)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default(),
            ),
            redrive: found
                .get(&QueueAttributeName::RedrivePolicy)
                .and_then(|p| Redrive::parse(p)),
        });
        let dlq_arn = dlq.and_then(|mut found| found.remove(&QueueAttributeName::QueueArn));
        Ok(Self { queue, dlq_arn })
    }

    /// What the delivery queue lacks for delivery's failures to end in the dead-letter queue
    /// at `dlq_url`: a redrive policy, to that queue. Each problem is under `queue.redrive`
    /// (or `queue` when there is no such queue); empty when it has both.
    pub fn redrive_problems(&self, dlq_url: &str) -> Vec<ConfigProblem> {
        let problem = |key: &str, reason: String| {
            vec![ConfigProblem {
                key: key.to_owned(),
                reason,
                line: None,
            }]
        };
        let (queue, dlq_arn) = match (&self.queue, &self.dlq_arn) {
            (Some(queue), Some(arn)) => (queue, arn),
            (None, _) => return problem("queue", "no such queue".to_owned()),
            (_, None) => return problem("queue", format!("no dead-letter queue at {dlq_url}")),
        };
        match &queue.redrive {
            None => problem(
                "queue.redrive",
                "the delivery queue has no redrive policy: a message whose delivery keeps failing \
                 is received again until the queue's retention drops it, never dead-lettered"
                    .to_owned(),
            ),
            Some(redrive) if redrive.dead_letter_target_arn != *dlq_arn => problem(
                "queue.redrive",
                format!(
                    "the delivery queue dead-letters to {}, not to the dead-letter queue given \
                     ({dlq_arn}), which `dlq list` and `replay` read",
                    redrive.dead_letter_target_arn
                ),
            ),
            Some(_) => Vec::new(),
        }
    }
}

/// The queue's attributes of `names`; `None` when there is no such queue.
async fn attributes(
    client: &Client,
    url: &str,
    names: &[QueueAttributeName],
) -> Result<Option<HashMap<QueueAttributeName, String>>, QueueError> {
    let request = client
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()));
    match request.send().await {
        Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
        Err(err)
            if err
                .as_service_error()
                .and_then(ProvideErrorMetadata::code)
                .is_some_and(|c| {
                    c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist")
                }) =>
        {
            Ok(None)
        }
        Err(err) => Err(classify(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redrive_policy_is_read_with_its_count_given_as_a_number_or_a_string() {
        let as_number =
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:dlq","maxReceiveCount":5}"#;
        let as_string =
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:dlq","maxReceiveCount":"8"}"#;
        assert_eq!(
            Redrive::parse(as_number),
            Some(Redrive {
                dead_letter_target_arn: "arn:aws:sqs:us-east-1:1:dlq".to_owned(),
                max_receive_count: 5
            })
        );
        assert_eq!(
            Redrive::parse(as_string).map(|r| r.max_receive_count),
            Some(8)
        );
        assert_eq!(Redrive::parse(r#"{"maxReceiveCount":5}"#), None);
        assert_eq!(
            Redrive::parse(r#"{"deadLetterTargetArn":"a","maxReceiveCount":"five"}"#),
            None
        );
        assert_eq!(Redrive::parse(""), None);
    }

    fn queues(redrive_to: Option<&str>) -> Queues {
        Queues {
            queue: Some(QueueSetup {
                arn: "arn:aws:sqs:us-east-1:1:q".to_owned(),
                visibility_timeout: Duration::from_secs(180),
                redrive: redrive_to.map(|arn| Redrive {
                    dead_letter_target_arn: arn.to_owned(),
                    max_receive_count: 5,
                }),
            }),
            dlq_arn: Some("arn:aws:sqs:us-east-1:1:dlq".to_owned()),
        }
    }

    fn keys(problems: &[ConfigProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn a_queue_passes_only_when_it_redrives_to_the_dead_letter_queue_given() {
        assert!(
            queues(Some("arn:aws:sqs:us-east-1:1:dlq"))
                .redrive_problems("u")
                .is_empty()
        );
        assert_eq!(keys(&queues(None).redrive_problems("u")), ["queue.redrive"]);
        let elsewhere = queues(Some("arn:aws:sqs:us-east-1:1:other")).redrive_problems("u");
        assert_eq!(keys(&elsewhere), ["queue.redrive"]);
        assert!(
            elsewhere[0].reason.contains(":other, not to"),
            "{elsewhere:?}"
        );
        let mut missing = queues(None);
        missing.queue = None;
        assert_eq!(keys(&missing.redrive_problems("u")), ["queue"]);
        let mut no_dlq = queues(None);
        no_dlq.dlq_arn = None;
        assert_eq!(
            no_dlq.redrive_problems("https://q/dlq")[0].reason,
            "no dead-letter queue at https://q/dlq"
        );
    }
}
