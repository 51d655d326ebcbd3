//! Fault injection around the real use cases: wrappers over the store, the queue and the
//! targets (test code only, so never in a release build) that, at named points, fail as a
//! throttled store or a refused send would, or abandon the use case as a crash would (a panic
//! in the task running it: nothing after that point happens). Which crash an attempt suffers is
//! chosen by the driver and carried in a task-local, so the wrappers stay dumb.

use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use plumbline::contract::{EventId, Timestamp};
use plumbline::delivery::Document;
use plumbline::ingress::Outgoing;
use plumbline::ledger::Entity;
use plumbline::ports::{
    Alias, Attempt, Claim, DeliveryLog, DeliveryRecord, EventKey, EventQueue, EventRecord,
    EventStatus, EventStore, Intake, LedgerStore, QueueControl, QueueError, ReplayTally, Saved,
    StoreError, Target, TargetError,
};
use plumbline::sources::PayloadHash;

/// Where a crash may cut an attempt short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    AfterClaim,
    AfterEnqueue,
    BeforeTargetCall,
    AfterTargetCallBeforeRecord,
    AfterRecordBeforeAck,
}

pub const INGRESS_POINTS: [Point; 2] = [Point::AfterClaim, Point::AfterEnqueue];
pub const DELIVERY_POINTS: [Point; 3] = [
    Point::BeforeTargetCall,
    Point::AfterTargetCallBeforeRecord,
    Point::AfterRecordBeforeAck,
];

tokio::task_local! {
    /// The crash planned for the attempt running in this task, if any.
    pub static CRASH: Option<Point>;
}

const CRASH_MESSAGE: &str = "injected crash";

/// Crashes here if this attempt's plan says so, noting it against `key` first.
fn crash_if(plan: &Plan, point: Point, key: &str) {
    let planned = CRASH.try_with(|p| *p == Some(point)).unwrap_or(false);
    if planned {
        plan.note(format!("crash {point:?}"), key);
    }
    assert!(!planned, "{CRASH_MESSAGE} at {point:?}");
}

/// Injected crashes are expected: keep them out of the test output, print every other panic.
pub fn quiet_crashes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with(CRASH_MESSAGE));
            if !injected {
                previous(info);
            }
        }));
    });
}

/// Random failures that are not crashes, from one seeded generator; and the log of what was
/// injected where, printed when an assertion fails.
#[derive(Debug)]
pub struct Plan {
    rng: Mutex<fastrand::Rng>,
    pub throttle: f64,
    pub send_failure: f64,
    pub log: Mutex<Vec<(String, String)>>,
}

impl Plan {
    pub fn new(seed: u64, throttle: f64, send_failure: f64) -> Arc<Self> {
        Arc::new(Self {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            throttle,
            send_failure,
            log: Mutex::new(Vec::new()),
        })
    }

    pub fn chance(&self, p: f64) -> bool {
        self.rng.lock().expect("rng").f64() < p
    }

    pub fn pick<T: Copy>(&self, from: &[T]) -> T {
        let i = self.rng.lock().expect("rng").usize(..from.len());
        from[i]
    }

    pub fn note(&self, what: impl Into<String>, key: impl Into<String>) {
        self.log
            .lock()
            .expect("log")
            .push((what.into(), key.into()));
    }

