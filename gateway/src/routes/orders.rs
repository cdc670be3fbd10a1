//! `/api/orders` → order service `/orders`. `GET /api/orders?customer_id=` passes its query on
//! untouched: the order service owns the filter rules.

use crate::downstream::Service;
use crate::extract::{Incoming, JsonObject, ResourceId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use platform::http::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/orders", post(place).get(list))
        .route("/api/orders/{id}", get(find))
        .route("/api/orders/{id}/cancel", post(cancel))
}

async fn place(State(s): State<AppState>, incoming: Incoming, body: JsonObject) -> Result<Response, ApiError> {
    s.forward(Service::Order, "/orders", incoming, Some(body)).await
}

async fn list(State(s): State<AppState>, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Order, "/orders", incoming, None).await
}

async fn find(State(s): State<AppState>, id: ResourceId, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Order, &format!("/orders/{id}"), incoming, None).await
}

/// The body is optional: a cancel needs nothing but the id.
async fn cancel(
    State(s): State<AppState>,
    id: ResourceId,
    incoming: Incoming,
    body: Option<JsonObject>,
) -> Result<Response, ApiError> {
    s.forward(Service::Order, &format!("/orders/{id}/cancel"), incoming, body).await
}
