//! Queries of read-model documents that honour a request's consistency token (see
//! [`runtime::consistency`]): [`find_one`] and [`find_view`] wait, bounded, until the document
//! has applied the token's version; [`until_shown`] waits for a write known to take a while.

use crate::readmodel::{ActiveCollection, api_error};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use mongodb::bson::{Bson, Document, doc};
use runtime::consistency::{Freshness, Token, WAIT_LIMIT};
use runtime::http::ApiError;
use runtime::identity::Caller;
use std::time::{Duration, Instant};

/// Whether `doc` has applied the version `token` names (its `v_<stream>` field).
fn reached_by(token: &Token, doc: Option<&Document>) -> bool {
    let version = doc.and_then(|d| match d.get(token.field()) {
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Int32(v)) => Some(i64::from(*v)),
        _ => None,
    });
    version.is_some_and(|v| v >= token.version)
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
        if reached_by(&token, found.as_ref()) {
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

/// Wait until the document `token` names has reached its version: first look after `first`,
/// then after `pace`, each pause half as long again as the one before up to [`SLOWEST_PACE`]
/// (a read model far behind is not asked ever faster by ever more waiters), for at most
/// `limit`. The document once it got there (so the caller need not read it again), `None` if
/// it did not. For a write that is known to take a while to show (the wait of a long-poll);
/// [`find_one`] starts looking at once.
pub async fn until_shown(
    coll: &ActiveCollection,
    token: &Token,
    first: Duration,
    mut pace: Duration,
    limit: Duration,
) -> mongodb::error::Result<Option<Document>> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut next = tokio::time::Instant::now() + first;
    loop {
        tokio::time::sleep_until(next.min(deadline)).await;
        let found = coll.get().await?.find_one(doc! { "_id": &token.aggregate_id }).await?;
        if reached_by(token, found.as_ref()) {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        next += pace;
        pace = pace.mul_f64(1.5).min(SLOWEST_PACE);
    }
}

/// How long writes recently took to show in a read model, so that [`until_shown`] first looks
/// about when the document is there instead of several times before: a moving average of the
/// times reported, starting at `initial`, kept between `floor` and [`SLOWEST_PACE`].
pub struct ShowDelay {
    micros: std::sync::atomic::AtomicU64,
    floor: Duration,
}

impl ShowDelay {
    pub fn new(initial: Duration, floor: Duration) -> Self {
        let micros = u64::try_from(initial.as_micros()).unwrap_or(u64::MAX);
        Self { micros: std::sync::atomic::AtomicU64::new(micros), floor }
    }

    /// When to look first.
    pub fn first_look(&self) -> Duration {
        Duration::from_micros(self.micros.load(std::sync::atomic::Ordering::Relaxed)).clamp(self.floor, SLOWEST_PACE)
    }

    /// A write took `took` to show (or was found after that long).
    pub fn shown_after(&self, took: Duration) {
        let took = u64::try_from(took.clamp(self.floor, SLOWEST_PACE).as_micros()).unwrap_or(u64::MAX);
        // One eighth of the way to each new sample; races between requests lose a sample at most.
        let old = self.micros.load(std::sync::atomic::Ordering::Relaxed);
        let new = if took >= old { old + (took - old) / 8 } else { old - (old - took) / 8 };
        self.micros.store(new, std::sync::atomic::Ordering::Relaxed);
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
) -> Result<Response, ApiError> {
    let (doc, fresh) = find_one(coll, id, headers, WAIT_LIMIT).await.map_err(api_error)?;
    view_answer::<V>(doc, fresh, id, caller, what)
}

/// The answer [`find_view`] gives for a document already read.
pub fn view_answer<V: View>(
    doc: Option<Document>,
    fresh: Option<Freshness>,
    id: &str,
    caller: &Caller,
    what: &str,
) -> Result<Response, ApiError> {
    let view = doc.map(mongodb::bson::from_document::<V>).transpose().map_err(ApiError::internal)?;
    let visible = |view: &V| match view.visibility() {
        Visibility::Everyone => true,
        Visibility::OwnedBy(owner) => caller.may_access(owner),
    };
    let Some(mut view) = view.filter(visible) else {
        let missing = ApiError::not_found(format!("{what} {id} not found"));
        return Ok(Freshness::mark(fresh, missing.into_response()));
    };
    view.redact(caller);
    Ok(Freshness::mark(fresh, axum::Json(view).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_field_decides() {
        let t = Token::new("product", "p", 2);
        assert!(!reached_by(&t, None));
        assert!(!reached_by(&t, Some(&doc! { "v_product": 1_i64 })));
        assert!(reached_by(&t, Some(&doc! { "v_product": 2_i64 })));
        assert!(reached_by(&t, Some(&doc! { "v_product": 5_i32 })));
        assert!(!reached_by(&t, Some(&doc! { "v_order": 5_i64 })));
    }

    #[test]
    fn the_first_look_follows_the_delays_reported_within_bounds() {
        let delay = ShowDelay::new(Duration::from_millis(60), Duration::from_millis(10));
        assert_eq!(delay.first_look(), Duration::from_millis(60));
        for _ in 0..100 {
            delay.shown_after(Duration::from_millis(200));
        }
        let first = delay.first_look();
        assert!(first > Duration::from_millis(190) && first <= Duration::from_millis(200), "{first:?}");
        for _ in 0..100 {
            delay.shown_after(Duration::from_secs(30));
        }
        let first = delay.first_look();
        assert!(
            first > Duration::from_millis(490) && first <= SLOWEST_PACE,
            "never later than the slowest pace: {first:?}"
        );
        for _ in 0..200 {
            delay.shown_after(Duration::ZERO);
        }
        assert!(delay.first_look() >= Duration::from_millis(10), "never before the floor");
        assert!(delay.first_look() < Duration::from_millis(12));
    }
}
