//! A front for moto's server that loses answers as a network does. A request it matches is
//! carried out by moto, and then its answer is lost: replaced by a 500 (as DynamoDB answers a
//! request it may or may not have carried out), or never sent at all (a connection that died
//! on the way back). The SDK's own retry then meets what the first attempt did. Every other
//! request passes through unchanged.

use std::future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;

/// How a matched request's answer is lost.
#[derive(Clone, Copy)]
pub enum Loss {
    /// Carried out, then answered `500 InternalServerError`.
    ServerError,
    /// Carried out, then never answered: the connection stays open and silent.
    Silence,
}

pub struct LossyFront {
    /// `http://127.0.0.1:{port}`
    pub url: String,
    state: Arc<Front>,
}

struct Front {
    upstream: Arc<String>,
    /// The DynamoDB operation matched (`PutItem`), and a text its body must hold.
    operation: String,
    holding: String,
    loss: Loss,
    /// How many writes lose their answer, from the first: each write's first request does,
    /// and the SDK's retry of it (the next matching request) passes.
    times: usize,
    seen: AtomicUsize,
}

impl LossyFront {
    /// In front of moto's server: the first `times` `operation` requests whose body holds
    /// `holding` lose their answer by `loss`, each followed by the SDK's retry, which passes
    /// (matching requests 0, 2, 4, … lose theirs).
    pub async fn start(operation: &str, holding: &str, loss: Loss, times: usize) -> Self {
        let state = Arc::new(Front {
            upstream: Arc::new(super::moto_url().trim_end_matches('/').to_owned()),
            operation: operation.to_owned(),
            holding: holding.to_owned(),
            loss,
            times,
            seen: AtomicUsize::new(0),
        });
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&state));
        let url = super::listing::serve(app).await;
        Self { url, state }
    }

    /// Matching requests seen so far, every attempt counted.
    pub fn seen(&self) -> usize {
        self.state.seen.load(Ordering::SeqCst)
    }
}

async fn answer(State(front): State<Arc<Front>>, request: Request) -> Response {
    let is_operation = super::tls::dynamodb_operation(&request) == Some(front.operation.as_str());
    let upstream = State(Arc::clone(&front.upstream));
    if !is_operation {
        return super::tls::forward(upstream, request).await;
    }
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 16 << 20).await.expect("request body");
    let request = Request::from_parts(parts, Body::from(body.clone()));
    let matches = String::from_utf8_lossy(&body).contains(&front.holding);
    let lost = matches && {
        let n = front.seen.fetch_add(1, Ordering::SeqCst);
        n % 2 == 0 && n / 2 < front.times
    };
    if !lost {
        return super::tls::forward(upstream, request).await;
    }
    // Carried out; only the answer is lost.
    let _ = super::tls::forward(upstream, request).await;
    match front.loss {
        Loss::ServerError => Response::builder()
            .status(500)
            .header("content-type", "application/x-amz-json-1.0")
            .body(Body::from(
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
            ))
            .expect("response"),
        Loss::Silence => future::pending().await,
    }
}
