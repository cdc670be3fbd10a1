//! The API gateway: the single public entry point. It checks what it can without asking
//! anyone (ids, JSON bodies, sizes, routes) and forwards the rest to the owning service.
//!
//! - [`app`]: the router, built from the pieces below; `main.rs` only serves it.
//! - [`downstream`]: which services exist and where they live ([`Service`], [`Downstreams`]).
//! - [`state`]: [`AppState`], the pooled HTTP client and its [`Timeouts`].
//! - [`extract`]: request checks as extractors: UUID path ids, JSON-object bodies, forwarded headers.
//! - [`proxy`]: one forwarding call: request out, answer back, `Location` rewritten, failures mapped.
//! - [`layers`]: the tower layer stack in front of `/api` (body cap, [`rate_limit`], [`auth`]).
//! - [`auth`]: bearer tokens from Keycloak, the caller, and route guards ([`auth::User`], [`auth::Admin`]).
//! - [`rate_limit`]: requests per client, 429 with `Retry-After`.
//! - [`routes`]: one file per resource, plus `/health`, the JSON 404/405 fallbacks and the UI
//!   (`/` and the saga dashboard at `/dashboard/`).
//! - [`openapi`]: the public contract (the `contract` crate's types) as OpenAPI (`/api/openapi.json`, `/docs`).

pub mod auth;
pub mod downstream;
pub mod extract;
pub mod layers;
pub mod openapi;
pub mod proxy;
pub mod rate_limit;
pub mod routes;
pub mod state;

pub use downstream::{Downstreams, Service};
pub use rate_limit::RateLimit;
pub use state::{AppState, Timeouts};

use axum::Router;

/// The whole gateway. `/health` and the docs stay outside the `/api` layer stack: probes and
/// readers of the contract carry no token.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .merge(routes::customers::router())
        .merge(routes::products::router())
        .merge(routes::orders::router())
        .merge(routes::sagas::router())
        .merge(routes::dead_letters::router())
        .merge(routes::projections::router());
    Router::new()
        .merge(layers::api(api, &state))
        .merge(routes::health::router())
        .merge(routes::sd::router())
        .merge(routes::ui::router())
        .merge(openapi::router())
        // Registered last: it applies to the routes added before it.
        .method_not_allowed_fallback(routes::fallback::method_not_allowed)
        .fallback(routes::fallback::not_found)
        .with_state(state)
}
