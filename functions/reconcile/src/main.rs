//! The reconciliation function is not implemented yet (see the README's status table). Until it
//! is, every invocation fails loudly so the function's error alarm shows it was not run.

use lambda_runtime::{LambdaEvent, run, service_fn};
use plumbline::telemetry::init_lambda_tracing;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_lambda_tracing();
    run(service_fn(|_: LambdaEvent<serde_json::Value>| async move {
        Err::<(), lambda_runtime::Error>("reconciliation is not implemented in this build".into())
    }))
    .await
}
