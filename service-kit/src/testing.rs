//! Router tests without infrastructure (feature `testing`, for the services' dev-dependencies):
//! a pool that never connects, for requests answered before any query, and one call through a
//! service's router as the caller-token layer would hand it over.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use runtime::identity::Caller;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

/// A pool that never connects: a request that reaches a query fails (and shows up as a 5xx).
pub fn lazy_pool() -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("a lazy pool")
}

/// `method uri` with `body` as JSON, as `caller` (none: no caller token was verified, as when the
/// layer is missing); the status and the JSON answer (`null` if it is not JSON).
pub async fn call(
    app: Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
    caller: Option<Caller>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    if let Some(caller) = caller {
        request = request.extension(caller);
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let response = app.oneshot(request.body(body).expect("a request")).await.expect("an answer");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("the body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}
