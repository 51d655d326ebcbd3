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

/// How long a connection may take to open, unless `PLUMBLINE_AWS_CONNECT_TIMEOUT_MS` says
/// otherwise. The SDK's own default is 3.1 s; in a region a connection takes milliseconds, and
/// the operators' commands from afar a few round trips.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one attempt of a request may take, from sending it to its whole answer, before the
/// SDK drops its connection and tries again on a new one (within its usual three attempts),
/// unless `PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS` says otherwise. Without it a request sent on a
/// pooled connection that died while the function was frozen (a NAT that forgot the flow, a
/// peer that vanished) waits for an answer until the function times out, the webhook fails and
/// its batch is received again. The table and the queues answer in milliseconds; 3 s leaves the
/// ingress (10 s) time for a hung attempt at both of its requests and their retries.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// The variable that sets [`Timeouts::connect`], in milliseconds.
pub const CONNECT_TIMEOUT_VAR: &str = "PLUMBLINE_AWS_CONNECT_TIMEOUT_MS";
/// The variable that sets [`Timeouts::attempt`], in milliseconds.
pub const ATTEMPT_TIMEOUT_VAR: &str = "PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS";

/// The largest either variable takes: a Lambda function runs 15 minutes at most, and an attempt
/// allowed longer than its function would never time out.
const LONGEST_MS: u64 = 900_000;

/// The timeouts every AWS request has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For a connection to open.
    pub connect: Duration,
    /// For one attempt of a request, sent to wholly answered.
    pub attempt: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: CONNECT_TIMEOUT,
            attempt: ATTEMPT_TIMEOUT,
        }
    }
}

/// A timeout variable whose value is not a number of milliseconds the SDK can use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{name} must be a whole number of milliseconds from 1 to {LONGEST_MS}, not {value:?}")]
pub struct InvalidTimeout {
    pub name: &'static str,
    pub value: String,
}

impl Timeouts {
    /// The defaults, with each variable that is set in the environment in place of its own.
    pub fn from_env() -> Result<Self, InvalidTimeout> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`Timeouts::from_env`], reading the variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, InvalidTimeout> {
        let read = |name: &'static str, default: Duration| match var(name) {
            None => Ok(default),
            Some(value) => match value.trim().parse::<u64>() {
                Ok(ms @ 1..=LONGEST_MS) => Ok(Duration::from_millis(ms)),
                _ => Err(InvalidTimeout { name, value }),
            },
        };
        Ok(Self {
            connect: read(CONNECT_TIMEOUT_VAR, CONNECT_TIMEOUT)?,
            attempt: read(ATTEMPT_TIMEOUT_VAR, ATTEMPT_TIMEOUT)?,
        })
    }
}

/// Loads the SDK configuration from the environment, as `aws_config::load_from_env` does, with
/// the timeouts its variables set ([`Timeouts::from_env`]).
pub async fn load_config() -> Result<SdkConfig, InvalidTimeout> {
    Ok(load_config_with(Timeouts::from_env()?).await)
}

/// Loads the SDK configuration from the environment, with `timeouts`.
pub async fn load_config_with(timeouts: Timeouts) -> SdkConfig {
    let tls = TlsContext::builder()
        .with_trust_store(super::tls::sdk_trust_store())
        .build()
        .expect("a TLS context of a trust store always builds");
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeouts.connect)
        .operation_attempt_timeout(timeouts.attempt)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(SharedHttpClient::new(ConnectorOnDemand(https)))
        .timeout_config(timeouts)
        .load()
        .await
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        ATTEMPT_TIMEOUT_VAR, CONNECT_TIMEOUT_VAR, InvalidTimeout, Timeouts, load_config_with,
    };

    fn from(vars: &[(&str, &str)]) -> Result<Timeouts, InvalidTimeout> {
        Timeouts::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn each_variable_set_replaces_its_own_default_only() {
        assert_eq!(from(&[]), Ok(Timeouts::default()));
        assert_eq!(
            from(&[(ATTEMPT_TIMEOUT_VAR, "20000")]),
            Ok(Timeouts {
                attempt: Duration::from_secs(20),
                ..Timeouts::default()
            })
        );
        assert_eq!(
            from(&[(CONNECT_TIMEOUT_VAR, " 750 "), (ATTEMPT_TIMEOUT_VAR, "1")]),
            Ok(Timeouts {
                connect: Duration::from_millis(750),
                attempt: Duration::from_millis(1),
            })
        );
    }

    #[test]
    fn a_value_that_is_no_usable_count_of_milliseconds_names_its_variable() {
        for value in ["0", "-5", "3s", "2.5", "", "900001"] {
            let error = from(&[(CONNECT_TIMEOUT_VAR, "100"), (ATTEMPT_TIMEOUT_VAR, value)])
                .expect_err(value);
            assert_eq!(error.name, ATTEMPT_TIMEOUT_VAR);
            assert!(
                error.to_string().starts_with(
                    "PLUMBLINE_AWS_ATTEMPT_TIMEOUT_MS must be a whole number of milliseconds"
                ),
                "{error}"
            );
        }
        assert!(from(&[(ATTEMPT_TIMEOUT_VAR, "900000")]).is_ok());
    }

    #[tokio::test]
    async fn the_clients_configuration_carries_the_timeouts_it_was_given() {
        let timeouts = Timeouts {
            connect: Duration::from_millis(1_250),
            attempt: Duration::from_millis(7_500),
        };
        let config = load_config_with(timeouts).await;
        let set = config.timeout_config().expect("timeouts are set");
        assert_eq!(set.connect_timeout(), Some(timeouts.connect));
        assert_eq!(set.operation_attempt_timeout(), Some(timeouts.attempt));
    }
}
