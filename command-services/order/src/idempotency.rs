//! `Idempotency-Key` on `POST /orders`: a retried request gets the first answer again (status,
//! body, `Location`) instead of placing a second order. Keys live in this service's own
//! database, so they survive restarts of the gateway and of this service.
//!
//! The first request claims its key (`INSERT .. ON CONFLICT DO NOTHING`) before doing anything,
//! naming the resource it is about to create (the order's id, chosen first). A request that
//! created it writes nothing more: the resource is its answer, and a repeat builds that answer
//! from it (see [`Keys::once`]). Any other answer (a refusal such as an unknown customer) is
//! recorded with its status, body and headers. A duplicate that finds the key claimed, with
//! neither, waits for one. The same key with a different body is refused (422). A server error
//! frees the key unless the resource exists: nothing is known to have happened, so the client
//! may retry. A claim left with neither (the process died before creating anything) is taken
//! over after [`ABANDONED_AFTER`]; one whose resource exists is never abandoned.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runtime::http::ApiError;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::{Duration, Instant};

pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");

const MAX_KEY_LEN: usize = 255;
/// How long a duplicate waits for the first request's answer before giving up with 409.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(50);
/// A claim without an answer for this long belongs to a request that will never finish.
const ABANDONED_AFTER: &str = "2 minutes";
/// Largest answer body recorded; ours are tiny.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The SQL expression hashing the canonical request bound as `$2`.
const HASH_OF_2: &str = "encode(sha256(convert_to($2, 'UTF8')), 'hex')";

/// A key found claimed.
#[derive(sqlx::FromRow)]
struct Claim {
    same_request: bool,
    /// The answer, once there is one.
    status: Option<i32>,
    body: Option<Value>,
    headers: Option<Value>,
    /// What the first request creates; `None` for claims made before resources were named.
    resource: Option<String>,
    abandoned: bool,
}

#[derive(Clone)]
pub struct Keys {
    pool: PgPool,
}

impl Keys {
    /// Create or update the table (versions 6_000_001.., see `eventstore::db`).
    pub async fn migrate(pool: PgPool) -> anyhow::Result<Self> {
        eventstore::db::migrate(&pool, sqlx::migrate!()).await?;
        Ok(Self { pool })
    }

