//! The entity sweep: one walk per kind over the entities the ledger changed within the window
//! (`reconcile.window_days`) and before the settle time (`reconcile.settle_secs`), in change
//! order through the change index, feeding two checks:
//!
//! - **payment ↔ order parity** ([`super::parity`]): a payment and the order it names must
//!   agree; a mismatch the ownership rules settle becomes a corrective event taken in like a
//!   webhook (so the ledger applies it and the routes deliver it, once); any other is reported;
//! - **CRM parity**: each CRM target's record of an entity it was sent is read back and compared
//!   with what delivering the ledger's current state would write; a drift is repaired by
//!   delivering that state again (an upsert by a unique property, so idempotent).
//!
//! A walk cut short by the budget or the page limit saves its cursor (`WM#sweep:{kind}`); the
//! next run continues it, and the run that finishes it clears it. A finished walk starts over,
//! so the window is checked again and again; one that begins and ends in the same run writes
//! nothing.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use tracing::{info, warn};

use super::parity::{self, Parity};
use super::{CheckResult, Reconciler, Taken};
use crate::contract::{EntityKind, SourceEventId, SourceName, Timestamp};
use crate::delivery::{Document, routes};
use crate::ledger::{Effect, Entity};
use crate::ports::{
    CrmReadBack, EntityScan, EventKey, EventQueue, EventRecord, Intake, Known, LedgerStore, Target,
    Watermark, Watermarks, distinct_keys,
};
use crate::telemetry::Metrics;

const DAY_SECS: i64 = 86_400;

/// The watermark a kind's walk keeps its cursor under.
fn cursor_name(kind: EntityKind) -> String {
    format!("sweep:{}", kind.as_str())
}

/// What every walk of one sweep shares.
struct Window {
    from: Timestamp,
    to: Timestamp,
    now: Timestamp,
    deadline: Instant,
}

