//! `plumbline events`: what happened to each event.

use crate::out::{out, outln};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use plumbline::adapters::dynamodb::{DynamoStore, Listing};
use plumbline::adapters::sqlite::{EventFilter, SqliteStore};

use crate::deployment::Deployment;
use crate::present::{timeline_json, timeline_lines};

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Recent events, newest first.
    #[command(
        after_help = "Examples:\n  plumbline events list\n  plumbline events list --status dead_lettered --type 'payment.*' --since 1h --json"
    )]
    List(ListArgs),
    /// One event's timeline: received, quarantine or conflict, ledger effect, each delivery.
    #[command(
        after_help = "Examples:\n  plumbline events show 01KAQ5Z8Y2M3N4P5Q6R7S8T9V0\n  plumbline events show stripe:evt_3PqLr2F7kS1mZk0a1dS8kT4e --json"
    )]
    Show(ShowArgs),
    /// Reads kept events (quarantined, unrouted) again with today's normalizers; the ones that
    /// now read are stored as received and enqueued, once.
    Reprocess(crate::reprocess::ReprocessArgs),
    /// Sends dead-lettered events back to the delivery queue from the table, as replays: for
    /// when their dead letters are gone (the queue keeps them 14 days) or were purged.
    Redeliver(crate::redeliver::RedeliverArgs),
    /// On DynamoDB, puts kept events an older build left out of the `kept` index into it
    /// (dead-lettered ones settled before they entered it), so `list --status` finds them
    /// without --scan. One scan of the table; safe to run again.
    #[command(
        after_help = "Examples:\n  plumbline events reindex --aws --dry-run\n  plumbline events reindex --aws"
    )]
    Reindex(ReindexArgs),
}

#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// The table in PLUMBLINE_TABLE (required: the local store's listings need no index).
    #[arg(long)]
    aws: bool,
    /// Count the events missing their entry; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print JSON: `{"missing": N, "indexed": M}`.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct Local {
    /// Use DynamoDB (table from PLUMBLINE_TABLE; `reprocess` also sends to
    /// PLUMBLINE_QUEUE_URL; or both from the outputs of the stack PLUMBLINE_STACK names) instead of the local stack. On AWS, `show` takes the idempotency key
    /// or event key; `list --status received|quarantined|unrouted|dead_lettered` and `reprocess`
    /// read a sparse index, other listings scan the table.
    #[arg(long)]
    pub aws: bool,
    /// The local stack's data directory.
    #[arg(long, default_value = ".plumbline")]
    pub data_dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// received, quarantined, unrouted, delivered, delivered_to_none, suppressed, dead_lettered
    #[arg(long)]
    status: Option<String>,
    /// A canonical type or a glob such as `payment.*`.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only events received in this window: 30s, 10m, 2h, 7d.
    #[arg(long)]
    since: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// With --aws: scan the table even where an index would answer (events kept or
    /// dead-lettered by a build before the `kept` index held them are found only so, until
    /// `events reindex --aws` has run).
    #[arg(long, requires = "aws")]
    scan: bool,
    #[command(flatten)]
    local: Local,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// plumbline's event id, the event key, or the idempotency key (`source:id`).
    id: String,
    #[command(flatten)]
    local: Local,
}

/// `30s`, `10m`, `2h`, `7d` → milliseconds.
pub fn parse_window(text: &str) -> anyhow::Result<i64> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: i64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a window such as 10m"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("{text:?}: use s, m, h or d"),
    };
    Ok(n * ms)
}

fn open(local: &Local) -> anyhow::Result<SqliteStore> {
    crate::local::open(&local.data_dir)
}

pub async fn dynamo() -> anyhow::Result<DynamoStore> {
    dynamo_on(&Deployment::load().await?)
}

/// When a `--since` window (`30s`, `10m`, `2h`, `7d`) began, in Unix milliseconds.
pub fn window_start_ms(since: Option<&str>) -> anyhow::Result<Option<i64>> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    Ok(since.map(parse_window).transpose()?.map(|w| now - w))
}

