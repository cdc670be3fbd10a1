//! The tower layer stack in front of every `/api` route, in one place. Request-wide policies
//! are added here, outermost first, so each route gets them without knowing: next come JWT
//! authentication (Keycloak realm `shop`), rate limits, then idempotency keys. `/health`
//! stays outside (see [`crate::app`]); request tracing and the outer body cap are added by
//! `platform::http::serve` around everything.

use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;

/// Largest request body the API accepts. Applied as a layer (not inside one extractor) so
/// every body reader behind it, present or future, has the same limit.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn api(router: Router<AppState>) -> Router<AppState> {
    // The innermost `DefaultBodyLimit` wins, so this one overrides the server-wide cap.
    router.layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
