//! The ingress and the delivery worker over one table, queue and dead-letter queue on moto's
//! server, with targets pointed at recording servers on loopback.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqs::{SqsDeadLetters, SqsQueue};
use plumbline::adapters::targets::{self, ConfiguredTarget};
use plumbline::config::{Config, MapSecrets};
use plumbline::contract::Timestamp;
use plumbline::delivery::Delivery;
use plumbline::delivery::replay::{Filter, Report, replay};
use plumbline::ingress::Ingress;
use plumbline::ports::ManualClock;
use plumbline::telemetry::RecordingMetrics;
use serde_json::Value;

use super::dev::eventually;
use super::recorder::Recorder;
use super::requests::Requests;
use super::{AwsIngress, T0, aws, create_table, dynamodb_config, fixture, secrets, unique};

pub type AwsDelivery = Delivery<
    DynamoStore,
    SqsQueue,
    SqsDeadLetters,
    ConfiguredTarget,
    ManualClock,
    RecordingMetrics,
>;

pub const ERP_SIGNING_SECRET: &str = "whsec_ZXJwLXNpZ25pbmctc2VjcmV0LWZvci10ZXN0cw==";
pub const HUBSPOT_TOKEN: &str = "pat-na1-test-token";

/// Sources as in the ingress tests; an http target `erp` and a hubspot target `crm`.
/// Two HTTP targets on the `erp` recorder (`/erp` and `/ledger`), both for every payment.
pub const TWO_TARGETS: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET"]

[targets.erp]
kind = "http"
url = "{ERP}/erp"

[targets.ledger]
kind = "http"
url = "{ERP}/ledger"

[[routes]]
events = ["payment.*"]
targets = ["erp", "ledger"]

[delivery]
backoff_base_secs = 1
backoff_cap_secs = 1
"#;

pub const CONFIG: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET"]

[sources.site]
kind = "standard-webhooks"
secrets = ["env:SITE_SECRET"]

[sources.adyen]
kind = "adyen"
secrets = ["env:ADYEN_KEY"]

[targets.erp]
kind = "http"
url = "{ERP}/plumbline"
secret = "env:ERP_SIGNING_SECRET"
timeout_ms = 2000

[targets.crm]
kind = "hubspot"
token = "env:HUBSPOT_TOKEN"
base_url = "{CRM}"

[[routes]]
events = ["payment.*", "order.*"]
targets = ["erp"]

[[routes]]
events = ["lead.*", "payment.succeeded"]
targets = ["crm"]

[ownership]
"payment.status" = "stripe"

[delivery]
backoff_base_secs = 1
backoff_cap_secs = 1
breaker_threshold = 3
breaker_cooldown_secs = 30
"#;

pub struct Pipeline {
    pub sqs: aws_sdk_sqs::Client,
    pub table: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub clock: ManualClock,
    pub metrics: RecordingMetrics,
    pub ingress: AwsIngress,
    pub delivery: AwsDelivery,
    pub erp: Recorder,
    pub crm: Recorder,
    /// The delivery's DynamoDB requests.
    pub delivery_requests: Requests,
}

impl Pipeline {
    pub async fn new() -> Self {
        Self::with_config(CONFIG).await
    }

    /// `config` may use `{ERP}` and `{CRM}` for the recorders' base URLs.
    pub async fn with_config(config: &str) -> Self {
        Self::on(config, None).await
    }

    /// [`Pipeline::with_config`], with every DynamoDB request through the front at `endpoint`.
    pub async fn through(config: &str, endpoint: &str) -> Self {
        Self::on(config, Some(endpoint)).await
    }

    async fn on(config: &str, dynamodb_at: Option<&str>) -> Self {
        let (erp, crm) = (Recorder::start().await, Recorder::start().await);
        let config = Config::parse(&config.replace("{ERP}", &erp.url).replace("{CRM}", &crm.url))
            .expect("config");
        let aws = aws().await;
        let ddb_config = dynamodb_config(&aws, dynamodb_at);
        let ddb = aws_sdk_dynamodb::Client::from_conf(ddb_config.clone().build());
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let table = create_table(&ddb).await;
        let dlq_url = sqs
            .create_queue()
            .queue_name(unique("dlq"))
            .send()
            .await
            .expect("dlq")
            .queue_url
            .expect("url");
        let queue_url = sqs
            .create_queue()
            .queue_name(unique("delivery"))
            .send()
            .await
            .expect("queue")
            .queue_url
            .expect("url");
        let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
        let metrics = RecordingMetrics::default();
        let mut all = secrets().0;
        all.insert("env:ERP_SIGNING_SECRET".into(), ERP_SIGNING_SECRET.into());
        all.insert("env:HUBSPOT_TOKEN".into(), HUBSPOT_TOKEN.into());
        let resolver = MapSecrets(all);
        let ingress = Ingress::new(
            DynamoStore::new(ddb.clone(), table.clone()),
            SqsQueue::new(sqs.clone(), queue_url.clone()),
            clock.clone(),
            metrics.clone(),
            config.verifiers(&resolver).expect("verifiers"),
            config.ingress,
        );
        let delivery_requests = Requests::default();
        let delivery = Delivery::new(
            DynamoStore::new(delivery_requests.client_of(ddb_config), table.clone()),
            SqsQueue::new(sqs.clone(), queue_url.clone()),
            SqsDeadLetters::new(sqs.clone(), dlq_url.clone()),
            targets::build_all(&config, &resolver).expect("targets"),
            clock.clone(),
            metrics.clone(),
            &config,
        );
        Self {
            sqs,
            table,
            queue_url,
            dlq_url,
            clock,
            metrics,
            ingress,
            delivery,
            erp,
            crm,
            delivery_requests,
        }
    }

