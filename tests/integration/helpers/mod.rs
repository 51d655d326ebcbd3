//! What the tests need: AWS clients against the emulator, a table created from the template's
//! key schema, a fresh queue, signed API Gateway requests, and a ready-made ingress stack.

pub mod dev;
pub mod faults;
pub mod hubspot;
pub mod listing;
pub mod local;
pub mod lossy;
pub mod paddle_api;
pub mod pipeline;
pub mod recorder;
pub mod requests;
pub mod runtime;
pub mod stripe_api;
pub mod tls;
pub mod unprocessed;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqs::SqsQueue;
use plumbline::config::{Config, MapSecrets};
use plumbline::contract::Timestamp;
use plumbline::ingress::Ingress;
use plumbline::ports::ManualClock;
use plumbline::sources::{SourceKind, hmac_sha256, sign};
use plumbline::telemetry::RecordingMetrics;
use serde_json::Value;

pub const STRIPE_SECRET: &str = "whsec_integration_stripe";
pub const SITE_SECRET: &str = "whsec_aW50ZWdyYXRpb24tc2l0ZS1zZWNyZXQ=";
pub const SHOPIFY_SECRET: &str = "shpss_integration";
pub const ADYEN_KEY: &str = "0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F9";
pub const PADDLE_SECRET: &str = "pdl_ntfset_integration";

/// The instant every test's clock starts at.
pub const T0: i64 = 1_763_900_000;

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

pub fn fixture(relative: &str) -> Vec<u8> {
    let path = repo_path(&format!("tests/fixtures/{relative}"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The wall clock in Unix seconds: for signatures a running function must find fresh.
pub fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
    .expect("in range")
}

/// What EventBridge Scheduler hands the reconcile function on each run.
pub fn scheduled_event() -> Value {
    serde_json::from_slice(&fixture("lambda/scheduled-event.json")).expect("fixture")
}

pub async fn aws() -> aws_config::SdkConfig {
    moto_url();
    plumbline::adapters::aws_sdk::load_config()
        .await
        .expect("no timeout variable is set in the tests")
}

/// A DynamoDB client's configuration on `aws`, its requests through the front at `through`
/// (one that stands before moto's server), if any.
pub fn dynamodb_config(
    aws: &aws_config::SdkConfig,
    through: Option<&str>,
) -> aws_sdk_dynamodb::config::Builder {
    let config = aws_sdk_dynamodb::config::Builder::from(aws);
    match through {
        Some(front) => config.endpoint_url(front),
        None => config,
    }
}

/// moto's server, as `tests/run` started it (also for a test that puts something in front
/// of it).
pub fn moto_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect(
        "AWS_ENDPOINT_URL is not set: run the suite with tests/run, which starts moto's server",
    )
}

/// An HTTP client for talking to what a test started (TLS, if any, on the project's provider).
pub fn http() -> reqwest::Client {
    plumbline::adapters::tls::http_client()
        .build()
        .expect("an HTTP client")
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn yaml_str<'a>(v: &'a serde_yaml_ng::Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(serde_yaml_ng::Value::as_str)
        .unwrap_or_else(|| panic!("template: {key} missing"))
}

fn key_schema(list: &serde_yaml_ng::Value) -> Vec<KeySchemaElement> {
    list.as_sequence()
        .expect("KeySchema is a list")
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(yaml_str(k, "AttributeName"))
                .key_type(KeyType::from(yaml_str(k, "KeyType")))
                .build()
                .expect("key schema element")
        })
        .collect()
}

/// infra/template.yaml, parsed.
pub fn template() -> serde_yaml_ng::Value {
    let text = std::fs::read_to_string(repo_path("infra/template.yaml")).expect("template");
    serde_yaml_ng::from_str(&text).expect("template is YAML")
}

/// The template's resources, by logical name.
pub fn template_resources() -> serde_yaml_ng::Mapping {
    template()["Resources"]
        .as_mapping()
        .expect("Resources")
        .clone()
}

