//! The AWS SDK configuration every function and command shares: the usual environment chain
//! (region, credentials, `AWS_ENDPOINT_URL`), with the HTTPS client built on rustls over ring,
//! trusting the same authorities as the targets' client (see `tls`).

use aws_smithy_http_client::tls::{Provider, TlsContext, rustls_provider::CryptoMode};

pub use aws_config::SdkConfig;

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
        .http_client(https)
        .load()
        .await
}
