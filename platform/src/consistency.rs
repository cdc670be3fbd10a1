//! Read-your-writes. A command answer carries `X-Consistency-Token: <stream>:<id>:<version>`:
//! the stream (`v_<stream>` in the read model), the aggregate id and the event-store version the
//! write reached. A query given the token waits, bounded by [`WAIT_LIMIT`], until the read model
//! document has applied that version; it then answers `X-Consistency: fresh`, or, when the wait
//! runs out, what it has with `X-Consistency: stale`. A token for another document is ignored.

use crate::identity::Caller;
use crate::readmodel::ActiveCollection;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use mongodb::bson::{Bson, Document, doc};
use sqlx::PgPool;
use std::fmt;
use std::time::{Duration, Instant};

pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-consistency-token");
pub const STATE_HEADER: HeaderName = HeaderName::from_static("x-consistency");
/// The longest a query waits for its token.
pub const WAIT_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Names the read model's version field `v_<stream>`.
    pub stream: String,
    pub aggregate_id: String,
    pub version: i64,
}

impl Token {
    pub fn new(stream: &str, aggregate_id: impl fmt::Display, version: i64) -> Self {
        Self { stream: stream.to_owned(), aggregate_id: aggregate_id.to_string(), version }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let mut parts = raw.trim().splitn(3, ':');
        let (stream, id, version) = (parts.next()?, parts.next()?, parts.next()?);
        let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid(stream) || !valid(id) {
            return None;
        }
        Some(Self::new(stream, id, version.parse().ok().filter(|v| *v > 0)?))
    }

    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).and_then(Self::parse)
    }

    /// The header a command answer carries.
    pub fn header(&self) -> (HeaderName, HeaderValue) {
        let value = HeaderValue::try_from(self.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""));
        (TOKEN_HEADER, value)
    }

    fn field(&self) -> String {
        format!("v_{}", self.stream)
    }

    fn reached_by(&self, doc: Option<&Document>) -> bool {
        let version = doc.and_then(|d| match d.get(self.field()) {
            Some(Bson::Int64(v)) => Some(*v),
            Some(Bson::Int32(v)) => Some(i64::from(*v)),
            _ => None,
        });
        version.is_some_and(|v| v >= self.version)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.stream, self.aggregate_id, self.version)
    }
}

/// Whether a query saw the write its token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Fresh,
    Stale,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::Stale => "stale",
        }
    }

    /// Mark a response; `None` (no token, or one for another document) leaves it alone.
    pub fn mark(freshness: Option<Self>, mut response: Response) -> Response {
        if let Some(f) = freshness {
            response.headers_mut().insert(STATE_HEADER, HeaderValue::from_static(f.as_str()));
        }
        response
    }
}

/// The latest version of an event-sourced aggregate (0 when it has no events).
pub async fn latest_version(pool: &PgPool, aggregate_type: &str, aggregate_id: &str) -> sqlx::Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2")
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_one(pool)
            .await?;
    Ok(v.unwrap_or(0))
}

