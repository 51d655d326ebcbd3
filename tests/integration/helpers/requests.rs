//! Counts the DynamoDB requests a client sends, by operation, as they go on the wire (every
//! attempt counts): the real SDK talking to moto's server, observed through its interceptor hook.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<Mutex<BTreeMap<String, usize>>>);

impl Requests {
    /// A client on `aws` whose requests this counts.
    pub fn client(&self, aws: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        self.client_of(aws_sdk_dynamodb::config::Builder::from(aws))
    }

    /// A client of `config` whose requests this counts.
    pub fn client_of(&self, config: aws_sdk_dynamodb::config::Builder) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(config.interceptor(self.clone()).build())
    }

    /// Requests so far, by operation (`GetItem`, `BatchGetItem`, …).
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.0.lock().expect("counts").clone()
    }

    pub fn reset(&self) {
        self.0.lock().expect("counts").clear();
    }
}

impl Intercept for Requests {
    fn name(&self) -> &'static str {
        "Requests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // DynamoDB names the operation in this header: `DynamoDB_20120810.GetItem`.
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit_once('.'))
            .map_or_else(|| "unknown".to_owned(), |(_, op)| op.to_owned());
        *self.0.lock().expect("counts").entry(operation).or_default() += 1;
        Ok(())
    }
}
