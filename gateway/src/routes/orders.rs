//! `/api/orders` → order service `/orders`. `GET /api/orders?customer_id=` passes its query on
//! untouched: the order service owns the filter rules. The `Idempotency-Key` header is passed
//! on too: the order service keeps the keys, in its own database.

use crate::auth::User;
use crate::downstream::Service;
use crate::extract::{Incoming, JsonObject, ResourceId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use contract::{ErrorBody, Order, OrderAccepted, PlaceOrder};
use runtime::http::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders", post(place).get(list))
        .route("/api/orders/{id}", get(find))
        .route("/api/orders/{id}/cancel", post(cancel))
}

/// Place an order. The customer and every product are checked at once; the CreateOrder saga
/// then confirms or rejects it. With an `Idempotency-Key`, a repeat with the same body gets
/// the first answer again (status, body, `Location`) and places nothing.
#[utoipa::path(security(("bearer" = [])), post, path = "/api/orders", tag = "orders", request_body = PlaceOrder,
    params(("Idempotency-Key" = Option<String>, Header,
            description = "Client-chosen key (at most 255 characters) making retries safe")),
    responses(
        (status = 202, description = "Placed, pending the saga", body = OrderAccepted,
         headers(("Location" = String, description = "The order, e.g. `/api/orders/{id}`"))),
        (status = 400, description = "Malformed JSON, not an object, or a bad `Idempotency-Key`", body = ErrorBody),
        (status = 409, description = "A request with this `Idempotency-Key` is still being processed", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Unknown field, no lines, a bad quantity, an unknown customer or \
                                      product, or an `Idempotency-Key` reused with another body", body = ErrorBody),
        (status = 503, description = "The shop is behind (orders take too long to complete now) and takes no new \
                                      orders for a moment, or a service is unavailable; `Retry-After` says when \
                                      to try again", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    ))]
pub(crate) async fn place(
    State(s): State<AppState>,
    _: User,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    s.forward(Service::Order, "/orders", incoming, Some(body)).await
}

/// Orders, newest first (owner or admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/orders", tag = "orders",
    params(("customer_id" = Option<Uuid>, Query, description = "Only this customer's orders")),
    responses(
        (status = 200, description = "Orders", body = Vec<Order>),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
        (status = 422, description = "`customer_id` is not a valid id", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    ))]
pub(crate) async fn list(State(s): State<AppState>, _: User, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Order, "/orders", incoming, None).await
}

/// One order with its status history. With `wait`, a long-poll: the answer comes once the
/// order is settled (CONFIRMED, REJECTED or CANCELLED, with no cancellation under way) and this
/// read shows it, or after `wait` seconds with the order as it is then; no polling loop needed.
#[utoipa::path(security(("bearer" = [])), get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id"),
           ("wait" = Option<u64>, Query, description = "Seconds (at most 25) to wait for the order to settle")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "The id is not a UUID, `wait` not a number, or an unknown query parameter",
         body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    ))]
pub(crate) async fn find(
    State(s): State<AppState>,
    _: User,
    id: ResourceId,
    incoming: Incoming,
) -> Result<Response, ApiError> {
    s.forward(
        Service::Order,
        &format!("/orders/{id}"),
        incoming.waiting_up_to(runtime::consistency::LONG_POLL_MAX),
        None,
    )
    .await
}

/// Cancel an order (owner). The body is optional: a cancel needs nothing but the id.
#[utoipa::path(security(("bearer" = [])), post, path = "/api/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path, description = "Order id")),
    responses(
        (status = 202, description = "Cancellation accepted"),
        (status = 400, description = "The id is not a UUID, or a malformed body", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "The order is already rejected or cancelled", body = ErrorBody),
        (status = 415, description = "A body that is not JSON", body = ErrorBody),
        (status = 422, description = "The order can no longer be cancelled", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    ))]
pub(crate) async fn cancel(
    State(s): State<AppState>,
    _: User,
    id: ResourceId,
    incoming: Incoming,
    body: Option<JsonObject>,
) -> Result<Response, ApiError> {
    s.forward(Service::Order, &format!("/orders/{id}/cancel"), incoming, body).await
}
