//! Reconciliation: finds drift and repairs it, on a schedule. This build has two checks:
//!
//! - **stuck events**: claimed events still awaiting delivery after `reconcile.stuck_after_secs`
//!   (a crash between claim and enqueue, or a lost message) are re-enqueued, found through the
//!   sparse pending index;
//! - **backlog**: delivery queue and dead-letter queue depth (and oldest age where the queue can
//!   tell).
//!
//! Each run is bounded by a deadline and a page limit; what it does not reach, the next run
//! does. Each run's report is saved, emitted as metrics, and compared with the thresholds.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::contract::{EventId, Timestamp};
use crate::ingress::QueueMessage;
use crate::ports::{Clock, EventQueue, EventStore, QueueStats, ReconcileStore};
use crate::telemetry::{Metric, Metrics};

/// What one check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub found: u64,
    pub repaired: u64,
    pub unrepairable: u64,
    /// What drifted (event keys, queue names), the first 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Why the check stopped early, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub id: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub checks: BTreeMap<String, CheckResult>,
    /// The checks whose `found` exceeded their threshold.
    pub breached: Vec<String>,
}

impl Report {
    pub fn is_breached(&self) -> bool {
        !self.breached.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub stuck_after_secs: i64,
    /// The most items one check handles per run.
    pub page_limit: usize,
    /// Check name → the most `found` that is not a breach.
    pub thresholds: BTreeMap<String, u64>,
}

pub const STUCK_EVENTS: &str = "stuck_events";
pub const DELIVERY_BACKLOG: &str = "delivery_backlog";
pub const DLQ_MESSAGES: &str = "dlq_messages";

const MAX_IDS: usize = 100;

#[derive(Debug)]
pub struct Reconciler<S, Q, D, C, M> {
    store: S,
    queue: Q,
    dead_letters: D,
    clock: C,
    metrics: M,
    settings: Settings,
}

impl<S, Q, D, C, M> Reconciler<S, Q, D, C, M>
where
    S: ReconcileStore + EventStore,
    Q: EventQueue + QueueStats,
    D: QueueStats,
    C: Clock,
    M: Metrics,
{
    pub fn new(
        store: S,
        queue: Q,
        dead_letters: D,
        clock: C,
        metrics: M,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            queue,
            dead_letters,
            clock,
            metrics,
            settings,
        }
    }

    /// Runs every check until `deadline`, saves the report and returns it.
    pub async fn run(&self, deadline: Instant) -> Report {
        let started_at = self.clock.now();
        let mut checks = BTreeMap::new();
        checks.insert(
            STUCK_EVENTS.to_owned(),
            self.stuck_events(started_at, deadline).await,
        );
        let (backlog, dlq) = self.backlog().await;
        checks.insert(DELIVERY_BACKLOG.to_owned(), backlog);
        checks.insert(DLQ_MESSAGES.to_owned(), dlq);
        let breached = checks
            .iter()
            .filter(|(name, result)| {
                self.settings
                    .thresholds
                    .get(*name)
                    .is_some_and(|limit| result.found > *limit)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let report = Report {
            id: EventId::generate(started_at).to_string(),
            started_at,
            finished_at: self.clock.now(),
            checks,
            breached,
        };
        for (name, result) in &report.checks {
            for (metric, value) in [
                ("ReconcileFound", result.found),
                ("ReconcileRepaired", result.repaired),
            ] {
                let mut m = Metric::count(metric, vec![("Check", name.clone())]);
                #[allow(clippy::cast_precision_loss)]
                {
                    m.value = value as f64;
                }
                self.metrics.emit(m);
            }
        }
        for name in &report.breached {
            self.metrics.emit(Metric::count(
                "ReconcileBreached",
                vec![("Check", name.clone())],
            ));
            warn!(check = %name, "reconciliation threshold breached");
        }
        if let Err(err) = self.store.save_run(&report).await {
            warn!(error = %err, "could not save the reconciliation report");
        }
        info!(run = %report.id, breached = report.breached.len(), "reconciliation run finished");
        report
    }

    /// Re-enqueues claims older than the horizon that delivery never finished. The refresh is
    /// conditional, so two runs (or a run and a late duplicate) re-enqueue an event once.
    async fn stuck_events(&self, now: Timestamp, deadline: Instant) -> CheckResult {
        let mut result = CheckResult::default();
        let cutoff = now.plus_secs(-self.settings.stuck_after_secs);
        let stuck = match self
            .store
            .pending_before(cutoff, self.settings.page_limit)
            .await
        {
            Ok(stuck) => stuck,
            Err(err) => {
                result.note = Some(format!("could not read the pending index: {err}"));
                return result;
            }
        };
        if stuck.len() == self.settings.page_limit {
            result.note = Some("page limit reached; the next run continues".into());
        }
        for record in stuck {
            if Instant::now() >= deadline {
                result.note = Some("time budget spent; the next run continues".into());
                break;
            }
            result.found += 1;
            if result.ids.len() < MAX_IDS {
                result.ids.push(record.key.to_string());
            }
            let Some(envelope) = &record.envelope else {
                result.unrepairable += 1;
                continue;
            };
            match self
                .store
                .refresh_claim(&record.key, record.claimed_at, now)
                .await
            {
                Ok(true) => match self
                    .queue
                    .enqueue(&QueueMessage::new(&record.key, envelope))
                    .await
                {
                    Ok(()) => result.repaired += 1,
                    Err(err) => {
                        warn!(error = %err, "could not re-enqueue a stuck event");
                        result.unrepairable += 1;
                    }
                },
                // Someone else moved it first: delivery finished it, or a duplicate re-enqueued it.
                Ok(false) => {}
                Err(err) => {
                    warn!(error = %err, "could not refresh a stuck claim");
                    result.unrepairable += 1;
                }
            }
        }
        result
    }

    async fn backlog(&self) -> (CheckResult, CheckResult) {
        let read = |depth: Result<crate::ports::Depth, crate::ports::QueueError>, name: &str| {
            match depth {
                Ok(d) => CheckResult {
                    found: d.messages,
                    ids: if d.messages > 0 {
                        vec![name.to_owned()]
                    } else {
                        Vec::new()
                    },
                    note: d
                        .oldest_age_secs
                        .map(|age| format!("oldest message {age} s old")),
                    ..CheckResult::default()
                },
                Err(err) => CheckResult {
                    note: Some(format!("could not read {name}: {err}")),
                    ..CheckResult::default()
                },
            }
        };
        (
            read(self.queue.depth().await, "delivery queue"),
            read(self.dead_letters.depth().await, "dead-letter queue"),
        )
    }
}
