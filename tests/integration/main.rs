//! plumbline's integration tests: one binary. AWS tests talk to moto's server (started by
//! `tests/run`, reached through `AWS_ENDPOINT_URL`); targets are real HTTP servers on loopback;
//! nothing here fakes an SDK.

// A scenario reads best as one function, even a long one.
#![allow(clippy::too_many_lines)]

mod cli;
mod cli_aws;
mod conformance;
mod contract;
mod corpus;
mod dashboard_logs;
mod delivery;
mod delivery_failures;
mod faults;
mod helpers;
mod hot_entity;
mod ingress;
mod local;
mod log_fields;
mod lost_answers;
mod metrics;
mod ops;
mod parity;
mod reconcile;
mod redaction;
mod samples;
mod secrets;
mod stack;
mod template;
mod template_ops;
mod tls;
mod worker;
