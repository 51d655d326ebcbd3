//! The stuck-events check: claims older than `reconcile.stuck_after_secs` that delivery never
//! settled, found through the sparse pending index (oldest first, never a scan), are enqueued
//! again, each at most `reconcile.max_requeues` times; after that, a claim is dead-lettered with
//! its reason, since delivery crashes or times out on it at every receive. While nothing reads
//! the delivery queue, they are only counted; while messages wait on it, none is given up on
//! before the queue's retention has passed since its last copy was sent.

use std::time::Instant;

use futures_util::StreamExt;
use tracing::{info, warn};

use super::{CheckResult, Reconciler, STUCK_EVENTS};
use crate::contract::{Envelope, Timestamp};
use crate::ingress::Outgoing;
use crate::ports::{
    DeadLetters, Depth, EventKey, EventQueue, EventRecord, Intake, Letter, PendingCursor,
    ReconcileStore, Unreadable,
};
use crate::telemetry::{Metric, Metrics};

/// Stuck events repaired at the same time: enough to hide round trips, few enough to stay
/// far from the table's and the queue's request limits.
const STUCK_REPAIRS_AT_ONCE: usize = 16;

/// How long after a claim's refresh its copy may be sent: the two happen in one invocation, and
/// no Lambda invocation outlasts 900 s.
const SEND_AFTER_REFRESH_SECS: i64 = 900;

/// What re-enqueueing one stuck event came to.
enum Repair {
    Done,
    /// Another caller moved the claim first (delivery finished it, or a duplicate re-enqueued
    /// it): nothing to repair.
    Moved,
    Failed,
    /// Enqueued `max_requeues` times already: dead-lettered, for an operator.
    GaveUp,
    /// Enqueued `max_requeues` times already, but messages wait on the queue, and its last copy
    /// may be among them: left for now.
    Deferred,
}

/// What a run may do with the stuck claims it finds.
#[derive(Clone, Copy)]
enum Mode {
    /// Count them only: nothing reads the queue.
    Count,
    /// Enqueue them again, and give up on the spent ones, except while `waiting` (the queue's
    /// depth, when messages wait on it) may hold one of their copies.
    Repair { waiting: Option<Depth> },
}

/// The claims a run gave up on, and those it would have but left.
#[derive(Default)]
struct Spent {
    given_up: u64,
    deferred: u64,
}

