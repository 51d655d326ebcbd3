//! `plumbline replay`: dead letters back onto the delivery queue.

use crate::out::outln;
use std::io::IsTerminal;

use clap::Args;
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::delivery::replay::{Filter, Report, replay};
use plumbline::ports::{DeadLetterSource, Requeue};

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  plumbline replay --target erp --reason 'HTTP 400' --dry-run\n  plumbline replay --aws --limit 100"
)]
pub struct ReplayArgs {
    /// Use the AWS backend: queue URLs from PLUMBLINE_QUEUE_URL and PLUMBLINE_DLQ_URL, or from
    /// the outputs of the stack PLUMBLINE_STACK names.
    #[arg(long)]
    aws: bool,
    /// The local stack's data directory (without --aws).
    #[arg(long, default_value = ".plumbline")]
    data_dir: std::path::PathBuf,
    /// Only dead letters for this target.
    #[arg(long)]
    target: Option<String>,
    /// Only dead letters of this canonical event type.
    #[arg(long)]
    event_type: Option<String>,
    /// Only dead letters whose reason contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// At most this many messages.
    #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
    limit: usize,
    /// Count what would be replayed; move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<bool> {
    if args.aws {
        let deployment = crate::deployment::Deployment::load().await?;
        let sqs = aws_sdk_sqs::Client::new(&deployment.aws);
        let dlq = SqsDeadLetters::new(sqs.clone(), deployment.required("PLUMBLINE_DLQ_URL")?);
        let queue = SqsQueue::new(sqs, deployment.required("PLUMBLINE_QUEUE_URL")?);
        run_with(args, &dlq, &queue).await
    } else {
        let store = crate::local::open(&args.data_dir)?;
        run_with(args, &store, &store).await
    }
}

async fn run_with(
    args: ReplayArgs,
    dlq: &impl DeadLetterSource,
    queue: &impl Requeue,
) -> anyhow::Result<bool> {
    let filter = Filter {
        target: args.target,
        event_type: args.event_type,
        reason: args.reason,
    };
    let bar = (std::io::stderr().is_terminal() && !args.json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
        );
        bar
    });
    let verb = if args.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    let show = |r: &Report| {
        let line = format!(
            "examined {}, {verb} {}",
            r.examined,
            if args.dry_run { r.matched } else { r.replayed }
        );
        match &bar {
            Some(bar) => bar.set_message(line),
            None if !args.json && r.examined.is_multiple_of(100) => eprintln!("{line}"),
            None => {}
        }
    };
    let report = replay(dlq, queue, &filter, args.limit, args.dry_run, show).await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        outln!(
            "{}",
            serde_json::json!({ "examined": report.examined, "matched": report.matched, "replayed": report.replayed, "dry_run": args.dry_run })
        )?;
    } else {
        outln!(
            "examined {}, matched {}, {verb} {}",
            report.examined,
            report.matched,
            if args.dry_run {
                report.matched
            } else {
                report.replayed
            }
        )?;
    }
    Ok(true)
}
