//! plumbline's integration tests: one binary. AWS tests talk to moto's server (started by
//! `tests/run`, reached through `AWS_ENDPOINT_URL`); nothing here fakes an SDK.

mod contract;
mod helpers;
mod ingress;
mod template;
