//! Reconciliation: finds drift and repairs it, on a schedule. Its checks:
//!
//! - **missed webhooks**: events the provider's API lists that are not in the store are taken
//!   in through the ingress's own claim-and-enqueue, with origin `reconcile`;
//! - **stuck events**: claimed events still awaiting delivery after `reconcile.stuck_after_secs`
//!   (a crash between claim and enqueue, or a lost message) are re-enqueued, found through the
//!   sparse pending index, and dead-lettered after `reconcile.max_requeues` ([`stuck`]);
//! - **backlog**: delivery queue and dead-letter queue depth (and oldest age where the queue can
//!   tell);
//! - **payment ↔ order parity**, **CRM parity** and **lead counts** over the entities the
//!   ledger changed recently ([`sweep`], [`leads`]).
//!
//! Each run is bounded by a deadline and a page limit; what it does not reach, the next run
//! does. Each run's report is saved, emitted as metrics, and compared with the thresholds.

mod leads;
pub mod parity;
mod stuck;
mod sweep;

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Route;
use crate::contract::{EventId, Origin, SourceName, Timestamp, Trace};
use crate::delivery::Document;
use crate::ingress::build_record;
use crate::ledger::Ownership;
use crate::ports::{
    Claim, Clock, CrmDrift, CrmLead, CrmReadBack, DeadLetters, Depth, EntityScan, EventKey,
    EventQueue, EventStore, Intake, LedgerStore, ProviderEvents, QueueStats, ReconcileStore,
    ReplayTally, Target, TargetError, Watermark, Watermarks,
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
    /// How long the check took (the two parity checks share one sweep, and its time).
    #[serde(default)]
    pub duration_ms: u64,
}

/// Stamps `result` with the time since `since`.
fn timed(mut result: CheckResult, since: Instant) -> CheckResult {
    result.duration_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
    result
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
    /// A stuck claim enqueued again this many times without delivery settling it (a crash or a
    /// timeout on every receive) is dead-lettered instead of enqueued once more.
    pub max_requeues: u32,
    /// Pages one run reads at most: of stuck events, of a provider's event list per source, of
    /// the entity sweep per kind.
    pub max_pages: usize,
    /// Ask providers only for the events they failed to deliver.
    pub failed_only: bool,
    /// Event records' retention, as the ingress sets it.
    pub retention_days: i64,
    /// Items per page (stuck events, listed events, entities).
    pub page_limit: usize,
    /// Check name → the most `found` that is not a breach.
    pub thresholds: BTreeMap<String, u64>,
    /// Entities written more recently than this are still settling (their webhooks may be in
    /// flight): the parity checks leave them to the next run.
    pub settle_secs: i64,
    /// The parity checks look at entities changed within this many days.
    pub window_days: i64,
    /// Lead counts compare this many days, today included.
    pub lead_days: i64,
    pub routes: Vec<Route>,
    pub ownership: Ownership,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            stuck_after_secs: 900,
            max_requeues: DEFAULT_MAX_REQUEUES,
            max_pages: 10,
            failed_only: false,
            retention_days: 90,
            page_limit: 100,
            thresholds: BTreeMap::new(),
            settle_secs: 600,
            window_days: 7,
            lead_days: 2,
            routes: Vec::new(),
            ownership: Ownership::default(),
        }
    }
}

/// `reconcile.max_requeues` when the configuration does not set it.
pub const DEFAULT_MAX_REQUEUES: u32 = 3;

pub const MISSED_WEBHOOKS: &str = "missed_webhooks";
pub const STUCK_EVENTS: &str = "stuck_events";

/// Providers keep their event lists this long.
const PROVIDER_WINDOW_SECS: i64 = 30 * 86_400;
pub const DELIVERY_BACKLOG: &str = "delivery_backlog";
pub const DLQ_MESSAGES: &str = "dlq_messages";
pub const PAYMENT_ORDER_PARITY: &str = "payment_order_parity";
pub const CRM_PARITY: &str = "crm_parity";
pub const LEAD_COUNTS: &str = "lead_counts";
pub const REPLAYS: &str = "replays";

/// Every check a run can report, by the name its report, its `ReconcileFound` metric and
/// `[reconcile.thresholds]` use.
pub const CHECKS: [&str; 8] = [
    MISSED_WEBHOOKS,
    STUCK_EVENTS,
    DELIVERY_BACKLOG,
    DLQ_MESSAGES,
    PAYMENT_ORDER_PARITY,
    CRM_PARITY,
    LEAD_COUNTS,
    REPLAYS,
];

/// Everything reconciliation reads and writes in the store, as one bound.
pub trait Storage:
    ReconcileStore + EventStore + Watermarks + LedgerStore + EntityScan + ReplayTally
{
}

