//! Wiring only: tracing, config (validated once at cold start), SDK clients, then the runtime.

use anyhow::Context;
use lambda_http::{run, service_fn};
use plumbline::adapters::{dynamodb::DynamoStore, sqs::SqsQueue};
use plumbline::config::Config;
use plumbline::ingress::Ingress;
use plumbline::ports::SystemClock;
use plumbline::telemetry::{EmfMetrics, init_lambda_tracing, until_stopped};

// One invocation at a time on a fraction of a vCPU: one thread, no work stealing or
// cross-thread wake-ups (measured in docs/benchmarks.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    init_lambda_tracing();
    // On the heap: the whole function's future, built once.
    until_stopped(Box::pin(start())).await
}

async fn start() -> Result<(), lambda_http::Error> {
    let path = std::env::var("PLUMBLINE_CONFIG").context("PLUMBLINE_CONFIG is not set")?;
    let config = Config::load(path.as_ref())?;
    let table = std::env::var("PLUMBLINE_TABLE").context("PLUMBLINE_TABLE is not set")?;
    let queue_url =
        std::env::var("PLUMBLINE_QUEUE_URL").context("PLUMBLINE_QUEUE_URL is not set")?;
    let aws = plumbline::adapters::aws_sdk::load_config().await?;
    let secrets = plumbline::adapters::aws_secrets::resolver_for(
        &config,
        plumbline::config::SecretPurpose::Verify,
        &aws,
    )
    .await?;
    let verifiers = config.verifiers(&secrets)?;
    let ingress = Ingress::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), table),
        SqsQueue::new(aws_sdk_sqs::Client::new(&aws), queue_url),
        SystemClock,
        EmfMetrics::new("Plumbline"),
        verifiers,
        config.ingress,
    );
    let ingress = &ingress;
    run(service_fn(move |request| async move {
        Ok::<_, std::convert::Infallible>(plumbline_ingress::handle(ingress, request).await)
    }))
    .await
}
