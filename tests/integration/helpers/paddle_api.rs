//! A loopback server shaped like Paddle Billing's `GET /events`: `order_by=id[ASC|DESC]`,
//! `event_type` (comma-separated), `per_page`, `after` (an event id),
//! `meta.pagination.has_more`; no time filter. And `GET /notifications` (`status`, `from`,
//! `notification_setting_id`), and `GET /notification-settings/{id}` with each destination's
//! `subscribed_events`. It records each query and the authorization it came with.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::listing::{authorization, page_after, serve};

#[derive(Default)]
struct State {
    /// By event id, ascending.
    events: Vec<Value>,
    /// By notification id, ascending.
    notifications: Vec<Value>,
    queries: Vec<BTreeMap<String, String>>,
    notification_queries: Vec<BTreeMap<String, String>>,
    auth: Vec<String>,
    /// Each notification destination's subscribed event types.
    settings: BTreeMap<String, Vec<String>>,
    /// The destinations read, in order.
    setting_reads: Vec<String>,
    /// Destinations that are not `active`.
    inactive: Vec<String>,
}

#[derive(Clone)]
pub struct PaddleApi {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl PaddleApi {
    pub async fn start(events: Vec<Value>) -> Self {
        Self::with_notifications(events, Vec::new()).await
    }

    /// Also serves `GET /notifications` over `notifications` (see [`notification`]).
    pub async fn with_notifications(mut events: Vec<Value>, mut notifications: Vec<Value>) -> Self {
        events.sort_by(|a, b| a["event_id"].as_str().cmp(&b["event_id"].as_str()));
        notifications.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        let state = Arc::new(Mutex::new(State {
            events,
            notifications,
            ..State::default()
        }));
        let (events_state, notifications_state, settings_state) =
            (Arc::clone(&state), Arc::clone(&state), Arc::clone(&state));
        let app = axum::Router::new()
            .route(
                "/events",
                axum::routing::get(
                    move |Query(query): Query<BTreeMap<String, String>>, headers: HeaderMap| {
                        let state = Arc::clone(&events_state);
                        async move { list(&state, query, &headers) }
                    },
                ),
            )
            .route(
                "/notifications",
                axum::routing::get(
                    move |Query(query): Query<BTreeMap<String, String>>, headers: HeaderMap| {
                        let state = Arc::clone(&notifications_state);
                        async move { list_notifications(&state, query, &headers) }
                    },
                ),
            )
            .route(
                "/notification-settings/{id}",
                axum::routing::get(move |Path(id): Path<String>| {
                    let state = Arc::clone(&settings_state);
                    async move { setting(&state, &id) }
                }),
            );
        let url = serve(app).await;
        Self { url, state }
    }

    pub fn notification_queries(&self) -> Vec<BTreeMap<String, String>> {
        self.state
            .lock()
            .expect("lock")
            .notification_queries
            .clone()
    }

    /// A notification destination `id` subscribed to `events`.
    pub fn add_setting(&self, id: &str, events: &[&str]) {
        self.state.lock().expect("lock").settings.insert(
            id.to_owned(),
            events.iter().map(|e| (*e).to_owned()).collect(),
        );
    }

    /// Destination `id` is deactivated.
    pub fn deactivate(&self, id: &str) {
        self.state
            .lock()
            .expect("lock")
            .inactive
            .push(id.to_owned());
    }

    /// The notification destinations read, in order.
    pub fn setting_reads(&self) -> Vec<String> {
        self.state.lock().expect("lock").setting_reads.clone()
    }

    pub fn queries(&self) -> Vec<BTreeMap<String, String>> {
        self.state.lock().expect("lock").queries.clone()
    }

