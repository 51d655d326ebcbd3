//! The local HTTP surface: the ingress route and the status page.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use futures_util::StreamExt;
use plumbline::ingress::{Reply, WebhookRequest, reply};

use super::{App, ops};

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/webhooks/{source}", any(webhook))
        .route("/ops", get(ops_page))
        .route("/ops/status", get(ops_status))
        .route("/ops/events/{id}", get(event_page))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn webhook(
    State(app): State<Arc<App>>,
    method: Method,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // One byte past the limit is enough for the ingress to answer its 413 and count it; the
    // rest of an oversized body is never read into memory.
    let cap = app.config.ingress.max_body_bytes.saturating_add(1);
    let Ok((body, rest)) = read_capped(body, cap).await else {
        return (
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )
            .into_response();
    };
    let request_id = ulid::Ulid::new().to_string();
    let request = WebhookRequest {
        method: &method,
        source: &source,
        headers: &headers,
        body: &body,
        request_id: Some(&request_id),
    };
    let response = into_response(reply(&app.ingress.handle(request).await));
    if let Some(rest) = rest {
        discard(rest, DISCARD_BYTES).await;
    }
    response
}

/// How much of an oversized body is read and thrown away before the 413 goes out: as much as
/// API Gateway itself accepts (10 MB). A client that sends its whole body before it reads the
/// answer (Python's `http.client`, many webhook senders) then gets the 413; closing on unread
/// bytes would have reset the connection under it instead. Past this, the connection closes.
const DISCARD_BYTES: usize = 10 * 1024 * 1024;

/// The body's first `cap` bytes or more (whole chunks), or all of it when shorter; with the
/// unread rest of the stream when the body reached `cap`.
async fn read_capped(
    body: Body,
    cap: usize,
) -> Result<(Bytes, Option<BodyDataStream>), axum::Error> {
    let mut stream = body.into_data_stream();
    let Some(first) = stream.next().await.transpose()? else {
        return Ok((Bytes::new(), None));
    };
    if first.len() >= cap {
        return Ok((first, Some(stream)));
    }
    let mut buf = Vec::from(first);
    while buf.len() < cap {
        match stream.next().await.transpose()? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => return Ok((Bytes::from(buf), None)),
        }
    }
    Ok((Bytes::from(buf), Some(stream)))
}

/// Reads and drops up to `limit` more bytes of `stream`, one chunk at a time.
async fn discard(mut stream: BodyDataStream, limit: usize) {
    let mut read = 0_usize;
    while read < limit {
        match stream.next().await {
            Some(Ok(chunk)) => read = read.saturating_add(chunk.len()),
            Some(Err(_)) | None => return,
        }
    }
}

fn into_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, reply.content_type)],
        reply.body,
    )
        .into_response()
}

async fn ops_status(State(app): State<Arc<App>>) -> Response {
    match ops::status(&app).await {
        Ok(status) => axum::Json(status).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}

async fn ops_page(State(app): State<Arc<App>>) -> Response {
    match ops::status(&app).await {
        Ok(status) => Html(ops::render(&status)).into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}

async fn event_page(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.store.timeline(&id).await {
        Ok(Some(timeline)) => Html(ops::render_timeline(&timeline)).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such event").into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    }
}
