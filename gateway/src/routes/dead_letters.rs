//! `/api/dlq` → saga orchestrator `/dlq`: the dead-letter topics with their parked messages
//! decoded, and the operators' redrive and discard of one, each with a reason kept next to it
//! (admin only).

use crate::auth::Admin;
use crate::downstream::Service;
use crate::extract::{Incoming, JsonObject};
use crate::state::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use contract::{DeadLetters, ErrorBody, OperatorReason};
use runtime::http::ApiError;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/dlq", get(list))
        .route("/api/dlq/{dlq}/{partition}/{offset}/redrive", post(redrive))
        .route("/api/dlq/{dlq}/{partition}/{offset}/discard", post(discard))
}

/// Reading every DLQ whole may take longer than one lookup.
const PATIENCE: Duration = Duration::from_secs(20);

/// Every dead-letter topic with its newest parked messages, decoded where the schema registry
/// knows their schema, each with the error it was parked with and what operators did with it
/// (admin).
#[utoipa::path(security(("bearer" = [])), get, path = "/api/dlq", tag = "operations",
    params(("limit" = Option<usize>, Query, description = "Messages per topic, newest first, 1 to 500 (default 50)")),
    responses(
        (status = 200, description = "The dead-letter topics", body = DeadLetters),
        (status = 400, description = "A limit out of range", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn list(State(s): State<AppState>, _: Admin, mut incoming: Incoming) -> Result<Response, ApiError> {
    incoming.patience = PATIENCE;
    s.forward(Service::Saga, "/dlq", incoming, None).await
}

/// The DLQ's name and the message's partition and offset, checked before they become a path.
fn position(dlq: &str, partition: &str, offset: &str) -> Result<String, ApiError> {
    let name_ok = dlq.ends_with(".dlq")
        && dlq.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !dlq.starts_with('.');
    if !name_ok {
        return Err(ApiError::bad_request(format!("{dlq:?} is not a dead-letter topic (<topic>.dlq)")));
    }
    match (partition.parse::<u16>(), offset.parse::<u64>()) {
        (Ok(p), Ok(o)) => Ok(format!("/dlq/{dlq}/{p}/{o}")),
        _ => Err(ApiError::bad_request("partition and offset are non-negative integers")),
    }
}

/// Republish a parked message to the topic and partition it came from, with its key, payload
/// and headers (its message id too, so consumers that applied it skip it). Kept in the DLQ with
/// who and why (admin).
#[utoipa::path(security(("bearer" = [])), post, path = "/api/dlq/{dlq}/{partition}/{offset}/redrive", tag = "operations",
    request_body = OperatorReason,
    params(
        ("dlq" = String, Path, description = "The dead-letter topic, e.g. order.events.dlq"),
        ("partition" = i32, Path, description = "The message's partition in the DLQ"),
        ("offset" = i64, Path, description = "The message's offset in the DLQ"),
    ),
    responses(
        (status = 200, description = "Republished; `to` says where"),
        (status = 400, description = "Not a DLQ name, a partition or an offset, or malformed JSON", body = ErrorBody),
        (status = 404, description = "No such DLQ, or no parked message there", body = ErrorBody),
        (status = 409, description = "Already redriven or discarded", body = ErrorBody),
        (status = 422, description = "No reason, or an unknown field", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn redrive(
    State(s): State<AppState>,
    _: Admin,
    Path((dlq, partition, offset)): Path<(String, String, String)>,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    act(&s, (&dlq, &partition, &offset), "redrive", incoming, body).await
}

/// Set a parked message aside for good: it stays in the DLQ, marked discarded with who and why
/// (admin).
#[utoipa::path(security(("bearer" = [])), post, path = "/api/dlq/{dlq}/{partition}/{offset}/discard", tag = "operations",
    request_body = OperatorReason,
    params(
        ("dlq" = String, Path, description = "The dead-letter topic, e.g. order.events.dlq"),
        ("partition" = i32, Path, description = "The message's partition in the DLQ"),
        ("offset" = i64, Path, description = "The message's offset in the DLQ"),
    ),
    responses(
        (status = 200, description = "Discarded"),
        (status = 400, description = "Not a DLQ name, a partition or an offset, or malformed JSON", body = ErrorBody),
        (status = 404, description = "No such DLQ, or no parked message there", body = ErrorBody),
        (status = 409, description = "Already redriven or discarded", body = ErrorBody),
        (status = 422, description = "No reason, or an unknown field", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn discard(
    State(s): State<AppState>,
    _: Admin,
    Path((dlq, partition, offset)): Path<(String, String, String)>,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    act(&s, (&dlq, &partition, &offset), "discard", incoming, body).await
}

async fn act(
    s: &AppState,
    (dlq, partition, offset): (&str, &str, &str),
    action: &str,
    mut incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    incoming.patience = PATIENCE;
    let at = position(dlq, partition, offset)?;
    s.forward(Service::Saga, &format!("{at}/{action}"), incoming, Some(body)).await
}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn only_dlq_names_and_numbers_become_a_path() {
        assert_eq!(position("order.events.dlq", "0", "17").unwrap(), "/dlq/order.events.dlq/0/17");
        for (dlq, p, o) in [
            ("order.events", "0", "1"),
            ("../sagas.dlq", "0", "1"),
            ("a?b.dlq", "0", "1"),
            (".dlq", "0", "1"),
            ("x.dlq", "-1", "1"),
            ("x.dlq", "0", "x"),
        ] {
            assert!(position(dlq, p, o).is_err(), "{dlq} {p} {o}");
        }
    }
}
