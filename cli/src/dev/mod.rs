//! `plumbline dev`: the whole pipeline in one process on SQLite. The ingress, the delivery worker
//! and the status page call the same use cases as the Lambda functions.

mod ops;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use plumbline::adapters::sqlite::{InboxTarget, SqliteStore};
use plumbline::adapters::targets::{self, ConfiguredTarget};
use plumbline::config::{Config, TargetKind};
use plumbline::delivery::{Delivery, Document, worker};
use plumbline::ingress::Ingress;
use plumbline::ports::{SystemClock, Target, TargetError};
use plumbline::telemetry::Counters;
use tokio::sync::watch;

use crate::demo;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DATA_DIR: &str = ".plumbline";

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  plumbline dev\n  plumbline dev --config docs/examples/walkthrough.toml --listen 127.0.0.1:9000 --data-dir /tmp/pl"
)]
pub struct DevArgs {
    /// Address of the ingress and the status page.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Where the SQLite database lives.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The deployment's configuration; without it, the demo configuration.
    #[arg(long, env = "PLUMBLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Deliveries of one message before it goes to the dead-letter queue (SQS maxReceiveCount).
    #[arg(long, default_value_t = plumbline::adapters::sqlite::MAX_RECEIVES_DEFAULT)]
    pub max_receives: u32,
    /// Seconds between reconciliation runs.
    #[arg(long, default_value_t = 60)]
    pub reconcile_every: u64,
    /// Delivery workers running side by side. More workers share each group commit, which is
    /// what delivery throughput depends on (docs/benchmarks.md).
    #[arg(long, default_value_t = 16)]
    pub workers: usize,
}

/// A target of the local stack: a real one, or the local inbox.
#[derive(Debug)]
pub enum DevTarget {
    Remote(ConfiguredTarget),
    Inbox(InboxTarget),
}

impl Target for DevTarget {
    async fn deliver(&self, document: &Document, idempotency_key: &str) -> Result<(), TargetError> {
        match self {
            Self::Remote(t) => t.deliver(document, idempotency_key).await,
            Self::Inbox(t) => t.deliver(document, idempotency_key).await,
        }
    }
}

pub type DevIngress = Ingress<SqliteStore, SqliteStore, SystemClock, Counters>;

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct App {
    pub ingress: DevIngress,
    pub store: SqliteStore,
    pub counters: Counters,
    pub config: Config,
}

