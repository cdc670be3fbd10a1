//! The tower layer stack in front of every `/api` route, in one place. Request-wide policies
//! are added here, outermost last: the body cap, then the per-client rate limit (so a throttled
//! client costs nothing more), then JWT authentication (Keycloak realm `shop`, see
//! [`crate::auth`]), outside the rate limit so limits can count users. Idempotency keys are kept by the owning
//! service (the order service), which the gateway passes the header to. `/health`, `/docs` and
//! the spec stay outside (see [`crate::app`]); request tracing, metrics and the outer body cap
//! are added by `platform::http::serve` around everything.

use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;

/// Largest request body the API accepts. Applied as a layer (not inside one extractor) so
/// every body reader behind it, present or future, has the same limit.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn api(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    // The innermost `DefaultBodyLimit` wins, so this one overrides the server-wide cap.
    let router = router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    let router = state.rate_limit.clone().apply(router);
    router.layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::authenticate))
}
