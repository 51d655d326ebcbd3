//! The checks that read figures rather than walk items: the two queues' depths and the replay
//! tally.

use super::{CheckResult, Reconciler};
use crate::contract::Timestamp;
use crate::ports::{Depth, QueueError, QueueStats, ReconcileStore, ReplayTally};

impl<S, Q, D, P, C, M, K> Reconciler<S, Q, D, P, C, M, K>
where
    S: ReconcileStore + ReplayTally,
    Q: QueueStats,
    D: QueueStats,
{
    /// How replays went since the last run (a day back on the first): `found` counts replayed
    /// messages that failed again, the note gives the success rate.
    pub(super) async fn replays(&self, now: Timestamp) -> CheckResult {
        let from = match self.store.last_run().await {
            Ok(Some(last)) => last.started_at,
            Ok(None) => now.plus_secs(-86_400),
            Err(err) => {
                return CheckResult {
                    note: Some(format!("could not read the last run: {err}")),
                    ..CheckResult::default()
                };
            }
        };
        match self.store.replays_between(from, now).await {
            Ok((0, 0)) => CheckResult::default(),
            Ok((delivered, failed)) => {
                let rate = delivered * 100 / (delivered + failed);
                CheckResult {
                    found: failed,
                    note: Some(format!(
                        "replay success rate {rate} % ({delivered} of {} since {from})",
                        delivered + failed
                    )),
                    ..CheckResult::default()
                }
            }
            Err(err) => CheckResult {
                note: Some(format!("could not read the replay tally: {err}")),
                ..CheckResult::default()
            },
        }
    }

    /// The delivery queue's and the dead-letter queue's checks, and the delivery queue's depth
    /// for the stuck check.
    pub(super) async fn backlog(&self) -> (CheckResult, CheckResult, Option<Depth>) {
        let read = |depth: &Result<Depth, QueueError>, name: &str| match depth {
            Ok(d) => CheckResult {
                found: d.messages,
                ids: if d.messages > 0 {
                    vec![name.to_owned()]
                } else {
                    Vec::new()
                },
                note: match (d.messages, d.oldest_age_secs) {
                    (0, _) => None,
                    (_, Some(age)) => Some(format!(
                        "{} in flight; oldest message {age} s old",
                        d.in_flight
                    )),
                    (_, None) => Some(format!("{} in flight", d.in_flight)),
                },
                ..CheckResult::default()
            },
            Err(err) => CheckResult {
                note: Some(format!("could not read {name}: {err}")),
                ..CheckResult::default()
            },
        };
        let (queue, dead_letters) = tokio::join!(self.queue.depth(), self.dead_letters.depth());
        (
            read(&queue, "delivery queue"),
            read(&dead_letters, "dead-letter queue"),
            queue.ok(),
        )
    }
}
