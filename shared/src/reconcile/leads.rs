//! Lead counts: per day (UTC) and lead source, the leads the ledger took in against the
//! contacts each CRM target created, for the last `reconcile.lead_days` days. A lead whose
//! email the CRM does not have at all is reported missing, by id; a count that differs is
//! noted. Nothing is repaired here: the CRM parity check delivers missing contacts again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::time::Instant;

use tracing::warn;

use super::{CheckResult, Reconciler};
use crate::contract::{EntityKind, Timestamp};
use crate::ports::{CrmReadBack, EntityScan, Target};
use crate::telemetry::Metrics;

const DAY_SECS: i64 = 86_400;
/// Leads grouped under one key when the CRM does not report a lead source.
const ANY_SOURCE: &str = "*";

fn day_of(at: Timestamp) -> String {
    at.to_string().chars().take(10).collect()
}

/// A ledger lead: its id and normalized email.
type LedgerLead = (String, Option<String>);

impl<S, Q, D, P, C, M, K> Reconciler<S, Q, D, P, C, M, K>
where
    S: EntityScan,
    M: Metrics,
    K: CrmReadBack + Target,
{
    pub(super) async fn lead_counts(&self, now: Timestamp, deadline: Instant) -> CheckResult {
        let mut result = CheckResult::default();
        let from = Timestamp::from_unix(
            now.unix() - now.unix().rem_euclid(DAY_SECS) - (self.settings.lead_days - 1) * DAY_SECS,
        )
        .unwrap_or(now);
        // Leads younger than the settle time may still be on their way to the CRM.
        let until = now.plus_secs(-self.settings.settle_secs);
        let Some(leads) = self
            .ledger_leads(from, now, until, deadline, &mut result)
            .await
        else {
            return result;
        };
        let mut notes = Vec::new();
        for (name, crm) in &self.crm {
            let by_source = crm.knows_lead_source();
            let created = match crm.contacts_created(from, until).await {
                Ok(created) => created,
                Err(err) => {
                    notes.push(format!("{name}: could not list contacts: {err}"));
                    continue;
                }
            };
            let mut crm_counts: BTreeMap<(String, String), u64> = BTreeMap::new();
            let mut crm_emails = BTreeSet::new();
            for lead in created {
                let source = if by_source {
                    lead.lead_source.unwrap_or_default()
                } else {
                    ANY_SOURCE.to_owned()
                };
                *crm_counts
                    .entry((day_of(lead.created_at), source))
                    .or_default() += 1;
                crm_emails.extend(lead.email.map(|e| e.to_ascii_lowercase()));
            }
            let mut ledger_counts: BTreeMap<(String, String), u64> = BTreeMap::new();
            let mut absent = Vec::new();
            for ((day, source), group) in &leads {
                let source = if by_source {
                    source.clone()
                } else {
                    ANY_SOURCE.to_owned()
                };
                *ledger_counts.entry((day.clone(), source)).or_default() += group.len() as u64;
                for (id, email) in group {
                    if let Some(email) = email
                        && !crm_emails.contains(email)
                    {
                        absent.push((id.clone(), email.clone()));
                    }
                }
            }
            let keys: BTreeSet<_> = crm_counts.keys().chain(ledger_counts.keys()).collect();
            for key in keys {
                let (ledger, crm_count) = (
                    ledger_counts.get(key).copied().unwrap_or(0),
                    crm_counts.get(key).copied().unwrap_or(0),
                );
                if ledger != crm_count {
                    notes.push(format!(
                        "{name} {}/{}: ledger {ledger}, crm {crm_count}",
                        key.0, key.1
                    ));
                }
            }
            // A lead whose contact the CRM had before that day is not missing: ask by email.
            let emails: Vec<String> = absent.iter().map(|(_, e)| e.clone()).collect();
            let existing = if emails.is_empty() {
                BTreeSet::new()
            } else {
                match crm.existing_contacts(&emails).await {
                    Ok(existing) => existing,
                    Err(err) => {
                        notes.push(format!("{name}: could not look contacts up: {err}"));
                        continue;
                    }
                }
            };
            for (id, email) in absent {
                if !existing.contains(&email) {
                    result.found += 1;
                    result.note_id(format!("{name}:lead:{id}"));
                }
            }
        }
        if !notes.is_empty() {
            let mut note = result.note.take().unwrap_or_default();
            for n in notes {
                if !note.is_empty() {
                    note.push_str("; ");
                }
                let _ = write!(note, "{n}");
            }
            result.note = Some(note);
        }
        result
    }

    /// The ledger's leads created in `[from, until)`, by (day, lead source). `None` when the
    /// walk could not finish: partial counts would report leads missing that are not.
    async fn ledger_leads(
        &self,
        from: Timestamp,
        now: Timestamp,
        until: Timestamp,
        deadline: Instant,
        result: &mut CheckResult,
    ) -> Option<BTreeMap<(String, String), Vec<LedgerLead>>> {
        let mut leads: BTreeMap<(String, String), Vec<LedgerLead>> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        for _ in 0..self.settings.max_pages {
            if Instant::now() >= deadline {
                break;
            }
            let page = match self
                .store
                .changed_entities(
                    EntityKind::Lead,
                    from,
                    now.plus_secs(1),
                    cursor.as_deref(),
                    self.settings.page_limit,
                )
                .await
            {
                Ok(page) => page,
                Err(err) => {
                    warn!(error = %err, "could not walk the leads");
                    result.note = Some(format!("could not walk the leads: {err}"));
                    return None;
                }
            };
            for lead in page.entities {
                let Some(created) = lead.created_at.filter(|c| *c >= from && *c < until) else {
                    continue;
                };
                let source = lead.text("lead_source").unwrap_or_default().to_owned();
                let email = lead.text("email").map(str::to_owned);
                leads
                    .entry((day_of(created), source))
                    .or_default()
                    .push((lead.id, email));
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Some(leads),
            }
        }
        result.note = Some("too many leads for one run's budget; counts skipped".into());
        None
    }
}
