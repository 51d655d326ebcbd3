//! `plumbline events reprocess`: kept events (quarantined, unrouted) read again with today's
//! normalizers, and the ones that now read sent down the pipeline.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use plumbline::adapters::sqs::SqsQueue;
use plumbline::contract::{SourceName, Timestamp};
use plumbline::ingress::{Reprocessed, reprocess};
use plumbline::ports::{EventQueue, EventStore};
use plumbline::sources::SourceKind;
use serde_json::json;

use crate::dev::load_config;
use crate::events::Local;
use crate::out::outln;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  plumbline events reprocess --dry-run\n  \
                  plumbline events reprocess --status quarantined --aws --config infra/config/plumbline.toml")]
pub struct ReprocessArgs {
    /// Only events kept with this status: quarantined or unrouted (default: both).
    #[arg(long, value_parser = ["quarantined", "unrouted"])]
    status: Option<String>,
    /// At most this many events of each status.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Say what each event would come to; write and send nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --aws: find kept events by scanning the table rather than the `kept` index (events
    /// kept before that index existed are found only so).
    #[arg(long, requires = "aws")]
    scan: bool,
    /// The configuration whose sources say how each event is read (the demo one without it).
    #[arg(long, env = "PLUMBLINE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    local: Local,
}

pub async fn run(args: ReprocessArgs) -> anyhow::Result<bool> {
    let (config, _, _) = load_config(args.config.as_ref())?;
    let kinds: BTreeMap<SourceName, SourceKind> = config
        .sources
        .iter()
        .map(|(name, source)| (name.clone(), source.kind))
        .collect();
    let statuses: Vec<&str> = match args.status.as_deref() {
        Some(status) => vec![status],
        None => vec!["quarantined", "unrouted"],
    };
    if args.local.aws {
        let deployment = crate::deployment::Deployment::load().await?;
        let store = crate::events::dynamo_on(&deployment)?;
        let queue = SqsQueue::new(
            aws_sdk_sqs::Client::new(&deployment.aws),
            deployment.required("PLUMBLINE_QUEUE_URL")?,
        );
        let mut keys = Vec::new();
        for status in &statuses {
            let listing = plumbline::adapters::dynamodb::Listing {
                status: Some(status),
                limit: args.limit,
                scan: args.scan,
                ..Default::default()
            };
            // Keys alone: `run_with` reads the events, a page per request.
            keys.extend(store.list_keys(&listing).await?);
        }
        run_with(&args, &kinds, keys, &store, &queue).await
    } else {
        let store = crate::local::open(&args.local.data_dir)?;
        let mut keys = Vec::new();
        for status in &statuses {
            let filter = plumbline::adapters::sqlite::EventFilter {
                status: Some((*status).to_owned()),
                event_type: None,
                since_ms: None,
                limit: args.limit,
            };
            keys.extend(store.list_events(filter).await?.into_iter().map(|r| r.key));
        }
        run_with(&args, &kinds, keys, &store, &store).await
    }
}

async fn run_with(
    args: &ReprocessArgs,
    kinds: &BTreeMap<SourceName, SourceKind>,
    keys: Vec<String>,
    store: &impl EventStore,
    queue: &impl EventQueue,
) -> anyhow::Result<bool> {
    let records = crate::events::records(store, &keys).await?;
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failed = false;
    for record in records {
        let Some(&kind) = kinds.get(&record.source) else {
            anyhow::bail!(
                "{}: source {} is not in the configuration; pass the one the events came \
                 through (--config or PLUMBLINE_CONFIG)",
                record.key,
                record.source
            );
        };
        let now = Timestamp::new(time::OffsetDateTime::now_utc());
        let outcome = match reprocess(store, queue, kind, &record, now, args.dry_run).await {
            Ok(outcome) => outcome,
            Err(err) => {
                failed = true;
                eprintln!("{}: {}", record.key, anyhow::Error::new(err));
                continue;
            }
        };
        *counts.entry(outcome.label()).or_default() += 1;
        let reason = match &outcome {
            Reprocessed::StillQuarantined(reason) => Some(reason.as_str()),
            _ => None,
        };
        if args.local.json {
            outln!(
                "{}",
                json!({ "event_id": record.event_id.as_str(), "key": record.key.as_str(), "was": record.status.as_str(), "outcome": outcome.label(), "reason": reason })
            )?;
        } else {
            outln!(
                "{:<26}  {:<12}  {:<18}  {}",
                record.event_id.as_str(),
                record.status.as_str(),
                outcome.label(),
                reason.unwrap_or("")
            )?;
        }
    }
    let enqueued = ["enqueued", "would_enqueue"]
        .iter()
        .filter_map(|label| counts.get(label))
        .sum::<usize>();
    if args.local.json {
        outln!("{}", json!({ "dry_run": args.dry_run, "outcomes": counts }))?;
    } else {
        let verb = if args.dry_run {
            "would enqueue"
        } else {
            "enqueued"
        };
        let examined: usize = counts.values().sum();
        outln!("examined {examined}, {verb} {enqueued}")?;
    }
    Ok(!failed)
}
