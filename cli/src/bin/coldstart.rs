//! `plumbline-coldstart`: a local Lambda Runtime API that spawns a function (any bootstrap: a
//! Rust binary, or `python -m awslambdaric module.handler`) and measures it as Lambda would run
//! it.
//!
//! - Cold (default): spawn → first answered invocation, repeated `--runs` times: process start,
//!   configuration, clients, first handler run; and spawn → first poll for an event (the init
//!   phase alone, which Lambda reports as Init Duration).
//! - Warm (`--warm`): one process serves every line of `--events` in turn; after `--warmup`
//!   invocations it reports the process's CPU time per invocation (user + system, from
//!   `/proc/<pid>/stat`, clock ticks), wall time per invocation (event handed out → answer
//!   received) and peak RSS.
//!
//! Example:
//!   plumbline-coldstart --bin target/release/plumbline-ingress --event ingress.json --runs 20 \
//!     --env PLUMBLINE_CONFIG=infra/config/plumbline.toml --env PLUMBLINE_TABLE=t --env PLUMBLINE_QUEUE_URL=q

use std::collections::VecDeque;
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
    about = "Time a Lambda function's cold start, or its warm CPU and wall time per invocation, against a local Runtime API"
)]
struct Args {
    /// The function's bootstrap (a binary, or an interpreter followed by `--arg`s).
    #[arg(long)]
    bin: PathBuf,
    /// Arguments for the bootstrap, in order.
    #[arg(long = "arg", allow_hyphen_values = true)]
    extra: Vec<String>,
    /// Working directory for the function.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// The invocation event (one JSON document), for cold starts.
    #[arg(long, required_unless_present = "events")]
    event: Option<PathBuf>,
    /// Invocation events, one JSON document per line: cold run `i` gets line `i` (cycling);
    /// with `--warm` each line is one invocation.
    #[arg(long)]
    events: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Serve every event to one process and report per-invocation CPU and wall time.
    #[arg(long)]
    warm: bool,
    /// Warm mode: invocations served before measuring starts.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Extra environment for the function, KEY=VALUE.
    #[arg(long = "env")]
    envs: Vec<String>,
    /// The function's memory setting, as Lambda passes it.
    #[arg(long, default_value_t = 256)]
    memory_mb: u32,
    /// Append the function's stderr to this file (default: discarded).
    #[arg(long)]
    stderr: Option<PathBuf>,
    /// Append the function's stdout, where it logs, to this file (default: discarded).
    #[arg(long)]
    stdout: Option<PathBuf>,
    /// End the function with SIGTERM and wait for it (so a profiler wrapping it can write its
    /// data), instead of SIGKILL.
    #[arg(long)]
    term: bool,
    /// What stands between the function and its AWS endpoint (`AWS_ENDPOINT_URL`). moto's
    /// server closes the connection after every answer, so with nothing each request opens a
    /// new one, which a warm function talking to AWS does not (its connections are reused);
    /// `keep-alive` puts a front there that keeps the function's connection open.
    #[arg(long, value_enum, default_value_t = Front::None)]
    front: Front,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Front {
    None,
    KeepAlive,
}

/// Headers about one connection, not the request: the front's two connections have their own.
const HOP_BY_HOP: [&str; 5] = [
    "host",
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
];

/// A keep-alive HTTP/1.1 front on a free loopback port that forwards every request, as it
/// came, to `upstream`, and its answer back: the function keeps its connection to the front
/// while the front pays for the upstream's closed ones. Returns the front's URL and its task.
async fn keep_alive_front(
    upstream: String,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let client = plumbline::adapters::tls::http_client().build()?;
    let forward = move |request: axum::extract::Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .map_err(|e| (StatusCode::BAD_GATEWAY, format!("reading the request: {e}")))?;
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut headers = parts.headers;
            for hop in HOP_BY_HOP {
                headers.remove(hop);
            }
            let answer = client
                .request(
                    parts.method,
                    format!("{}{path}", upstream.trim_end_matches('/')),
                )
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(|e| (StatusCode::BAD_GATEWAY, format!("upstream: {e}")))?;
            let status = answer.status();
            let mut headers = answer.headers().clone();
            for hop in HOP_BY_HOP {
                headers.remove(hop);
            }
            let body = answer
                .bytes()
                .await
                .map_err(|e| (StatusCode::BAD_GATEWAY, format!("upstream body: {e}")))?;
            Ok::<_, (StatusCode, String)>((status, headers, body))
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task =
        tokio::spawn(
            async move { axum::serve(listener, axum::Router::new().fallback(forward)).await },
        );
    Ok((url, task))
}

/// The headers the Runtime API sends with an event.
fn invocation_headers(id: usize) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // The service sends JSON as JSON; some runtime clients (awslambdaric) read it only then.
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(60);
    headers.insert(
        "lambda-runtime-aws-request-id",
        HeaderValue::from_str(&format!("bench-{id}")).expect("ascii"),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        HeaderValue::from_str(&deadline.as_millis().to_string()).expect("ascii"),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:bench"),
    );
    headers.insert(
        "lambda-runtime-trace-id",
        HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
    );
    headers
}

