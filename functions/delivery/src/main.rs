//! Wiring only: tracing, config (validated once at cold start), SDK clients, targets, then the
//! runtime.

// The delivery future nests deeply (SDK calls inside the use case inside the runtime); its
// layout needs more than the default depth.
#![recursion_limit = "256"]

use anyhow::Context;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, run, service_fn};
use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::adapters::targets;
use plumbline::config::Config;
use plumbline::delivery::{Delivery, MAX_RECEIVES_VAR, parse_max_receives};
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

async fn start() -> Result<(), lambda_runtime::Error> {
    let env = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let config = Config::load(env("PLUMBLINE_CONFIG")?.as_ref())?;
    let aws = plumbline::adapters::aws_sdk::load_config().await?;
    let secrets = plumbline::adapters::aws_secrets::resolver_for(
        &config,
        plumbline::config::SecretPurpose::Deliver,
        &aws,
    )
    .await?;
    let targets = targets::build_all(&config, &secrets)?;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let delivery = Delivery::new(
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), env("PLUMBLINE_TABLE")?),
        SqsQueue::new(sqs.clone(), env("PLUMBLINE_QUEUE_URL")?),
        SqsDeadLetters::new(sqs, env("PLUMBLINE_DLQ_URL")?),
        targets,
        SystemClock,
        EmfMetrics::new("Plumbline"),
        &config,
    );
    // The queue's `maxReceiveCount` (the template passes its parameter): on a message's last
    // receive, a target still failing is dead-lettered with its reason instead of by the redrive.
    let delivery = match std::env::var(MAX_RECEIVES_VAR) {
        Ok(value) => delivery.with_max_receives(
            parse_max_receives(&value)
                .with_context(|| format!("PLUMBLINE_MAX_RECEIVES is not a count: {value}"))?,
        ),
        Err(_) => delivery,
    };
    let delivery = &delivery;
    run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, std::convert::Infallible>(plumbline_delivery::handle(delivery, event.payload).await)
    }))
    .await
}