/// A Unix instant in milliseconds, to the second, as the table's listings take it.
pub fn at_ms(ms: i64) -> Option<plumbline::contract::Timestamp> {
    plumbline::contract::Timestamp::from_unix(ms.div_euclid(1000))
}

/// The store on the deployment's table (PLUMBLINE_TABLE), with the SDK configuration a
/// command shares with its other clients.
pub fn dynamo_on(deployment: &Deployment) -> anyhow::Result<DynamoStore> {
    let table = deployment.required("PLUMBLINE_TABLE")?;
    Ok(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&deployment.aws),
        table,
    ))
}

/// Events read back at once (one batch request on DynamoDB).
const READ_PAGE: usize = 100;

/// The stored events under `keys` (as listings give them), a page per read rather than one
/// read per event; keys with no event are left out.
pub async fn records(
    store: &impl plumbline::ports::EventStore,
    keys: &[String],
) -> anyhow::Result<Vec<plumbline::ports::EventRecord>> {
    let keys = keys
        .iter()
        .map(|key| {
            plumbline::ports::EventKey::parse(key).with_context(|| format!("a stored key {key:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut records = Vec::with_capacity(keys.len());
    for page in keys.chunks(READ_PAGE) {
        records.extend(store.get_many(page).await?.into_iter().flatten());
    }
    Ok(records)
}

pub async fn run(command: EventsCommand) -> anyhow::Result<bool> {
    match command {
        EventsCommand::List(args) => {
            let since_ms = window_start_ms(args.since.as_deref())?;
            let rows = if args.local.aws {
                let since = since_ms.and_then(at_ms);
                dynamo()
                    .await?
                    .list_events(&Listing {
                        status: args.status.as_deref(),
                        event_type: args.event_type.as_deref(),
                        since,
                        limit: args.limit,
                        scan: args.scan,
                    })
                    .await?
            } else {
                let filter = EventFilter {
                    status: args.status,
                    event_type: args.event_type,
                    since_ms,
                    limit: args.limit,
                };
                open(&args.local)?.list_events(filter).await?
            };
            if args.local.json {
                outln!("{}", serde_json::to_string(&rows)?)?;
            } else {
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|r| {
                        vec![
                            r.event_id,
                            r.received_at.get(..19).unwrap_or(&r.received_at).to_owned(),
                            r.source,
                            r.event_type.unwrap_or(r.source_type),
                            r.status,
                            r.detail.unwrap_or_default(),
                        ]
                    })
                    .collect();
                let header = ["event id", "received", "source", "type", "status", "detail"];
                out!("{}", crate::out::table(&header, &rows))?;
            }
            Ok(true)
        }
        EventsCommand::Reprocess(args) => crate::reprocess::run(args).await,
        EventsCommand::Redeliver(args) => crate::redeliver::run(args).await,
        EventsCommand::Reindex(args) => {
            anyhow::ensure!(
                args.aws,
                "reindex is for DynamoDB (--aws): the local store's listings read SQLite directly"
            );
            let done = dynamo().await?.index_kept_events(args.dry_run).await?;
            if args.json {
                outln!(
                    "{}",
                    serde_json::json!({ "missing": done.missing, "indexed": done.indexed })
                )?;
            } else if args.dry_run {
                outln!(
                    "{} kept events lack their index entry (dry run: none written)",
                    done.missing
                )?;
            } else {
                outln!(
                    "{} kept events lacked their index entry; {} given it",
                    done.missing,
                    done.indexed
                )?;
            }
            Ok(true)
        }
        EventsCommand::Show(args) => {
            let timeline = if args.local.aws {
                dynamo().await?.timeline(&args.id).await?
            } else {
                open(&args.local)?.timeline(&args.id).await?
            };
            let Some(timeline) = timeline else {
                eprintln!("no event {}", args.id);
                return Ok(false);
            };
            if args.local.json {
                outln!("{}", timeline_json(&timeline))?;
            } else {
                for line in timeline_lines(&timeline) {
                    outln!("{line}")?;
                }
            }
            Ok(true)
        }
    }
}
