//! Queries of read-model documents that honour a request's consistency token (see
//! [`runtime::consistency`]): [`find_one`] and [`find_view`] wait, bounded, until the document
//! has applied the token's version; [`crate::shown`] waits for a write known to take a while.

use crate::readmodel::{ActiveCollection, api_error};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use mongodb::bson::{Bson, Document, doc};
use runtime::consistency::{Freshness, Token, WAIT_LIMIT};
use runtime::http::ApiError;
use runtime::identity::Caller;
use std::time::{Duration, Instant};

/// Whether `doc` has applied the version `token` names (its `v_<stream>` field).
pub(crate) fn reached_by(token: &Token, doc: Option<&Document>) -> bool {
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
}
