//! `plumbline dlq list`: what is on the dead-letter queue, and why.

use crate::out::{out, outln};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::time::Duration;

use plumbline::adapters::sqs::SqsDeadLetters;
use plumbline::ports::{DeadLetterSource, letter};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead letters, oldest first, with their reason and target.
    #[command(after_help = "Example:\n  plumbline dlq list --json")]
    List(ListArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Read the SQS dead-letter queue (PLUMBLINE_DLQ_URL, or PLUMBLINE_STACK's output) instead
    /// of the local stack's.
    /// Messages are received and released again at once; nothing is removed.
    #[arg(long)]
    aws: bool,
    /// The local stack's data directory.
    #[arg(long, default_value = ".plumbline")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A dead letter as listed.
struct Letter {
    id: String,
    attributes: BTreeMap<String, String>,
    body: String,
}

impl Letter {
    /// The event it is about: its attribute, else the key inside the message (messages moved
    /// by the receive limit carry no attributes of their own).
    fn event_key(&self) -> String {
        self.attributes
            .get(letter::EVENT_KEY)
            .cloned()
            .unwrap_or_else(|| {
                serde_json::from_str::<serde_json::Value>(&self.body)
                    .ok()
                    .and_then(|b| b["key"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
    }
}

/// Every letter on the SQS dead-letter queue, each seen once, then all released.
async fn sqs_letters(limit: usize) -> anyhow::Result<Vec<Letter>> {
    let deployment = crate::deployment::Deployment::load().await?;
    let url = deployment.required("PLUMBLINE_DLQ_URL")?;
    let dlq = SqsDeadLetters::new(aws_sdk_sqs::Client::new(&deployment.aws), url);
    let mut seen = Vec::new();
    while seen.len() < limit {
        let batch = dlq.receive(10, Duration::from_secs(60)).await?;
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
    }
    for letter in &seen {
        dlq.release(&letter.receipt_handle).await?;
    }
    Ok(seen
        .into_iter()
        .take(limit)
        .map(|r| Letter {
            id: r.message_id,
            attributes: r.attributes,
            body: r.body,
        })
        .collect())
}

pub async fn run(command: DlqCommand) -> anyhow::Result<bool> {
    let DlqCommand::List(args) = command;
    let letters = if args.aws {
        sqs_letters(args.limit).await?
    } else {
        let store = crate::local::open(&args.data_dir)?;
        store
            .list_messages(true, args.limit)
            .await?
            .into_iter()
            .map(|m| Letter {
                id: m.id.to_string(),
                attributes: m.attributes,
                body: m.body,
            })
            .collect()
    };
    let attr = |a: &BTreeMap<String, String>, k: &str| a.get(k).cloned().unwrap_or_default();
    if args.json {
        let list: Vec<_> = letters
            .iter()
            .map(|l| json!({ "id": l.id, "event_key": l.event_key(), "attributes": l.attributes, "body": serde_json::from_str::<serde_json::Value>(&l.body).unwrap_or_default() }))
            .collect();
        outln!("{}", serde_json::to_string(&list)?)?;
    } else {
        let rows: Vec<Vec<String>> = letters
            .iter()
            .map(|l| {
                vec![
                    l.id.get(..10).unwrap_or(&l.id).to_owned(),
                    l.event_key(),
                    attr(&l.attributes, letter::TARGET),
                    attr(&l.attributes, letter::EVENT_TYPE),
                    attr(&l.attributes, letter::REASON),
                ]
            })
            .collect();
        let header = ["id", "event", "target", "type", "reason"];
        out!("{}", crate::out::table(&header, &rows))?;
        outln!("{} dead letter(s)", letters.len())?;
    }
    Ok(true)
}
