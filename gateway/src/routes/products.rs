//! `/api/products` → product service `/products`.

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
        .route("/api/products", post(create).get(list))
        .route("/api/products/{id}", get(find))
        .route("/api/products/{id}/stock", post(add_stock))
}

async fn create(State(s): State<AppState>, incoming: Incoming, body: JsonObject) -> Result<Response, ApiError> {
    s.forward(Service::Product, "/products", incoming, Some(body)).await
}

async fn list(State(s): State<AppState>, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Product, "/products", incoming, None).await
}

async fn find(State(s): State<AppState>, id: ResourceId, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Product, &format!("/products/{id}"), incoming, None).await
}

async fn add_stock(
    State(s): State<AppState>,
    id: ResourceId,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    s.forward(Service::Product, &format!("/products/{id}/stock"), incoming, Some(body)).await
}
