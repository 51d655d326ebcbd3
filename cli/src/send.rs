//! `plumbline send`: correctly signed sample events to a running instance.

use crate::out::outln;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use plumbline::config::SecretResolver;
use plumbline::contract::SourceName;
use plumbline::sources::SourceKind;
use plumbline::sources::sign::{self, Envelope};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::demo;
use crate::dev::load_config;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  plumbline send stripe payment_intent.succeeded\n  plumbline send stripe lifecycle --shuffle\n  plumbline send site lead.submitted --duplicate 2\n  plumbline send shopify --file order.json --topic orders/paid\n  plumbline send --list"
)]
pub struct SendArgs {
    /// The configured source to send to (its name is its route).
    source: Option<String>,
    /// A bundled sample (see --list); `lifecycle` sends a payment's whole life (stripe).
    sample: Option<String>,
    /// The running instance.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The configuration the instance runs with (for the source's kind and secret).
    #[arg(long, env = "PLUMBLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Send this payload instead of a sample.
    #[arg(long, conflicts_with = "sample")]
    file: Option<PathBuf>,
    /// The topic, for shopify payloads given with --file.
    #[arg(long)]
    topic: Option<String>,
    /// Send each request this many more times (shows idempotency).
    #[arg(long, default_value_t = 0)]
    duplicate: usize,
    /// Send the requests in a random order (shows out-of-order handling).
    #[arg(long)]
    shuffle: bool,
    /// List the bundled samples.
    #[arg(long)]
    list: bool,
    /// Print the answers as JSON lines.
    #[arg(long)]
    json: bool,
}

/// A payload to send: its label, the shopify topic if any, and the body.
type Payload = (String, Option<String>, Vec<u8>);

