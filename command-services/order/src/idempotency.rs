//! `Idempotency-Key` on `POST /orders`: a retried request gets the first answer again (status,
//! body, `Location`) instead of placing a second order. Keys live in this service's own
//! database, so they survive restarts of the gateway and of this service.
//!
//! A request claims its key with the write that creates its resource (the order), in the same
//! statement ([`eventstore::pg_store::Guard`]): a key is never claimed without its order, nor an
//! order placed without its key, and placing an order costs one round trip, not two. A request
//! whose write finds the key claimed writes nothing and answers what the first one did. A success
//! (2xx) is not recorded: the resource is its answer, and a repeat builds that answer from it (see
//! [`Keys::once`]). Any other answer (a refusal such as an unknown customer) is recorded with its
//! status, body and headers, unless the key was claimed meanwhile (then that is the answer). The
//! same key with a different body is refused (422). A server error records nothing: nothing is
//! known to have happened, so the client may retry. Concurrent requests with one key may both do
//! the work up to the write; only one of them writes.
//!
//! Claims made by earlier versions, before the claim rode on the write, may name a resource that
//! was never created: a repeat waits for their answer, and takes over one left for
//! [`ABANDONED_AFTER`] (it frees the key and asks the client to retry).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use eventstore::pg_store::{Guard, GuardedWrite};
use runtime::http::ApiError;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::Arc;
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
    /// The claim of a key, stored by the write that creates its resource.
    claim: GuardedWrite,
}

impl Keys {
    /// Create or update the table (versions 6_000_001.., see `eventstore::db`).
    pub async fn migrate(pool: PgPool) -> anyhow::Result<Self> {
        eventstore::db::migrate(&pool, sqlx::migrate!()).await?;
        let claim = format!(
            "INSERT INTO idempotency (key, request_hash, resource) VALUES ($1, {HASH_OF_2}, $3) \
             ON CONFLICT DO NOTHING RETURNING 1"
        );
        Ok(Self { pool, claim: GuardedWrite::new(&claim, 3) })
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

    /// Run `work` once for `key` and `request`: it creates `resource` with a write made under
    /// the guard it is given (see [`eventstore::pg_store::Guard`]), or answers why not. A
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
        F: FnOnce(Arc<Guard>) -> Fut,
        Fut: Future<Output = Result<Response, ApiError>>,
        C: Fn(String) -> CFut,
        CFut: Future<Output = Result<Option<Response>, ApiError>>,
    {
        let canonical = serde_json::to_string(request).map_err(ApiError::internal)?;
        let guard = Arc::new(self.claim.guard(vec![key.to_owned(), canonical.clone(), resource.to_owned()]));
        let response = work(guard.clone()).await.unwrap_or_else(IntoResponse::into_response);
        if guard.taken() {
            return self.first_answer(key, &canonical, &created).await;
        }
        let status = response.status();
        if status.is_success() {
            if !guard.stored() {
                tracing::error!(key, "a success under an Idempotency-Key without a write under its guard");
            }
            return Ok(response);
        }
        if status.is_server_error() {
            // The write may have gone through all the same (its answer lost on the way back):
            // then its resource is the answer, now and for a repeat.
            if let Ok(Found::Answer(answer)) = self.stored(key, &canonical, &created).await {
                return Ok(answer);
            }
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
        let recorded = sqlx::query(&format!(
            "INSERT INTO idempotency (key, request_hash, status, body, headers) \
             VALUES ($1, {HASH_OF_2}, $3, $4, $5) ON CONFLICT DO NOTHING"
        ))
        .bind(key)
        .bind(&canonical)
        .bind(i32::from(parts.status.as_u16()))
        .bind(&body)
        .bind(Value::Object(headers))
        .execute(&self.pool)
        .await;
        match recorded {
            Ok(done) if done.rows_affected() == 0 => self.first_answer(key, &canonical, &created).await,
            Ok(_) => Ok(Response::from_parts(parts, Body::from(bytes))),
            Err(e) => {
                // Answer it all the same: nothing was created, a repeat does the work again.
                tracing::error!(error = %e, key, "recording the idempotent answer failed");
                Ok(Response::from_parts(parts, Body::from(bytes)))
            }
        }
    }

    /// The answer of the request that claimed `key` first, waiting for it while it is under way.
    async fn first_answer<C, CFut>(&self, key: &str, canonical: &str, created: &C) -> Result<Response, ApiError>
    where
        C: Fn(String) -> CFut,
        CFut: Future<Output = Result<Option<Response>, ApiError>>,
    {
        let deadline = Instant::now() + WAIT_FOR_FIRST;
        let retry = |why: &str| {
            ApiError::conflict(format!("a request with this Idempotency-Key {why}; retry it"))
                .with_detail(json!({ "idempotency_key": key }))
        };
        loop {
            match self.stored(key, canonical, created).await? {
                Found::Answer(answer) => return Ok(answer),
                Found::Nothing => return Err(retry("was given up")),
                Found::Pending { abandoned: true } => {
                    self.release(key).await?;
                    return Err(retry("was given up"));
                }
                Found::Pending { abandoned: false } if Instant::now() < deadline => {
                    tokio::time::sleep(POLL_EVERY).await;
                }
                Found::Pending { .. } => return Err(retry("is still in progress")),
            }
        }
    }

    /// What is stored under `key`: the answer for `canonical`, if there is one yet.
    async fn stored<C, CFut>(&self, key: &str, canonical: &str, created: &C) -> Result<Found, ApiError>
    where
        C: Fn(String) -> CFut,
        CFut: Future<Output = Result<Option<Response>, ApiError>>,
    {
        let claim: Option<Claim> = sqlx::query_as(&format!(
            "SELECT request_hash = {HASH_OF_2} AS same_request, status, body, headers, resource,
                    created_at < now() - interval '{ABANDONED_AFTER}' AS abandoned
             FROM idempotency WHERE key = $1"
        ))
        .bind(key)
        .bind(canonical)
        .fetch_optional(&self.pool)
        .await
        .map_err(ApiError::internal)?;
        let claim = match claim {
            None => return Ok(Found::Nothing),
            Some(Claim { same_request: false, .. }) => {
                return Err(ApiError::unprocessable("Idempotency-Key was already used with a different request")
                    .with_detail(json!({ "idempotency_key": key })));
            }
            Some(Claim { status: Some(status), body, headers, .. }) => {
                return Ok(Found::Answer(replay(status, body, headers)));
            }
            Some(claim) => claim,
        };
        if let Some(resource) = claim.resource
            && let Some(answer) = created(resource).await?
        {
            return Ok(Found::Answer(answer));
        }
        Ok(Found::Pending { abandoned: claim.abandoned })
    }

    /// Free an abandoned claim (one without an answer, left by an earlier version). The caller
    /// has seen that its resource does not exist.
    async fn release(&self, key: &str) -> Result<(), ApiError> {
        sqlx::query(&format!(
            "DELETE FROM idempotency WHERE key = $1 AND status IS NULL \
             AND created_at < now() - interval '{ABANDONED_AFTER}'"
        ))
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(ApiError::internal)?;
        Ok(())
    }
}

/// What is stored under a key.
enum Found {
    Nothing,
    Answer(Response),
    /// Claimed without an answer and without its resource.
    Pending {
        abandoned: bool,
    },
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
