//! The tower layer stack in front of every `/api` route, in one place. Request-wide policies
//! are added here, outermost last: the body cap, then the per-client rate limit (so a throttled
//! client costs nothing more), then JWT authentication, then the bound on requests in flight
//! ([`MAX_IN_FLIGHT`]: past it, 503 with `Retry-After` at once, before any work, so a flood
//! cannot make the gateway hold ever more requests and memory) (Keycloak realm `shop`, see
//! [`crate::auth`]), outside the rate limit so limits can count users. Idempotency keys are kept by the owning
//! service (the order service), which the gateway passes the header to. `/health`, `/docs` and
//! the spec stay outside (see [`crate::app`]); request tracing, metrics and the outer body cap
//! are added by `runtime::http::serve` around everything.

use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use runtime::http::ApiError;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Largest request body the API accepts. Applied as a layer (not inside one extractor) so
/// every body reader behind it, present or future, has the same limit.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn api(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    // The innermost `DefaultBodyLimit` wins, so this one overrides the server-wide cap.
    let router = router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let router = state.rate_limit.clone().apply(router);
    let router = router.layer(axum::middleware::from_fn_with_state(state.verifier.clone(), crate::auth::authenticate));
    router.layer(axum::middleware::from_fn_with_state(InFlight::new(MAX_IN_FLIGHT, MAX_WRITES_IN_FLIGHT), bounded))
}

/// Requests the API handles at once (long-polls included); more are refused, not queued.
pub const MAX_IN_FLIGHT: usize = 2048;

/// Of those, requests that change something (every method but GET and HEAD: placing an order,
/// an operator's action). They are what costs the shop work, and reads (long-polls above all)
/// must not crowd them out nor they the reads; past this many, a flood of orders is refused at
/// once rather than queued in front of a saturated service, where every order would wait
/// seconds for its 202 and the memory of the queue would grow with the flood.
pub const MAX_WRITES_IN_FLIGHT: usize = 32;

/// The permits of requests in flight, and of writes among them.
#[derive(Clone)]
pub struct InFlight {
    all: Arc<Semaphore>,
    writes: Arc<Semaphore>,
}

impl InFlight {
    pub fn new(max: usize, max_writes: usize) -> Self {
        Self { all: Arc::new(Semaphore::new(max)), writes: Arc::new(Semaphore::new(max_writes)) }
    }
}

/// Hold a permit (and a write permit for a write) for the request's whole life, or answer 503
/// with `Retry-After` when none is left.
pub async fn bounded(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    let busy = |what: &str| {
        ApiError::busy("the gateway is busy, try again shortly", 1)
            .with_detail(serde_json::json!({ "in_flight": what }))
            .into_response()
    };
    let Ok(_permit) = in_flight.all.clone().try_acquire_owned() else { return busy("limit reached") };
    let write = !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let _write_permit = match write {
        true => match in_flight.writes.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => return busy("write limit reached"),
        },
        false => None,
    };
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    /// Two requests may be in flight: a third at the same time is refused with `Retry-After`,
    /// and once one finishes the next goes through.
    #[tokio::test]
    async fn requests_past_the_bound_are_refused_at_once() {
        let release = Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let app = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    held.notified().await;
                    "done"
                }),
            )
            .route("/fast", get(|| async { "fast" }))
            .layer(axum::middleware::from_fn_with_state(InFlight::new(2, 2), bounded));
        let call = |path: &'static str| app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap());
        let slow = [tokio::spawn(call("/slow")), tokio::spawn(call("/slow"))];
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let refused = call("/fast").await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        release.notify_waiters();
        for s in slow {
            assert_eq!(s.await.unwrap().unwrap().status(), StatusCode::OK);
        }
        assert_eq!(call("/fast").await.unwrap().status(), StatusCode::OK);
    }

    /// One write may be in flight: a second write is refused while reads still go through.
    #[tokio::test]
    async fn writes_past_their_bound_are_refused_while_reads_go_on() {
        let limits = InFlight::new(10, 1);
        let release = Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let app = Router::new()
            .route(
                "/orders",
                axum::routing::post(move || async move {
                    held.notified().await;
                    "placed"
                })
                .get(|| async { "list" }),
            )
            .layer(axum::middleware::from_fn_with_state(limits.clone(), bounded));
        let call = |method: &str| {
            app.clone().oneshot(Request::builder().method(method).uri("/orders").body(Body::empty()).unwrap())
        };
        let first = tokio::spawn(call("POST"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let refused = call("POST").await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "1");
        assert_eq!(call("GET").await.unwrap().status(), StatusCode::OK, "reads are not writes");
        release.notify_waiters();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        assert_eq!(limits.writes.available_permits(), 1, "the write's permit is back");
    }
}
