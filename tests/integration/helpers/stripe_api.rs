//! A loopback server shaped like Stripe's `GET /v1/events`: newest first, `created[gte]`,
//! `types[i]`, `limit`, `starting_after`, `has_more`; it can answer 429 first, and records each
//! query. And `GET /v1/webhook_endpoints/{id}` with each endpoint's `enabled_events`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::listing::{authorization, page_after, serve};

#[derive(Default)]
struct State {
    /// Newest first.
    events: Vec<Value>,
    queries: Vec<BTreeMap<String, String>>,
    auth: Vec<String>,
    /// When each request arrived.
    arrivals: Vec<std::time::Instant>,
    /// The next requests answered 429, each with its `Retry-After` in seconds, if any.
    throttle: VecDeque<Option<u64>>,
    /// Each webhook endpoint's `enabled_events`.
    endpoints: BTreeMap<String, Vec<String>>,
    /// The endpoints read, in order.
    endpoint_reads: Vec<String>,
    /// Endpoints whose `status` is `disabled`.
    disabled: Vec<String>,
}

#[derive(Clone)]
pub struct StripeApi {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl StripeApi {
    pub async fn start(events: Vec<Value>) -> Self {
        let mut events = events;
        events.sort_by(|a, b| {
            b["created"]
                .as_i64()
                .cmp(&a["created"].as_i64())
                .then_with(|| b["id"].as_str().cmp(&a["id"].as_str()))
        });
        let state = Arc::new(Mutex::new(State {
            events,
            ..State::default()
        }));
        let (shared, endpoints) = (Arc::clone(&state), Arc::clone(&state));
        let app = axum::Router::new()
            .route(
                "/v1/events",
                axum::routing::get(
                    move |Query(query): Query<BTreeMap<String, String>>, headers: HeaderMap| {
                        let state = Arc::clone(&shared);
                        async move { list(&state, &query, &headers) }
                    },
                ),
            )
            .route(
                "/v1/webhook_endpoints/{id}",
                axum::routing::get(move |Path(id): Path<String>| {
                    let state = Arc::clone(&endpoints);
                    async move { endpoint(&state, &id) }
                }),
            );
        let url = serve(app).await;
        Self { url, state }
    }

    /// The next `n` requests are answered 429.
    pub fn throttle(&self, n: usize) {
        self.state
            .lock()
            .expect("lock")
            .throttle
            .extend(std::iter::repeat_n(None, n));
    }

    /// The next request is answered 429 with `Retry-After: {secs}`.
    pub fn throttle_for(&self, secs: u64) {
        self.state
            .lock()
            .expect("lock")
            .throttle
            .push_back(Some(secs));
    }

    /// When each request arrived.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.state.lock().expect("lock").arrivals.clone()
    }

    /// A webhook endpoint `id` sent `enabled_events` (`*`: every type).
    pub fn add_endpoint(&self, id: &str, enabled_events: &[&str]) {
        self.state.lock().expect("lock").endpoints.insert(
            id.to_owned(),
            enabled_events.iter().map(|e| (*e).to_owned()).collect(),
        );
    }

    /// Stripe disables endpoint `id` (as it does after days of failed deliveries).
    pub fn disable_endpoint(&self, id: &str) {
        self.state
            .lock()
            .expect("lock")
            .disabled
            .push(id.to_owned());
    }

    /// The webhook endpoints read, in order.
    pub fn endpoint_reads(&self) -> Vec<String> {
        self.state.lock().expect("lock").endpoint_reads.clone()
    }

    pub fn queries(&self) -> Vec<BTreeMap<String, String>> {
        self.state.lock().expect("lock").queries.clone()
    }

    pub fn auth(&self) -> Vec<String> {
        self.state.lock().expect("lock").auth.clone()
    }
}

fn endpoint(state: &Mutex<State>, id: &str) -> Response {
    let mut state = state.lock().expect("lock");
    let enabled = state.endpoints.get(id).cloned();
    state.endpoint_reads.push(id.to_owned());
    let status = if state.disabled.iter().any(|d| d == id) {
        "disabled"
    } else {
        "enabled"
    };
    match enabled {
        Some(enabled) => axum::Json(json!({
            "id": id,
            "object": "webhook_endpoint",
            "enabled_events": enabled,
            "status": status,
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}}),
            ),
        )
            .into_response(),
    }
}

fn list(state: &Mutex<State>, query: &BTreeMap<String, String>, headers: &HeaderMap) -> Response {
    let mut state = state.lock().expect("lock");
    state.queries.push(query.clone());
    state.auth.push(authorization(headers));
    state.arrivals.push(std::time::Instant::now());
    if let Some(retry_after) = state.throttle.pop_front() {
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": {"type": "rate_limit_error"}})),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                secs.to_string().parse().expect("a header value"),
            );
        }
        return response;
    }
    let since: i64 = query
        .get("created[gte]")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // `types[0]`, `types[1]`, …: the events of those types only, as Stripe does.
    let types: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k.starts_with("types["))
        .map(|(_, v)| v.as_str())
        .collect();
    let matching: Vec<&Value> = state
        .events
        .iter()
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= since)
        .filter(|e| types.is_empty() || types.contains(&e["type"].as_str().unwrap_or_default()))
        .collect();
    let (page, has_more) = page_after(&matching, "id", query.get("starting_after"), limit);
    axum::Json(json!({ "object": "list", "url": "/v1/events", "has_more": has_more, "data": page }))
        .into_response()
}
