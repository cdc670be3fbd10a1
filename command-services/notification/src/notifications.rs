//! `GET /notifications?order_id=...`: the e-mails sent about one order, oldest first.

use crate::store;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use runtime::http::{ApiError, json_response};
use serde::Deserialize;
use sqlx::PgPool;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByOrder {
    pub order_id: String,
}

pub async fn list(
    State(pool): State<PgPool>,
    query: Result<Query<ByOrder>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(ByOrder { order_id }) = query.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let sent = store::sent_for_order(&pool, &order_id).await.map_err(ApiError::internal)?;
    Ok(json_response(StatusCode::OK, &sent))
}
