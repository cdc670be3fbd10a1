//! One forwarding call: the checked request goes to its service and the answer comes back with
//! the headers clients need. Failures are mapped here, once: unreachable or too slow → 503; a
//! service's 5xx → opaque 502 with the cause logged, except a 503 with `Retry-After` (a service
//! shedding load: passed on, so the client knows when to come back); its 4xx → passed on,
//! always as JSON.

use crate::downstream::Service;
use crate::extract::{CONSISTENCY, CONSISTENCY_TOKEN, Incoming, JsonObject, is_json};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use runtime::http::ApiError;

/// The public collections: a `Location` into one of them gets its `/api` prefix back.
const PUBLIC_COLLECTIONS: [&str; 4] = ["customers", "products", "orders", "sagas"];

/// The issuer of the caller tokens the gateway signs.
const GATEWAY: &str = "gateway";

/// How much of a failed answer goes into the log.
const LOGGED_BODY_BYTES: usize = 1024;

impl AppState {
    /// Send `incoming` (with `body`, if any) to `path` on `service` and turn the answer into the
    /// client's answer. The service's instances are tried in round-robin order: a GET that got
    /// no answer from one goes on to the next, any other method only when it could not even
    /// connect (then it was not sent).
    /// The call is a client span; its `traceparent` goes with the request.
    #[tracing::instrument(
        name = "forward",
        skip_all,
        fields(
            otel.name = %format_args!("{} {}", incoming.method, service.name()),
            otel.kind = "client",
            downstream = service.name(),
            method = %incoming.method,
            path = %path,
        )
    )]
    pub async fn forward(
        &self,
        service: Service,
        path: &str,
        incoming: Incoming,
        body: Option<JsonObject>,
    ) -> Result<Response, ApiError> {
        let idempotent = matches!(incoming.method, Method::GET | Method::HEAD);
        let candidates = self.downstreams.candidates(service);
        let timeout = self.request_timeout() + incoming.patience;
        let mut headers = incoming.headers.clone();
        runtime::telemetry::inject_headers(&mut headers);
        headers.insert(AUTHORIZATION, self.caller_key.authorization(&incoming.caller, GATEWAY));
        let mut failure = None;
        for (i, base_url) in candidates.iter().enumerate() {
            let mut url = format!("{base_url}{path}");
            if let Some(query) = &incoming.query {
                url.push('?');
                url.push_str(query);
            }
            let mut request = self.http.request(incoming.method.clone(), url).headers(headers.clone()).timeout(timeout);
            if let Some(body) = &body {
                request = request.header(CONTENT_TYPE, body.content_type.clone()).body(body.bytes.clone());
            }
            let answer = match request.send().await {
                Ok(answer) => answer,
                Err(e) => {
                    let retry = i + 1 < candidates.len() && (e.is_connect() || (idempotent && !e.is_timeout()));
                    if retry {
                        tracing::warn!(instance = %base_url, error = %cause_chain(&e), "instance unavailable; trying the next");
                        failure = Some(e);
                        continue;
                    }
                    return Err(call_failed(service, &e));
                }
            };
            let status = answer.status();
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.map_err(|e| call_failed(service, &e))?;
            let shedding = status == StatusCode::SERVICE_UNAVAILABLE && headers.contains_key(RETRY_AFTER);
            if status.is_server_error() && !shedding {
                tracing::error!(%status, body = %snippet(&bytes), "downstream failed");
                return Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("{} failed to answer", service.name())));
            }
            return Ok(client_answer(base_url, status, &headers, bytes));
        }
        Err(failure.map_or_else(
            || ApiError::unavailable(format!("{} is unavailable", service.name())),
            |e| call_failed(service, &e),
        ))
    }
}

