//! `/api/sagas` → saga orchestrator `/sagas` (read-only).

use crate::downstream::Service;
use crate::extract::{Incoming, ResourceId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use platform::http::ApiError;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/sagas", get(list)).route("/api/sagas/{id}", get(find))
}

async fn list(State(s): State<AppState>, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Saga, "/sagas", incoming, None).await
}

async fn find(State(s): State<AppState>, id: ResourceId, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Saga, &format!("/sagas/{id}"), incoming, None).await
}