impl<S, Q, D, P, C, M, K> Reconciler<S, Q, D, P, C, M, K>
where
    S: EntityScan + Watermarks + LedgerStore + Intake<Q>,
    Q: EventQueue,
    M: Metrics,
    K: CrmReadBack + Target,
{
    /// Returns (payment ↔ order parity, CRM parity). The kinds are walked side by side: each
    /// walk is a chain of requests (cursor, pages, cursor), and none needs another's answers.
    pub(super) async fn sweep(
        &self,
        now: Timestamp,
        deadline: Instant,
    ) -> (CheckResult, CheckResult) {
        let window = Window {
            from: now.plus_secs(-self.settings.window_days * DAY_SECS),
            to: now.plus_secs(-self.settings.settle_secs),
            now,
            deadline,
        };
        let pairs = Mutex::new(BTreeSet::new());
        // The walks hold their states on the heap, side by side.
        let walks = futures_util::future::join_all(
            self.cursors()
                .await
                .into_iter()
                .map(|(kind, stored)| self.walk(kind, stored, &window, &pairs)),
        )
        .await;
        let mut parity = CheckResult::default();
        let mut crm = CheckResult::default();
        for (p, c) in walks {
            parity.absorb(p);
            crm.absorb(c);
        }
        (parity, crm)
    }

    /// The saved cursor of each kind this run walks, read together: payments and orders for
    /// parity, customers and leads too when a CRM is read back.
    async fn cursors(&self) -> Vec<(EntityKind, Result<Option<Watermark>, String>)> {
        let mut kinds = vec![EntityKind::Payment, EntityKind::Order];
        if !self.crm.is_empty() {
            kinds.extend([EntityKind::Customer, EntityKind::Lead]);
        }
        let names: Vec<String> = kinds.iter().map(|k| cursor_name(*k)).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match self.store.load_watermarks(&names).await {
            Ok(found) => kinds
                .into_iter()
                .zip(found)
                .map(|(kind, cursor)| (kind, Ok(cursor)))
                .collect(),
            Err(err) => kinds
                .into_iter()
                .map(|kind| (kind, Err(err.to_string())))
                .collect(),
        }
    }

    /// One kind's walk, from its saved cursor; saves where it stopped.
    async fn walk(
        &self,
        kind: EntityKind,
        stored: Result<Option<Watermark>, String>,
        window: &Window,
        pairs: &Mutex<BTreeSet<(String, String)>>,
    ) -> (CheckResult, CheckResult) {
        let mut parity = CheckResult::default();
        let mut crm = CheckResult::default();
        let for_parity = matches!(kind, EntityKind::Payment | EntityKind::Order);
        let name = cursor_name(kind);
        let (mut cursor, until) = match stored {
            Ok(Some(Watermark {
                cursor: Some(c),
                until: Some(u),
                ..
            })) => (Some(c), u),
            Ok(_) => (None, window.to),
            Err(err) => {
                parity.note = Some(format!("{name}: could not read the cursor: {err}"));
                return (parity, crm);
            }
        };
        // Whether this run continues a walk an earlier run saved.
        let resumed = cursor.is_some();
        let mut complete = false;
        for _ in 0..self.settings.max_pages {
            if Instant::now() >= window.deadline {
                break;
            }
            let page = match self
                .store
                .changed_entities(
                    kind,
                    window.from,
                    until,
                    cursor.as_deref(),
                    self.settings.page_limit,
                )
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    parity.note = Some(format!("{name}: {err}; the next run continues"));
                    break;
                }
            };
            if for_parity {
                let counterparts = self.counterparts(&page.entities, &mut parity).await;
                for entity in &page.entities {
                    self.pair(entity, window.now, &counterparts, pairs, &mut parity)
                        .await;
                }
            }
            self.crm_parity(&page.entities, &mut crm).await;
            if let Some(next) = page.next {
                cursor = Some(next);
            } else {
                complete = true;
                break;
            }
        }
        let next = if complete {
            // A walk that began and ended in this run, as most do, has nothing saved to clear.
            resumed.then(|| Watermark::finished(until))
        } else {
            let note = format!("{name}: budget or page limit reached; the next run continues");
            parity.note.get_or_insert_with(|| note.clone());
            crm.note.get_or_insert(note);
            Some(Watermark::resume(window.from, cursor, until))
        };
        if let Some(next) = next
            && let Err(err) = self.store.save_watermark(&name, &next).await
        {
            warn!(error = %err, "could not save the sweep cursor");
        }
        (parity, crm)
    }

    /// The other side of each payment ↔ order pair on a page, read in one request. A failure
    /// costs only that: each pair then reads its other side on its own.
    async fn counterparts(&self, entities: &[Entity], result: &mut CheckResult) -> Known {
        let keys = distinct_keys(entities.iter().filter_map(|e| match e.kind {
            EntityKind::Payment => Some((EntityKind::Order, e.text("order_id")?.to_owned())),
            EntityKind::Order => Some((EntityKind::Payment, e.text("payment_id")?.to_owned())),
            _ => None,
        }));
        if keys.is_empty() {
            return Known::new();
        }
        self.store.load_entities(&keys).await.unwrap_or_else(|err| {
            result.note = Some(format!("could not read a page's counterparts: {err}"));
            Known::new()
        })
    }

    /// Checks the payment ↔ order pair `entity` belongs to, once per run.
    async fn pair(
        &self,
        entity: &Entity,
        now: Timestamp,
        known: &Known,
        seen: &Mutex<BTreeSet<(String, String)>>,
        result: &mut CheckResult,
    ) {
        // Cloned, not taken: payments of one order share its copy.
        let load = |kind, id: String| {
            let ahead = known.get(&(kind, id.clone())).cloned();
            async move {
                match ahead {
                    Some(entity) => Ok(entity),
                    None => self.store.load_entity(kind, &id).await,
                }
            }
        };
        let (payment, order_id, order) = match entity.kind {
            EntityKind::Payment => {
                let Some(order_id) = entity.text("order_id") else {
                    return;
                };
                match load(EntityKind::Order, order_id.to_owned()).await {
                    Ok(order) => (entity.clone(), order_id.to_owned(), order),
                    Err(err) => {
                        result.note = Some(format!("could not read order {order_id}: {err}"));
                        return;
                    }
                }
            }
            EntityKind::Order => {
                let Some(payment_id) = entity.text("payment_id") else {
                    return;
                };
                match load(EntityKind::Payment, payment_id.to_owned()).await {
                    Ok(Some(payment)) => (payment, entity.id.clone(), Some(entity.clone())),
                    // No payment yet: the missed-webhook check is what finds it.
                    Ok(None) => return,
                    Err(err) => {
                        result.note = Some(format!("could not read payment {payment_id}: {err}"));
                        return;
                    }
                }
            }
            _ => return,
        };
        let first = seen
            .lock()
            .expect("the pairs set is never poisoned")
            .insert((payment.id.clone(), order_id.clone()));
        if !first {
            return;
        }
        match parity::payment_vs_order(&payment, order.as_ref(), &self.settings.ownership) {
            Parity::InStep => {}
            Parity::Conflict(reason) => {
                result.found += 1;
                result.unrepairable += 1;
                result.note_id(format!("order:{order_id}"));
                warn!(order_id = %order_id, payment_id = %payment.id, reason = %reason, "payment and order disagree");
            }
            Parity::Correct { state } => {
                result.found += 1;
                result.note_id(format!("order:{order_id}"));
                let Some((source, event)) = parity::corrective_event(&payment, &order_id, state)
                else {
                    result.unrepairable += 1;
                    return;
                };
                match self.take_in(&source, event, now).await {
                    Some(Taken::Now(event_id)) => {
                        result.repaired += 1;
                        info!(%event_id, order_id = %order_id, payment_id = %payment.id, state, "corrective order event taken in");
                    }
                    // An earlier run's correction is still on its way through delivery.
                    Some(Taken::Before) => {}
                    None => result.unrepairable += 1,
                }
            }
        }
    }

    /// Reads back what each CRM target holds of `entities` and delivers again what drifted.
    async fn crm_parity(&self, entities: &[Entity], result: &mut CheckResult) {
        for (name, crm) in &self.crm {
            let ahead = self.newest_events_for(name, entities).await;
            let mut documents = Vec::new();
            for (entity, ahead) in entities.iter().zip(ahead) {
                if let Some(document) = self.document_for(name, entity, ahead).await {
                    documents.push(document);
                }
            }
            if documents.is_empty() {
                continue;
            }
            let drifts = match crm.drift(&documents).await {
                Ok(drifts) => drifts,
                Err(err) => {
                    result.note = Some(format!("{name}: could not read back: {err}"));
                    continue;
                }
            };
            for (document, drift) in documents.iter().zip(drifts) {
                if drift.is_empty() {
                    continue;
                }
                let entity = &document.entity;
                result.found += 1;
                result.note_id(format!("{name}:{}:{}", entity.kind.as_str(), entity.id));
                let fields: Vec<&str> = drift.iter().map(|d| d.field.as_str()).collect();
                info!(target_name = %name, entity_kind = entity.kind.as_str(), entity_id = %entity.id, fields = ?fields, "CRM record drifted");
                let key = format!(
                    "{}:reconcile:v{}",
                    document.event.idempotency_key, entity.version
                );
                match crm.deliver(document, &key).await {
                    Ok(()) => result.repaired += 1,
                    Err(err) => {
                        result.unrepairable += 1;
                        warn!(target_name = %name, error = %err, "could not deliver the ledger's state again");
                    }
                }
            }
        }
    }

    /// The events of `entity`'s history that the routes may send to `target`, newest first.
    fn events_for<'e>(
        &'e self,
        target: &'e str,
        entity: &'e Entity,
    ) -> impl Iterator<Item = EventKey> + 'e {
        let routes = &self.settings.routes;
        entity.history.iter().rev().filter_map(move |h| {
            if h.effect == Effect::DuplicateSubmission {
                return None;
            }
            let maybe = routes.iter().any(|r| {
                r.targets.iter().any(|t| t == target)
                    && r.events
                        .iter()
                        .any(|p| routes::type_matches(p, &h.event_type))
            });
            if !maybe {
                return None;
            }
            let source = SourceName::try_from(h.source.as_str()).ok()?;
            let id = SourceEventId::try_from(h.source_event_id.clone()?).ok()?;
            Some(EventKey::new(&source, &id))
        })
    }

    /// The newest such event of each entity on a page (in the page's order), read in one
    /// request: almost always the one its document is built on. A failure costs only that:
    /// each is then read on its own.
    async fn newest_events_for(
        &self,
        target: &str,
        entities: &[Entity],
    ) -> Vec<Option<(EventKey, Option<EventRecord>)>> {
        let newest: Vec<Option<EventKey>> = entities
            .iter()
            .map(|e| self.events_for(target, e).next())
            .collect();
        let keys: Vec<EventKey> = newest.iter().flatten().cloned().collect();
        let records = if keys.is_empty() {
            Vec::new()
        } else {
            match self.store.get_many(&keys).await {
                Ok(records) => records,
                Err(err) => {
                    warn!(error = %err, "could not read a page's events ahead");
                    return newest.iter().map(|_| None).collect();
                }
            }
        };
        let mut records = records.into_iter();
        newest
            .into_iter()
            .map(|key| Some((key?, records.next()?)))
            .collect()
    }

    /// The document that delivers `entity`'s current state to `target`: built on the newest
    /// delivered event of the entity that the routes send there (from `ahead` when it was read
    /// ahead). `None` when no such event is (still) stored: the target was never meant to have
    /// the entity.
    async fn document_for(
        &self,
        target: &str,
        entity: &Entity,
        mut ahead: Option<(EventKey, Option<EventRecord>)>,
    ) -> Option<Document> {
        let routes = &self.settings.routes;
        for key in self.events_for(target, entity) {
            let record = match ahead.take() {
                Some((read, record)) if read == key => record,
                _ => self.store.get(&key).await.ok()?,
            };
            let envelope = record?.envelope?;
            let json = serde_json::to_value(&envelope).ok()?;
            if routes::targets_for(routes, envelope.event_type.as_str(), &json).contains(target) {
                return Some(Document::new(envelope, entity, Effect::Applied));
            }
        }
        None
    }
}
