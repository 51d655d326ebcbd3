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