/// The dashboard's `!Sub`: its text and, in the list form (`!Sub [text, {variables}]`), its
/// variables (null without).
pub fn dashboard_sub() -> (String, serde_yaml_ng::Value) {
    let all = template_resources();
    let dashboard = all
        .values()
        .find(|r| r["Type"].as_str() == Some("AWS::CloudWatch::Dashboard"))
        .expect("a dashboard");
    let serde_yaml_ng::Value::Tagged(sub) = &dashboard["Properties"]["DashboardBody"] else {
        panic!("the dashboard's body is not a !Sub")
    };
    let (text, variables) = match &sub.value {
        serde_yaml_ng::Value::Sequence(parts) => (&parts[0], parts[1].clone()),
        text => (text, serde_yaml_ng::Value::Null),
    };
    (text.as_str().expect("a body").to_owned(), variables)
}

/// The dashboard's body, its `!Sub` placeholders left as written (`${AWS::Region}`,
/// `${Alarms}`).
pub fn dashboard_body() -> Value {
    serde_json::from_str(&dashboard_sub().0).expect("the body is JSON")
}

/// The EventsTable resource's properties, as the template declares them.
pub fn template_table() -> serde_yaml_ng::Value {
    template_resources()["EventsTable"]["Properties"].clone()
}

/// Creates a table with the template's key schema and indexes, under a unique name.
pub async fn create_table(ddb: &aws_sdk_dynamodb::Client) -> String {
    let props = template_table();
    let name = unique("events");
    let attributes = props["AttributeDefinitions"]
        .as_sequence()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(yaml_str(a, "AttributeName"))
                .attribute_type(ScalarAttributeType::from(yaml_str(a, "AttributeType")))
                .build()
                .expect("attribute")
        })
        .collect();
    let indexes = props["GlobalSecondaryIndexes"].as_sequence().map(|list| {
        list.iter()
            .map(|g| {
                GlobalSecondaryIndex::builder()
                    .index_name(yaml_str(g, "IndexName"))
                    .set_key_schema(Some(key_schema(&g["KeySchema"])))
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(yaml_str(
                                &g["Projection"],
                                "ProjectionType",
                            )))
                            .build(),
                    )
                    .build()
                    .expect("index")
            })
            .collect()
    });
    ddb.create_table()
        .table_name(&name)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(key_schema(&props["KeySchema"])))
        .set_global_secondary_indexes(indexes)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
    name
}

pub async fn create_queue(sqs: &aws_sdk_sqs::Client) -> String {
    sqs.create_queue()
        .queue_name(unique("delivery"))
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("url")
}

/// Redrives the queue at `queue` to the one at `dlq` after `max_receives` receives, as the
/// template does (the count given as a string, as CloudFormation passes a parameter).
pub async fn redrive(sqs: &aws_sdk_sqs::Client, queue: &str, dlq: &str, max_receives: u32) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("arn")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("the dead-letter queue's ARN");
    sqs.set_queue_attributes()
        .queue_url(queue)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#),
        )
        .send()
        .await
        .expect("redrive");
}

/// Every message on the queue, each received once (they stay invisible for the test's life).
pub async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

pub async fn items(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    ddb.scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default()
}

pub fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub const CONFIG: &str = r#"
[sources.stripe]
kind = "stripe"
secrets = ["env:STRIPE_SECRET", "env:STRIPE_SECRET_OLD"]

[sources.site]
kind = "standard-webhooks"
secrets = ["env:SITE_SECRET"]

[sources.shop]
kind = "shopify"
secrets = ["env:SHOPIFY_SECRET"]

[sources.adyen]
kind = "adyen"
secrets = ["env:ADYEN_KEY"]

[sources.paddle]
kind = "paddle"
secrets = ["env:PADDLE_SECRET"]

[ingress]
max_body_bytes = 65536
"#;

/// The signing scheme and configured secret of each source in [`CONFIG`], by its name.
pub fn source_scheme(source: &str) -> Option<(SourceKind, &'static str)> {
    Some(match source {
        "stripe" => (SourceKind::Stripe, STRIPE_SECRET),
        "site" => (SourceKind::StandardWebhooks, SITE_SECRET),
        "shop" => (SourceKind::Shopify, SHOPIFY_SECRET),
        "adyen" => (SourceKind::Adyen, ADYEN_KEY),
        "paddle" => (SourceKind::Paddle, PADDLE_SECRET),
        _ => return None,
    })
}

