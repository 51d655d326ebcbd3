//! `plumbline events redeliver`: dead-lettered events sent back to the delivery queue from the
//! table, as replays, for when their dead letters are gone.

use clap::Args;
use plumbline::adapters::sqs::SqsQueue;
use plumbline::delivery::replay::redeliver;
use plumbline::ports::{DeliveryLog, DeliveryState, EventRecord, EventStatus, EventStore, Requeue};
use serde_json::json;

use crate::events::{Local, at_ms, window_start_ms};
use crate::out::outln;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  plumbline events redeliver --dry-run\n  \
                  plumbline events redeliver --aws --type 'payment.*' --since 30d\n  \
                  plumbline events redeliver --aws --target erp")]
pub struct RedeliverArgs {
    /// Only events of this canonical type, or a glob such as `payment.*`.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only events this target has not delivered: its delivery failed or was still being
    /// retried when the event was dead-lettered. Other targets that owe them are called too.
    #[arg(long)]
    target: Option<String>,
    /// Only events received in this window: 30s, 10m, 2h, 7d.
    #[arg(long)]
    since: Option<String>,
    /// At most this many events.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Count what would be sent; send nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    local: Local,
}

pub async fn run(args: RedeliverArgs) -> anyhow::Result<bool> {
    let since_ms = window_start_ms(args.since.as_deref())?;
    if args.local.aws {
        let deployment = crate::deployment::Deployment::load().await?;
        let store = crate::events::dynamo_on(&deployment)?;
        let url = deployment.required("PLUMBLINE_QUEUE_URL")?;
        let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&deployment.aws), url);
        let since = since_ms.and_then(at_ms);
        let listing = plumbline::adapters::dynamodb::Listing {
            status: Some("dead_lettered"),
            event_type: args.event_type.as_deref(),
            since,
            limit: args.limit,
            scan: false,
        };
        let keys = store.list_keys(&listing).await?;
        run_with(&args, keys, &store, &queue).await
    } else {
        let store = crate::local::open(&args.local.data_dir)?;
        let filter = plumbline::adapters::sqlite::EventFilter {
            status: Some("dead_lettered".to_owned()),
            event_type: args.event_type.clone(),
            since_ms,
            limit: args.limit,
        };
        let keys = store
            .list_events(filter)
            .await?
            .into_iter()
            .map(|r| r.key)
            .collect();
        run_with(&args, keys, &store, &store).await
    }
}

async fn run_with(
    args: &RedeliverArgs,
    keys: Vec<String>,
    store: &(impl EventStore + DeliveryLog),
    queue: &impl Requeue,
) -> anyhow::Result<bool> {
    let (mut sent, mut skipped, mut not_owed) = (0_usize, 0_usize, 0_usize);
    for record in crate::events::records(store, &keys).await? {
        if record.status != EventStatus::DeadLettered {
            // Delivered by a replay since it was listed.
            skipped += 1;
            continue;
        }
        if let Some(target) = &args.target
            && !owed_by(store, &record, target).await?
        {
            not_owed += 1;
            continue;
        }
        if redeliver(queue, &record, args.dry_run).await? {
            sent += 1;
            if !args.local.json {
                outln!("{:<26}  {}", record.event_id.as_str(), record.key.as_str())?;
            }
        } else {
            // Kept without an envelope: nothing to send.
            skipped += 1;
        }
    }
    if args.local.json {
        let mut summary =
            json!({ "dry_run": args.dry_run, "redelivered": sent, "skipped": skipped });
        if let Some(target) = &args.target {
            summary["target"] = json!(target);
            summary["not_owed_by_target"] = json!(not_owed);
        }
        outln!("{summary}")?;
    } else {
        let verb = if args.dry_run {
            "would redeliver"
        } else {
            "redelivered"
        };
        let owed = args
            .target
            .as_ref()
            .map(|t| format!(", {not_owed} {t} does not owe"))
            .unwrap_or_default();
        outln!("{verb} {sent}; skipped {skipped} no longer dead-lettered{owed}")?;
    }
    Ok(true)
}

/// Whether `target` tried this event and did not deliver it. A target the event was never
/// routed to has no record, and owes nothing.
async fn owed_by(
    store: &impl DeliveryLog,
    record: &EventRecord,
    target: &str,
) -> anyhow::Result<bool> {
    Ok(store
        .deliveries(&record.key)
        .await?
        .iter()
        .any(|d| d.target == target && d.state != DeliveryState::Delivered))
}
