//! A loopback server shaped like Paddle Billing's `GET /events`: `order_by=id[ASC|DESC]`,
//! `event_type` (comma-separated), `per_page`, `after` (an event id),
//! `meta.pagination.has_more`; no time filter. It records
//! each query and the authorization it came with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::Query;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::listing::{authorization, page_after, serve};

#[derive(Default)]
struct State {
    /// By event id, ascending.
    events: Vec<Value>,
    queries: Vec<BTreeMap<String, String>>,
    auth: Vec<String>,
}

#[derive(Clone)]
pub struct PaddleApi {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl PaddleApi {
    pub async fn start(mut events: Vec<Value>) -> Self {
        events.sort_by(|a, b| a["event_id"].as_str().cmp(&b["event_id"].as_str()));
        let state = Arc::new(Mutex::new(State {
            events,
            ..State::default()
        }));
        let shared = Arc::clone(&state);
        let app = axum::Router::new().route(
            "/events",
            axum::routing::get(
                move |Query(query): Query<BTreeMap<String, String>>, headers: HeaderMap| {
                    let state = Arc::clone(&shared);
                    async move { list(&state, query, &headers) }
                },
            ),
        );
        let url = serve(app).await;
        Self { url, state }
    }

    pub fn queries(&self) -> Vec<BTreeMap<String, String>> {
        self.state.lock().expect("lock").queries.clone()
    }

    pub fn auth(&self) -> Vec<String> {
        self.state.lock().expect("lock").auth.clone()
    }
}

fn list(
    state: &Mutex<State>,
    query: BTreeMap<String, String>,
    headers: &HeaderMap,
) -> axum::Json<Value> {
    let mut state = state.lock().expect("lock");
    state.auth.push(authorization(headers));
    // `event_type`: a comma-separated list, as Paddle takes it.
    let types: Option<Vec<&str>> = query.get("event_type").map(|t| t.split(',').collect());
    let mut ordered: Vec<&Value> = state
        .events
        .iter()
        .filter(|e| {
            types
                .as_ref()
                .is_none_or(|ts| ts.contains(&e["event_type"].as_str().unwrap_or_default()))
        })
        .collect();
    if query.get("order_by").map(String::as_str) == Some("id[DESC]") {
        ordered.reverse();
    }
    let per_page: usize = query
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (page, has_more) = page_after(&ordered, "event_id", query.get("after"), per_page);
    let total = ordered.len();
    state.queries.push(query);
    axum::Json(json!({
        "data": page,
        "meta": {
            "request_id": "req_test",
            "pagination": { "per_page": per_page, "has_more": has_more, "estimated_total": total }
        }
    }))
}