struct Outgoing {
    label: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

pub async fn run(args: SendArgs) -> anyhow::Result<bool> {
    if args.list {
        return list(&args);
    }
    let Some(source) = args.source.clone() else {
        bail!("name a source, e.g. `plumbline send stripe payment_intent.succeeded` (or --list)")
    };
    let (config, secrets, _) = load_config(args.config.as_ref())?;
    let name = SourceName::try_from(source.as_str()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let source_config = config
        .sources
        .get(&name)
        .with_context(|| {
            let names: Vec<&str> = config.sources.keys().map(SourceName::as_str).collect();
            format!(
                "no source named {source} in the configuration (sources: {}); see `plumbline send --list`",
                names.join(", ")
            )
        })?;
    let kind = source_config.kind;
    let (key, reference) = config
        .signing_secret(&name)
        .context("the source has no secret")?;
    // Only the secret it signs with: the sender needs no access to any other.
    let secrets = secrets.fetching(vec![(key, reference.clone())]).await?;
    let secret = secrets
        .resolve(&reference)
        .map_err(|e| anyhow::anyhow!("{reference}: {e}"))?;
    let payloads = payloads(&args, kind)?;
    let mut requests = Vec::new();
    for (label, topic, body) in payloads {
        let event_id = format!("msg_{}", ulid::Ulid::new());
        let meta = Envelope {
            event_id: &event_id,
            timestamp: time::OffsetDateTime::now_utc().unix_timestamp(),
            topic: topic.as_deref(),
        };
        let signed = sign::sign(kind, secret.expose_secret(), meta, &body)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        for _ in 0..=args.duplicate {
            requests.push(Outgoing {
                label: label.clone(),
                headers: signed.headers.clone(),
                body: signed.body.clone(),
            });
        }
    }
    if args.shuffle {
        fastrand::shuffle(&mut requests);
    }
    let client = plumbline::adapters::tls::http_client().build()?;
    let url = format!("{}/webhooks/{source}", args.url.trim_end_matches('/'));
    let mut all_ok = true;
    for request in requests {
        let mut builder = client.post(&url).body(request.body);
        for (k, v) in &request.headers {
            builder = builder.header(*k, v);
        }
        let response = builder
            .send()
            .await
            .with_context(|| format!("sending to {url}; is `plumbline dev` running?"))?;
        let status = response.status().as_u16();
        let answer = response.text().await.unwrap_or_default();
        all_ok &= status < 300;
        if args.json {
            outln!(
                "{}",
                json!({ "sample": request.label, "status": status, "answer": serde_json::from_str::<Value>(&answer).unwrap_or(Value::String(answer)) })
            )?;
        } else {
            outln!("{status} {:<32} {answer}", request.label)?;
        }
    }
    Ok(all_ok)
}

/// The bundled samples for each configured source (or the one named), by the name `send`
/// takes: `site lead.submitted`, not the source's kind.
fn list(args: &SendArgs) -> anyhow::Result<bool> {
    let (config, _, _) = load_config(args.config.as_ref())?;
    let samples = demo::samples();
    outln!("{:<12} {:<18} sample", "source", "kind")?;
    for (name, source) in &config.sources {
        if args
            .source
            .as_deref()
            .is_some_and(|wanted| wanted != name.as_str())
        {
            continue;
        }
        let kind = source.kind.as_str();
        for (_, sample) in samples.keys().filter(|(k, _)| *k == kind) {
            outln!("{:<12} {kind:<18} {sample}", name.as_str())?;
        }
        if source.kind == SourceKind::Stripe {
            outln!(
                "{:<12} {kind:<18} lifecycle (requires_action → processing → succeeded → partial refund)",
                name.as_str()
            )?;
        }
    }
    Ok(true)
}

/// The payloads to send, each made unique (fresh ids, current times) so a second `send` is a new
/// event, not a duplicate.
fn payloads(args: &SendArgs, kind: SourceKind) -> anyhow::Result<Vec<Payload>> {
    if let Some(path) = &args.file {
        let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(vec![(path.display().to_string(), args.topic.clone(), body)]);
    }
    let sample = args
        .sample
        .as_deref()
        .context("name a sample (see --list) or give --file")?;
    let now = time::OffsetDateTime::now_utc();
    if sample == "lifecycle" {
        if kind != SourceKind::Stripe {
            bail!("the lifecycle sample is a Stripe payment's");
        }
        let payment = format!("pi_{}", ulid::Ulid::new());
        let steps = [
            "payment_intent.requires_action",
            "payment_intent.processing",
            "payment_intent.succeeded",
            "charge.refunded",
        ];
        return steps
            .iter()
            .zip(0_i64..)
            .map(|(step, i)| {
                let body = sample_bytes(kind, step)?;
                Ok((
                    (*step).to_owned(),
                    None,
                    fresh(kind, body, now.unix_timestamp() - 10 + i, Some(&payment))?,
                ))
            })
            .collect();
    }
    let body = sample_bytes(kind, sample)?;
    let topic = (kind == SourceKind::Shopify).then(|| sample.to_owned());
    Ok(vec![(
        sample.to_owned(),
        topic,
        fresh(kind, body, now.unix_timestamp(), None)?,
    )])
}

fn sample_bytes(kind: SourceKind, name: &str) -> anyhow::Result<&'static [u8]> {
    demo::samples()
        .get(&(kind.as_str(), name))
        .copied()
        .with_context(|| format!("no {kind} sample named {name}; see `plumbline send --list`"))
}

fn fresh(kind: SourceKind, body: &[u8], at: i64, payment: Option<&str>) -> anyhow::Result<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(body)?;
    let id = ulid::Ulid::new().to_string();
    let rfc3339 = time::OffsetDateTime::from_unix_timestamp(at)?
        .format(&time::format_description::well_known::Rfc3339)?;
    match kind {
        SourceKind::Stripe => {
            doc["id"] = json!(format!("evt_{id}"));
            doc["created"] = json!(at);
            if let Some(payment) = payment {
                let object = &mut doc["data"]["object"];
                if object["object"] == "payment_intent" {
                    object["id"] = json!(payment);
                } else {
                    object["payment_intent"] = json!(payment);
                }
            }
        }
        SourceKind::StandardWebhooks => {
            doc["timestamp"] = json!(rfc3339);
            if doc["type"] == "lead.submitted" {
                doc["data"]["id"] = json!(format!("lead_{id}"));
            }
        }
        SourceKind::Paddle => {
            doc["event_id"] = json!(format!("evt_{id}"));
            doc["occurred_at"] = json!(rfc3339);
        }
        SourceKind::Adyen => {
            let prefix = format!("{:015}", fastrand::u64(..1_000_000_000_000_000));
            let text = serde_json::to_string(&doc)?
                .replace("881500000000000", &prefix)
                .replace("2025-11-23T12:00:00+01:00", &rfc3339);
            return Ok(text.into_bytes());
        }
        SourceKind::Shopify => {}
    }
    Ok(serde_json::to_vec(&doc)?)
}