/// Loads `--config`, or the demo configuration (whose secrets then default to the demo values).
pub fn load_config(path: Option<&PathBuf>) -> anyhow::Result<(Config, demo::Secrets, bool)> {
    match path {
        // Demo secrets stay available (only `PLUMBLINE_DEMO_*` names resolve to them), so the
        // example configurations under docs/ work without setting anything.
        Some(path) => {
            let config = Config::load(path)?;
            // The functions leave these to `config check` (they carry no copy of the schemas);
            // locally, where a configuration is first tried, they are said at once.
            for warning in config.schema_warnings() {
                tracing::warn!(key = %warning.key, reason = %warning.reason, "configuration warning");
            }
            Ok((config, demo::Secrets::new(true), false))
        }
        None => Ok((
            Config::parse(demo::CONFIG).context("the demo configuration")?,
            demo::Secrets::new(true),
            true,
        )),
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<bool> {
    let (config, secrets, is_demo) = load_config(args.config.as_ref())?;
    let secrets = secrets.fetching(config.secret_refs()).await?;
    let verifiers = config.verifiers(&secrets)?;
    let _lock = lock(&args.data_dir)?;
    let store = SqliteStore::open(&args.data_dir, args.max_receives)
        .with_context(|| format!("opening the database in {}", args.data_dir.display()))?;
    let lease = Duration::from_secs(config.delivery.lease_secs);
    let (messages, leases) = store.recover_in_flight(lease).await?;
    let orphans = store.requeue_orphaned_claims().await?;
    if messages + leases + orphans > 0 {
        eprintln!(
            "plumbline dev: resuming {messages} message(s), {leases} delivery lease(s) and {orphans} unqueued claim(s) left by the previous run"
        );
    }
    let counters = Counters::default();
    let mut dev_targets = BTreeMap::new();
    for (name, target) in &config.targets {
        let built = if target.kind == TargetKind::Inbox {
            DevTarget::Inbox(InboxTarget::new(store.clone(), name))
        } else {
            DevTarget::Remote(
                targets::build(target, &secrets)
                    .map_err(|(key, why)| anyhow::anyhow!("targets.{name}.{key}: {why}"))?,
            )
        };
        dev_targets.insert(name.clone(), built);
    }
    let delivery = Arc::new(
        Delivery::new(
            store.clone(),
            store.clone(),
            store.clone(),
            dev_targets,
            SystemClock,
            counters.clone(),
            &config,
        )
        .with_max_receives(args.max_receives),
    );
    let ingress = Ingress::new(
        store.clone(),
        store.clone(),
        SystemClock,
        counters.clone(),
        verifiers,
        config.ingress,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    print_banner(&config, address, &args, is_demo);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..args.workers.max(1) {
        let (delivery, store, stop) = (Arc::clone(&delivery), store.clone(), stop_rx.clone());
        workers.push(tokio::spawn(async move {
            let wait = |d: Duration| {
                let store = store.clone();
                async move { store.wait_for_messages(d).await }
            };
            worker::run(
                delivery.as_ref(),
                &store,
                wait,
                Duration::from_millis(500),
                stop,
            )
            .await;
        }));
    }
    workers.push(spawn_reconciler(
        &store,
        plumbline::adapters::provider_api::from_config(&config, &secrets)?,
        targets::crm_targets(&config, &secrets)?,
        &counters,
        &config,
        Duration::from_secs(args.reconcile_every.max(1)),
        stop_rx.clone(),
    ));
    let app = Arc::new(App {
        ingress,
        store,
        counters,
        config,
    });
    server::serve(listener, app, shutdown_signal()).await?;
    // The server stopped taking requests; let the workers finish the batches in hand.
    eprintln!("plumbline dev: stopping; finishing deliveries in flight");
    let _ = stop_tx.send(true);
    for worker in workers {
        let _ = worker.await;
    }
    eprintln!("plumbline dev: stopped");
    Ok(true)
}

/// Runs reconciliation every `every` until told to stop, as the schedule does on AWS.
fn spawn_reconciler(
    store: &SqliteStore,
    providers: BTreeMap<
        plumbline::contract::SourceName,
        (
            plumbline::sources::SourceKind,
            plumbline::adapters::provider_api::ProviderApi,
        ),
    >,
    crm: BTreeMap<String, targets::HubspotTarget>,
    counters: &Counters,
    config: &Config,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let reconciler = plumbline::reconcile::Reconciler::new(
        store.clone(),
        store.clone(),
        plumbline::adapters::sqlite::LocalDeadLetters(store.clone()),
        providers,
        SystemClock,
        counters.clone(),
        config.reconcile.clone(),
    )
    .with_crm(crm);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    reconciler.run(std::time::Instant::now() + every / 2).await;
                }
                _ = stop.changed() => break,
            }
        }
    })
}