    /// What was injected for `key`, in order: the replay log of one event.
    pub fn history(&self, key: &str) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|(_, k)| k == key)
            .map(|(w, _)| w.clone())
            .collect()
    }

    fn throttled(&self, key: &str) -> Result<(), StoreError> {
        if self.chance(self.throttle) {
            self.note("store throttled", key);
            return Err(StoreError::Throttled("injected throttling".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct FaultyStore<S> {
    pub inner: S,
    pub plan: Arc<Plan>,
}

/// Two steps, so a crash can fall between the claim and the enqueue.
impl<S: EventStore, Q: EventQueue> Intake<Q> for FaultyStore<S> {}

impl<S: EventStore> EventStore for FaultyStore<S> {
    async fn claim(&self, record: &EventRecord) -> Result<Claim, StoreError> {
        self.plan.throttled(record.key.as_str())?;
        let claim = self.inner.claim(record).await?;
        crash_if(&self.plan, Point::AfterClaim, record.key.as_str());
        Ok(claim)
    }
    async fn release(&self, key: &EventKey, event_id: &EventId) -> Result<(), StoreError> {
        self.inner.release(key, event_id).await
    }
    async fn refresh_claim(
        &self,
        key: &EventKey,
        seen: Timestamp,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.refresh_claim(key, seen, now).await
    }
    async fn record_conflict(
        &self,
        key: &EventKey,
        hash: &PayloadHash,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner.record_conflict(key, hash, at).await
    }
    async fn promote(&self, was: EventStatus, record: &EventRecord) -> Result<bool, StoreError> {
        self.inner.promote(was, record).await
    }
    async fn get(&self, key: &EventKey) -> Result<Option<EventRecord>, StoreError> {
        self.plan.throttled(key.as_str())?;
        self.inner.get(key).await
    }
    async fn set_status(
        &self,
        key: &EventKey,
        status: EventStatus,
        detail: Option<&str>,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner.set_status(key, status, detail, at).await?;
        crash_if(&self.plan, Point::AfterRecordBeforeAck, key.as_str());
        Ok(())
    }
}

impl<S: DeliveryLog> DeliveryLog for FaultyStore<S> {
    async fn begin(
        &self,
        key: &EventKey,
        target: &str,
        now: Timestamp,
        lease: Duration,
        replay: bool,
        held: Option<Timestamp>,
    ) -> Result<Attempt, StoreError> {
        self.plan.throttled(key.as_str())?;
        self.inner
            .begin(key, target, now, lease, replay, held)
            .await
    }
    async fn delivered(
        &self,
        key: &EventKey,
        target: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner.delivered(key, target, now).await
    }
    async fn settle(
        &self,
        key: &EventKey,
        delivered: &[&str],
        status: EventStatus,
        detail: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner
            .settle(key, delivered, status, detail, now)
            .await?;
        crash_if(&self.plan, Point::AfterRecordBeforeAck, key.as_str());
        Ok(())
    }
    async fn failed(
        &self,
        key: &EventKey,
        target: &str,
        reason: &str,
        permanent: bool,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.inner.failed(key, target, reason, permanent, now).await
    }
    async fn retrying_until(&self, key: &EventKey, until: Timestamp) -> Result<(), StoreError> {
        self.inner.retrying_until(key, until).await
    }
    async fn deliveries(&self, key: &EventKey) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.inner.deliveries(key).await
    }
}

impl<S: LedgerStore> LedgerStore for FaultyStore<S> {
    async fn load_entity(
        &self,
        kind: plumbline::contract::EntityKind,
        id: &str,
    ) -> Result<Option<Entity>, StoreError> {
        self.inner.load_entity(kind, id).await
    }
    async fn save_entity(&self, entity: &Entity) -> Result<Saved, StoreError> {
        self.inner.save_entity(entity).await
    }
    async fn load_alias(
        &self,
        kind: plumbline::contract::EntityKind,
        key: &str,
    ) -> Result<Option<Alias>, StoreError> {
        self.inner.load_alias(kind, key).await
    }
    async fn save_alias(
        &self,
        kind: plumbline::contract::EntityKind,
        key: &str,
        alias: &Alias,
        previous: Option<&Alias>,
    ) -> Result<bool, StoreError> {
        self.inner.save_alias(kind, key, alias, previous).await
    }
}

impl<S: ReplayTally> ReplayTally for FaultyStore<S> {
    async fn count_replay(&self, at: Timestamp, delivered: bool) -> Result<(), StoreError> {
        self.inner.count_replay(at, delivered).await
    }
    async fn replays_between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        self.inner.replays_between(from, to).await
    }
}

#[derive(Debug, Clone)]
pub struct FaultyQueue<Q> {
    pub inner: Q,
    pub plan: Arc<Plan>,
}

impl<Q: EventQueue> EventQueue for FaultyQueue<Q> {
    async fn enqueue(&self, message: &Outgoing) -> Result<(), QueueError> {
        if self.plan.chance(self.plan.send_failure) {
            self.plan.note("queue send failed", message.key());
            return Err(QueueError::Unavailable("injected send failure".into()));
        }
        self.inner.enqueue(message).await?;
        crash_if(&self.plan, Point::AfterEnqueue, message.key());
        Ok(())
    }
}

impl<Q: QueueControl> QueueControl for FaultyQueue<Q> {
    async fn retry_after(&self, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.retry_after(receipt_handle, delay).await
    }
}

#[derive(Debug)]
pub struct FaultyTarget<T> {
    pub inner: T,
    pub plan: Arc<Plan>,
}

impl<T: Target> Target for FaultyTarget<T> {
    async fn deliver(&self, document: &Document, idempotency_key: &str) -> Result<(), TargetError> {
        crash_if(&self.plan, Point::BeforeTargetCall, idempotency_key);
        let result = self.inner.deliver(document, idempotency_key).await;
        if result.is_ok() {
            crash_if(
                &self.plan,
                Point::AfterTargetCallBeforeRecord,
                idempotency_key,
            );
        }
        result
    }
}
