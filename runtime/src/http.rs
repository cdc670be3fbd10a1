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
use std::net::SocketAddr;
use std::time::Duration;
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
    if continue_traces {
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await?;
    } else {
        serve_timed(listener, router, shutdown, EDGE_HEAD_TIMEOUT).await;
    }
    Ok(())
}

/// How long the public entry point waits for a request's head: from a connection's start, and
/// again from the end of each answer on a kept-alive connection. A client that sends nothing, or
/// its headers a byte at a time, is cut off then; so is a connection left idle, whose buffers the
/// gateway would otherwise keep for as long as the client pleased (after a burst, a thousand of
/// them). Longer than the 60 s a proxy in front (ingress-nginx, a cloud load balancer) keeps an
/// idle connection to us by default: a server closing a connection as its client reuses it would
/// fail that request, so the client's side must give up first. Our services' own servers have no
/// such limit, for the same reason: their callers' pools keep idle connections a minute or more.
pub const EDGE_HEAD_TIMEOUT: Duration = Duration::from_secs(75);

/// `axum::serve`, with hyper's header-read timeout, which needs a timer that axum does not set.
/// Ends when `shutdown` resolves and every open request has been answered.
async fn serve_timed(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    head_timeout: Duration,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::{Service, ServiceExt};
    // HTTP/1 only: hyper-util's server for both versions holds a connection until its first bytes
    // tell which it speaks, before the HTTP/1 side and its timeout start, so a silent one would be
    // kept forever. Nothing speaks HTTP/2 in the clear to the entry point (browsers do only over
    // TLS, which ends before it).
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(head_timeout);
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait for some to close, as axum's loop does.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let ready = ServiceExt::<SocketAddr>::ready(&mut make_service).await.unwrap_or_else(|never| match never {});
        let service = ready.call(peer).await.unwrap_or_else(|never| match never {});
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ConnectInfo;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    const REQUEST: &[u8] = b"GET /peer HTTP/1.1\r\nHost: edge\r\n\r\n";

    /// A server as the public entry point runs, answering `GET /peer` with the caller's address.
    async fn edge(head_timeout: Duration) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("its address");
        let router = Router::new()
            .route("/peer", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }));
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        (addr, stop, tokio::spawn(serve_timed(listener, router, shutdown, head_timeout)))
    }

    /// What the server sent until it closed the connection; None if it was still open after `within`.
    async fn until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
        let mut got = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut got)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_at_the_head_timeout() {
        let (addr, _stop, _server) = edge(Duration::from_millis(300)).await;
        let mut silent = TcpStream::connect(addr).await.expect("connected");
        let started = Instant::now();
        let sent = until_closed(&mut silent, Duration::from_secs(5)).await.expect("closed by the server");
        assert!(started.elapsed() >= Duration::from_millis(250), "closed after {:?}", started.elapsed());
        assert!(!sent.contains("200"), "{sent}");
    }

    #[tokio::test]
    async fn a_head_sent_too_slowly_is_cut_off() {
        let (addr, _stop, _server) = edge(Duration::from_millis(300)).await;
        let mut slow = TcpStream::connect(addr).await.expect("connected");
        slow.write_all(b"GET /peer HTTP/1.1\r\nHost: edge\r\n").await.expect("half a head");
        let sent = until_closed(&mut slow, Duration::from_secs(5)).await.expect("closed by the server");
        assert!(!sent.contains("200"), "{sent}");
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_answered_and_closed_once_idle_for_the_timeout() {
        let (addr, _stop, _server) = edge(Duration::from_millis(300)).await;
        let mut client = TcpStream::connect(addr).await.expect("connected");
        client.write_all(REQUEST).await.expect("a request");
        let sent = until_closed(&mut client, Duration::from_secs(5)).await.expect("closed by the server");
        assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
        // ConnectInfo reaches the handlers as with axum's own loop.
        assert!(sent.contains(&client.local_addr().expect("our address").to_string()), "{sent}");
    }

    #[tokio::test]
    async fn a_connection_in_use_is_not_cut_off() {
        let (addr, _stop, _server) = edge(Duration::from_millis(400)).await;
        let mut client = TcpStream::connect(addr).await.expect("connected");
        // Requests 250 ms apart, 1 s in all: each within the timeout of the answer before it.
        for _ in 0..4 {
            client.write_all(REQUEST).await.expect("a request on the kept-alive connection");
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .expect("an answer")
                .expect("read");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_ends_the_server_and_its_idle_connections() {
        let (addr, stop, server) = edge(Duration::from_secs(60)).await;
        let mut idle = TcpStream::connect(addr).await.expect("connected");
        idle.write_all(REQUEST).await.expect("a request");
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).await.expect("an answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        stop.send(()).expect("the server listens for its stop");
        tokio::time::timeout(Duration::from_secs(5), server).await.expect("the server ended").expect("cleanly");
        assert!(until_closed(&mut idle, Duration::from_secs(5)).await.is_some(), "the idle connection was closed");
    }
}