pub fn secrets() -> MapSecrets {
    MapSecrets(BTreeMap::from([
        ("env:STRIPE_SECRET".into(), STRIPE_SECRET.into()),
        (
            "env:STRIPE_SECRET_OLD".into(),
            "whsec_integration_previous".into(),
        ),
        ("env:SITE_SECRET".into(), SITE_SECRET.into()),
        ("env:SHOPIFY_SECRET".into(), SHOPIFY_SECRET.into()),
        ("env:ADYEN_KEY".into(), ADYEN_KEY.into()),
        ("env:PADDLE_SECRET".into(), PADDLE_SECRET.into()),
    ]))
}

pub type AwsIngress = Ingress<DynamoStore, SqsQueue, ManualClock, RecordingMetrics>;

/// A table, a queue and an ingress over them, with a clock that moves only when told.
pub struct Stack {
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub table: String,
    pub queue_url: String,
    pub clock: ManualClock,
    pub metrics: RecordingMetrics,
    pub ingress: AwsIngress,
}

impl Stack {
    pub async fn new() -> Self {
        let aws = aws().await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let sqs = aws_sdk_sqs::Client::new(&aws);
        let table = create_table(&ddb).await;
        let queue_url = create_queue(&sqs).await;
        Self::over(ddb, sqs, table, queue_url)
    }

    /// An ingress over an existing table and queue (the queue URL may name no queue at all).
    pub fn over(
        ddb: aws_sdk_dynamodb::Client,
        sqs: aws_sdk_sqs::Client,
        table: String,
        queue_url: String,
    ) -> Self {
        let config = Config::parse(CONFIG).expect("test config");
        let clock = ManualClock::at(Timestamp::from_unix(T0).expect("in range"));
        let metrics = RecordingMetrics::default();
        let ingress = Ingress::new(
            DynamoStore::new(ddb.clone(), table.clone()),
            SqsQueue::new(sqs.clone(), queue_url.clone()),
            clock.clone(),
            metrics.clone(),
            config.verifiers(&secrets()).expect("secrets"),
            config.ingress,
        );
        Self {
            ddb,
            sqs,
            table,
            queue_url,
            clock,
            metrics,
            ingress,
        }
    }