    /// The request's key, if it has one: 1 to 255 visible ASCII characters, given once.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
        let mut values = headers.get_all(HEADER).iter();
        let Some(value) = values.next() else { return Ok(None) };
        let invalid = || {
            ApiError::bad_request("invalid Idempotency-Key")
                .with_detail(json!({ "expected": format!("one value of 1 to {MAX_KEY_LEN} visible ASCII characters") }))
        };
        if values.next().is_some() {
            return Err(invalid());
        }
        let key = value.to_str().map_err(|_| invalid())?;
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(invalid());
        }
        Ok(Some(key.to_owned()))
    }

    /// Run `work` once for `key` and `request`; it creates `resource`, or answers why not. A
    /// success (2xx) is not recorded: a repeat gets `created(resource)`, the answer built from
    /// the resource as it is stored (`None` while it does not exist). Other answers are recorded
    /// and replayed.
    pub async fn once<F, Fut, C, CFut>(
        &self,
        key: &str,
        request: &impl Serialize,
        resource: &str,
        work: F,
        created: C,
    ) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Response, ApiError>>,
        C: Fn(String) -> CFut,
        CFut: Future<Output = Result<Option<Response>, ApiError>>,
    {
        let canonical = serde_json::to_string(request).map_err(ApiError::internal)?;
        let deadline = Instant::now() + WAIT_FOR_FIRST;
        loop {
            let claimed = sqlx::query(&format!(
                "INSERT INTO idempotency (key, request_hash, resource) VALUES ($1, {HASH_OF_2}, $3)
                 ON CONFLICT DO NOTHING"
            ))
            .bind(key)
            .bind(&canonical)
            .bind(resource)
            .execute(&self.pool)
            .await
            .map_err(ApiError::internal)?
            .rows_affected()
                == 1;
            if claimed {
                return self.run_claimed(key, resource, work, &created).await;
            }
            let claim: Option<Claim> = sqlx::query_as(&format!(
                "SELECT request_hash = {HASH_OF_2} AS same_request, status, body, headers, resource,
                        created_at < now() - interval '{ABANDONED_AFTER}' AS abandoned
                 FROM idempotency WHERE key = $1"
            ))
            .bind(key)
            .bind(&canonical)
            .fetch_optional(&self.pool)
            .await
            .map_err(ApiError::internal)?;
            let claim = match claim {
                // The first request failed and freed the key: claim it again.
                None => continue,
                Some(Claim { same_request: false, .. }) => {
                    return Err(ApiError::unprocessable("Idempotency-Key was already used with a different request")
                        .with_detail(json!({ "idempotency_key": key })));
                }
                Some(Claim { status: Some(status), body, headers, .. }) => return Ok(replay(status, body, headers)),
                Some(claim) => claim,
            };
            if let Some(resource) = claim.resource
                && let Some(answer) = created(resource).await?
            {
                return Ok(answer);
            }
            match claim {
                Claim { abandoned: true, .. } => self.release(key, true).await?,
                _ if Instant::now() < deadline => tokio::time::sleep(POLL_EVERY).await,
                _ => {
                    return Err(ApiError::conflict("a request with this Idempotency-Key is still in progress")
                        .with_detail(json!({ "idempotency_key": key })));
                }
            }
        }
    }

    async fn run_claimed<F, Fut, C, CFut>(
        &self,
        key: &str,
        resource: &str,
        work: F,
        created: &C,
    ) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Response, ApiError>>,
        C: Fn(String) -> CFut,
        CFut: Future<Output = Result<Option<Response>, ApiError>>,
    {
        let response = work().await.unwrap_or_else(IntoResponse::into_response);
        if response.status().is_success() {
            return Ok(response);
        }
        if response.status().is_server_error() {
            // The resource may exist all the same (the write's answer lost on the way back):
            // then that is the answer, now and for a repeat.
            if let Ok(Some(answer)) = created(resource.to_owned()).await {
                return Ok(answer);
            }
            self.release(key, false).await?;
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_ANSWER_BYTES).await.map_err(ApiError::internal)?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .filter(|(name, _)| ![header::CONTENT_TYPE, header::CONTENT_LENGTH].contains(name))
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), Value::from(value.to_str().ok()?))))
            .collect();
        let recorded = sqlx::query("UPDATE idempotency SET status = $2, body = $3, headers = $4 WHERE key = $1")
            .bind(key)
            .bind(i32::from(parts.status.as_u16()))
            .bind(&body)
            .bind(Value::Object(headers))
            .execute(&self.pool)
            .await;
        if let Err(e) = recorded {
            // Answer it all the same. Repeats wait, then get 409, until the claim is taken over
            // as abandoned (nothing was created).
            tracing::error!(error = %e, key, "recording the idempotent answer failed");
        }
        Ok(Response::from_parts(parts, Body::from(bytes)))
    }

    /// Free an unanswered claim (only an abandoned one, if `abandoned`). The caller has seen
    /// that its resource does not exist.
    async fn release(&self, key: &str, abandoned: bool) -> Result<(), ApiError> {
        let only_abandoned =
            if abandoned { format!("AND created_at < now() - interval '{ABANDONED_AFTER}'") } else { String::new() };
        sqlx::query(&format!("DELETE FROM idempotency WHERE key = $1 AND status IS NULL {only_abandoned}"))
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(ApiError::internal)?;
        Ok(())
    }
}

fn replay(status: i32, body: Option<Value>, headers: Option<Value>) -> Response {
    let status = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(body.unwrap_or(Value::Null))).into_response();
    let Some(Value::Object(headers)) = headers else { return response };
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str());
        let value = value.as_str().and_then(|v| HeaderValue::try_from(v).ok());
        if let (Ok(name), Some(value)) = (name, value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_are_short_visible_ascii_given_once() {
        assert_eq!(Keys::from_headers(&headers(&[])).unwrap(), None);
        assert_eq!(Keys::from_headers(&headers(&["order-42"])).unwrap().as_deref(), Some("order-42"));
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for bad in [vec![""], vec!["a", "b"], vec![long.as_str()], vec!["tab\there"]] {
            let err = Keys::from_headers(&headers(&bad)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }
}
