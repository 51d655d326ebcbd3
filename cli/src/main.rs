//! The `plumbline` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use plumbline::config::Config;

mod replay;

#[derive(Parser)]
#[command(
    name = "plumbline",
    version,
    about = "Operate a plumbline integration pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The event contract.
    #[command(subcommand)]
    Contract(ContractCommand),
    /// Moves dead-lettered messages back to the delivery queue (safe to run twice).
    Replay(replay::ReplayArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates a configuration file and reports every problem with its key and line.
    ///
    /// Example: plumbline config check infra/plumbline.toml
    Check {
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ContractCommand {
    /// Prints the JSON Schema of the plumbline.event/v1 envelope.
    ///
    /// Example: plumbline contract schema > docs/contract/plumbline.event.v1.schema.json
    Schema,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Replay(args) => run_async(replay::run(args)),
        Command::Config(ConfigCommand::Check { file, json }) => config_check(&file, json),
        Command::Contract(ContractCommand::Schema) => {
            let schema = plumbline::contract::json_schema();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema serializes")
            );
            ExitCode::SUCCESS
        }
    }
}

/// Runs an async command on a runtime built for it; errors are printed, never panicked.
fn run_async(command: impl Future<Output = anyhow::Result<bool>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn config_check(file: &std::path::Path, json: bool) -> ExitCode {
    let result = Config::load(file);
    let problems = result
        .as_ref()
        .err()
        .map(|e| e.problems.clone())
        .unwrap_or_default();
    if json {
        let list: Vec<_> = problems
            .iter()
            .map(|p| serde_json::json!({ "key": p.key, "reason": p.reason, "line": p.line }))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "file": file.display().to_string(), "valid": problems.is_empty(), "problems": list })
        );
    } else if let Ok(config) = &result {
        println!(
            "{}: valid ({} sources, {} targets, {} routes)",
            file.display(),
            config.sources.len(),
            config.targets.len(),
            config.routes.len()
        );
    } else {
        for p in &problems {
            eprintln!("{}: {p}", file.display());
        }
    }
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
