//! The local delivery worker: what the Lambda service does with SQS on AWS (receive a batch,
//! run the delivery use case on each record, delete what is done), over any queue consumer.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::watch;
use tracing::warn;

use super::{Delivery, InboundMessage, Outcome};
use crate::ports::{
    Clock, DeadLetters, DeliveryLog, EventStore, LedgerStore, QueueConsumer, QueueControl,
    ReplayTally, Target,
};
use crate::telemetry::Metrics;

/// How long a received message stays hidden while it is processed (the queue's visibility
/// timeout on AWS).
pub const VISIBILITY: Duration = Duration::from_secs(60);

/// Receives and processes batches until `stop` turns true; the batch in hand is finished first,
/// so stopping never abandons work half-done. `idle` is how long to wait for new messages
/// before looking again (an enqueue wakes the local queue sooner).
pub async fn run<S, Q, D, T, C, M, W, F>(
    delivery: &Delivery<S, Q, D, T, C, M>,
    queue: &W,
    mut wait: impl FnMut(Duration) -> F,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: EventStore + LedgerStore + DeliveryLog + ReplayTally,
    Q: QueueControl,
    D: DeadLetters,
    T: Target,
    C: Clock,
    M: Metrics,
    W: QueueConsumer,
    F: Future<Output = ()>,
{
    while !*stop.borrow() {
        let batch = match queue.receive(10, VISIBILITY).await {
            Ok(batch) => batch,
            Err(err) => {
                warn!(error = %err, "could not receive from the delivery queue");
                Vec::new()
            }
        };
        if batch.is_empty() {
            tokio::select! {
                () = wait(idle) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        for received in batch {
            let message = InboundMessage {
                message_id: received.message_id,
                receipt_handle: received.receipt_handle,
                body: received.body,
                receive_count: received.receive_count,
                replay: received.attributes.contains_key(super::replay::REPLAY),
            };
            // Where panics unwind (debug builds), a panic fails this message alone, as the
            // Lambda service fails an invocation: unacknowledged, it comes back after its
            // visibility timeout with a receive counted towards the dead-letter queue, and the
            // worker goes on rather than dying quietly while the server still takes webhooks.
            // Unwinding is safe here: what a message holds (its entity's turn) is released on
            // drop, and the rest lives in the store. Release builds abort, as a Lambda sandbox
            // does; the receive was counted before processing, so restarts are bounded too.
            match AssertUnwindSafe(delivery.process(&message))
                .catch_unwind()
                .await
            {
                Ok(Outcome::Done(_)) => {
                    if let Err(err) = queue.ack(&message.receipt_handle).await {
                        // It comes back after its visibility timeout; delivery records make
                        // that harmless.
                        warn!(error = %err, "could not acknowledge a processed message");
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    warn!(message_id = %message.message_id, "delivery failed on a message; it returns after its visibility timeout");
                }
            }
        }
    }
}
