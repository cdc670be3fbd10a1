//! `/api/customers` → customer service `/customers`.

use crate::auth::{Admin, User};
use crate::downstream::Service;
use crate::extract::{Incoming, JsonObject, ResourceId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use contract::{Created, Customer, ErrorBody, RegisterCustomer};
use runtime::http::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/customers", post(register).get(list)).route("/api/customers/{id}", get(find))
}

/// Register a customer; the payment account opens with the default credit.
#[utoipa::path(security(("bearer" = [])), post, path = "/api/customers", tag = "customers", request_body = RegisterCustomer, responses(
    (status = 201, description = "Registered", body = Created),
    (status = 400, description = "Malformed JSON, or not an object", body = ErrorBody),
    (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
    (status = 415, description = "Body is not JSON", body = ErrorBody),
    (status = 422, description = "Unknown field, or an invalid name or e-mail", body = ErrorBody),
    (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
))]
pub(crate) async fn register(
    State(s): State<AppState>,
    _: User,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    s.forward(Service::Customer, "/customers", incoming, Some(body)).await
}

/// All customers (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/customers", tag = "customers", responses(
    (status = 200, description = "Customers", body = Vec<Customer>),
    (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    (status = 403, description = "The token lacks the admin role", body = ErrorBody),
))]
pub(crate) async fn list(State(s): State<AppState>, _: Admin, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Customer, "/customers", incoming, None).await
}

/// One customer (the owner or an admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/customers/{id}", tag = "customers",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The customer", body = Customer),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such customer", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    ))]
pub(crate) async fn find(
    State(s): State<AppState>,
    _: User,
    id: ResourceId,
    incoming: Incoming,
) -> Result<Response, ApiError> {
    s.forward(Service::Customer, &format!("/customers/{id}"), incoming, None).await
}
