//! The missed-webhooks check: each provider's event list, walked from its watermark, against
//! the store; what the store lacks is taken in as the ingress would take its webhook.

use std::time::Instant;

use tracing::{info, warn};

use super::{CheckResult, Reconciler, Taken};
use crate::contract::{SourceName, Timestamp};
use crate::ports::{
    EventKey, EventQueue, EventStore, Intake, ProviderEvents, Watermark, Watermarks,
};
use crate::sources::{SourceKind, accept_from_api};

impl<S, Q, D, P, C, M, K> Reconciler<S, Q, D, P, C, M, K>
where
    S: EventStore + Watermarks + Intake<Q>,
    Q: EventQueue,
    P: ProviderEvents,
{
    /// Walks each provider's event list from the watermark (newest first), takes in what the
    /// store lacks, and moves the watermark. A walk cut short by the budget or the page limit
    /// saves its cursor; the next run continues it, so nothing is skipped.
    pub(super) async fn missed_webhooks(&self, now: Timestamp, deadline: Instant) -> CheckResult {
        let mut result = CheckResult::default();
        // A word per source that needs one: several sources may each have something to say.
        let mut notes = Vec::new();
        for (source, (kind, provider)) in &self.providers {
            let stored = match self.store.load_watermark(source.as_str()).await {
                Ok(w) => w,
                Err(err) => {
                    notes.push(format!("{source}: could not read the watermark: {err}"));
                    continue;
                }
            };
            let window_days = kind.event_window_days().unwrap_or(30);
            let oldest = now.plus_secs(-window_days * 86_400);
            // Not walked since before the provider's window (reconciliation stopped, or the API
            // failed, for that long): what happened between is no longer listed, so no run can
            // check it. Said, not hidden behind a report of nothing missed.
            if let Some(lapsed) = stored.as_ref().map(|w| w.since).filter(|s| *s < oldest) {
                warn!(source = %source, since = %lapsed, "the provider's window has passed the watermark");
                notes.push(format!(
                    "{source}: not checked from {lapsed} to {oldest}, past the provider's \
                     {window_days} days of events"
                ));
            }
            let first = now.plus_secs(-self.settings.first_walk_days * 86_400);
            let failed_only = self.settings.failed_only;
            let (since, mut cursor, until) = match stored {
                Some(w) => {
                    // `failed_only` changed since the walk was cut short: its cursor is a place
                    // in the other list, so this one is walked from `since` again.
                    let cursor = w.cursor.filter(|_| w.failed_only == failed_only);
                    (w.since.max(oldest), cursor, w.until.unwrap_or(now))
                }
                None => (oldest.max(first), None, now),
            };
            let (types, mut failed) = match types_to_list(source, provider, &mut notes).await {
                Ok(types) => (types, None),
                Err(note) => (Vec::new(), Some(note)),
            };
            // Sent none of the types plumbline reads: nothing to list, the walk is over. (A read
            // that failed lists nothing either, and leaves the walk where it was.)
            let mut complete = failed.is_none() && types.is_empty();
            let pages = if types.is_empty() {
                0
            } else {
                self.settings.max_pages
            };
            for _ in 0..pages {
                if Instant::now() >= deadline {
                    break;
                }
                match provider
                    .list(
                        since,
                        cursor.as_deref(),
                        self.settings.page_limit,
                        failed_only,
                        &types,
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
                        failed = Some(format!("{source}: {err}; the next run continues"));
                        break;
                    }
                }
            }
            let next = if complete {
                Watermark::finished(until)
            } else {
                notes.push(failed.unwrap_or_else(|| {
                    format!("{source}: budget or page limit reached; the next run continues")
                }));
                Watermark {
                    failed_only,
                    ..Watermark::resume(since, cursor, until)
                }
            };
            if let Err(err) = self.store.save_watermark(source.as_str(), &next).await {
                warn!(error = %err, "could not save the watermark");
            }
        }
        if !notes.is_empty() {
            result.note = Some(notes.join("; "));
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
            match self.take_in(source, event, now).await {
                Some(Taken::Now(event_id)) => {
                    result.repaired += 1;
                    info!(%event_id, event_key = %key, "missed webhook taken in from the provider's list");
                }
                // The webhook arrived meanwhile: nothing left to repair.
                Some(Taken::Before) => result.repaired += 1,
                None => result.unrepairable += 1,
            }
        }
    }
}

/// The types `provider`'s list is walked for, read once a walk; a switched-off endpoint is said
/// in `notes`. `Err` is the run's note of a read that failed.
async fn types_to_list(
    source: &SourceName,
    provider: &impl ProviderEvents,
    notes: &mut Vec<String>,
) -> Result<Vec<&'static str>, String> {
    let subscription = provider
        .subscription()
        .await
        .map_err(|err| format!("{source}: {err}; the next run continues"))?;
    if let Some(warning) = subscription.warning {
        warn!(source = %source, warning = %warning, "the webhook endpoint is switched off");
        notes.push(format!("{source}: {warning}"));
    }
    Ok(subscription.types)
}
