//! The ingress Lambda function's adapter: API Gateway HTTP API (payload v2) request in,
//! [`plumbline::ingress`] use case, HTTP response out. Nothing else lives here.

use lambda_http::{Body, Request, RequestExt, Response};
use plumbline::ingress::{Ingress, Reply, WebhookRequest, reply};
use plumbline::ports::{Clock, EventQueue, Intake};
use plumbline::telemetry::Metrics;

/// Handles one invocation. Never returns an error to the runtime: every outcome is an answer.
pub async fn handle<S, Q, C, M>(ingress: &Ingress<S, Q, C, M>, request: Request) -> Response<Body>
where
    S: Intake<Q>,
    Q: EventQueue,
    C: Clock,
    M: Metrics,
{
    let source = source_of(&request);
    let request_id = request
        .lambda_context_ref()
        .map(|c| c.request_id.clone())
        .or_else(|| match request.request_context_ref() {
            Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
            _ => None,
        });
    let body: &[u8] = match request.body() {
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    };
    let req = WebhookRequest {
        method: request.method(),
        source: &source,
        headers: request.headers(),
        body,
        request_id: request_id.as_deref(),
    };
    let result = ingress.handle(req).await;
    into_response(reply(&result))
}

/// `{source}` from the route's path parameter, or from the raw path when invoked without one.
fn source_of(request: &Request) -> String {
    if let Some(source) = request
        .path_parameters_ref()
        .and_then(|p| p.first("source"))
    {
        return source.to_owned();
    }
    let path = request.raw_http_path();
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn into_response(reply: Reply) -> Response<Body> {
    Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type)
        .body(Body::Text(reply.body))
        .expect("a status code and a static header always build")
}
