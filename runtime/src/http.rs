//! HTTP plumbing: errors as `{"error", "detail"}` JSON, a strict JSON extractor whose
//! rejections are 4xx with a message, health, and serving with graceful shutdown and metrics.

pub use crate::error::ApiError;
use crate::identity::CallerKey;
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

/// Serve a service until `shutdown` resolves, with `GET /metrics` and request metrics added.
/// Every request but `/health` and `/metrics` must carry a caller token signed with `key`
/// ([`crate::identity::require_caller`]). Handlers and layers can read the peer address as
/// `ConnectInfo<SocketAddr>`. Every request runs in a server span that continues the caller's
/// trace (its `traceparent` header), and every answer names the trace in `X-Trace-Id`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    key: CallerKey,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, router, shutdown, Trust::Callers(key)).await
}

/// Like [`serve`] for the public entry point: a client's `traceparent` is not trusted, every
/// request starts a trace of its own, and callers prove themselves the entry point's own way.
pub async fn serve_edge(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, router, shutdown, Trust::Nobody).await
}

/// Whom a server trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Callers with a token signed with this key (our services and the gateway): every request
    /// needs one, and the caller's trace continues.
    Callers(CallerKey),
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
    let continue_traces = matches!(trust, Trust::Callers(_));
    let mut router = router.merge(crate::metrics::router());
    if let Trust::Callers(key) = trust {
        router = router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            crate::identity::require_caller(key.clone(), request, next)
        }));
    }
    let router = router
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn(move |request: Request, next: Next| {
            trace_request(continue_traces, request, next)
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(axum::extract::DefaultBodyLimit::max(256 * 1024));
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Run the request in a server span named after its route; answer with its trace id.
async fn trace_request(continue_traces: bool, request: Request, next: Next) -> Response {
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
    let parent = if continue_traces {
        telemetry::context_from_headers(request.headers())
    } else {
        opentelemetry::Context::new()
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
