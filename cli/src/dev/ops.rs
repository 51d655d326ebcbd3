//! The status page: the figures an operator needs first, as JSON and as one server-rendered
//! HTML page with a small inline SVG chart (no script, no framework).

use std::collections::BTreeMap;
use std::fmt::Write;

use plumbline::adapters::sqlite::{EventFilter, EventRow, Minute, TargetStats, Timeline};
use plumbline::ports::{ReconcileStore, StoreError};
use plumbline::reconcile::Report;
use serde::Serialize;

use super::App;

#[derive(Debug, Serialize)]
pub struct QueueStatus {
    pub depth: u64,
    /// Of `depth`, messages received and not yet deleted, or held back for a retry.
    pub in_flight: u64,
    pub oldest_age_ms: Option<i64>,
}

/// A reconciliation run, in a line: when, how long, and what it found and breached.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub started_at: String,
    pub took_ms: i64,
    pub breached: Vec<String>,
    /// Each check's `found`.
    pub found: BTreeMap<String, u64>,
}

impl From<&Report> for RunSummary {
    fn from(run: &Report) -> Self {
        Self {
            id: run.id.clone(),
            started_at: run.started_at.to_string(),
            took_ms: crate::reconcile::took_ms(run),
            breached: run.breached.clone(),
            found: run
                .checks
                .iter()
                .map(|(name, check)| (name.clone(), check.found))
                .collect(),
        }
    }
}

/// Runs the status page lists.
const RUNS_LISTED: usize = 10;

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    #[serde(flatten)]
    pub stats: TargetStats,
    /// Failed or retrying over all attempts recorded.
    pub failure_rate: f64,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub queue: QueueStatus,
    pub dead_letters: QueueStatus,
    pub targets: BTreeMap<String, TargetStatus>,
    pub event_counts: BTreeMap<String, u64>,
    pub quarantined: u64,
    pub ownership_conflicts: u64,
    pub rejected_requests: u64,
    pub last_reconciliation: Option<Report>,
    /// The last runs, newest first (the newest is `last_reconciliation`).
    pub reconciliations: Vec<RunSummary>,
    pub per_minute: Vec<Minute>,
    pub recent: Vec<EventRow>,
}

pub async fn status(app: &App) -> Result<Status, StoreError> {
    let (depth, in_flight, oldest) = app.store.queue_stats(false).await?;
    let (dlq_depth, dlq_in_flight, dlq_oldest) = app.store.queue_stats(true).await?;
    let (event_counts, ownership_conflicts) = app.store.status_counts().await?;
    let targets = app
        .store
        .target_stats()
        .await?
        .into_iter()
        .map(|(name, stats)| {
            let total = stats.delivered + stats.failed + stats.retrying;
            let failure_rate = if total == 0 {
                0.0
            } else {
                (stats.failed + stats.retrying) as f64 / total as f64
            };
            (
                name,
                TargetStatus {
                    stats,
                    failure_rate,
                },
            )
        })
        .collect();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rejected_requests = app.counters.total("IngressRejected", &[]) as u64;
    let runs = app.store.recent_runs(RUNS_LISTED).await?;
    Ok(Status {
        queue: QueueStatus {
            depth,
            in_flight,
            oldest_age_ms: oldest,
        },
        dead_letters: QueueStatus {
            depth: dlq_depth,
            in_flight: dlq_in_flight,
            oldest_age_ms: dlq_oldest,
        },
        targets,
        quarantined: event_counts.get("quarantined").copied().unwrap_or(0),
        event_counts,
        ownership_conflicts,
        rejected_requests,
        reconciliations: runs.iter().map(RunSummary::from).collect(),
        last_reconciliation: runs.into_iter().next(),
        per_minute: app.store.per_minute(60).await?,
        recent: app
            .store
            .list_events(EventFilter {
                limit: 50,
                ..EventFilter::default()
            })
            .await?,
    })
}

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn age(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "–".to_owned(),
        |ms| format!("{:.1} s", ms as f64 / 1000.0),
    )
}

