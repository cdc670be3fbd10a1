//! `/api/projections` → projectors `/status` and `/rebuilds`: where each read model's projection
//! stands (position, lag, time behind, per partition), the rebuilds under way with their
//! progress, and starting one; and `/api/consumers` → saga orchestrator `/consumers`: every
//! Kafka consumer group's lag per partition (admin only).

use crate::auth::Admin;
use crate::downstream::Service;
use crate::extract::{Incoming, JsonObject};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use contract::{ConsumerGroups, ErrorBody, ProjectionsStatus, StartRebuild};
use runtime::http::ApiError;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/projections", get(status))
        .route("/api/projections/live", get(live))
        .route("/api/projections/rebuild", post(rebuild))
        .route("/api/consumers", get(consumers))
}

/// Reading every partition's watermarks and the checkpoints may take longer than one lookup.
const PATIENCE: Duration = Duration::from_secs(20);

/// Each projection's position, lag and time behind (per partition too), the rebuilds under way
/// with how far they are, and those the projectors service ran lately (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/projections", tag = "operations",
    responses(
        (status = 200, description = "The projections and rebuilds", body = ProjectionsStatus),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn status(State(s): State<AppState>, _: Admin, mut incoming: Incoming) -> Result<Response, ApiError> {
    incoming.patience = PATIENCE;
    s.forward(Service::Projectors, "/status", incoming, None).await
}

/// How long one event stream lasts; the page reconnects after.
const LIVE_FOR: Duration = Duration::from_secs(300);

/// The same status as server-sent events (`event: status`, the JSON of `GET /api/projections`):
/// at once, whenever a rebuild saved progress, switched or ended, and every 5 s otherwise. The
/// stream ends after five minutes; reconnect (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/projections/live", tag = "operations",
    responses(
        (status = 200, description = "A stream of server-sent events", content_type = "text/event-stream", body = String),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn live(State(s): State<AppState>, _: Admin, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward_stream(Service::Projectors, "/status/live", incoming, LIVE_FOR).await
}

/// Rebuild read models by replaying the event topics into new collections while the old ones
/// keep serving, then switch (no downtime). One rebuild at a time; its progress shows in
/// `GET /api/projections` (admin).
#[utoipa::path(security(("bearer" = [])), post, path = "/api/projections/rebuild", tag = "operations",
    request_body = StartRebuild,
    responses(
        (status = 202, description = "Started; `id` names it in the rebuilds"),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "A rebuild is running", body = ErrorBody),
        (status = 422, description = "No read model, an unknown one, or an unknown field", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn rebuild(
    State(s): State<AppState>,
    _: Admin,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    s.forward(Service::Projectors, "/rebuilds", incoming, Some(body)).await
}

/// Every Kafka consumer group: its state, members, and per partition what it has committed,
/// the high watermark and the lag (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/consumers", tag = "operations",
    responses(
        (status = 200, description = "The consumer groups", body = ConsumerGroups),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn consumers(
    State(s): State<AppState>,
    _: Admin,
    mut incoming: Incoming,
) -> Result<Response, ApiError> {
    incoming.patience = PATIENCE;
    s.forward(Service::Saga, "/consumers", incoming, None).await
}
