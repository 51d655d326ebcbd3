//! `plumbline dlq list`: what is on the dead-letter queue, and why.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use plumbline::adapters::sqlite::SqliteStore;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// Dead letters, oldest first, with their reason and target.
    #[command(after_help = "Example:\n  plumbline dlq list --json")]
    List(ListArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// The local stack's data directory.
    #[arg(long, default_value = ".plumbline")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The event a dead letter is about: its attribute, else the key inside the message (messages
/// moved by the receive limit carry no attributes of their own).
fn event_key(letter: &plumbline::adapters::sqlite::LocalMessage) -> String {
    letter
        .attributes
        .get("event_key")
        .cloned()
        .unwrap_or_else(|| {
            serde_json::from_str::<serde_json::Value>(&letter.body)
                .ok()
                .and_then(|b| b["key"].as_str().map(str::to_owned))
                .unwrap_or_default()
        })
}

pub async fn run(command: DlqCommand) -> anyhow::Result<bool> {
    let DlqCommand::List(args) = command;
    anyhow::ensure!(
        args.data_dir.join("plumbline.db").exists(),
        "no database in {}",
        args.data_dir.display()
    );
    let store = SqliteStore::open(
        &args.data_dir,
        plumbline::adapters::sqlite::MAX_RECEIVES_DEFAULT,
    )?;
    let letters = store.list_messages(true, args.limit).await?;
    let attr = |a: &std::collections::BTreeMap<String, String>, k: &str| {
        a.get(k).cloned().unwrap_or_default()
    };
    if args.json {
        let list: Vec<_> = letters
            .iter()
            .map(|l| json!({ "id": l.id, "attributes": l.attributes, "sent_ms": l.sent_ms, "body": serde_json::from_str::<serde_json::Value>(&l.body).unwrap_or_default() }))
            .collect();
        println!("{}", serde_json::to_string(&list)?);
    } else {
        println!(
            "{:<6}  {:<34}  {:<10}  {:<24}  reason",
            "id", "event", "target", "type"
        );
        for l in &letters {
            println!(
                "{:<6}  {:<34}  {:<10}  {:<24}  {}",
                l.id,
                event_key(l),
                attr(&l.attributes, "target"),
                attr(&l.attributes, "event_type"),
                attr(&l.attributes, "reason")
            );
        }
        println!("{} dead letter(s)", letters.len());
    }
    Ok(true)
}