/// `find_one` by `_id` that honours the request's token for this document, waiting at most
/// `limit`. The active collection is resolved on every try: a rebuild may switch the read
/// model while a query waits, and the projector that applies the write may already write to
/// the new collection while this service's pointer (cached) still names the old one.
pub async fn find_one(
    coll: &ActiveCollection,
    id: &str,
    headers: &HeaderMap,
    limit: Duration,
) -> mongodb::error::Result<(Option<Document>, Option<Freshness>)> {
    let filter = doc! { "_id": id };
    let token = Token::from_headers(headers).filter(|t| t.aggregate_id == id);
    let Some(token) = token else {
        return Ok((coll.get().await?.find_one(filter).await?, None));
    };
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(10);
    loop {
        let found = coll.get().await?.find_one(filter.clone()).await?;
        if token.reached_by(found.as_ref()) {
            return Ok((found, Some(Freshness::Fresh)));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok((found, Some(Freshness::Stale)));
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The longest a long-poll may hold a request (`GET /api/orders/{id}?wait=`): the service's
/// limit, and what the gateway adds to a forwarded call's timeout.
pub const LONG_POLL_MAX: Duration = Duration::from_secs(25);

/// Wait until the document `token` names has reached its version: first look after `first`,
/// then after `pace`, each pause half as long again as the one before up to [`SLOWEST_PACE`]
/// (a read model far behind is not asked ever faster by ever more waiters), for at most
/// `limit`. Whether it got there. For a write that is known to take a while to show (the wait
/// of a long-poll); [`find_one`] starts looking at once.
pub async fn until_shown(
    coll: &ActiveCollection,
    token: &Token,
    first: Duration,
    mut pace: Duration,
    limit: Duration,
) -> mongodb::error::Result<bool> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut next = tokio::time::Instant::now() + first;
    let projection = doc! { token.field(): 1 };
    loop {
        tokio::time::sleep_until(next.min(deadline)).await;
        let found =
            coll.get().await?.find_one(doc! { "_id": &token.aggregate_id }).projection(projection.clone()).await?;
        if token.reached_by(found.as_ref()) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        next += pace;
        pace = pace.mul_f64(1.5).min(SLOWEST_PACE);
    }
}

/// The longest pause of [`until_shown`].
pub const SLOWEST_PACE: Duration = Duration::from_millis(500);

/// Who may read a read-model document.
pub enum Visibility<'a> {
    Everyone,
    /// Its owner and privileged callers only (see [`Caller::may_access`]).
    OwnedBy(Option<&'a str>),
}

/// A read-model document as the API shows it.
pub trait View: serde::de::DeserializeOwned + serde::Serialize {
    fn visibility(&self) -> Visibility<'_> {
        Visibility::Everyone
    }

    /// Remove what `caller` may not see (e.g. admin-only fields).
    fn redact(&mut self, _caller: &Caller) {}
}

/// A read-model document as the API shows it (`T`, one of the `contract` types), with the
/// owner that decides who may read it; the owner is never shown.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct Owned<T> {
    #[serde(flatten)]
    pub view: T,
    #[serde(default, skip_serializing)]
    pub owner: Option<String>,
}

impl<T: serde::de::DeserializeOwned + serde::Serialize> View for Owned<T> {
    fn visibility(&self) -> Visibility<'_> {
        Visibility::OwnedBy(self.owner.as_deref())
    }
}

/// `GET` of one read-model document as `V`: honours the request's consistency token (see
/// [`find_one`]), answers 404 with `what` when the document is missing or `caller` may not see
/// it (so others' ids leak nothing), and marks freshness.
pub async fn find_view<V: View>(
    coll: &ActiveCollection,
    id: &str,
    headers: &HeaderMap,
    caller: &Caller,
    what: &str,
) -> Result<Response, crate::http::ApiError> {
    use axum::response::IntoResponse;
    let (doc, fresh) = find_one(coll, id, headers, WAIT_LIMIT).await?;
    let view = doc.map(mongodb::bson::from_document::<V>).transpose().map_err(crate::http::ApiError::internal)?;
    let visible = |view: &V| match view.visibility() {
        Visibility::Everyone => true,
        Visibility::OwnedBy(owner) => caller.may_access(owner),
    };
    let Some(mut view) = view.filter(visible) else {
        let missing = crate::http::ApiError::not_found(format!("{what} {id} not found"));
        return Ok(Freshness::mark(fresh, missing.into_response()));
    };
    view.redact(caller);
    Ok(Freshness::mark(fresh, axum::Json(view).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = Token::new("order", "0190-ab", 3);
        assert_eq!(Token::parse(&t.to_string()), Some(t));
        for bad in ["", "order", "order:x", "order:x:0", "order:x:-1", "order:x:y", "or der:x:1", ":x:1"] {
            assert_eq!(Token::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn version_field_decides() {
        let t = Token::new("product", "p", 2);
        assert!(!t.reached_by(None));
        assert!(!t.reached_by(Some(&doc! { "v_product": 1_i64 })));
        assert!(t.reached_by(Some(&doc! { "v_product": 2_i64 })));
        assert!(t.reached_by(Some(&doc! { "v_product": 5_i32 })));
        assert!(!t.reached_by(Some(&doc! { "v_order": 5_i64 })));
    }
}