/// What the Runtime API has seen of one process.
#[derive(Default)]
struct Session {
    queue: VecDeque<Bytes>,
    served: usize,
    handed_at: Option<Instant>,
    walls: Vec<Duration>,
    /// The first poll for an event: the end of the function's init phase.
    first_poll: Option<Instant>,
    first_answer: Option<Instant>,
    errors: usize,
    failed_items: usize,
    /// The child's pid, so CPU can be read while it waits for its next event.
    pid: Option<u32>,
    warmup: usize,
    cpu_at_warmup: Option<Duration>,
    cpu_at_end: Option<Duration>,
    peak_rss_kb: Option<u64>,
}

/// User + system CPU of a process, from /proc (clock ticks of 10 ms on Linux).
fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces, closed by the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Whether an answer reports a failure: an HTTP status ≥ 400, or failed batch items.
fn failures_in(body: &[u8]) -> (bool, usize) {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (false, 0);
    };
    let status_failed = doc["statusCode"].as_u64().is_some_and(|s| s >= 400);
    let items = doc["batchItemFailures"].as_array().map_or(0, Vec::len);
    (status_failed || items > 0, items)
}

/// The Runtime API's routes over one session: events out, answers and errors in.
fn runtime_api(
    session: &Arc<Mutex<Session>>,
    done: &Arc<Notify>,
    until: &Arc<dyn Fn(&Session) -> bool + Send + Sync>,
) -> axum::Router {
    let (s_next, s_resp, s_err) = (
        Arc::clone(session),
        Arc::clone(session),
        Arc::clone(session),
    );
    let (d_next, d_resp, d_err) = (Arc::clone(done), Arc::clone(done), Arc::clone(done));
    let (u_next, u_resp, u_err) = (Arc::clone(until), Arc::clone(until), Arc::clone(until));
    axum::Router::new()
        .route(
            "/2018-06-01/runtime/invocation/next",
            get(move || {
                let (session, done, until) = (
                    Arc::clone(&s_next),
                    Arc::clone(&d_next),
                    Arc::clone(&u_next),
                );
                async move {
                    let next = {
                        let mut s = session.lock().expect("lock");
                        s.first_poll.get_or_insert_with(Instant::now);
                        // The process is idle, waiting for this answer: a clean moment to read
                        // its CPU.
                        if let Some(pid) = s.pid {
                            if s.served == s.warmup && s.cpu_at_warmup.is_none() {
                                s.cpu_at_warmup = cpu_of(pid);
                            }
                            if s.queue.is_empty() && s.cpu_at_end.is_none() {
                                s.cpu_at_end = cpu_of(pid);
                            }
                        }
                        let next = s.queue.pop_front();
                        if next.is_some() {
                            s.served += 1;
                            s.handed_at = Some(Instant::now());
                        }
                        if until(&s) {
                            done.notify_one();
                        }
                        next.map(|e| (s.served, e))
                    };
                    match next {
                        Some((id, event)) => (invocation_headers(id), event),
                        // Nothing left: wait, as the service does between invocations.
                        None => std::future::pending().await,
                    }
                }
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(move |body: Bytes| async move {
                let mut s = s_resp.lock().expect("lock");
                let now = Instant::now();
                s.first_answer.get_or_insert(now);
                if let Some(at) = s.handed_at.take() {
                    s.walls.push(now.duration_since(at));
                }
                let (failed, items) = failures_in(&body);
                s.errors += usize::from(failed);
                s.failed_items += items;
                if u_resp(&s) {
                    d_resp.notify_one();
                }
                StatusCode::ACCEPTED
            }),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(move |body: Bytes| async move {
                let mut s = s_err.lock().expect("lock");
                if s.errors < 3 {
                    let text = String::from_utf8_lossy(&body);
                    eprintln!(
                        "invocation error: {}",
                        text.chars().take(600).collect::<String>()
                    );
                }
                let now = Instant::now();
                s.first_answer.get_or_insert(now);
                if let Some(at) = s.handed_at.take() {
                    s.walls.push(now.duration_since(at));
                }
                s.errors += 1;
                if u_err(&s) {
                    d_err.notify_one();
                }
                StatusCode::ACCEPTED
            }),
        )
        .route(
            "/2018-06-01/runtime/init/error",
            post(|body: Bytes| async move {
                eprintln!("init error: {}", String::from_utf8_lossy(&body));
                StatusCode::ACCEPTED
            }),
        )
}

/// Spawns the function against a Runtime API that serves `events`; returns when `until` says
/// the session is done (or after the timeout), with the session and the time it was spawned.
async fn serve(
    args: &Args,
    events: Vec<Bytes>,
    until: impl Fn(&Session) -> bool + Send + Sync + 'static,
) -> anyhow::Result<(Session, Instant)> {
    let session = Arc::new(Mutex::new(Session {
        queue: events.into(),
        warmup: args.warmup,
        ..Session::default()
    }));
    let done = Arc::new(Notify::new());
    let until: Arc<dyn Fn(&Session) -> bool + Send + Sync> = Arc::new(until);
    let app = runtime_api(&session, &done, &until);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    let runtime_api = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut command = tokio::process::Command::new(&args.bin);
    // Lambda's environment, not this shell's: the function gets the AWS variables (credentials,
    // region, endpoint, which Lambda sets too), the few a runtime sets, and its own `--env`s.
    // A shell's SSL_CERT_FILE or AWS_CA_BUNDLE, proxies or language settings would change what
    // it does at start.
    command
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| {
            name.to_str().is_some_and(|n| {
                (n.starts_with("AWS_") && n != "AWS_CA_BUNDLE")
                    || matches!(n, "PATH" | "LANG" | "TZ" | "LD_LIBRARY_PATH")
            })
        }));
    command
        .args(&args.extra)
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            args.memory_mb.to_string(),
        )
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_LEVEL", "error")
        .stdout(appending(args.stdout.as_deref())?)
        .stderr(appending(args.stderr.as_deref())?)
        .kill_on_drop(true);
    if let Some(dir) = &args.cwd {
        command.current_dir(dir);
    }
    // Where the function's AWS requests go: this process's, unless an `--env` names another.
    let mut endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    for pair in &args.envs {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair}: expected KEY=VALUE"))?;
        command.env(k, v);
        if k == "AWS_ENDPOINT_URL" {
            endpoint = Some(v.to_owned());
        }
    }
    let mut front = None;
    if args.front == Front::KeepAlive {
        let upstream = endpoint
            .context("--front keep-alive needs AWS_ENDPOINT_URL (in --env or the environment)")?;
        let (url, task) = keep_alive_front(upstream).await?;
        command.env("AWS_ENDPOINT_URL", url);
        front = Some(task);
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {}", args.bin.display()))?;
    session.lock().expect("lock").pid = child.id();
    // A function whose init fails exits (Lambda would report an init error): say so rather
    // than wait for an answer that cannot come.
    let finished = tokio::select! {
        finished = tokio::time::timeout(Duration::from_secs(1800), done.notified()) => finished,
        status = child.wait() => {
            runtime_api.abort();
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            anyhow::bail!("{} exited ({status}) before it finished; its stderr tells why", args.bin.display());
        }
    };
    let peak = child.id().and_then(peak_rss_kb);
    if let (true, Some(pid)) = (args.term, child.id()) {
        tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    }
    let _ = child.kill().await;
    runtime_api.abort();
    if let Some(front) = front {
        front.abort();
    }
    finished.context("the function did not finish in time")?;
    let mut s = std::mem::take(&mut *session.lock().expect("lock"));
    s.peak_rss_kb = peak;
    Ok((s, started))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One process per run; run `i` gets event `i` (cycling), so a webhook is new to each run.
async fn cold(args: &Args, events: &[Bytes]) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(args.runs);
    let mut inits = Vec::with_capacity(args.runs);
    let mut errors = 0;
    for run in 0..args.runs {
        let event = events[run % events.len()].clone();
        let (s, started) = serve(args, vec![event], |s| s.first_answer.is_some()).await?;
        errors += s.errors;
        let at = s.first_answer.context("no answer")?;
        times.push(ms(at.duration_since(started)));
        inits.push(ms(s.first_poll.context("no poll")?.duration_since(started)));
    }
    times.sort_by(f64::total_cmp);
    inits.sort_by(f64::total_cmp);
    let size = std::fs::metadata(&args.bin).map_or(0, |m| m.len());
    let median = times[times.len() / 2];
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "binary": args.bin.display().to_string(), "size_bytes": size, "runs": times.len(), "errors": errors,
                "ms": { "min": times[0], "median": median, "max": times[times.len() - 1] },
                "init_ms": { "min": inits[0], "median": inits[inits.len() / 2], "max": inits[inits.len() - 1] } })
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

