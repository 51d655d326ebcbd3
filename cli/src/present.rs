//! How an event's timeline is shown: as JSON for scripts, as lines for people. Shared by
//! `plumbline events show` and the status page.

use std::fmt::Write;

use plumbline::adapters::sqlite::Timeline;
use plumbline::contract::Timestamp;
use plumbline::ports::{DeliveryState, EventStatus};
use serde_json::{Value, json};

/// When a retrying event's message is due back on the queue. Each retry moves the claim there,
/// after recording the failure (`DeliveryLog::retrying_until`); so does a re-enqueue, which makes
/// the message due at once.
fn due_back(t: &Timeline) -> Option<Timestamp> {
    let r = &t.record;
    let failed = t
        .deliveries
        .iter()
        .filter(|d| d.state == DeliveryState::Retrying)
        .map(|d| d.updated_at)
        .max()?;
    (r.status == EventStatus::Received && r.claimed_at > failed).then_some(r.claimed_at)
}

pub fn timeline_json(t: &Timeline) -> Value {
    let r = &t.record;
    let envelope = r.envelope.as_ref();
    json!({
        "event_id": r.event_id,
        "key": r.key.as_str(),
        "source": r.source,
        "source_type": r.source_type,
        "type": envelope.map(|e| e.event_type.to_string()),
        "entity": envelope.map(|e| json!({ "kind": e.entity.kind, "id": e.entity.id })),
        "occurred_at": envelope.map(|e| e.occurred_at.to_string()),
        // A kept event's time from the provider's headers, which reprocessing reads again.
        "header_time": r.header_time.map(|t| t.to_string()),
        "received_at": r.received_at.to_string(),
        "status": r.status.as_str(),
        "status_at": t.status_at,
        "status_detail": t.status_detail,
        "due_back_at": due_back(t).map(|at| at.to_string()),
        "requeues": r.requeues,
        "quarantine_reason": r.reason,
        "payload_conflicts": t.conflicts,
        "ledger": t.ledger.as_ref().map(|l| json!({
            "entity": format!("{} {}", l.entity_kind, l.entity_id),
            "effect": l.effect,
            "ownership_conflicts": l.ownership_conflicts,
            "delivery_held_until": l.delivery_held_until,
        })),
        "deliveries": t.deliveries.iter().map(|d| json!({
            "target": d.target,
            "state": d.state,
            "attempts": d.attempts,
            "last_error": d.last_error,
            "updated_at": d.updated_at.to_string(),
            "delivered_at": d.delivered_at.map(|a| a.to_string()),
            "delivered_after_ms": d.delivered_at.map(|a| a.unix_millis() - r.received_at.unix_millis()),
        })).collect::<Vec<_>>(),
    })
}

/// The timeline as lines, oldest first.
pub fn timeline_lines(t: &Timeline) -> Vec<String> {
    let r = &t.record;
    let mut lines = Vec::new();
    let what = r.envelope.as_ref().map_or_else(
        || format!("{} ({})", r.source_type, r.source),
        |e| {
            format!(
                "{} from {} ({}), {} {}",
                e.event_type,
                r.source,
                r.source_type,
                e.entity.kind.as_str(),
                e.entity.id
            )
        },
    );
    lines.push(format!("event {}  key {}", r.event_id, r.key));
    lines.push(format!("  {what}"));
    if let Some(e) = &r.envelope {
        lines.push(format!("{}  occurred at the provider", e.occurred_at));
    } else if let Some(at) = r.header_time {
        lines.push(format!(
            "{at}  the provider's header time (kept for reprocessing)"
        ));
    }
    lines.push(format!("{}  received and claimed", r.received_at));
    if let Some(reason) = &r.reason {
        lines.push(format!("  quarantined: {reason}"));
    }
    if t.conflicts > 0 {
        lines.push(format!(
            "  the same id arrived {} more time(s) with a different payload (kept as a conflict)",
            t.conflicts
        ));
    }
    if let Some(l) = &t.ledger {
        let mut line = format!(
            "  ledger: {} on {} {}",
            l.effect, l.entity_kind, l.entity_id
        );
        if !l.ownership_conflicts.is_empty() {
            let _ = write!(
                line,
                "; not applied (ownership conflict): {}",
                l.ownership_conflicts.join(", ")
            );
        }
        lines.push(line);
        if let Some(until) = l
            .delivery_held_until
            .as_ref()
            .filter(|_| t.deliveries.is_empty())
        {
            lines.push(format!(
                "  first delivery attempt held until {until}; no target has reported yet"
            ));
        }
    }
    // The store keeps them by target; the timeline reads in time order.
    let mut deliveries: Vec<_> = t.deliveries.iter().collect();
    deliveries.sort_by(|a, b| (a.updated_at, &a.target).cmp(&(b.updated_at, &b.target)));
    for d in deliveries {
        let mut line = format!(
            "{}  {} → {:?} after {} attempt(s)",
            d.updated_at, d.target, d.state, d.attempts
        );
        if let Some(e) = &d.last_error {
            let _ = write!(line, ", last error: {e}");
        }
        if let Some(at) = d.delivered_at {
            let _ = write!(
                line,
                ", {} ms after receipt",
                at.unix_millis() - r.received_at.unix_millis()
            );
        }
        lines.push(line);
    }
    if let Some(at) = due_back(t) {
        lines.push(format!("{at}  due back on the queue for the next attempt"));
    }
    if r.requeues > 0 {
        lines.push(format!(
            "enqueued again {} time(s) while unsettled (by reconciliation or a late duplicate)",
            r.requeues
        ));
    }
    let mut status = format!("status: {}", r.status.as_str());
    if let Some(detail) = &t.status_detail {
        let _ = write!(status, " ({detail})");
    }
    lines.push(status);
    lines
}