    /// Sends a request through the ingress handler; expects it taken.
    pub async fn ingest(&self, request: lambda_http::Request) -> Value {
        let response = plumbline_ingress::handle(&self.ingress, request).await;
        let status = response.status().as_u16();
        let body = match response.body() {
            lambda_http::Body::Text(t) => t.clone(),
            _ => String::new(),
        };
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// Receives up to ten visible messages as the Lambda service would hand them over.
    pub async fn receive(&self) -> SqsEvent {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        sqs_event(out.messages.unwrap_or_default())
    }

    /// Waits (polling, up to `limit`) until a message is visible again, and receives it.
    pub async fn receive_within(&self, limit: Duration) -> (SqsEvent, Duration) {
        let started = Instant::now();
        loop {
            let event = self.receive().await;
            if !event.records.is_empty() || started.elapsed() > limit {
                return (event, started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the handler as Lambda's event source mapping does: the messages it does not
    /// report as failed are then deleted from the queue.
    pub async fn deliver(&self, event: SqsEvent) -> SqsBatchResponse {
        let receipts: Vec<(String, String)> = event
            .records
            .iter()
            .filter_map(|r| Some((r.message_id.clone()?, r.receipt_handle.clone()?)))
            .collect();
        let response = plumbline_delivery::handle(&self.delivery, event).await;
        let failed = failed(&response);
        for (id, receipt) in receipts {
            if !failed.contains(&id) {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .expect("delete");
            }
        }
        response
    }

    /// Delivers `event` while the erp target holds its answer: once the call has reached erp,
    /// runs `during`, then lets erp answer. Returns the delivery's response and `during`'s.
    pub async fn deliver_while_erp_holds<T>(
        &self,
        event: SqsEvent,
        during: impl Future<Output = T>,
    ) -> (SqsBatchResponse, T) {
        let before = self.erp.count();
        let gate = self.erp.hold();
        // Boxed: both deliveries' states would otherwise sit in one future on the stack.
        tokio::join!(Box::pin(self.deliver(event)), async {
            assert!(
                eventually(Duration::from_secs(10), || self.erp.count() > before).await,
                "the call reached the target"
            );
            let out = Box::pin(during).await;
            gate.open();
            out
        })
    }

    /// Receives and delivers once; returns the ids handed over and the ones reported failed.
    pub async fn deliver_visible(&self) -> (Vec<String>, Vec<String>) {
        let event = self.receive().await;
        let ids = event
            .records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect();
        (ids, failed(&self.deliver(event).await))
    }

    /// Moves the dead letters `filter` matches back to the delivery queue, as `plumbline
    /// replay` does (`dry_run`: counts them and moves nothing).
    pub async fn replay(&self, filter: &Filter, dry_run: bool) -> Report {
        let dlq = SqsDeadLetters::new(self.sqs.clone(), self.dlq_url.clone());
        let queue = SqsQueue::new(self.sqs.clone(), self.queue_url.clone());
        replay(&dlq, &queue, filter, usize::MAX, dry_run, |_| {})
            .await
            .expect("replay")
    }

    pub async fn dead_letters(&self) -> Vec<aws_sdk_sqs::types::Message> {
        super::drain(&self.sqs, &self.dlq_url).await
    }

    pub async fn queue_depth(&self) -> usize {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            )
            .send()
            .await
            .expect("attributes");
        out.attributes
            .unwrap_or_default()
            .values()
            .map(|v| v.parse::<usize>().unwrap_or(0))
            .sum()
    }
}

pub fn failed(response: &SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

/// Lambda's SQS event for these messages, from the record fixture.
pub fn sqs_event(messages: Vec<aws_sdk_sqs::types::Message>) -> SqsEvent {
    let template: Value =
        serde_json::from_slice(&fixture("lambda/sqs-record.json")).expect("fixture");
    let records: Vec<Value> = messages
        .into_iter()
        .map(|m| {
            let mut record = template.clone();
            record["messageId"] = Value::String(m.message_id.clone().unwrap_or_default());
            record["receiptHandle"] = Value::String(m.receipt_handle.clone().unwrap_or_default());
            record["body"] = Value::String(m.body.clone().unwrap_or_default());
            let system: BTreeMap<String, String> =
                m.attributes.clone().unwrap_or_default().into_iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect();
            if let Some(count) = system.get("ApproximateReceiveCount") {
                record["attributes"]["ApproximateReceiveCount"] = Value::String(count.clone());
            }
            let mut attributes = serde_json::Map::new();
            for (name, value) in m.message_attributes.clone().unwrap_or_default() {
                attributes.insert(
                    name,
                    serde_json::json!({ "stringValue": value.string_value, "dataType": value.data_type, "stringListValues": [], "binaryListValues": [] }),
                );
            }
            record["messageAttributes"] = Value::Object(attributes);
            record
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("an SQS event")
}