async fn warm(args: &Args, events: Vec<Bytes>) -> anyhow::Result<()> {
    let total = events.len();
    anyhow::ensure!(
        total > args.warmup,
        "{total} events: more than --warmup {} needed",
        args.warmup
    );
    let (s, _) = serve(args, events, move |s| s.cpu_at_end.is_some()).await?;
    let measured = total - args.warmup;
    let cpu = s
        .cpu_at_end
        .zip(s.cpu_at_warmup)
        .map(|(end, start)| end.saturating_sub(start))
        .context("the function's CPU time could not be read")?;
    let mut walls: Vec<f64> = s.walls[args.warmup..].iter().copied().map(ms).collect();
    walls.sort_by(f64::total_cmp);
    let pct = |per_mille: usize| walls[(walls.len() - 1) * per_mille / 1000];
    let mean = walls.iter().sum::<f64>() / walls.len() as f64;
    let report = serde_json::json!({
        "bootstrap": args.bin.display().to_string(),
        "invocations": measured,
        "warmup": args.warmup,
        "errors": s.errors,
        "failed_items": s.failed_items,
        "cpu_ms_total": ms(cpu),
        "cpu_ms_per_invocation": ms(cpu) / measured as f64,
        "wall_ms": { "mean": mean, "p50": pct(500), "p99": pct(990) },
        "peak_rss_kb": s.peak_rss_kb,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{}: {measured} invocations, CPU {:.3} ms each ({:.0} ms in all), wall p50 {:.2} ms p99 {:.2} ms, {} errors",
            args.bin.display(),
            ms(cpu) / measured as f64,
            ms(cpu),
            pct(500),
            pct(990),
            s.errors
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let events: Vec<Bytes> = match (&args.event, &args.events) {
        (Some(path), _) => vec![Bytes::from(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )],
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Bytes::from(l.to_owned()))
            .collect(),
        (None, None) => anyhow::bail!("--event or --events is required"),
    };
    if args.warm {
        warm(&args, events).await
    } else {
        anyhow::ensure!(!events.is_empty(), "no event");
        cold(&args, &events).await
    }
}

/// Where one of the function's output streams goes: appended to `path`, or discarded.
fn appending(path: Option<&std::path::Path>) -> anyhow::Result<std::process::Stdio> {
    Ok(match path {
        Some(path) => std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?
            .into(),
        None => std::process::Stdio::null(),
    })
}