impl AppState {
    /// A GET whose answer is a stream of server-sent events, passed on as it arrives (not
    /// buffered) for at most `for_at_most`; the client reconnects after. An answer that is not a
    /// success is passed on as [`AppState::forward`] would.
    pub async fn forward_stream(
        &self,
        service: Service,
        path: &str,
        incoming: Incoming,
        for_at_most: std::time::Duration,
    ) -> Result<Response, ApiError> {
        let base_url = self
            .downstreams
            .candidates(service)
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::unavailable(format!("{} is unavailable", service.name())))?;
        let mut headers = incoming.headers.clone();
        runtime::telemetry::inject_headers(&mut headers);
        headers.insert(AUTHORIZATION, self.caller_key.authorization(&incoming.caller, GATEWAY));
        let answer = self
            .http
            .get(format!("{base_url}{path}"))
            .headers(headers)
            .timeout(for_at_most)
            .send()
            .await
            .map_err(|e| call_failed(service, &e))?;
        let status = answer.status();
        if !status.is_success() {
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.map_err(|e| call_failed(service, &e))?;
            if status.is_server_error() {
                tracing::error!(%status, body = %snippet(&bytes), "downstream failed");
                return Err(ApiError::new(StatusCode::BAD_GATEWAY, format!("{} failed to answer", service.name())));
            }
            return Ok(client_answer(&base_url, status, &headers, bytes));
        }
        // Chunk by chunk; after an error (the time is up, the service went away) the stream ends.
        let chunks = futures::stream::unfold(Some(answer), |answer| async move {
            let mut answer = answer?;
            match answer.chunk().await {
                Ok(Some(chunk)) => Some((Ok::<_, std::io::Error>(chunk), Some(answer))),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(error = %cause_chain(&e), "event stream ended");
                    None
                }
            }
        });
        let mut response = Response::new(Body::from_stream(chunks));
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(axum::http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Ok(response)
    }
}

/// No answer at all: the service is down, refused, or timed out.
fn call_failed(service: Service, e: &reqwest::Error) -> ApiError {
    if e.is_builder() {
        // A malformed base URL: our configuration, not the service.
        return ApiError::internal(format!("calling {}: {}", service.name(), cause_chain(e)));
    }
    tracing::warn!(error = %cause_chain(e), timeout = e.is_timeout(), "downstream unavailable");
    ApiError::unavailable(format!("{} is unavailable", service.name()))
}

pub(crate) fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn snippet(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&bytes[..bytes.len().min(LOGGED_BODY_BYTES)])
}

fn client_answer(base_url: &str, status: StatusCode, headers: &HeaderMap, bytes: Bytes) -> Response {
    let json = headers.get(CONTENT_TYPE).is_some_and(is_json);
    if status.is_client_error() && !json {
        // E.g. a framework's plain-text rejection: keep the message, honour the error format.
        let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or_default();
        let message = match text {
            "" => status.canonical_reason().unwrap_or("request refused").to_owned(),
            text => text.chars().take(500).collect(),
        };
        return ApiError::new(status, message).into_response();
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let out = response.headers_mut();
    for name in [CONTENT_TYPE, CONSISTENCY_TOKEN, CONSISTENCY, RETRY_AFTER] {
        if let Some(value) = headers.get(&name) {
            out.insert(name, value.clone());
        }
    }
    let location = headers.get(LOCATION).and_then(|l| l.to_str().ok());
    if let Some(location) = location.and_then(|l| HeaderValue::try_from(public_location(l, base_url)).ok()) {
        out.insert(LOCATION, location);
    }
    response
}

/// The public form of a service's `Location`: `/orders/{id}`, or the same under the service's
/// own base URL, becomes `/api/orders/{id}`. Anything else is left as it is.
pub fn public_location(location: &str, base_url: &str) -> String {
    let path = location.strip_prefix(base_url).filter(|rest| rest.starts_with('/')).unwrap_or(location);
    let collection = path.strip_prefix('/').and_then(|p| p.split(['/', '?', '#']).next());
    match collection {
        Some(c) if PUBLIC_COLLECTIONS.contains(&c) => format!("/api{path}"),
        _ => location.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::public_location;

    const BASE: &str = "http://127.0.0.1:8083";

    #[test]
    fn service_locations_become_public() {
        let id = "0190a8b0-0000-7000-8000-000000000001";
        assert_eq!(public_location(&format!("/orders/{id}"), BASE), format!("/api/orders/{id}"));
        assert_eq!(public_location(&format!("{BASE}/orders/{id}"), BASE), format!("/api/orders/{id}"));
        assert_eq!(public_location("/customers?page=2", BASE), "/api/customers?page=2");
    }

    #[test]
    fn other_locations_are_left_alone() {
        for other in [
            "/api/orders/1",
            "/internal/orders/1",
            "//evil.example/orders",
            "https://example.com/orders/1",
            "/ordersx/1",
        ] {
            assert_eq!(public_location(other, BASE), other);
        }
    }
}
