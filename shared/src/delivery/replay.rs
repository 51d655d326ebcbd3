//! Replay: moves dead-lettered messages back to the delivery queue, optionally filtered. Safe to
//! run twice: a message replayed twice is delivered once, because every target's delivery
//! record says whether it already has the event.

use std::collections::HashSet;
use std::time::Duration;

use crate::ingress::Outgoing;
use crate::ports::{
    DeadLetterSource, EventRecord, EventStatus, QueueError, Received, Requeue, letter,
};

/// The attribute that marks a message as a replay: delivery then calls again a target that
/// refused the event for good before, instead of leaving it refused.
pub const REPLAY: &str = "replay";

/// Which dead letters to replay. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub target: Option<String>,
    pub event_type: Option<String>,
    /// A substring of the recorded reason.
    pub reason: Option<String>,
}

impl Filter {
    pub fn matches(&self, letter: &Received) -> bool {
        let attr = |name: &str| letter.attributes.get(name).map(String::as_str);
        self.target
            .as_deref()
            .is_none_or(|t| attr(letter::TARGET) == Some(t))
            && self
                .event_type
                .as_deref()
                .is_none_or(|t| attr(letter::EVENT_TYPE) == Some(t))
            && self
                .reason
                .as_deref()
                .is_none_or(|r| attr(letter::REASON).is_some_and(|have| have.contains(r)))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Dead letters looked at.
    pub examined: usize,
    /// Of those, the ones the filter selected.
    pub matched: usize,
    /// Of those, the ones moved back (zero in a dry run).
    pub replayed: usize,
}

/// How long a dead letter stays hidden while a replay looks at it, so one run sees each once.
/// Every letter it does not move is released again when the run ends.
const HIDE: Duration = Duration::from_secs(300);

/// Replays up to `limit` matching dead letters. `progress` is called after each message.
pub async fn replay(
    dlq: &impl DeadLetterSource,
    queue: &impl Requeue,
    filter: &Filter,
    limit: usize,
    dry_run: bool,
    mut progress: impl FnMut(&Report),
) -> Result<Report, QueueError> {
    let mut report = Report::default();
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    while report.matched < limit {
        let batch = dlq.receive(10, HIDE).await?;
        let fresh: Vec<Received> = batch
            .into_iter()
            .filter(|l| seen.insert(l.message_id.clone()))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for letter in fresh {
            report.examined += 1;
            if report.matched < limit && filter.matches(&letter) {
                report.matched += 1;
                if !dry_run {
                    let mut attributes: Vec<(&str, String)> = letter
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.clone()))
                        .collect();
                    attributes.retain(|(k, _)| *k != REPLAY);
                    attributes.push((REPLAY, "1".to_owned()));
                    // Re-queue first, delete second: a crash in between leaves a copy in both,
                    // which delivery deduplicates. The other order could lose it.
                    queue.requeue(&letter.body, &attributes).await?;
                    dlq.delete(&letter.receipt_handle).await?;
                    report.replayed += 1;
                    progress(&report);
                    continue;
                }
            }
            kept.push(letter.receipt_handle);
            progress(&report);
        }
    }
    for receipt in &kept {
        dlq.release(receipt).await?;
    }
    Ok(report)
}

/// Sends a dead-lettered event back to the delivery queue from its stored record, as a replay
/// of its letter would: for when the letter is gone (the dead-letter queue keeps one 14 days,
/// the table keeps the event for its retention) or was purged. False, and nothing sent, for an
/// event that is not dead-lettered or has no envelope to send. A letter still on the queue
/// makes no second delivery: its replay finds every target's record delivered.
pub async fn redeliver(
    queue: &impl Requeue,
    record: &EventRecord,
    dry_run: bool,
) -> Result<bool, QueueError> {
    let (EventStatus::DeadLettered, Some(envelope)) = (record.status, &record.envelope) else {
        return Ok(false);
    };
    if !dry_run {
        let message = Outgoing::new(&record.key, envelope);
        let mut attributes: Vec<(&str, String)> = message
            .attributes()
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        attributes.push((letter::EVENT_KEY, record.key.to_string()));
        attributes.push((REPLAY, "1".to_owned()));
        queue.requeue(message.body(), &attributes).await?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(target: &str, reason: &str) -> Received {
        Received {
            message_id: "m".into(),
            receipt_handle: "r".into(),
            body: "{}".into(),
            attributes: [
                ("target".to_owned(), target.to_owned()),
                ("reason".to_owned(), reason.to_owned()),
                ("event_type".to_owned(), "payment.succeeded".to_owned()),
            ]
            .into(),
            receive_count: 1,
        }
    }

    #[test]
    fn filters_select_by_target_type_and_reason() {
        let l = letter("erp", "HTTP 400");
        assert!(Filter::default().matches(&l));
        assert!(
            Filter {
                target: Some("erp".into()),
                ..Filter::default()
            }
            .matches(&l)
        );
        assert!(
            !Filter {
                target: Some("crm".into()),
                ..Filter::default()
            }
            .matches(&l)
        );
        assert!(
            Filter {
                reason: Some("400".into()),
                event_type: Some("payment.succeeded".into()),
                ..Filter::default()
            }
            .matches(&l)
        );
        assert!(
            !Filter {
                event_type: Some("order.paid".into()),
                ..Filter::default()
            }
            .matches(&l)
        );
    }
}
