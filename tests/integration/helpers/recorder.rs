//! A real HTTP server on loopback standing in for a target (ERP, CRM): it records every request
//! and answers from a script, then with a default.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Option<Reply>,
    by_path: BTreeMap<String, Reply>,
    /// While set and not yet opened, answers wait (after the request is recorded).
    gate: Option<watch::Receiver<bool>>,
}

/// Holds the recorder's answers until `open`: a call the test can see arrive but not finish.
pub struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn open(&self) {
        self.0.send_replace(true);
    }
}

#[derive(Clone)]
pub struct Recorder {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Recorder {
    /// Starts on `127.0.0.1:0`; the server lives as long as the test's runtime.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&shared);
                async move {
                    let (response, gate) = answer(&state, &method, &uri, &headers, &body);
                    if let Some(mut gate) = gate {
                        gate.wait_for(|open| *open)
                            .await
                            .expect("the gate outlives the call");
                    }
                    response
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        Self { url, state }
    }

    /// The next answers, in order; after them, the default (200 unless set).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().expect("lock").script.extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.state.lock().expect("lock").default = Some(reply);
    }

    /// Answers every request to `path` with `reply`, ahead of the script.
    pub fn answer_path(&self, path: &str, reply: Reply) {
        self.state
            .lock()
            .expect("lock")
            .by_path
            .insert(path.to_owned(), reply);
    }

    /// Makes every answer from now on wait until the gate opens.
    pub fn hold(&self) -> Gate {
        let (open, gate) = watch::channel(false);
        self.state.lock().expect("lock").gate = Some(gate);
        Gate(open)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().expect("lock").requests.clone()
    }

    /// Each request's `Idempotency-Key`, in the order they came (empty where one had none).
    pub fn idempotency_keys(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| r.header("idempotency-key").unwrap_or_default().to_owned())
            .collect()
    }

    pub fn count(&self) -> usize {
        self.state.lock().expect("lock").requests.len()
    }
}

fn answer(
    state: &Mutex<State>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (Response, Option<watch::Receiver<bool>>) {
    let mut state = state.lock().expect("lock");
    state.requests.push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    let by_path = state.by_path.get(uri.path()).cloned();
    let reply = by_path
        .or_else(|| state.script.pop_front())
        .or_else(|| state.default.clone())
        .unwrap_or_else(|| Reply::status(200));
    let mut response = (
        StatusCode::from_u16(reply.status).expect("status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    (response, state.gate.clone())
}