    pub fn auth(&self) -> Vec<String> {
        self.state.lock().expect("lock").auth.clone()
    }
}

fn setting(state: &Mutex<State>, id: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut state = state.lock().expect("lock");
    let events = state.settings.get(id).cloned();
    state.setting_reads.push(id.to_owned());
    let Some(events) = events else {
        return (
            http::StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"type": "request_error", "code": "not_found"}})),
        )
            .into_response();
    };
    let subscribed: Vec<Value> = events.iter().map(|name| json!({ "name": name })).collect();
    let active = !state.inactive.iter().any(|i| i == id);
    axum::Json(json!({
        "data": { "id": id, "type": "url", "active": active, "subscribed_events": subscribed },
        "meta": { "request_id": "req_test" }
    }))
    .into_response()
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
    let ordered: Vec<&Value> = state
        .events
        .iter()
        .filter(|e| {
            types
                .as_ref()
                .is_none_or(|ts| ts.contains(&e["event_type"].as_str().unwrap_or_default()))
        })
        .collect();
    let total = ordered.len();
    let (page, per_page, has_more) = ordered_page(ordered, "event_id", &query);
    state.queries.push(query);
    axum::Json(json!({
        "data": page,
        "meta": {
            "request_id": "req_test",
            "pagination": { "per_page": per_page, "has_more": has_more, "estimated_total": total }
        }
    }))
}

/// The page `query` asks for of `items` (in id order): `order_by`, `per_page` (50 unless
/// given) and `after` (an `id_field` value), with the page size and whether more follow.
fn ordered_page(
    mut items: Vec<&Value>,
    id_field: &str,
    query: &BTreeMap<String, String>,
) -> (Vec<Value>, usize, bool) {
    if query.get("order_by").map(String::as_str) == Some("id[DESC]") {
        items.reverse();
    }
    let per_page: usize = query
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (page, has_more) = page_after(&items, id_field, query.get("after"), per_page);
    (page, per_page, has_more)
}

/// The notification destination [`notification`] makes notifications for.
pub const DESTINATION: &str = "ntfset_01plumbline";

/// A notification of `event` (as the events list has it) with `status`, made when it occurred:
/// its payload is the event with the notification's id, as the webhook carried it.
pub fn notification(id: &str, event: &Value, status: &str) -> Value {
    let mut payload = event.clone();
    payload["notification_id"] = json!(id);
    json!({
        "id": id,
        "type": event["event_type"],
        "status": status,
        "payload": payload,
        "occurred_at": event["occurred_at"],
        "notification_setting_id": DESTINATION,
    })
}

/// `GET /notifications`: `status` (comma-separated) and `from` (RFC 3339, against
/// `occurred_at`) filter; `order_by`, `per_page` and `after` (a notification id) as for events.
fn list_notifications(
    state: &Mutex<State>,
    query: BTreeMap<String, String>,
    headers: &HeaderMap,
) -> axum::Json<Value> {
    let mut state = state.lock().expect("lock");
    state.auth.push(authorization(headers));
    let statuses: Option<Vec<&str>> = query.get("status").map(|s| s.split(',').collect());
    let destinations: Option<Vec<&str>> = query
        .get("notification_setting_id")
        .map(|s| s.split(',').collect());
    let from = query
        .get("from")
        .map(|f| plumbline::contract::Timestamp::parse(f).expect("`from` is RFC 3339"));
    let ordered: Vec<&Value> = state
        .notifications
        .iter()
        .filter(|n| {
            statuses
                .as_ref()
                .is_none_or(|ss| ss.contains(&n["status"].as_str().unwrap_or_default()))
        })
        .filter(|n| {
            destinations.as_ref().is_none_or(|ds| {
                ds.contains(&n["notification_setting_id"].as_str().unwrap_or_default())
            })
        })
        .filter(|n| {
            let at = n["occurred_at"]
                .as_str()
                .and_then(plumbline::contract::Timestamp::parse);
            from.is_none_or(|from| at.is_some_and(|at| at >= from))
        })
        .collect();
    let (page, per_page, has_more) = ordered_page(ordered, "id", &query);
    state.notification_queries.push(query);
    axum::Json(json!({
        "data": page,
        "meta": { "request_id": "req_test", "pagination": { "per_page": per_page, "has_more": has_more } }
    }))
}
