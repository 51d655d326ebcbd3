//! The AWS SDK configuration every function and command shares: the usual environment chain
//! (region, credentials, `AWS_ENDPOINT_URL`), with the HTTPS client built on rustls over ring, the
//! same TLS stack as the targets' client (see `tls`).

use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

pub use aws_config::SdkConfig;

/// Loads the SDK configuration from the environment, as `aws_config::load_from_env` does.
pub async fn load_config() -> SdkConfig {
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .load()
        .await
}
