//! HTTP plumbing: errors as `{"error", "detail"}` JSON, a strict JSON extractor whose
//! rejections are 4xx with a message, health, and serving with graceful shutdown and metrics.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::TcpListener;

/// An error answer. Client errors carry their message; server errors are opaque to the
/// client and logged with their cause.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub detail: serde_json::Value,
    /// Seconds after which the client may try again (`Retry-After`), for a refusal under load.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self { status, error: error.into(), detail: serde_json::Value::Null, retry_after: None }
    }
    /// 503 with `Retry-After`: too busy now, come back in `seconds`.
    pub fn busy(msg: impl Into<String>, seconds: u64) -> Self {
        Self::unavailable(msg).with_retry_after(seconds)
    }
    /// Answer with `Retry-After: <seconds>`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, msg)
    }
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, msg)
    }
    /// Log the cause, answer an opaque 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({ "error": self.error, "detail": self.detail }));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(format!("{e:#}"))
    }
}

impl From<domain::values::InvalidValue> for ApiError {
    fn from(e: domain::values::InvalidValue) -> Self {
        ApiError::unprocessable(e.to_string()).with_detail(json!({ "field": e.field }))
    }
}

/// JSON body extractor: malformed JSON, wrong types, unknown fields (with
/// `#[serde(deny_unknown_fields)]`) and a missing content type become 4xx with a message.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = match &rejection {
        JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    // The body text names the field and what was wrong with it.
    ApiError::new(status, rejection.body_text())
}

/// JSON success answer with a status.
pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

/// `GET /health` answering 200 `{"status":"up"}`, merged into a service's router.
pub fn health() -> Router {
    Router::new().route("/health", get(|| async { axum::Json(json!({ "status": "up" })) }))
}

/// Serve until `shutdown` resolves, with `GET /metrics` and request metrics added. Handlers
/// and layers can read the peer address as `ConnectInfo<SocketAddr>` (the gateway's rate
/// limit counts by it). Every request runs in a server span that continues the caller's trace
/// (its `traceparent` header), and every answer names the trace in `X-Trace-Id`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, router, shutdown, Trust::Caller).await
}

/// Like [`serve`] for the public entry point: a client's `traceparent` is not trusted, every
/// request starts a trace of its own.
pub async fn serve_edge(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, router, shutdown, Trust::Nobody).await
}

/// Whose `traceparent` a server span continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Another of our services: continue its trace.
    Caller,
    /// The public entry point: every request starts a trace of its own.
    Nobody,
}

pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    trust: Trust,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let router = router
        .merge(crate::metrics::router())
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| trace_request(trust, request, next)))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024));
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Run the request in a server span named after its route; answer with its trace id.
async fn trace_request(trust: Trust, request: Request, next: Next) -> Response {
    use crate::telemetry;
    use tracing::Instrument;
    use tracing::field::Empty;
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    if route == "/metrics" {
        // Scrapes are not traced: they would bury the traces of real requests.
        return next.run(request).await;
    }
    let method = request.method().clone();
    let span = tracing::info_span!(
        "http request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        trace_id = Empty,
        span_id = Empty,
        correlation_id = Empty,
    );
    let parent = match trust {
        Trust::Caller => telemetry::context_from_headers(request.headers()),
        Trust::Nobody => opentelemetry::Context::new(),
    };
    telemetry::adopt(&span, parent);
    let trace_id = telemetry::ids_of(&span).map(|(trace_id, _)| trace_id);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    if let Some(value) = trace_id.and_then(|t| axum::http::HeaderValue::from_str(&t).ok()) {
        response.headers_mut().insert(telemetry::TRACE_ID_HEADER, value);
    }
    response
}

/// Parse a path id, answering 404 for anything that is not one (it names nothing).
pub fn path_id<T>(raw: &str, parse: impl Fn(&str) -> Result<T, domain::values::InvalidValue>) -> Result<T, ApiError> {
    parse(raw).map_err(|_| ApiError::not_found(format!("no such resource: {raw:?} is not a valid id")))
}
