//! `/api/sagas` → saga orchestrator `/sagas`: the declaration, search, one saga, and the
//! operators' actions (admin only).

use crate::auth::Admin;
use crate::downstream::Service;
use crate::extract::JsonObject;
use crate::extract::{Incoming, ResourceId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use contract::{BulkSagaAction, BulkSagaResult, ErrorBody, OperatorReason, Saga, SagaDefinition, SagaPage};
use runtime::http::ApiError;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/sagas", get(list))
        .route("/api/sagas/definition", get(definition))
        .route("/api/sagas/live", get(live))
        .route("/api/sagas/actions", post(bulk))
        .route("/api/sagas/{id}", get(find))
        .route("/api/sagas/{id}/retry", post(retry))
        .route("/api/sagas/{id}/compensate", post(compensate))
}

/// How long a bulk action may take: at most 1000 sagas, one transaction each.
const BULK_PATIENCE: Duration = Duration::from_secs(60);

/// The CreateOrder saga's declaration: steps, commands, replies, compensations, timeouts (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/sagas/definition", tag = "sagas", responses(
    (status = 200, description = "The saga's steps as the orchestrator declares them", body = SagaDefinition),
    (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    (status = 403, description = "The token lacks the admin role", body = ErrorBody),
))]
pub(crate) async fn definition(State(s): State<AppState>, _: Admin, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Saga, "/sagas/definition", incoming, None).await
}

/// Sagas, newest first, searched over all of them and paged on the server, with the counts of
/// what the filter matches (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/sagas", tag = "sagas",
    params(
        ("status" = Option<String>, Query, description = "RUNNING, COMPENSATING, CONFIRMED, REJECTED or CANCELLED"),
        ("step" = Option<String>, Query, description = "The step the saga is at"),
        ("customer_id" = Option<Uuid>, Query, description = "Only this customer's sagas"),
        ("order_id" = Option<String>, Query, description = "An order id or its beginning"),
        ("from" = Option<String>, Query, description = "Started at or after (RFC 3339)"),
        ("to" = Option<String>, Query, description = "Started before (RFC 3339)"),
        ("limit" = Option<i64>, Query, description = "Sagas per page, 1 to 200 (default 50)"),
        ("after" = Option<String>, Query, description = "The `next` of the page before"),
    ),
    responses(
        (status = 200, description = "A page of sagas", body = SagaPage),
        (status = 400, description = "An unknown parameter, or one that does not parse", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn list(State(s): State<AppState>, _: Admin, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Saga, "/sagas", incoming, None).await
}

/// Send again every command a saga waits on: the running step's, requested compensations,
/// commits and the ending's. Participants are idempotent. Kept in the saga's history with who
/// asked and why (admin).
#[utoipa::path(security(("bearer" = [])), post, path = "/api/sagas/{id}/retry", tag = "sagas",
    request_body = OperatorReason,
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "Sent again"),
        (status = 400, description = "The id is not a UUID, or malformed JSON", body = ErrorBody),
        (status = 404, description = "No saga for this order", body = ErrorBody),
        (status = 409, description = "The saga waits for nothing", body = ErrorBody),
        (status = 422, description = "No reason, or an unknown field", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn retry(
    State(s): State<AppState>,
    _: Admin,
    id: ResourceId,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    s.forward(Service::Saga, &format!("/sagas/{id}/retry"), incoming, Some(body)).await
}

/// Give up on a saga's running step and compensate what was done, then reject the order.
/// Refused past the point of no return. Kept in the saga's history with who and why (admin).
#[utoipa::path(security(("bearer" = [])), post, path = "/api/sagas/{id}/compensate", tag = "sagas",
    request_body = OperatorReason,
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "Compensating"),
        (status = 400, description = "The id is not a UUID, or malformed JSON", body = ErrorBody),
        (status = 404, description = "No saga for this order", body = ErrorBody),
        (status = 409, description = "The saga is not running, or is past the point of no return", body = ErrorBody),
        (status = 422, description = "No reason, or an unknown field", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn compensate(
    State(s): State<AppState>,
    _: Admin,
    id: ResourceId,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    s.forward(Service::Saga, &format!("/sagas/{id}/compensate"), incoming, Some(body)).await
}

/// Retry or compensate every saga a filter matches (oldest first, at most 1000 per call), or
/// with `preview` only count and list them (admin).
#[utoipa::path(security(("bearer" = [])), post, path = "/api/sagas/actions", tag = "sagas",
    request_body = BulkSagaAction,
    responses(
        (status = 200, description = "What the action touched (or would)", body = BulkSagaResult),
        (status = 400, description = "Malformed JSON, or a filter that does not parse", body = ErrorBody),
        (status = 422, description = "No reason, an unknown action, or an unknown field", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn bulk(
    State(s): State<AppState>,
    _: Admin,
    mut incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    incoming.patience = BULK_PATIENCE;
    s.forward(Service::Saga, "/sagas/actions", incoming, Some(body)).await
}

/// How long one event stream lasts; the page reconnects after.
const LIVE_FOR: Duration = Duration::from_secs(300);

/// Server-sent events, one per saga that moved (`event: saga`, data `{"id", "status", "step"}`),
/// as the orchestrator commits it; `event: lagged` when this stream fell behind (read the list
/// again). The stream ends after five minutes; reconnect (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/sagas/live", tag = "sagas",
    responses(
        (status = 200, description = "A stream of server-sent events", content_type = "text/event-stream", body = String),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn live(State(s): State<AppState>, _: Admin, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward_stream(Service::Saga, "/sagas/live", incoming, LIVE_FOR).await
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