impl<S, Q, D, P, C, M, K> Reconciler<S, Q, D, P, C, M, K>
where
    S: ReconcileStore + Intake<Q>,
    Q: EventQueue,
    D: DeadLetters,
    M: Metrics,
{
    /// The stuck-events check, with a word on the claims it gave up on. While messages wait on
    /// the delivery queue and none is in flight (`delivery`, read as the run started), nothing
    /// is reading it: the claims are counted and left for delivery, since their messages may be
    /// among those waiting. Another copy would only join them, and giving up on one would
    /// dead-letter an event that is merely held back. While messages wait and others are in
    /// flight, delivery is reading but has not caught up: claims are enqueued again as usual,
    /// but none is given up on while its copies may still be waiting too, which on a queue with
    /// a retention ends once that has passed since the last was sent.
    pub(super) async fn stuck_check(
        &self,
        now: Timestamp,
        deadline: Instant,
        delivery: Option<&Depth>,
    ) -> CheckResult {
        let waiting = delivery.map_or(0, Depth::waiting);
        let mode = match delivery {
            Some(depth) if depth.unread() => Mode::Count,
            _ => Mode::Repair {
                waiting: delivery.filter(|depth| depth.waiting() > 0).copied(),
            },
        };
        let mut spent = Spent::default();
        let mut result = self.stuck_events(now, deadline, mode, &mut spent).await;
        let mut words = Vec::new();
        if matches!(mode, Mode::Count) {
            words.push(format!(
                "delivery is not reading its queue ({waiting} waiting, none in flight): left for \
                 it, none enqueued again or given up on"
            ));
        }
        if spent.given_up > 0 {
            words.push(format!(
                "{} dead-lettered after {} re-enqueues",
                spent.given_up, self.settings.max_requeues
            ));
        }
        if spent.deferred > 0 {
            let until = match delivery.and_then(|depth| depth.retention_secs) {
                Some(retention) => format!(" until {retention} s after the last was sent"),
                None => String::new(),
            };
            words.push(format!(
                "{} due to be given up on, left while the delivery queue has {waiting} waiting \
                 (their copies may be among them{until})",
                spent.deferred
            ));
        }
        if let Some(note) = result.note.take() {
            words.push(note);
        }
        if !words.is_empty() {
            result.note = Some(words.join("; "));
        }
        result
    }

    /// Re-enqueues claims older than the horizon that delivery never finished. The refresh is
    /// conditional, so two runs (or a run and a late duplicate) re-enqueue an event once. A
    /// claim enqueued `max_requeues` times already is dead-lettered instead (counted in
    /// `spent`, or left there when `mode` does not allow it). In `Mode::Count`, the claims are
    /// only counted.
    async fn stuck_events(
        &self,
        now: Timestamp,
        deadline: Instant,
        mode: Mode,
        spent: &mut Spent,
    ) -> CheckResult {
        let mut result = CheckResult::default();
        let cutoff = now.plus_secs(-self.settings.stuck_after_secs);
        // A repaired claim leaves the index's range (its refresh moves it to now); one that could
        // not be repaired stays at the front, so each page starts where the last one stopped.
        let mut after: Option<PendingCursor> = None;
        for _ in 0..self.settings.max_pages {
            if Instant::now() >= deadline {
                result.note = Some("time budget spent; the next run continues".into());
                return result;
            }
            let page = match self
                .store
                .pending_before(cutoff, after.as_ref(), self.settings.page_limit)
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    result.note = Some(format!("could not read the pending index: {err}"));
                    return result;
                }
            };
            if let Mode::Repair { waiting } = mode {
                if !self
                    .repair_page(&page.claims, now, deadline, waiting, &mut result, spent)
                    .await
                {
                    result.note = Some("time budget spent; the next run continues".into());
                    return result;
                }
            } else {
                for claim in &page.claims {
                    result.found += 1;
                    result.note_id(match claim {
                        Ok(record) => record.key.to_string(),
                        Err(unreadable) => unreadable.key.to_string(),
                    });
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return result,
            }
        }
        result.note = Some("page limit reached; the next run continues".into());
        result
    }

    /// Repairs a page of stuck claims into `result`; false when the budget ran out first.
    async fn repair_page(
        &self,
        claims: &[Result<EventRecord, Unreadable>],
        now: Timestamp,
        deadline: Instant,
        waiting: Option<Depth>,
        result: &mut CheckResult,
        spent: &mut Spent,
    ) -> bool {
        // Each repair is two requests (the refresh, the send): a few at a time rather than one
        // after another, reported in order. Made first (they are lazy), so the stream holds
        // futures, not a closure that makes them.
        let repairs: Vec<_> = claims
            .iter()
            .map(|claim| self.repair_stuck(claim, now, deadline, waiting))
            .collect();
        let mut repairs = futures_util::stream::iter(repairs).buffered(STUCK_REPAIRS_AT_ONCE);
        while let Some(repair) = repairs.next().await {
            let Some((key, repaired)) = repair else {
                return false;
            };
            result.found += 1;
            result.note_id(key.to_string());
            match repaired {
                Repair::Done => result.repaired += 1,
                Repair::Failed => result.unrepairable += 1,
                Repair::GaveUp => {
                    result.unrepairable += 1;
                    spent.given_up += 1;
                }
                Repair::Deferred => spent.deferred += 1,
                Repair::Moved => {}
            }
        }
        true
    }

    /// Re-enqueues one stuck claim, unless the budget is spent (`None`).
    async fn repair_stuck(
        &self,
        claim: &Result<EventRecord, Unreadable>,
        now: Timestamp,
        deadline: Instant,
        waiting: Option<Depth>,
    ) -> Option<(EventKey, Repair)> {
        if Instant::now() >= deadline {
            return None;
        }
        let record = match claim {
            Ok(record) => record,
            Err(unreadable) => {
                warn!(event_key = %unreadable.key, reason = %unreadable.reason, "a stuck claim could not be read");
                return Some((unreadable.key.clone(), Repair::Failed));
            }
        };
        let key = record.key.clone();
        let Some(envelope) = &record.envelope else {
            return Some((key, Repair::Failed));
        };
        if record.requeues >= self.settings.max_requeues {
            let last_sent = record.claimed_at.plus_secs(SEND_AFTER_REFRESH_SECS);
            if waiting.is_some_and(|depth| depth.may_hold(last_sent, now)) {
                return Some((key, Repair::Deferred));
            }
            // Given up on while messages wait: the queue has deleted its copies, read or not.
            let expired = waiting.and_then(|depth| depth.retention_secs);
            return Some((key, self.give_up(record, envelope, expired, now).await));
        }
        let outcome = match self
            .store
            .refresh_claim(&record.key, record.claimed_at, now)
            .await
        {
            Ok(true) => match self
                .queue
                .enqueue(&Outgoing::new(&record.key, envelope))
                .await
            {
                Ok(()) => {
                    info!(
                        event_id = %record.event_id,
                        event_key = %record.key,
                        requeues = record.requeues + 1,
                        "stuck event enqueued again"
                    );
                    Repair::Done
                }
                Err(err) => {
                    warn!(event_id = %record.event_id, error = %err, "could not re-enqueue a stuck event");
                    Repair::Failed
                }
            },
            // Someone else moved it first: delivery finished it, or a duplicate re-enqueued it.
            Ok(false) => Repair::Moved,
            Err(err) => {
                warn!(error = %err, "could not refresh a stuck claim");
                Repair::Failed
            }
        };
        Some((key, outcome))
    }

    /// Dead-letters a claim that delivery never settled however often it was enqueued again:
    /// the function crashes or times out on it, so another copy would only follow the others
    /// to the dead-letter queue, where the queue's redrive puts them without a reason. The
    /// letter written here carries the reason and the event, so the event is replayable even
    /// when no copy reached the queue (a re-enqueue whose send failed counts all the same); it
    /// goes first, so an event settled `dead_lettered` always has one. The reason also goes on
    /// the event, where `events show` and `events list --status dead_lettered` find it.
    /// `expired` is the queue's retention when messages still waited: its copies may have been
    /// deleted unread rather than crashed on.
    async fn give_up(
        &self,
        record: &EventRecord,
        envelope: &Envelope,
        expired: Option<u64>,
        now: Timestamp,
    ) -> Repair {
        let detail = if let Some(retention) = expired {
            format!(
                "not settled after {} re-enqueues, and its last copy is past the delivery \
                 queue's {retention} s retention: delivery crashed or timed out on each \
                 receive, or the queue deleted it unread",
                record.requeues
            )
        } else if record.requeues == 0 {
            format!(
                "not settled {} s after its claim, and not enqueued again (reconcile.max_requeues = 0)",
                self.settings.stuck_after_secs
            )
        } else {
            format!(
                "not settled after {} re-enqueues: delivery never finished it (it crashed or \
                 timed out on each receive)",
                record.requeues
            )
        };
        let message = Outgoing::new(&record.key, envelope);
        let attributes = Letter {
            reason: detail.clone(),
            failed_at: now,
            event_key: Some(&record.key),
            event_type: Some(&envelope.event_type),
            target: None,
        }
        .attributes();
        if let Err(err) = self
            .dead_letters
            .dead_letter(message.body(), &attributes)
            .await
        {
            warn!(error = %err, "could not dead-letter a stuck event");
            return Repair::Failed;
        }
        match self
            .store
            .give_up_stuck(&record.key, record.claimed_at, &detail, now)
            .await
        {
            Ok(true) => {
                self.metrics.emit(Metric::count(
                    "ReconcileGaveUp",
                    vec![("Check", STUCK_EVENTS.to_owned())],
                ));
                warn!(event_id = %record.event_id, event_key = %record.key, requeues = record.requeues, "stuck event dead-lettered");
                Repair::GaveUp
            }
            // Delivery settled it meanwhile: the letter is a spare copy, which a replay
            // delivers to no target twice.
            Ok(false) => Repair::Moved,
            Err(err) => {
                warn!(error = %err, "could not settle a stuck event as dead-lettered");
                Repair::Failed
            }
        }
    }
}
