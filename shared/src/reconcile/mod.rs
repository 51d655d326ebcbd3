//! Reconciliation: finds drift and repairs it, on a schedule. This build has three checks:
//!
//! - **missed webhooks**: events the provider's API lists that are not in the store are taken
//!   in through the ingress's own claim-and-enqueue, with origin `reconcile`;
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

use crate::contract::{EventId, Origin, SourceName, Timestamp, Trace};
use crate::ingress::{QueueMessage, build_record, enqueue_or_release};
use crate::ports::{
    Claim, Clock, EventKey, EventQueue, EventStore, ProviderEvents, QueueStats, ReconcileStore,
    Watermark, Watermarks,
};
use crate::sources::{SourceKind, accept_from_api};
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
    /// Pages of a provider's event list one run reads per source, at most.
    pub max_pages: usize,
    /// Ask providers only for the events they failed to deliver.
    pub failed_only: bool,
    /// Event records' retention, as the ingress sets it.
    pub retention_days: i64,
    /// The most items one check handles per run.
    pub page_limit: usize,
    /// Check name → the most `found` that is not a breach.
    pub thresholds: BTreeMap<String, u64>,
}

pub const MISSED_WEBHOOKS: &str = "missed_webhooks";
pub const STUCK_EVENTS: &str = "stuck_events";

/// Providers keep their event lists this long.
const PROVIDER_WINDOW_SECS: i64 = 30 * 86_400;
pub const DELIVERY_BACKLOG: &str = "delivery_backlog";
pub const DLQ_MESSAGES: &str = "dlq_messages";

const MAX_IDS: usize = 100;

#[derive(Debug)]
pub struct Reconciler<S, Q, D, P, C, M> {
    store: S,
    queue: Q,
    dead_letters: D,
    /// The sources whose provider has an event API plumbline reads.
    providers: BTreeMap<SourceName, (SourceKind, P)>,
    clock: C,
    metrics: M,
    settings: Settings,
}

impl<S, Q, D, P, C, M> Reconciler<S, Q, D, P, C, M>
where
    S: ReconcileStore + EventStore + Watermarks,
    Q: EventQueue + QueueStats,
    D: QueueStats,
    P: ProviderEvents,
    C: Clock,
    M: Metrics,
{
    pub fn new(
        store: S,
        queue: Q,
        dead_letters: D,
        providers: BTreeMap<SourceName, (SourceKind, P)>,
        clock: C,
        metrics: M,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            queue,
            dead_letters,
            providers,
            clock,
            metrics,
            settings,
        }
    }

    /// Runs every check until `deadline`, saves the report and returns it.
    pub async fn run(&self, deadline: Instant) -> Report {
        let started_at = self.clock.now();
        let mut checks = BTreeMap::new();
        // Missed webhooks first: what it takes in is then on the queue, not stuck.
        checks.insert(
            MISSED_WEBHOOKS.to_owned(),
            self.missed_webhooks(started_at, deadline).await,
        );
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

    /// Walks each provider's event list from the watermark (newest first), takes in what the
    /// store lacks, and moves the watermark. A walk cut short by the budget or the page limit
    /// saves its cursor; the next run continues it, so nothing is skipped.
    async fn missed_webhooks(&self, now: Timestamp, deadline: Instant) -> CheckResult {
        let mut result = CheckResult::default();
        for (source, (kind, provider)) in &self.providers {
            let stored = match self.store.load_watermark(source.as_str()).await {
                Ok(w) => w,
                Err(err) => {
                    result.note = Some(format!("{source}: could not read the watermark: {err}"));
                    continue;
                }
            };
            let oldest = now.plus_secs(-PROVIDER_WINDOW_SECS);
            let (since, mut cursor, until) = match stored {
                Some(w) => (w.since.max(oldest), w.cursor, w.until.unwrap_or(now)),
                None => (oldest, None, now),
            };
            let mut complete = false;
            for _ in 0..self.settings.max_pages {
                if Instant::now() >= deadline {
                    break;
                }
                match provider
                    .list(
                        since,
                        cursor.as_deref(),
                        self.settings.page_limit,
                        self.settings.failed_only,
                    )
                    .await
                {
                    Ok(page) => {
                        for body in &page.events {
                            self.take_missed(source, *kind, body, now, &mut result)
                                .await;
                        }
                        if page.last_id.is_some() {
                            cursor = page.last_id;
                        }
                        if !page.has_more {
                            complete = true;
                            break;
                        }
                    }
                    Err(err) => {
                        result.note = Some(format!("{source}: {err}; the next run continues"));
                        break;
                    }
                }
            }
            let next = if complete {
                Watermark {
                    since: until,
                    cursor: None,
                    until: None,
                }
            } else {
                if result.note.is_none() {
                    result.note = Some(format!(
                        "{source}: budget or page limit reached; the next run continues"
                    ));
                }
                Watermark {
                    since,
                    cursor,
                    until: Some(until),
                }
            };
            if let Err(err) = self.store.save_watermark(source.as_str(), &next).await {
                warn!(error = %err, "could not save the watermark");
            }
        }
        result
    }

    /// One event from a provider's list: nothing if the store has it, else claimed and enqueued
    /// exactly as the ingress does.
    async fn take_missed(
        &self,
        source: &SourceName,
        kind: SourceKind,
        body: &[u8],
        now: Timestamp,
        result: &mut CheckResult,
    ) {
        let events = match accept_from_api(kind, body) {
            Ok(events) => events,
            Err(err) => {
                result.unrepairable += 1;
                warn!(error = %err, "could not read an event from the provider's list");
                return;
            }
        };
        for event in events {
            let key = EventKey::new(source, &event.source_event_id);
            match self.store.get(&key).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(err) => {
                    result.unrepairable += 1;
                    warn!(error = %err, "could not look the event up");
                    continue;
                }
            }
            result.found += 1;
            if result.ids.len() < MAX_IDS {
                result.ids.push(key.to_string());
            }
            let trace = Trace {
                request_id: None,
                origin: Origin::Reconcile,
            };
            let record = build_record(source, event, now, trace, self.settings.retention_days);
            let taken = match self.store.claim(&record).await {
                Ok(Claim::Claimed) => enqueue_or_release(&self.store, &self.queue, &record)
                    .await
                    .is_ok(),
                // The webhook arrived meanwhile: nothing left to repair.
                Ok(Claim::Exists(_)) => true,
                Err(_) => false,
            };
            if taken {
                result.repaired += 1;
                info!(event_key = %key, "missed webhook taken in from the provider's list");
            } else {
                result.unrepairable += 1;
            }
        }
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
