//! The checks the gateway makes on its own, as extractors: a handler that takes them runs only
//! for requests that passed, and every failure is a 4xx JSON error. Field-level rules (unknown
//! fields, types, values) belong to the service that owns the resource.

use crate::layers::MAX_BODY_BYTES;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use runtime::http::ApiError;
use runtime::identity::Caller;
use serde_json::json;
use std::convert::Infallible;
use uuid::Uuid;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");
/// `fresh` or `stale`: whether a query given a token saw the write.
pub const CONSISTENCY: HeaderName = HeaderName::from_static("x-consistency");

/// Client headers services act on; `content-type` travels with the body instead.
const FORWARDED_HEADERS: [HeaderName; 2] = [IDEMPOTENCY_KEY, CONSISTENCY_TOKEN];

/// A resource id from the path. Every id in the API is a UUID, so anything else is refused here
/// (400) instead of costing a downstream call. Other UUID spellings are normalised to the
/// hyphenated form by `Display`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceId(pub Uuid);

impl std::fmt::Display for ResourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

fn not_an_id(raw: &str) -> ApiError {
    ApiError::bad_request("not a valid id").with_detail(json!({ "id": raw }))
}

impl<S: Send + Sync> FromRequestParts<S> for ResourceId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        // A path that fails to decode (bad percent-encoding) is not an id either.
        let Path(raw) =
            Path::<String>::from_request_parts(parts, state).await.map_err(|e| not_an_id(&e.body_text()))?;
        Uuid::try_parse(&raw).map(Self).map_err(|_| not_an_id(&raw))
    }
}

/// What is passed on from a client request besides its body.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub method: Method,
    /// Raw and still percent-encoded: the service parses it.
    pub query: Option<String>,
    /// Only [`FORWARDED_HEADERS`]: nothing else a client sent is passed on.
    pub headers: HeaderMap,
    /// Who is calling, as the gateway checked it; the forwarded call carries a caller token
    /// saying so (`runtime::identity`).
    pub caller: Caller,
    /// How long the service may hold the request on purpose (a long-poll) beyond the usual
    /// timeout of a forwarded call.
    pub patience: std::time::Duration,
}

impl Incoming {
    /// The `wait=<seconds>` a long-poll asks for, capped at `max`: the forwarded call may take
    /// that much longer. A value that is not a number is left for the service to refuse.
    pub fn waiting_up_to(mut self, max: std::time::Duration) -> Self {
        let asked = self
            .query
            .as_deref()
            .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("wait=")).and_then(|v| v.parse::<u64>().ok()));
        self.patience = asked.map_or(std::time::Duration::ZERO, |s| std::time::Duration::from_secs(s).min(max));
        self
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Incoming {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let mut headers = HeaderMap::new();
        for name in FORWARDED_HEADERS {
            for value in parts.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let caller = parts.extensions.get::<Caller>().cloned().unwrap_or(Caller::Anonymous);
        Ok(Self {
            method: parts.method.clone(),
            query: parts.uri.query().map(str::to_owned),
            headers,
            caller,
            patience: std::time::Duration::ZERO,
        })
    }
}

/// A command body: declared `application/json` (else 415), no larger than [`MAX_BODY_BYTES`]
/// (else 413), and a well-formed JSON object (else 400). The service receives the client's
/// bytes unchanged.
#[derive(Debug, Clone)]
pub struct JsonObject {
    pub content_type: HeaderValue,
    pub bytes: Bytes,
}

/// `application/json` or an `application/*+json` type, parameters (charset) allowed.
pub(crate) fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(value) = content_type.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "request body must be JSON")
        .with_detail(json!({ "expected": "content-type: application/json" }))
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    // Honours the body limit set by `layers::api`.
    Bytes::from_request(req, state).await.map_err(|rejection: BytesRejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
            )
        } else {
            ApiError::bad_request("could not read the request body").with_detail(json!(rejection.body_text()))
        }
    })
}

fn parse_object(content_type: HeaderValue, bytes: Bytes) -> Result<JsonObject, ApiError> {
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(_)) => Ok(JsonObject { content_type, bytes }),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request("malformed JSON").with_detail(json!(e.to_string()))),
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = match req.headers().get(header::CONTENT_TYPE) {
            Some(ct) if is_json(ct) => ct.clone(),
            _ => return Err(unsupported_media_type()),
        };
        parse_object(content_type, read_body(req, state).await?)
    }
}

/// For commands whose body is optional: an empty body without a content type is `None`;
/// anything else must pass as a [`JsonObject`].
impl<S: Send + Sync> OptionalFromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        match req.headers().get(header::CONTENT_TYPE).cloned() {
            Some(ct) if is_json(&ct) => parse_object(ct, read_body(req, state).await?).map(Some),
            Some(_) => Err(unsupported_media_type()),
            None if read_body(req, state).await?.is_empty() => Ok(None),
            None => Err(unsupported_media_type()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let ok =
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"];
        for ct in ok {
            assert!(is_json(&HeaderValue::from_static(ct)), "{ct}");
        }
        for ct in ["text/plain", "application/jsonx", "text/json", "multipart/form-data"] {
            assert!(!is_json(&HeaderValue::from_static(ct)), "{ct}");
        }
    }
}
