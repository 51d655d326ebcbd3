//! plumbline: the integration layer's domain and its adapters.
//!
//! The domain (contract, sources, ingress use case, config) never names an AWS SDK or Lambda
//! type: it talks to the outside world through the narrow traits in [`ports`]. The adapters in
//! [`adapters`] implement those traits for DynamoDB, SQS and the local stack.

pub mod adapters;
pub mod config;
pub mod contract;
pub mod delivery;
pub mod ingress;
pub mod inspect;
pub mod ledger;
pub mod ports;
pub mod reconcile;
pub mod sources;
pub mod telemetry;

#[cfg(test)]
mod properties;
