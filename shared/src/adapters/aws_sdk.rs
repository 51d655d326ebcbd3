//! The AWS SDK configuration every function and command shares: the usual environment chain
//! (region, credentials, `AWS_ENDPOINT_URL`), with the HTTPS client built on rustls over ring,
//! trusting the same authorities as the targets' client (see `tls`), and with timeouts on every
//! attempt (the SDK sets none of its own).

use aws_smithy_http_client::tls::{Provider, TlsContext, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

pub use aws_config::SdkConfig;

/// How long a connection may take to open. The SDK's own default is 3.1 s; in a region a
/// connection takes milliseconds, and the operators' commands from afar a few round trips.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one attempt of a request may take, from sending it to its whole answer, before the
/// SDK drops its connection and tries again on a new one (within its usual three attempts).
/// Without it a request sent on a pooled connection that died while the function was frozen
/// (a NAT that forgot the flow, a peer that vanished) waits for an answer until the function
/// times out, the webhook fails and its batch is received again. The table and the queues
/// answer in milliseconds; 3 s leaves the ingress (10 s) time for a hung attempt at both of its
/// requests and their retries.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// Loads the SDK configuration from the environment, as `aws_config::load_from_env` does.
pub async fn load_config() -> SdkConfig {
    let tls = TlsContext::builder()
        .with_trust_store(super::tls::sdk_trust_store())
        .build()
        .expect("a TLS context of a trust store always builds");
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(SharedHttpClient::new(ConnectorOnDemand(https)))
        .timeout_config(timeouts())
        .load()
        .await
}

/// The timeouts every client's requests have.
fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

/// The SDK's HTTPS client without its check at every client's construction (the trait's
/// default, which checks nothing, stands in for it). That check builds a whole TLS connector and
/// throws it away, so that a system store is read before the first request; with the roots
/// given as PEM it parses all of them again for each client built (the STS client the
/// credential chain makes, then DynamoDB, SQS, SSM, Secrets Manager): most of a cold start's
/// instructions (docs/benchmarks.md). Connectors are still built by the inner client, once per
/// connector settings and kept, at the first request that needs one. The check's result was
/// never used: a connector that fails to build fails that request.
#[derive(Debug)]
struct ConnectorOnDemand(SharedHttpClient);

impl HttpClient for ConnectorOnDemand {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}
