//! The delivery function is not implemented yet (see the README's status table). Until it is,
//! this entry point refuses every record as a batch item failure, so SQS keeps the messages and
//! its redrive policy moves them to the dead-letter queue: nothing is acknowledged unprocessed.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, run, service_fn};
use plumbline::telemetry::init_lambda_tracing;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_lambda_tracing();
    run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        let failures: Vec<BatchItemFailure> = event
            .payload
            .records
            .into_iter()
            .filter_map(|r| r.message_id)
            .map(|id| {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                failure
            })
            .collect();
        tracing::error!(
            records = failures.len(),
            "delivery is not implemented in this build; records left on the queue"
        );
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
}
