//! `plumbline receive`: a local HTTP target that prints each delivery and checks its Standard
//! Webhooks signature, for trying targets out without an ERP or CRM at hand.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use clap::Args;
use plumbline::contract::Timestamp;
use plumbline::sources::{Inbound, SourceKind, Verifier};
use secrecy::SecretSlice;
use time::OffsetDateTime;

/// The same window the ingress allows a sender's clock by default.
const TOLERANCE_SECS: i64 = 300;

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  plumbline receive --listen 127.0.0.1:9999 --secret whsec_cGx1bWJsaW5lLXdhbGt0aHJvdWdo"
)]
pub struct ReceiveArgs {
    #[arg(long, default_value = "127.0.0.1:9999")]
    listen: SocketAddr,
    /// The target's signing secret (`whsec_…`): each request's signature is checked.
    #[arg(long)]
    secret: Option<String>,
    /// Answer every request with this status instead of 200 (to see retries and dead letters).
    #[arg(long)]
    fail_with: Option<u16>,
}

pub async fn run(args: ReceiveArgs) -> anyhow::Result<bool> {
    let verifier = args
        .secret
        .as_deref()
        .map(|s| {
            let key = SourceKind::StandardWebhooks
                .decode_secret(s)
                .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
            anyhow::Ok(Verifier {
                kind: SourceKind::StandardWebhooks,
                keys: vec![SecretSlice::from(key)],
                tolerance_secs: TOLERANCE_SECS,
            })
        })
        .transpose()?;
    let status = StatusCode::from_u16(args.fail_with.unwrap_or(200)).context("--fail-with")?;
    let verifier = Arc::new(verifier);
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let verifier = Arc::clone(&verifier);
        async move {
            print_delivery(&headers, &body, verifier.as_ref().as_ref());
            status
        }
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    crate::out::outln!(
        "plumbline receive: listening on http://{} (answering {})",
        listener.local_addr()?,
        status.as_u16()
    )?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
        .await?;
    Ok(true)
}

fn print_delivery(headers: &HeaderMap, body: &[u8], verifier: Option<&Verifier>) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    };
    let signature = verifier.map_or("not checked", |v| {
        let request = Inbound { headers, body };
        match v.verify_standard_webhook(request, Timestamp::new(OffsetDateTime::now_utc())) {
            Ok(()) => "valid",
            Err(rejection) => rejection.label(),
        }
    });
    let doc: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let what = doc["event"]["type"].as_str().unwrap_or("(mapped payload)");
    let state = doc["entity"]["state"].as_str().unwrap_or("-");
    // A closed standard output is no reason to stop answering: the deliveries still succeed.
    let _ = crate::out::outln!(
        "{}  {what:<26} entity state {state:<18} signature {signature}",
        header("idempotency-key")
    );
}
