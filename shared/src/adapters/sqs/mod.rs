//! The delivery queue on SQS.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};

use std::time::Duration;

mod queue_check;

pub use queue_check::{QueueSetup, Queues, Redrive};

use crate::ingress::Outgoing;
use crate::ports::{
    DeadLetterSource, DeadLetters, Depth, EventQueue, QueueConsumer, QueueControl, QueueError,
    QueueStats, Received, Requeue, letter,
};

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

const THROTTLING: [&str; 3] = [
    "ThrottlingException",
    "RequestThrottled",
    "AWS.SimpleQueueService.RequestThrottled",
];
const REFUSED: [&str; 3] = [
    "InvalidMessageContents",
    "InvalidParameterValue",
    "MessageTooLong",
];

impl EventQueue for SqsQueue {
    async fn enqueue(&self, message: &Outgoing) -> Result<(), QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body());
        for (name, value) in message.attributes() {
            request = request.message_attributes(name, string_attribute(value)?);
        }
        request.send().await.map(|_| ()).map_err(classify)
    }
}

fn classify<E>(
    err: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err
        .as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .map(str::to_owned);
    match code.as_deref() {
        Some(c) if THROTTLING.contains(&c) => QueueError::Throttled(Box::new(err)),
        Some(c) if REFUSED.contains(&c) => QueueError::Refused(c.to_owned()),
        _ => QueueError::Unavailable(Box::new(err)),
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| QueueError::Refused(e.to_string()))
}

impl QueueControl for SqsQueue {
    async fn retry_after(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        // SQS caps a visibility timeout at 12 hours.
        let secs = i32::try_from(delay.as_secs().min(43_200)).unwrap_or(43_200);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(secs)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

/// The dead-letter queue, for messages delivery refuses for good (with the reason attached).
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: Client,
    url: String,
}

impl SqsDeadLetters {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

/// Sends `body` to `url` with string attributes; empty values are left out, as SQS refuses
/// them and an absent attribute says the same.
async fn send_to(
    client: &Client,
    url: &str,
    body: &str,
    attributes: &[(&str, String)],
) -> Result<(), QueueError> {
    let mut request = client.send_message().queue_url(url).message_body(body);
    for (name, value) in attributes.iter().filter(|(_, v)| !v.is_empty()) {
        request = request.message_attributes(*name, string_attribute(value)?);
    }
    request.send().await.map(|_| ()).map_err(classify)
}

impl DeadLetters for SqsDeadLetters {
    async fn dead_letter(
        &self,
        body: &str,
        attributes: &[(&str, String)],
    ) -> Result<(), QueueError> {
        send_to(&self.client, &self.url, body, attributes).await
    }
}

impl Requeue for SqsQueue {
    async fn requeue(&self, body: &str, attributes: &[(&str, String)]) -> Result<(), QueueError> {
        send_to(&self.client, &self.url, body, attributes).await
    }
}

/// Receives up to `max` messages from `url`, hidden for `hide`, with their attributes.
async fn receive_from(
    client: &Client,
    url: &str,
    max: i32,
    hide: Duration,
) -> Result<Vec<Received>, QueueError> {
    let out = client
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, 10))
        .visibility_timeout(i32::try_from(hide.as_secs()).unwrap_or(43_200))
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .map_err(classify)?;
    Ok(out
        .messages
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let receive_count = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            let attributes = m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
                .collect();
            Some(Received {
                message_id: m.message_id?,
                receipt_handle: m.receipt_handle?,
                body: m.body?,
                attributes,
                receive_count,
            })
        })
        .collect())
}

async fn delete_from(client: &Client, url: &str, receipt_handle: &str) -> Result<(), QueueError> {
    client
        .delete_message()
        .queue_url(url)
        .receipt_handle(receipt_handle)
        .send()
        .await
        .map(|_| ())
        .map_err(classify)
}

impl QueueConsumer for SqsQueue {
    async fn receive(&self, max: i32, hide: Duration) -> Result<Vec<Received>, QueueError> {
        receive_from(&self.client, &self.url, max, hide).await
    }

    async fn ack(&self, receipt_handle: &str) -> Result<(), QueueError> {
        delete_from(&self.client, &self.url, receipt_handle).await
    }
}

/// What a letter the queue's redrive moved says of itself: SQS moves the message as it was
/// sent, with nothing on why. Delivery gives each letter it writes its reason.
const REDRIVEN: &str =
    "received maxReceiveCount times without success (moved by the queue's redrive)";

impl DeadLetterSource for SqsDeadLetters {
    /// Letters as listed and replayed: one the redrive moved is given `REDRIVEN` as its
    /// reason, so every letter has one (`replay --reason` selects them as it does the others).
    async fn receive(&self, max: i32, hide: Duration) -> Result<Vec<Received>, QueueError> {
        let mut letters = receive_from(&self.client, &self.url, max, hide).await?;
        for letter in &mut letters {
            letter
                .attributes
                .entry(letter::REASON.to_owned())
                .or_insert_with(|| REDRIVEN.to_owned());
        }
        Ok(letters)
    }

    async fn release(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(0)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        delete_from(&self.client, &self.url, receipt_handle).await
    }
}

/// Messages waiting plus in flight, and the queue's retention, in one request. SQS does not
/// report the oldest message's age through its API (CloudWatch's
/// `ApproximateAgeOfOldestMessage` does; the alarms use that).
async fn depth_of(client: &Client, url: &str) -> Result<Depth, QueueError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::MessageRetentionPeriod)
        .send()
        .await
        .map_err(classify)?;
    let attributes = out.attributes.unwrap_or_default();
    let number =
        |name: &QueueAttributeName| attributes.get(name).and_then(|v| v.parse::<u64>().ok());
    let waiting = number(&QueueAttributeName::ApproximateNumberOfMessages).unwrap_or(0);
    let in_flight = number(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible).unwrap_or(0);
    Ok(Depth {
        messages: waiting + in_flight,
        in_flight,
        oldest_age_secs: None,
        retention_secs: number(&QueueAttributeName::MessageRetentionPeriod),
    })
}

impl QueueStats for SqsQueue {
    async fn depth(&self) -> Result<Depth, QueueError> {
        depth_of(&self.client, &self.url).await
    }
}

impl QueueStats for SqsDeadLetters {
    async fn depth(&self) -> Result<Depth, QueueError> {
        depth_of(&self.client, &self.url).await
    }
}
