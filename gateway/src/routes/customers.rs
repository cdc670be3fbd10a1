//! `/api/customers` → customer service `/customers`.

use crate::downstream::Service;
use crate::extract::{Incoming, JsonObject, ResourceId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use platform::http::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/customers", post(register).get(list)).route("/api/customers/{id}", get(find))
}

async fn register(State(s): State<AppState>, incoming: Incoming, body: JsonObject) -> Result<Response, ApiError> {
    s.forward(Service::Customer, "/customers", incoming, Some(body)).await
}

async fn list(State(s): State<AppState>, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Customer, "/customers", incoming, None).await
}

async fn find(State(s): State<AppState>, id: ResourceId, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Customer, &format!("/customers/{id}"), incoming, None).await
}