impl<T> Storage for T where
    T: ReconcileStore + EventStore + Watermarks + LedgerStore + EntityScan + ReplayTally
{
}

/// No CRM to read back: the reconciler's CRM type when none is configured.
#[derive(Debug)]
pub enum NoCrm {}

impl Target for NoCrm {
    async fn deliver(&self, _: &Document, _: &str) -> Result<(), TargetError> {
        match *self {}
    }
}

impl CrmReadBack for NoCrm {
    async fn drift(&self, _: &[Document]) -> Result<Vec<Vec<CrmDrift>>, TargetError> {
        match *self {}
    }
    async fn contacts_created(
        &self,
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Vec<CrmLead>, TargetError> {
        match *self {}
    }
    async fn existing_contacts(
        &self,
        _: &[String],
    ) -> Result<std::collections::BTreeSet<String>, TargetError> {
        match *self {}
    }
    fn knows_lead_source(&self) -> bool {
        match *self {}
    }
}

const MAX_IDS: usize = 100;

/// Whether `take_in` claimed the event now, or found it claimed before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Now,
    Before,
}

impl<S, Q, D, P, C, M, K> Reconciler<S, Q, D, P, C, M, K>
where
    S: Intake<Q>,
    Q: EventQueue,
{
    /// Takes an event in exactly as the ingress does, through [`Intake`] (claim and message in
    /// one commit where the store is the queue; else the claim, the send, and a release if the
    /// send fails), with origin `reconcile`. `None` when it could not be taken in.
    async fn take_in(
        &self,
        source: &SourceName,
        event: crate::sources::SourceEvent,
        now: Timestamp,
    ) -> Option<Taken> {
        let trace = Trace {
            request_id: None,
            origin: Origin::Reconcile,
        };
        let record = build_record(source, event, now, trace, self.settings.retention_days);
        match self.store.claim_and_enqueue(&self.queue, &record).await {
            Ok(Claim::Claimed) => Some(Taken::Now),
            Ok(Claim::Exists(_)) => Some(Taken::Before),
            Err(err) => {
                warn!(error = %crate::telemetry::Chain(&err), "could not take the event in");
                None
            }
        }
    }
}

impl CheckResult {
    fn note_id(&mut self, id: String) {
        if self.ids.len() < MAX_IDS {
            self.ids.push(id);
        }
    }

    /// Adds what another part of the same check found; the first note stays.
    fn absorb(&mut self, other: Self) {
        self.found += other.found;
        self.repaired += other.repaired;
        self.unrepairable += other.unrepairable;
        for id in other.ids {
            self.note_id(id);
        }
        if self.note.is_none() {
            self.note = other.note;
        }
    }
}

#[derive(Debug)]
pub struct Reconciler<S, Q, D, P, C, M, K = NoCrm> {
    store: S,
    queue: Q,
    dead_letters: D,
    /// The sources whose provider has an event API plumbline reads.
    providers: BTreeMap<SourceName, (SourceKind, P)>,
    /// The CRM targets to read back, by target name.
    crm: BTreeMap<String, K>,
    clock: C,
    metrics: M,
    settings: Settings,
}

impl<S, Q, D, P, C, M> Reconciler<S, Q, D, P, C, M> {
    // The map is empty when no CRM is configured: `NoCrm` cannot be built.
    #[allow(clippy::zero_sized_map_values)]
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
            crm: BTreeMap::new(),
            clock,
            metrics,
            settings,
        }
    }

    /// Reads back these CRM targets (by target name) in the CRM parity and lead count checks.
    pub fn with_crm<K>(self, crm: BTreeMap<String, K>) -> Reconciler<S, Q, D, P, C, M, K> {
        Reconciler {
            store: self.store,
            queue: self.queue,
            dead_letters: self.dead_letters,
            providers: self.providers,
            crm,
            clock: self.clock,
            metrics: self.metrics,
            settings: self.settings,
        }
    }
}