/// A 60-minute line chart of accepted, delivered and failed per minute.
fn chart(minutes: &[Minute]) -> String {
    let (w, h) = (600.0, 120.0);
    let max = minutes
        .iter()
        .flat_map(|m| [m.accepted, m.delivered, m.failed])
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let step = w / (minutes.len().max(2) - 1) as f64;
    let line = |pick: fn(&Minute) -> u64, class: &str| {
        let points: Vec<String> = minutes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * step,
                    h - pick(m) as f64 / max * (h - 10.0)
                )
            })
            .collect();
        format!(
            r#"<polyline class="{class}" fill="none" points="{}"/>"#,
            points.join(" ")
        )
    };
    format!(
        r#"<svg id="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="events per minute, last hour">{}{}{}</svg>"#,
        line(|m| m.accepted, "accepted"),
        line(|m| m.delivered, "delivered"),
        line(|m| m.failed, "failed"),
    )
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}\
td,th{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}.n{text-align:right}\
.breached td{color:#c33}polyline{stroke-width:2}.accepted{stroke:#36c}.delivered{stroke:#393}.failed{stroke:#c33}\
.grid{display:flex;gap:3em;flex-wrap:wrap}h2{font-size:16px;margin-top:1.5em}";

pub fn render(s: &Status) -> String {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>plumbline status</title><style>{STYLE}</style></head><body><h1>plumbline</h1>"
    );
    let _ = write!(
        html,
        "<div class=\"grid\"><table id=\"queues\"><tr><th>queue</th><th>depth</th><th>in flight</th><th>oldest</th></tr>\
         <tr><td>delivery</td><td class=\"n\" id=\"queue-depth\">{}</td><td class=\"n\" id=\"queue-in-flight\">{}</td><td class=\"n\">{}</td></tr>\
         <tr><td>dead letters</td><td class=\"n\" id=\"dlq-depth\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
        s.queue.depth,
        s.queue.in_flight,
        age(s.queue.oldest_age_ms),
        s.dead_letters.depth,
        s.dead_letters.in_flight,
        age(s.dead_letters.oldest_age_ms)
    );
    let _ = write!(
        html,
        "<table id=\"counts\"><tr><th>quarantined</th><td class=\"n\" id=\"quarantined\">{}</td></tr>\
         <tr><th>ownership conflicts</th><td class=\"n\" id=\"ownership-conflicts\">{}</td></tr>\
         <tr><th>rejected requests</th><td class=\"n\" id=\"rejected\">{}</td></tr>\
         <tr><th>last reconciliation</th><td id=\"reconciliation\">{}</td></tr></table></div>",
        s.quarantined,
        s.ownership_conflicts,
        s.rejected_requests,
        esc(&reconciliation_summary(s.last_reconciliation.as_ref()))
    );
    if let Some(report) = &s.last_reconciliation {
        html.push_str(&reconciliation_checks(report));
        html.push_str(&reconciliation_runs(&s.reconciliations));
    }
    html.push_str("<h2>Targets</h2><table id=\"targets\"><tr><th>target</th><th>delivered</th><th>retrying</th><th>failed</th><th>failure rate</th></tr>");
    for (name, t) in &s.targets {
        let _ = write!(
            html,
            "<tr data-target=\"{n}\"><td>{n}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1} %</td></tr>",
            t.stats.delivered,
            t.stats.retrying,
            t.stats.failed,
            t.failure_rate * 100.0,
            n = esc(name)
        );
    }
    html.push_str("</table><h2>Last hour, per minute: <span class=\"accepted\">accepted</span>, delivered, failed</h2>");
    html.push_str(&chart(&s.per_minute));
    html.push_str("<h2>Last 50 events</h2><table id=\"recent\"><tr><th>received</th><th>source</th><th>type</th><th>status</th><th>detail</th></tr>");
    for e in &s.recent {
        let _ = write!(
            html,
            "<tr class=\"event\" data-status=\"{st}\"><td>{}</td><td>{}</td><td><a href=\"/ops/events/{id}\">{}</a></td><td>{st}</td><td>{}</td></tr>",
            esc(&e.received_at),
            esc(&e.source),
            esc(e.event_type.as_deref().unwrap_or(&e.source_type)),
            esc(e.detail.as_deref().unwrap_or("")),
            st = esc(&e.status),
            id = esc(&e.event_id)
        );
    }
    html.push_str("</table></body></html>");
    html
}

fn reconciliation_summary(report: Option<&Report>) -> String {
    report.map_or_else(
        || "not run yet".to_owned(),
        |r| {
            let found: u64 = r.checks.values().map(|c| c.found).sum();
            let verdict = if r.is_breached() {
                format!("breached: {}", r.breached.join(", "))
            } else {
                "within thresholds".into()
            };
            format!("{}: {found} found, {verdict}", r.finished_at)
        },
    )
}

/// The last runs, as `plumbline reconcile --history` prints them: when a drift began, and
/// whether it is still there.
fn reconciliation_runs(runs: &[RunSummary]) -> String {
    let mut html = format!(
        "<h2>Last {} reconciliations</h2><table id=\"reconciliation-runs\"><tr><th>started</th>\
         <th>ms</th><th>found</th></tr>",
        runs.len()
    );
    for run in runs {
        let found = crate::reconcile::found(
            run.found.iter().map(|(name, n)| (name.as_str(), *n)),
            &run.breached,
        );
        let _ = write!(
            html,
            "<tr data-run=\"{}\"{}><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&run.id),
            if run.breached.is_empty() {
                ""
            } else {
                " class=\"breached\""
            },
            esc(&run.started_at),
            run.took_ms,
            esc(&found)
        );
    }
    html.push_str("</table>");
    html
}

/// The last run's checks, as `plumbline reconcile` prints them: what each found, repaired and
/// could not repair, and its note (why it held back, or stopped early).
fn reconciliation_checks(report: &Report) -> String {
    let mut html = String::from(
        "<h2>Last reconciliation, by check</h2><table id=\"reconciliation-checks\"><tr><th>check</th>\
         <th>found</th><th>repaired</th><th>unrepairable</th><th>note</th></tr>",
    );
    for (name, check) in &report.checks {
        let breached = report.breached.contains(name);
        let _ = write!(
            html,
            "<tr data-check=\"{n}\"{}><td>{n}{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            if breached { " class=\"breached\"" } else { "" },
            if breached { " (breached)" } else { "" },
            check.found,
            check.repaired,
            check.unrepairable,
            esc(check.note.as_deref().unwrap_or("")),
            n = esc(name)
        );
    }
    html.push_str("</table>");
    html
}

pub fn render_timeline(t: &Timeline) -> String {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>event {}</title><style>{STYLE}</style></head><body>",
        esc(t.record.event_id.as_str())
    );
    html.push_str(
        "<p><a href=\"/ops\">← status</a></p><h1>Event timeline</h1><ol id=\"timeline\">",
    );
    for line in crate::present::timeline_lines(t) {
        let _ = write!(html, "<li>{}</li>", esc(&line));
    }
    html.push_str("</ol></body></html>");
    html
}
