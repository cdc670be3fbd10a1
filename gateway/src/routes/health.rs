//! `GET /health`: ready when every service is. Each service's `/health` must answer 200 within
//! the health timeout; all are asked at once, so the answer takes at most that long.

use crate::downstream::Service;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use contract::Health;
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health))
}

/// Ready when every service is.
#[utoipa::path(get, path = "/health", tag = "operations", responses(
    (status = 200, description = "Every service is up", body = Health),
    (status = 503, description = "At least one service is down", body = Health),
))]
pub(crate) async fn health(State(s): State<AppState>) -> Response {
    let probes = Service::ALL.map(|service| {
        let s = &s;
        async move { (service, is_up(s, service).await) }
    });
    let results = futures::future::join_all(probes).await;
    let all_up = results.iter().all(|(_, up)| *up);
    let downstream: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(service, up)| (service.name().to_owned(), json!(if up { "up" } else { "down" })))
        .collect();
    let (status, word) = if all_up { (StatusCode::OK, "up") } else { (StatusCode::SERVICE_UNAVAILABLE, "down") };
    (status, Json(json!({ "status": word, "downstream": downstream }))).into_response()
}

/// Up when one of its instances answers (the configured URL when none is registered).
async fn is_up(s: &AppState, service: Service) -> bool {
    for base_url in s.downstreams.candidates(service) {
        let url = format!("{base_url}/health");
        match s.http.get(url).timeout(s.timeouts.health).send().await {
            Ok(answer) if answer.status() == StatusCode::OK => return true,
            Ok(answer) => {
                tracing::warn!(downstream = service.name(), instance = %base_url, status = %answer.status(), "health check failed");
            }
            Err(e) => {
                tracing::warn!(downstream = service.name(), instance = %base_url, error = %crate::proxy::cause_chain(&e), "health check failed");
            }
        }
    }
    false
}
