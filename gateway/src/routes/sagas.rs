//! `/api/sagas` → saga orchestrator `/sagas` (read-only).

use crate::auth::Admin;
use crate::downstream::Service;
use crate::extract::{Incoming, ResourceId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use contract::{ErrorBody, Saga, SagaDefinition, SagaSummary};
use platform::http::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sagas", get(list))
        .route("/api/sagas/definition", get(definition))
        .route("/api/sagas/{id}", get(find))
}

/// The CreateOrder saga's declaration: steps, commands, replies, compensations, timeouts (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/sagas/definition", tag = "sagas", responses(
    (status = 200, description = "The saga's steps as the orchestrator declares them", body = SagaDefinition),
    (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    (status = 403, description = "The token lacks the admin role", body = ErrorBody),
))]
pub(crate) async fn definition(State(s): State<AppState>, _: Admin, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Saga, "/sagas/definition", incoming, None).await
}

/// The most recent sagas (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/sagas", tag = "sagas", responses(
    (status = 200, description = "Sagas, newest first", body = Vec<SagaSummary>),
    (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    (status = 403, description = "The token lacks the admin role", body = ErrorBody),
))]
pub(crate) async fn list(State(s): State<AppState>, _: Admin, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Saga, "/sagas", incoming, None).await
}

/// One order's saga: state, steps with times, compensations, errors (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/sagas/{id}", tag = "sagas",
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The saga", body = Saga),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No saga for this order", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn find(
    State(s): State<AppState>,
    _: Admin,
    id: ResourceId,
    incoming: Incoming,
) -> Result<Response, ApiError> {
    s.forward(Service::Saga, &format!("/sagas/{id}"), incoming, None).await
}
