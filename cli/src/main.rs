//! The `plumbline` command line: the local stack and the operator commands.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod demo;
mod deployment;
mod dev;
mod dlq;
#[cfg(test)]
mod docs_commands;
mod events;
mod local;
mod out;
mod present;
mod receive;
mod reconcile;
mod redeliver;
mod replay;
mod reprocess;
mod samconfig;
mod send;

// `plumbline dev` allocates per request across many threads; glibc's allocator spent about a
// sixth of the process's time under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "plumbline",
    version,
    about = "Run and operate a plumbline integration pipeline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole pipeline in one process on SQLite: ingress, delivery, status page.
    Dev(dev::DevArgs),
    /// Sends correctly signed sample events to a running instance.
    Send(send::SendArgs),
    /// Inspects events and their timelines.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Inspects the dead-letter queue.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Moves dead-lettered messages back to the delivery queue (safe to run twice).
    Replay(replay::ReplayArgs),
    /// A local HTTP target that prints each delivery and checks its signature.
    Receive(receive::ReceiveArgs),
    /// Runs reconciliation once (exits non-zero when a threshold is breached), or lists the
    /// runs kept (--history).
    Reconcile(reconcile::ReconcileArgs),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The event contract.
    #[command(subcommand)]
    Contract(ContractCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validates a configuration file and reports every problem with its key and line.
    #[command(
        after_help = "Examples:\n  plumbline config check infra/config/plumbline.toml\n  \
                      plumbline config check infra/config/plumbline.toml --samconfig samconfig.toml --config-env prod\n  \
                      plumbline config check infra/config/plumbline.toml --aws"
    )]
    Check(check::CheckArgs),
}

#[derive(Subcommand)]
enum ContractCommand {
    /// Prints the JSON Schema of the plumbline.event/v1 envelope.
    #[command(
        after_help = "Example:\n  plumbline contract schema > docs/contract/plumbline.event.v1.schema.json"
    )]
    Schema,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Dev(args) => {
            init_tracing();
            run_async(dev::run(args), true)
        }
        Command::Send(args) => run_async(send::run(args), false),
        Command::Events(command) => run_async(events::run(command), false),
        Command::Dlq(command) => run_async(dlq::run(command), false),
        Command::Replay(args) => run_async(replay::run(args), false),
        Command::Receive(args) => run_async(receive::run(args), false),
        Command::Reconcile(args) => run_async(reconcile::run(args), false),
        Command::Config(ConfigCommand::Check(args)) => run_async(check::run(args), false),
        Command::Contract(ContractCommand::Schema) => {
            let schema = plumbline::contract::json_schema();
            let pretty = serde_json::to_string_pretty(&schema).expect("a schema serializes");
            exit_code(out::outln!("{pretty}").map(|()| true))
        }
    }
}

/// Human-readable logs on stderr for the local stack; `RUST_LOG` filters them. Asked for trace,
/// other crates than plumbline's still stop at debug, as in the functions: the HTTP clients'
/// trace lines are about the targets' requests, not plumbline's events.
fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Only then: layered, the cap would raise the process's maximum level to trace.
    let traced = filter.max_level_hint() == Some(tracing_subscriber::filter::LevelFilter::TRACE);
    // Colours only for a terminal: a log redirected to a file or a collector is read as text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(plumbline::telemetry::Redacting(std::io::stderr))
        .with_ansi(colour)
        .with_target(false)
        .finish();
    if traced {
        subscriber
            .with(plumbline::telemetry::dependency_cap())
            .init();
    } else {
        subscriber.init();
    }
}

/// Runs an async command on a runtime built for it; errors are printed, never panicked.
fn run_async(command: impl Future<Output = anyhow::Result<bool>>, multi_thread: bool) -> ExitCode {
    let runtime = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .expect("a runtime");
    exit_code(runtime.block_on(command))
}

/// A command's result as the process's exit status: 1 for a negative answer (a breached
/// threshold, an invalid file), 2 for an error. A closed standard output is not an error.
fn exit_code(result: anyhow::Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) if out::is_closed(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