    pub async fn send(&self, request: lambda_http::Request) -> (u16, String) {
        let response = plumbline_ingress::handle(&self.ingress, request).await;
        let status = response.status().as_u16();
        let body = match response.body() {
            lambda_http::Body::Text(t) => t.clone(),
            lambda_http::Body::Binary(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        (status, body)
    }

    pub async fn items(&self) -> Vec<HashMap<String, AttributeValue>> {
        items(&self.ddb, &self.table).await
    }

    pub async fn messages(&self) -> Vec<aws_sdk_sqs::types::Message> {
        drain(&self.sqs, &self.queue_url).await
    }
}

/// An API Gateway HTTP API (payload v2) event for `POST /webhooks/{source}`, from the fixture.
pub fn apigw(
    method: &str,
    source: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> lambda_http::Request {
    let event = apigw_event(method, source, headers, body);
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway event")
}

/// The API Gateway HTTP API (payload 2.0) event for a request, as Lambda receives it.
pub fn apigw_event(method: &str, source: &str, headers: &[(&str, String)], body: &[u8]) -> Value {
    let mut event: Value =
        serde_json::from_slice(&fixture("apigw/post-webhook.json")).expect("fixture");
    let path = format!("/webhooks/{source}");
    event["rawPath"] = Value::String(path.clone());
    event["requestContext"]["http"]["path"] = Value::String(path);
    event["requestContext"]["http"]["method"] = Value::String(method.to_owned());
    event["pathParameters"]["source"] = Value::String(source.to_owned());
    for (name, value) in headers {
        event["headers"][name.to_lowercase()] = Value::String(value.clone());
    }
    if let Ok(text) = std::str::from_utf8(body) {
        event["body"] = Value::String(text.to_owned());
    } else {
        event["body"] = Value::String(STANDARD.encode(body));
        event["isBase64Encoded"] = Value::Bool(true);
    }
    event
}

pub fn stripe_headers(secret: &str, t: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let mac = hmac_sha256(secret.as_bytes(), &[t.to_string().as_bytes(), b".", body]);
    vec![("Stripe-Signature", format!("t={t},v1={}", hex::encode(mac)))]
}

/// `stripe_headers` as the headers the use cases take.
pub fn stripe_header_map(secret: &str, t: i64, body: &[u8]) -> http::HeaderMap {
    stripe_headers(secret, t, body)
        .into_iter()
        .map(|(k, v)| (k.parse().expect("name"), v.parse().expect("value")))
        .collect()
}

/// A signed Stripe request at the stack's start time.
pub fn stripe(body: &[u8]) -> lambda_http::Request {
    apigw(
        "POST",
        "stripe",
        &stripe_headers(STRIPE_SECRET, T0, body),
        body,
    )
}

/// A request for `source` signed by `plumbline::sources::sign` at the stack's start time.
fn signed(
    source: &str,
    kind: SourceKind,
    secret: &str,
    id: &str,
    topic: Option<&str>,
    body: &[u8],
) -> lambda_http::Request {
    signed_at(source, kind, secret, id, topic, T0, body)
}

/// [`signed`] at `timestamp`.
fn signed_at(
    source: &str,
    kind: SourceKind,
    secret: &str,
    id: &str,
    topic: Option<&str>,
    timestamp: i64,
    body: &[u8],
) -> lambda_http::Request {
    let meta = sign::Envelope {
        event_id: id,
        timestamp,
        topic,
    };
    let signed = sign::sign(kind, secret, meta, body).expect("signs");
    let headers: Vec<(&str, String)> = signed.headers;
    apigw("POST", source, &headers, &signed.body)
}

pub fn site(id: &str, body: &[u8]) -> lambda_http::Request {
    site_at(id, T0, body)
}

/// A site webhook signed at `timestamp`.
pub fn site_at(id: &str, timestamp: i64, body: &[u8]) -> lambda_http::Request {
    signed_at(
        "site",
        SourceKind::StandardWebhooks,
        SITE_SECRET,
        id,
        None,
        timestamp,
        body,
    )
}

pub fn shopify(topic: &str, event_id: &str, body: &[u8]) -> lambda_http::Request {
    signed(
        "shop",
        SourceKind::Shopify,
        SHOPIFY_SECRET,
        event_id,
        Some(topic),
        body,
    )
}

pub fn paddle(body: &[u8]) -> lambda_http::Request {
    signed("paddle", SourceKind::Paddle, PADDLE_SECRET, "", None, body)
}

/// Signs every item of an Adyen notification with the test key.
pub fn adyen(body: &[u8]) -> lambda_http::Request {
    signed("adyen", SourceKind::Adyen, ADYEN_KEY, "", None, body)
}

pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A Stripe request signed at `t`, as Stripe signs each retry afresh.
pub fn stripe_at(t: i64, body: &[u8]) -> lambda_http::Request {
    apigw(
        "POST",
        "stripe",
        &stripe_headers(STRIPE_SECRET, t, body),
        body,
    )
}

/// A Stripe event as an older build kept it (`status` quarantined or unrouted), with its
/// payload: what `plumbline events reprocess` reads again.
pub fn kept_stripe_event(
    id: &str,
    status: plumbline::ports::EventStatus,
    raw: Value,
    at: Timestamp,
) -> plumbline::ports::EventRecord {
    use plumbline::contract::{EventId, SourceEventId, SourceName};
    let source = SourceName::try_from("stripe").expect("source");
    let source_event_id = SourceEventId::try_from(id).expect("id");
    plumbline::ports::EventRecord {
        key: plumbline::ports::EventKey::new(&source, &source_event_id),
        event_id: EventId::generate(at),
        source,
        source_event_id,
        source_type: raw["type"].as_str().unwrap_or_default().to_owned(),
        status,
        payload_hash: plumbline::sources::PayloadHash::of(b"older"),
        claimed_at: at,
        received_at: at,
        expires_at: at.plus_secs(86_400),
        envelope: None,
        raw: Some(raw),
        reason: Some("an older build's reason".into()),
        header_time: None,
        requeues: 0,
    }
}
