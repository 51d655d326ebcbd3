//! The delivery queue on SQS.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::ingress::QueueMessage;
use crate::ports::{EventQueue, QueueError};

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
    async fn enqueue(&self, message: &QueueMessage) -> Result<(), QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body());
        for (name, value) in message.attributes() {
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| QueueError::Refused(e.to_string()))?;
            request = request.message_attributes(name, attr);
        }
        request.send().await.map(|_| ()).map_err(|err| {
            let code = err
                .as_service_error()
                .and_then(ProvideErrorMetadata::code)
                .map(str::to_owned);
            match code.as_deref() {
                Some(c) if THROTTLING.contains(&c) => QueueError::Throttled(Box::new(err)),
                Some(c) if REFUSED.contains(&c) => QueueError::Refused(c.to_owned()),
                _ => QueueError::Unavailable(Box::new(err)),
            }
        })
    }
}
