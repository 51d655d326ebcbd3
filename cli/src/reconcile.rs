//! `plumbline reconcile`: one reconciliation run, as a table; exits non-zero on a breach, so it
//! can run from cron or CI. With `--history`, the runs kept instead, newest first.

use crate::out::{out, outln};
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use plumbline::adapters::sqlite::LocalDeadLetters;
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::ports::{ReconcileStore, SystemClock};
use plumbline::reconcile::{Reconciler, Report};
use plumbline::telemetry::Counters;

use crate::dev::load_config;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  plumbline reconcile\n  plumbline reconcile --aws --config infra/config/plumbline.toml --json\n  \
                  plumbline reconcile --aws --history 20"
)]
pub struct ReconcileArgs {
    /// Use DynamoDB and SQS (PLUMBLINE_TABLE, PLUMBLINE_QUEUE_URL, PLUMBLINE_DLQ_URL, or the
    /// outputs of the stack PLUMBLINE_STACK names).
    #[arg(long)]
    aws: bool,
    /// The local stack's data directory (without --aws).
    #[arg(long, default_value = ".plumbline")]
    data_dir: PathBuf,
    /// The configuration (thresholds, horizons); the demo configuration without it.
    #[arg(long, env = "PLUMBLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds the run may take.
    #[arg(long, default_value_t = 60)]
    budget: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Run nothing: list the last RUNS runs kept (90 days of them; the scheduled ones on AWS),
    /// newest first, with what each found and breached. Exits 0.
    #[arg(long, value_name = "RUNS")]
    history: Option<usize>,
}

pub async fn run(args: ReconcileArgs) -> anyhow::Result<bool> {
    if let Some(limit) = args.history {
        let runs = if args.aws {
            crate::events::dynamo().await?.recent_runs(limit).await?
        } else {
            crate::local::open(&args.data_dir)?
                .recent_runs(limit)
                .await?
        };
        if args.json {
            outln!("{}", serde_json::to_string(&runs)?)?;
        } else {
            out!("{}", history(&runs))?;
        }
        return Ok(true);
    }
    let (config, secrets, _) = load_config(args.config.as_ref())?;
    let secrets = secrets
        .fetching(config.secret_refs_for(plumbline::config::SecretPurpose::Reconcile))
        .await?;
    let providers = plumbline::adapters::provider_api::from_config(&config, &secrets)?;
    let crm = plumbline::adapters::targets::crm_targets(&config, &secrets)?;
    let deadline = Instant::now() + Duration::from_secs(args.budget);
    let report = if args.aws {
        let deployment = crate::deployment::Deployment::load().await?;
        let sqs = aws_sdk_sqs::Client::new(&deployment.aws);
        Reconciler::new(
            crate::events::dynamo_on(&deployment)?,
            SqsQueue::new(sqs.clone(), deployment.required("PLUMBLINE_QUEUE_URL")?),
            SqsDeadLetters::new(sqs, deployment.required("PLUMBLINE_DLQ_URL")?),
            providers,
            SystemClock,
            Counters::default(),
            config.reconcile.clone(),
        )
        .with_crm(crm)
        .run(deadline)
        .await
    } else {
        let store = crate::local::open(&args.data_dir)?;
        Reconciler::new(
            store.clone(),
            store.clone(),
            LocalDeadLetters(store),
            providers,
            SystemClock,
            Counters::default(),
            config.reconcile.clone(),
        )
        .with_crm(crm)
        .run(deadline)
        .await
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report)?)?;
    } else {
        out!("{}", table(&report))?;
    }
    Ok(!report.is_breached())
}

/// A line per run: when it started, how long it took, whether it breached, and the checks that
/// found something.
pub fn history(runs: &[Report]) -> String {
    let mut out = format!("{:<30} {:>7}  {:<8}  found\n", "started", "ms", "result");
    for run in runs {
        let _ = writeln!(
            out,
            "{:<30} {:>7}  {:<8}  {}",
            run.started_at.to_string(),
            took_ms(run),
            if run.is_breached() { "breached" } else { "ok" },
            found(
                run.checks.iter().map(|(name, c)| (name.as_str(), c.found)),
                &run.breached
            )
        );
    }
    if runs.is_empty() {
        out.push_str("no runs kept yet\n");
    }
    out
}

/// How long a run took.
pub fn took_ms(run: &Report) -> i64 {
    (run.finished_at.unix_millis() - run.started_at.unix_millis()).max(0)
}

/// The checks of a run that found something or breached, each with its count, or `–`.
pub fn found<'a>(checks: impl Iterator<Item = (&'a str, u64)>, breached: &[String]) -> String {
    let found: Vec<String> = checks
        .filter(|(name, n)| *n > 0 || breached.iter().any(|b| b == name))
        .map(|(name, n)| {
            let mark = if breached.iter().any(|b| b == name) {
                " (breached)"
            } else {
                ""
            };
            format!("{name} {n}{mark}")
        })
        .collect();
    if found.is_empty() {
        "–".to_owned()
    } else {
        found.join(", ")
    }
}

pub fn table(report: &Report) -> String {
    let mut out = format!(
        "reconciliation {} ({} → {})\n",
        report.id, report.started_at, report.finished_at
    );
    let _ = writeln!(
        out,
        "{:<22} {:>6} {:>9} {:>13} {:>7}  notes",
        "check", "found", "repaired", "unrepairable", "ms"
    );
    for (name, c) in &report.checks {
        let mark = if report.breached.contains(name) {
            " BREACHED"
        } else {
            ""
        };
        let notes = [c.note.clone().unwrap_or_default(), c.ids.join(", ")]
            .join(" ")
            .trim()
            .to_owned();
        let _ = writeln!(
            out,
            "{name:<22} {:>6} {:>9} {:>13} {:>7}  {notes}{mark}",
            c.found, c.repaired, c.unrepairable, c.duration_ms
        );
    }
    out.push_str(if report.is_breached() {
        "result: threshold breached\n"
    } else {
        "result: within thresholds\n"
    });
    out
}
