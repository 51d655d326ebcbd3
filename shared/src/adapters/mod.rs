//! Implementations of the ports.

#[cfg(feature = "aws")]
pub mod dynamodb;
#[cfg(feature = "aws")]
pub mod sqs;

#[cfg(feature = "aws")]
mod aws_error;
#[cfg(feature = "aws")]
pub mod aws_sdk;
#[cfg(feature = "aws")]
pub mod aws_secrets;

pub mod paddle_api;
pub mod provider_api;
pub mod sqlite;
pub mod stripe_api;

pub mod targets;
pub mod tls;

/// A response's `Retry-After`, in seconds as targets and providers send it (an HTTP date is
/// read as absent).
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<std::time::Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_secs)
}
