//! Reconciliation: finds drift and repairs it, on a schedule. Its checks:
//!
//! - **missed webhooks**: events the provider's API lists that are not in the store are taken
//!   in through the ingress's own claim-and-enqueue, with origin `reconcile` (`missed`);
//! - **stuck events**: claimed events still awaiting delivery after `reconcile.stuck_after_secs`
//!   (a crash between claim and enqueue, or a lost message) are re-enqueued, found through the
//!   sparse pending index, and dead-lettered after `reconcile.max_requeues` (`stuck`);
//! - **backlog**: delivery queue and dead-letter queue depth (and oldest age where the queue can
//!   tell), and how replays went (`queues`);
//! - **payment ↔ order parity**, **CRM parity** and **lead counts** over the entities the
//!   ledger changed recently (`sweep`, `leads`).
//!
//! Each run is bounded by a deadline and a page limit; what it does not reach, the next run
//! does. Each run's report is saved, emitted as metrics, and compared with the thresholds.

mod leads;
mod missed;
pub mod parity;
mod queues;
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
    Claim, Clock, CrmDrift, CrmLead, CrmReadBack, DeadLetters, EntityScan, EventQueue, EventStore,
    Intake, LedgerStore, ProviderEvents, QueueStats, ReconcileStore, ReplayTally, Target,
    TargetError, Watermarks,
};
use crate::sources::SourceKind;
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
    /// How many days back a source's first walk of its provider's list starts (no watermark
    /// yet): what the store lacks of those days is taken in and delivered.
    pub first_walk_days: i64,
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
            first_walk_days: 30,
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

/// Whether `take_in` claimed the event now, with the id it gave it (which its log line names,
/// as the ingress's does), or found it claimed before.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Taken {
    Now(EventId),
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
            Ok(Claim::Claimed) => Some(Taken::Now(record.event_id)),
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
}
