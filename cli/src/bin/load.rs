//! `plumbline-load`: drives a running `plumbline dev` with signed Stripe webhooks, each with a
//! unique event id, at a fixed rate or as fast as it answers; optionally receives the deliveries
//! on a loopback target and reports their rate.
//!
//! Examples:
//!   plumbline-load --rate 1000 --duration 20
//!   plumbline-load --max --connections 64 --duration 20 --receive 127.0.0.1:9999

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use plumbline::sources::SourceKind;
use plumbline::sources::sign::{self, Envelope};
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    name = "plumbline-load",
    about = "Load generator for plumbline dev: signed, unique webhooks"
)]
struct Args {
    /// The instance's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The stripe source's name and signing secret (the demo's by default).
    #[arg(long, default_value = "stripe")]
    source: String,
    #[arg(long, default_value = "whsec_plumbline_demo_stripe")]
    secret: String,
    /// Requests per second to hold (ignored with --max).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// As fast as the instance answers, from --connections connections.
    #[arg(long)]
    max: bool,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Also listen here as the HTTP target and report deliveries per second.
    #[arg(long)]
    receive: Option<SocketAddr>,
    /// As the target, answer this share of deliveries 503 (a flaky target; they are retried).
    #[arg(long, default_value_t = 0.0)]
    fail_rate: f64,
    /// The events cycle over this many payments, so each payment's ledger entity keeps growing
    /// its history up to the ledger's limit: the update path under contention.
    #[arg(long, default_value_t = 1000)]
    payments: u64,
    /// Instead: every K consecutive events belong to a new payment, as in live traffic, where a
    /// payment sees a handful of events and new payments keep coming.
    #[arg(long, conflicts_with = "payments")]
    events_per_payment: Option<u64>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
}