impl<S, Q, D, P, C, M, K> Reconciler<S, Q, D, P, C, M, K>
where
    S: Storage + Intake<Q>,
    Q: EventQueue + QueueStats,
    D: QueueStats + DeadLetters,
    P: ProviderEvents,
    C: Clock,
    M: Metrics,
    K: CrmReadBack + Target,
{
    /// Runs every check until `deadline`, saves the report and returns it. Checks that do not
    /// depend on each other run at the same time (interleaved on one thread), so a run takes
    /// as long as its longest chain of round trips, not the sum of them.
    pub async fn run(&self, deadline: Instant) -> Report {
        let started_at = self.clock.now();
        let mut checks = BTreeMap::new();
        let queues = async {
            let t = Instant::now();
            let (backlog, dlq, delivery) = self.backlog().await;
            (timed(backlog, t), timed(dlq, t), delivery)
        };
        let intake = async {
            // The queues' depths as the run starts, before it enqueues anything: the stuck
            // check holds back while nothing reads the delivery queue. Then missed webhooks:
            // what it takes in is then on the queue, not stuck.
            let (backlog, dlq, delivery) = queues.await;
            let t = Instant::now();
            let missed = timed(self.missed_webhooks(started_at, deadline).await, t);
            let t = Instant::now();
            let stuck = timed(
                self.stuck_check(started_at, deadline, delivery.as_ref())
                    .await,
                t,
            );
            (missed, stuck, backlog, dlq)
        };
        let parity = async {
            // Lead counts before the sweep: they report what the CRM lacked, which the sweep's
            // CRM parity then delivers again.
            let leads = if self.crm.is_empty() {
                None
            } else {
                let t = Instant::now();
                Some(timed(self.lead_counts(started_at, deadline).await, t))
            };
            let t = Instant::now();
            let (parity, crm) = self.sweep(started_at, deadline).await;
            (leads, timed(parity, t), timed(crm, t))
        };
        let replays = async {
            let t = Instant::now();
            timed(self.replays(started_at).await, t)
        };
        let ((missed, stuck, backlog, dlq), (leads, parity, crm), replays) =
            // Boxed: side by side, the chains' states would make one large future on the stack.
            tokio::join!(Box::pin(intake), Box::pin(parity), Box::pin(replays));
        checks.insert(MISSED_WEBHOOKS.to_owned(), missed);
        checks.insert(STUCK_EVENTS.to_owned(), stuck);
        if let Some(leads) = leads {
            checks.insert(LEAD_COUNTS.to_owned(), leads);
        }
        checks.insert(PAYMENT_ORDER_PARITY.to_owned(), parity);
        if !self.crm.is_empty() {
            checks.insert(CRM_PARITY.to_owned(), crm);
        }
        checks.insert(DELIVERY_BACKLOG.to_owned(), backlog);
        checks.insert(DLQ_MESSAGES.to_owned(), dlq);
        checks.insert(REPLAYS.to_owned(), replays);
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
                ("ReconcileUnrepairable", result.unrepairable),
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
                        self.take_missed(source, *kind, &page.events, now, &mut result)
                            .await;
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
                Watermark::finished(until)
            } else {
                if result.note.is_none() {
                    result.note = Some(format!(
                        "{source}: budget or page limit reached; the next run continues"
                    ));
                }
                Watermark::resume(since, cursor, until)
            };
            if let Err(err) = self.store.save_watermark(source.as_str(), &next).await {
                warn!(error = %err, "could not save the watermark");
            }
        }
        result
    }

    /// Takes in the events of one page of a provider's list that the store lacks. The page is
    /// looked up in one batch: in steady state every listed event arrived as a webhook.
    async fn take_missed(
        &self,
        source: &SourceName,
        kind: SourceKind,
        bodies: &[Vec<u8>],
        now: Timestamp,
        result: &mut CheckResult,
    ) {
        let mut events = Vec::with_capacity(bodies.len());
        for body in bodies {
            match accept_from_api(kind, body) {
                Ok(accepted) => events.extend(accepted),
                Err(err) => {
                    result.unrepairable += 1;
                    warn!(error = %err, "could not read an event from the provider's list");
                }
            }
        }
        let keys: Vec<EventKey> = events
            .iter()
            .map(|e| EventKey::new(source, &e.source_event_id))
            .collect();
        let stored = match self.store.get_many(&keys).await {
            Ok(records) => records,
            Err(err) => {
                result.unrepairable += u64::try_from(keys.len()).unwrap_or(u64::MAX);
                warn!(error = %err, "could not look the listed events up");
                return;
            }
        };
        for ((event, key), stored) in events.into_iter().zip(keys).zip(stored) {
            if stored.is_some() {
                continue;
            }
            result.found += 1;
            result.note_id(key.to_string());
            // `Exists`: the webhook arrived meanwhile, nothing left to repair.
            if self.take_in(source, event, now).await.is_some() {
                result.repaired += 1;
                info!(event_key = %key, "missed webhook taken in from the provider's list");
            } else {
                result.unrepairable += 1;
            }
        }
    }

    /// How replays went since the last run (a day back on the first): `found` counts replayed
    /// messages that failed again, the note gives the success rate.
    async fn replays(&self, now: Timestamp) -> CheckResult {
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
    async fn backlog(&self) -> (CheckResult, CheckResult, Option<Depth>) {
        let read = |depth: &Result<Depth, crate::ports::QueueError>, name: &str| match depth {
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
