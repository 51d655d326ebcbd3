//! `plumbline-coldstart`: a local Lambda Runtime API that spawns a function binary, hands it one
//! event, and times spawn → first answered invocation (the cold start as a caller sees it:
//! process start, configuration, clients, first handler run). Repeats and prints the spread.
//!
//! Example:
//!   plumbline-coldstart --bin target/release/plumbline-ingress --event ingress.json --runs 20 \
//!     --env PLUMBLINE_CONFIG=infra/config/plumbline.toml --env PLUMBLINE_TABLE=t --env PLUMBLINE_QUEUE_URL=q

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use clap::Parser;
use tokio::sync::Notify;

#[derive(Parser, Debug)]
#[command(
    name = "plumbline-coldstart",
    about = "Time a Lambda function binary's cold start against a local Runtime API"
)]
struct Args {
    /// The function's binary (the bootstrap).
    #[arg(long)]
    bin: PathBuf,
    /// The invocation event (JSON file).
    #[arg(long)]
    event: PathBuf,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Extra environment for the function, KEY=VALUE.
    #[arg(long = "env")]
    envs: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct Answer {
    at: Option<Instant>,
    error: bool,
}

/// The headers the Runtime API sends with an event.
fn invocation_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(60);
    headers.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_static("coldstart-1"),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from_str(&deadline.as_millis().to_string()).expect("ascii"),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:coldstart"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
    );
    headers
}

/// One cold start: spawn, serve one event, wait for its answer, kill.
async fn once(args: &Args, event: Bytes) -> anyhow::Result<(Duration, bool)> {
    let answer = Arc::new(Mutex::new(Answer::default()));
    let done = Arc::new(Notify::new());
    let (a1, a2, d1, d2) = (
        Arc::clone(&answer),
        Arc::clone(&answer),
        Arc::clone(&done),
        Arc::clone(&done),
    );
    let served = Arc::new(Mutex::new(false));
    let app = axum::Router::new()
        .route(
            "/2018-06-01/runtime/invocation/next",
            get(move || {
                let (event, served) = (event.clone(), Arc::clone(&served));
                async move {
                    // One event per process; later polls wait (as the service does between invocations).
                    if std::mem::replace(&mut *served.lock().expect("lock"), true) {
                        std::future::pending::<()>().await;
                    }
                    let headers = invocation_headers();
                    (headers, event)
                }
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(move |_body: Bytes| async move {
                a1.lock().expect("lock").at.get_or_insert(Instant::now());
                d1.notify_one();
                StatusCode::ACCEPTED
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(move |_body: Bytes| async move {
                let mut a = a2.lock().expect("lock");
                a.at.get_or_insert(Instant::now());
                a.error = true;
                d2.notify_one();
                StatusCode::ACCEPTED
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    let runtime_api = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut command = tokio::process::Command::new(&args.bin);
    command
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "coldstart")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_LEVEL", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for pair in &args.envs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair}: expected KEY=VALUE"))?;
        command.env(k, v);
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {}", args.bin.display()))?;
    tokio::time::timeout(Duration::from_secs(30), done.notified())
        .await
        .context("no answer within 30 s")?;
    let (elapsed, error) = {
        let a = answer.lock().expect("lock");
        (
            a.at.map_or(Duration::MAX, |at| at.duration_since(started)),
            a.error,
        )
    };
    let _ = child.kill().await;
    runtime_api.abort();
    Ok((elapsed, error))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let event = Bytes::from(
        std::fs::read(&args.event).with_context(|| format!("reading {}", args.event.display()))?,
    );
    let mut times = Vec::with_capacity(args.runs);
    let mut errors = 0;
    for _ in 0..args.runs {
        let (elapsed, error) = once(&args, event.clone()).await?;
        errors += usize::from(error);
        times.push(elapsed.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let size = std::fs::metadata(&args.bin).map_or(0, |m| m.len());
    let median = times[times.len() / 2];
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "binary": args.bin.display().to_string(), "size_bytes": size, "runs": times.len(), "errors": errors,
                "ms": { "min": times[0], "median": median, "max": times[times.len() - 1] } })
        );
    } else {
        println!(
            "{}: {:.1} MB, cold start median {median:.1} ms (min {:.1}, max {:.1}) over {} runs, {errors} answered with an error",
            args.bin.display(),
            size as f64 / 1e6,
            times[0],
            times[times.len() - 1],
            times.len()
        );
    }
    Ok(())
}
