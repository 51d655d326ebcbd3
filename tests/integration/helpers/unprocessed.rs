//! A front for moto's server that answers `BatchGetItem` as a throttled DynamoDB does: the
//! request's keys come back as `UnprocessedKeys`, with no items. moto never throttles, so this
//! is how the SDK's real answer to throttling reaches the store's code. Every other request
//! passes through unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};

pub struct UnprocessedFront {
    /// `http://127.0.0.1:{port}`
    pub url: String,
    state: Arc<Front>,
}

struct Front {
    upstream: Arc<String>,
    /// How many `BatchGetItem` answers leave every key unprocessed, from the first.
    throttled: usize,
    batch_gets: AtomicUsize,
}

impl UnprocessedFront {
    /// In front of `upstream` (moto's `http://…`): the first `throttled` `BatchGetItem` answers
    /// process no key; later ones are moto's.
    pub async fn start(upstream: &str, throttled: usize) -> Self {
        let state = Arc::new(Front {
            upstream: Arc::new(upstream.trim_end_matches('/').to_owned()),
            throttled,
            batch_gets: AtomicUsize::new(0),
        });
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let url = super::listing::serve(app).await;
        Self { url, state }
    }

    /// `BatchGetItem` requests seen so far.
    pub fn batch_gets(&self) -> usize {
        self.state.batch_gets.load(Ordering::SeqCst)
    }
}

async fn answer(State(front): State<Arc<Front>>, request: Request) -> Response {
    let is_batch_get = super::tls::dynamodb_operation(&request) == Some("BatchGetItem");
    if !is_batch_get || front.batch_gets.fetch_add(1, Ordering::SeqCst) >= front.throttled {
        return super::tls::forward(State(Arc::clone(&front.upstream)), request).await;
    }
    let body = to_bytes(request.into_body(), 16 << 20)
        .await
        .expect("request body");
    let asked: Value = serde_json::from_slice(&body).expect("a BatchGetItem request");
    let tables = asked["RequestItems"].as_object().expect("RequestItems");
    let empty: serde_json::Map<String, Value> =
        tables.keys().map(|t| (t.clone(), json!([]))).collect();
    let answer = json!({ "Responses": empty, "UnprocessedKeys": asked["RequestItems"] });
    Response::builder()
        .header("content-type", "application/x-amz-json-1.0")
        .body(Body::from(answer.to_string()))
        .expect("response")
}
