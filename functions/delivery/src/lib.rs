//! The delivery Lambda function's adapter: an SQS batch in, the [`plumbline::delivery`] use case
//! per record, the ids of the records to retry out (`ReportBatchItemFailures`).

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use plumbline::delivery::replay::REPLAY;
use plumbline::delivery::{Delivery, InboundMessage};
use plumbline::ports::{
    Clock, DeadLetters, DeliveryLog, EventStore, LedgerStore, QueueControl, ReplayTally, Target,
};
use plumbline::telemetry::Metrics;

/// Handles one batch. A record that cannot even be read is reported as failed, so SQS keeps it
/// (and its redrive policy dead-letters it in the end): nothing is acknowledged unprocessed.
pub async fn handle<S, Q, D, T, C, M>(
    delivery: &Delivery<S, Q, D, T, C, M>,
    event: SqsEvent,
) -> SqsBatchResponse
where
    S: EventStore + LedgerStore + DeliveryLog + ReplayTally,
    Q: QueueControl,
    D: DeadLetters,
    T: Target,
    C: Clock,
    M: Metrics,
{
    let mut retry = Vec::new();
    let mut messages = Vec::with_capacity(event.records.len());
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        if let Some(message) = inbound(record) {
            messages.push(message);
        } else {
            tracing::warn!(message_id = %id, "record without body or receipt handle");
            retry.push(id);
        }
    }
    retry.extend(delivery.process_batch(&messages).await);
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = retry
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

fn inbound(record: SqsMessage) -> Option<InboundMessage> {
    let receive_count = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let replay = record.message_attributes.contains_key(REPLAY);
    Some(InboundMessage {
        message_id: record.message_id?,
        receipt_handle: record.receipt_handle?,
        body: record.body?,
        receive_count,
        replay,
    })
}
