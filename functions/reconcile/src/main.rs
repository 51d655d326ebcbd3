//! Wiring only: tracing, config (validated once at cold start), SDK clients, then the runtime.

use anyhow::Context;
use lambda_runtime::{LambdaEvent, run, service_fn};
use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::config::Config;
use plumbline::ports::SystemClock;
use plumbline::reconcile::Reconciler;
use plumbline::telemetry::{EmfMetrics, init_lambda_tracing, until_stopped};

// One invocation at a time on a fraction of a vCPU: one thread, no work stealing or
// cross-thread wake-ups (measured in docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    init_lambda_tracing();
    // On the heap: the whole function's future, built once.
    until_stopped(Box::pin(start())).await
}

async fn start() -> Result<(), lambda_runtime::Error> {
    let env = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let config = Config::load(env("PLUMBLINE_CONFIG")?.as_ref())?;
    let aws = plumbline::adapters::aws_sdk::load_config().await?;
    let secrets = plumbline::adapters::aws_secrets::resolver_for(
        &config,
        plumbline::config::SecretPurpose::Reconcile,
        &aws,
    )
    .await?;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let reconciler = Reconciler::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), env("PLUMBLINE_TABLE")?),
        SqsQueue::new(sqs.clone(), env("PLUMBLINE_QUEUE_URL")?),
        SqsDeadLetters::new(sqs, env("PLUMBLINE_DLQ_URL")?),
        plumbline::adapters::provider_api::from_config(&config, &secrets)?,
        SystemClock,
        EmfMetrics::new("Plumbline"),
        config.reconcile.clone(),
    )
    .with_crm(plumbline::adapters::targets::crm_targets(
        &config, &secrets,
    )?);
    let reconciler = &reconciler;
    run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let remaining = event
                .context
                .deadline()
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            Ok::<_, std::convert::Infallible>(
                plumbline_reconcile::handle(reconciler, remaining).await,
            )
        },
    ))
    .await
}
