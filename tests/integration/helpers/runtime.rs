//! A local Lambda Runtime API on loopback: spawns a function's real binary, hands it events one
//! at a time as the Lambda service does, and keeps each answer and every line it printed.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The function binaries sit beside the `plumbline` binary (`tests/run` builds them).
pub fn function_binary(name: &str) -> PathBuf {
    let dir = super::dev::binary()
        .parent()
        .expect("target dir")
        .to_path_buf();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p {name}` (tests/run does)",
        bin.display()
    );
    bin
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub body: Value,
    pub error: bool,
}

#[derive(Default)]
struct State {
    events: VecDeque<(String, Bytes)>,
    answers: Vec<Answer>,
}

fn headers(id: &str) -> HeaderMap {
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(60);
    let mut h = HeaderMap::new();
    h.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_str(id).expect("ascii"),
    );
    h.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from_str(&deadline.as_millis().to_string()).expect("ascii"),
    );
    h.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:test"),
    );
    h.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
    );
    h
}

/// Runs `bin` with `envs`, invokes it once per event, and returns the answers (in order) and
/// the lines it wrote to stdout.
pub async fn invoke(
    bin: &Path,
    envs: &[(&str, String)],
    events: &[Value],
) -> (Vec<Answer>, Vec<String>) {
    let state = Arc::new(Mutex::new(State {
        events: events
            .iter()
            .enumerate()
            .map(|(i, e)| (format!("req-{i}"), Bytes::from(e.to_string())))
            .collect(),
        answers: Vec::new(),
    }));
    let (next, ok, err) = (state.clone(), state.clone(), state.clone());
    let app = axum::Router::new()
        .route(
            "/2018-06-01/runtime/invocation/next",
            get(move || {
                let state = next.clone();
                async move {
                    let event = state.lock().expect("state").events.pop_front();
                    match event {
                        Some((id, body)) => (headers(&id), body),
                        // No more events: wait, as the service does between invocations.
                        None => std::future::pending().await,
                    }
                }
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(move |_: UrlPath<String>, body: Bytes| async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                ok.lock()
                    .expect("state")
                    .answers
                    .push(Answer { body, error: false });
                StatusCode::ACCEPTED
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(move |_: UrlPath<String>, body: Bytes| async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                err.lock()
                    .expect("state")
                    .answers
                    .push(Answer { body, error: true });
                StatusCode::ACCEPTED
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut command = tokio::process::Command::new(bin);
    command
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "test")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in envs {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn the function");
    let stdout = child.stdout.take().expect("stdout");
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut out = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            out.push(line);
        }
        out
    });
    let started = Instant::now();
    loop {
        if state.lock().expect("state").answers.len() == events.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} answered {} of {} events",
            bin.display(),
            state.lock().expect("state").answers.len(),
            events.len()
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{} exited early: {status}", bin.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.expect("kill");
    let lines = reader.await.expect("reader");
    server.abort();
    let answers = state.lock().expect("state").answers.clone();
    (answers, lines)
}