/// One `plumbline dev` per data directory: at start-up it takes back everything in flight, which
/// is only right when no other process is working there. The lock goes with the process.
fn lock(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("dev.lock"))
        .with_context(|| format!("opening the lock in {}", data_dir.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!(
                "another plumbline dev is running on {}; stop it or choose another --data-dir",
                data_dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("locking the data directory"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

fn print_banner(config: &Config, address: SocketAddr, args: &DevArgs, is_demo: bool) {
    let base = format!("http://{address}");
    println!(
        "plumbline dev: listening on {base} (data in {})",
        args.data_dir.display()
    );
    println!();
    println!("Webhook URLs:");
    for (name, source) in &config.sources {
        println!(
            "  {:<10} {base}/webhooks/{name}   ({})",
            name.as_str(),
            source.kind
        );
    }
    if is_demo {
        println!();
        println!(
            "Demo configuration (no --config given). Demo secrets, for signing test requests only:"
        );
        for (name, value) in demo::SECRETS {
            println!("  {name}={value}");
        }
    }
    println!();
    println!("Status page: {base}/ops   (JSON: {base}/ops/status)");
    println!();
    println!(
        "Next, in another terminal (from the repository: alias plumbline='cargo run -q --release \
         -p plumbline-cli --'):"
    );
    for line in next_steps(config, &base, args) {
        println!("  {line}");
    }
    println!();
    println!("Ctrl-C stops after the deliveries in flight.");
}

/// The commands that send this instance a sample and list what it took in, with the flags that
/// reach it: its address, its configuration (for the source's secret) and its data directory,
/// each only where it is not the default.
fn next_steps(config: &Config, base: &str, args: &DevArgs) -> Vec<String> {
    let quoted = |path: &std::path::Path| {
        shlex::try_quote(&path.to_string_lossy())
            .map_or_else(|_| path.display().to_string(), std::borrow::Cow::into_owned)
    };
    let samples = demo::samples();
    // A Stripe source's best-known sample, else any source's first.
    let sample = config
        .sources
        .iter()
        .find(|(_, s)| s.kind == plumbline::sources::SourceKind::Stripe)
        .map(|(name, _)| (name, "payment_intent.succeeded"))
        .or_else(|| {
            config.sources.iter().find_map(|(name, source)| {
                samples
                    .keys()
                    .find(|(kind, _)| *kind == source.kind.as_str())
                    .map(|(_, sample)| (name, *sample))
            })
        });
    let mut steps = Vec::new();
    if let Some((source, sample)) = sample {
        let mut send = vec![format!("plumbline send {source} {sample}")];
        if base != format!("http://{DEFAULT_LISTEN}") {
            send.push(format!("--url {base}"));
        }
        if let Some(path) = &args.config {
            send.push(format!("--config {}", quoted(path)));
        }
        steps.push(send.join(" "));
    }
    let mut list = vec!["plumbline events list".to_owned()];
    if args.data_dir != std::path::Path::new(DEFAULT_DATA_DIR) {
        list.push(format!("--data-dir {}", quoted(&args.data_dir)));
    }
    steps.push(list.join(" "));
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(listen: &str, data_dir: &str, config: Option<&str>) -> DevArgs {
        DevArgs {
            listen: listen.parse().expect("address"),
            data_dir: PathBuf::from(data_dir),
            config: config.map(PathBuf::from),
            max_receives: 3,
            reconcile_every: 60,
            workers: 1,
        }
    }

    #[test]
    fn the_next_steps_reach_the_instance_as_it_was_started() {
        let demo = Config::parse(demo::CONFIG).expect("demo");
        let plain = args(DEFAULT_LISTEN, DEFAULT_DATA_DIR, None);
        assert_eq!(
            next_steps(&demo, "http://127.0.0.1:8080", &plain),
            [
                "plumbline send stripe payment_intent.succeeded",
                "plumbline events list"
            ]
        );

        let moved = args(
            "127.0.0.1:9000",
            "/tmp/a dir",
            Some("docs/examples/walkthrough.toml"),
        );
        assert_eq!(
            next_steps(&demo, "http://127.0.0.1:9000", &moved),
            [
                "plumbline send stripe payment_intent.succeeded --url http://127.0.0.1:9000 \
                 --config docs/examples/walkthrough.toml",
                "plumbline events list --data-dir '/tmp/a dir'"
            ]
        );
    }

    #[test]
    fn the_next_steps_are_commands_the_cli_takes_with_samples_it_has() {
        use clap::Parser;
        let demo = Config::parse(demo::CONFIG).expect("demo");
        let cases = [
            (
                "http://127.0.0.1:8080",
                args(DEFAULT_LISTEN, DEFAULT_DATA_DIR, None),
            ),
            (
                "http://127.0.0.1:9000",
                args("127.0.0.1:9000", "/tmp/a dir", Some("docs/it's here.toml")),
            ),
        ];
        for (base, started) in &cases {
            let steps = next_steps(&demo, base, started);
            assert_eq!(steps.len(), 2, "{steps:?}");
            for line in &steps {
                let words = shlex::split(line).expect("words a shell can split");
                if let Err(e) = crate::Cli::try_parse_from(&words) {
                    panic!("`{line}` is not a command plumbline takes: {e}");
                }
            }
            // The sample it names is one `send` has for that source's kind.
            let words = shlex::split(&steps[0]).expect("words");
            let (source, sample) = (&words[2], words[3].as_str());
            let kind = demo
                .sources
                .iter()
                .find(|(name, _)| name.as_str() == source)
                .map(|(_, s)| s.kind.as_str())
                .expect("a configured source");
            assert!(
                demo::samples().contains_key(&(kind, sample)),
                "{kind} has no sample {sample}"
            );
        }
    }

    #[test]
    fn without_a_stripe_source_the_sample_is_another_sources() {
        let site_only = Config::parse(
            "[sources.site]\nkind = \"standard-webhooks\"\nsecrets = [\"env:SITE_SECRET\"]\n",
        )
        .expect("config");
        let steps = next_steps(
            &site_only,
            "http://127.0.0.1:8080",
            &args(DEFAULT_LISTEN, DEFAULT_DATA_DIR, None),
        );
        let sample = steps[0]
            .strip_prefix("plumbline send site ")
            .expect("the site source");
        assert!(
            demo::samples().contains_key(&("standard-webhooks", sample)),
            "{steps:?}"
        );
    }
}