// A benchmark driver reads best top to bottom: set up, drive, wait, report.
#[allow(clippy::too_many_lines)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let deliveries = Arc::new(AtomicU64::new(0));
    let delivery_times = Arc::new(Mutex::new((None::<Instant>, None::<Instant>)));
    if let Some(address) = args.receive {
        let (count, times) = (Arc::clone(&deliveries), Arc::clone(&delivery_times));
        let fail_rate = args.fail_rate;
        let app = axum::Router::new().fallback(move || {
            let (count, times) = (Arc::clone(&count), Arc::clone(&times));
            async move {
                if fastrand::f64() < fail_rate {
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "flaky");
                }
                count.fetch_add(1, Ordering::Relaxed);
                let mut t = times.lock().await;
                let now = Instant::now();
                t.0.get_or_insert(now);
                t.1 = Some(now);
                (axum::http::StatusCode::OK, "ok")
            }
        });
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let body = include_bytes!("../../../tests/fixtures/stripe/payment_intent.succeeded.json");
    let template: serde_json::Value = serde_json::from_slice(body)?;
    let url = format!(
        "{}/webhooks/{}",
        args.url.trim_end_matches('/'),
        args.source
    );
    let client = plumbline::adapters::tls::http_client()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sent = Arc::new(AtomicU64::new(0));
    let run_id = ulid::Ulid::new().to_string();
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let (payments, events_per_payment) = (
        args.payments.max(1),
        args.events_per_payment.map(|k| k.max(1)),
    );

    let one = {
        let (client, url, tally, sent, template, secret, run_id) = (
            client.clone(),
            url.clone(),
            Arc::clone(&tally),
            Arc::clone(&sent),
            template.clone(),
            args.secret.clone(),
            run_id.clone(),
        );
        move || {
            let (client, url, tally, template, secret) = (
                client.clone(),
                url.clone(),
                Arc::clone(&tally),
                template.clone(),
                secret.clone(),
            );
            let n = sent.fetch_add(1, Ordering::Relaxed);
            let run_id = run_id.clone();
            async move {
                let mut doc = template;
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                doc["id"] = json!(format!("evt_load_{run_id}_{n}"));
                doc["created"] = json!(now);
                let payment = match events_per_payment {
                    Some(k) => n / k,
                    None => n % payments,
                };
                doc["data"]["object"]["id"] = json!(format!("pi_load_{run_id}_{payment}"));
                let body = serde_json::to_vec(&doc).expect("json");
                let signed = sign::sign(
                    SourceKind::Stripe,
                    &secret,
                    Envelope {
                        event_id: "",
                        timestamp: now,
                        topic: None,
                    },
                    &body,
                )
                .expect("signs");
                let mut request = client.post(&url).body(signed.body);
                for (k, v) in &signed.headers {
                    request = request.header(*k, v);
                }
                let t0 = Instant::now();
                let result = request.send().await;
                let elapsed = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                let mut t = tally.lock().await;
                match result {
                    Ok(r) => {
                        *t.statuses.entry(r.status().as_u16()).or_insert(0) += 1;
                        if r.status().is_success() {
                            t.latencies_us.push(elapsed);
                        } else {
                            t.errors += 1;
                        }
                    }
                    Err(_) => t.errors += 1,
                }
            }
        }
    };

    if args.max {
        let mut lanes = Vec::new();
        for _ in 0..args.connections {
            let one = one.clone();
            lanes.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    one().await;
                }
            }));
        }
        for lane in lanes {
            lane.await?;
        }
    } else {
        let mut ticker =
            tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate.max(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(args.connections * 4));
        let mut tasks = tokio::task::JoinSet::new();
        while Instant::now() < deadline {
            ticker.tick().await;
            let permit = Arc::clone(&in_flight).acquire_owned().await?;
            let one = one.clone();
            tasks.spawn(async move {
                one().await;
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Deliveries lag the intake; wait until they stop arriving.
    let mut delivered_rate = None;
    if args.receive.is_some() {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = deliveries.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
        let t = delivery_times.lock().await;
        if let (Some(first), Some(last_at)) = (t.0, t.1) {
            let span = last_at.duration_since(first).as_secs_f64().max(1e-3);
            delivered_rate = Some((last, last as f64 / span));
        }
    }

    let mut t = tally.lock().await;
    t.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if t.latencies_us.is_empty() {
            return 0.0;
        }
        // Nearest rank, in thousandths, without a float-to-index cast.
        let per_mille = [(0.5, 500), (0.95, 950), (0.99, 990), (1.0, 1000)]
            .iter()
            .find(|(q, _)| (*q - p).abs() < 1e-9)
            .map_or(1000, |(_, m)| *m);
        let i = (t.latencies_us.len() - 1) * per_mille / 1000;
        t.latencies_us[i] as f64 / 1000.0
    };
    let accepted = t.latencies_us.len();
    let result = json!({
        "mode": if args.max { "max".to_owned() } else { format!("{} req/s", args.rate) },
        "seconds": elapsed,
        "sent": sent.load(Ordering::Relaxed),
        "accepted": accepted,
        "accepted_per_sec": accepted as f64 / elapsed,
        "errors": t.errors,
        "statuses": t.statuses,
        "latency_ms": { "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": pct(1.0) },
        "delivered": delivered_rate.map(|(n, _)| n),
        "delivered_per_sec": delivered_rate.map(|(_, r)| r),
    });
    if args.json {
        println!("{result}");
    } else {
        println!(
            "{}: {accepted} accepted in {elapsed:.1} s = {:.0}/s, errors {}, latency p50 {:.2} ms p95 {:.2} ms p99 {:.2} ms{}",
            result["mode"].as_str().unwrap_or_default(),
            accepted as f64 / elapsed,
            t.errors,
            pct(0.5),
            pct(0.95),
            pct(0.99),
            delivered_rate.map_or(String::new(), |(n, r)| format!(
                "; delivered {n} at {r:.0}/s"
            )),
        );
    }
    Ok(())
}
