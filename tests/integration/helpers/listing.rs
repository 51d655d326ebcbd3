//! What the loopback provider APIs share: the authorization a request came with, and a page of
//! a list after a cursor (the id of the last event the caller saw).

use axum::http::HeaderMap;
use serde_json::Value;

/// Serves `app` on a free loopback port, for the test's life; its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

pub fn authorization(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Up to `size` of `ordered` after the one whose `id_field` is `after` (from the start without
/// it), and whether more follow.
pub fn page_after(
    ordered: &[&Value],
    id_field: &str,
    after: Option<&String>,
    size: usize,
) -> (Vec<Value>, bool) {
    let start = after
        .and_then(|after| {
            ordered
                .iter()
                .position(|e| e[id_field] == after.as_str())
                .map(|i| i + 1)
        })
        .unwrap_or(0);
    let page: Vec<Value> = ordered
        .iter()
        .skip(start)
        .take(size)
        .map(|e| (*e).clone())
        .collect();
    let more = start + page.len() < ordered.len();
    (page, more)
}
