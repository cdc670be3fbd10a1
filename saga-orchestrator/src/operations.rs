//! What operators see and do (admin only): sagas searched over all of them, paged on the
//! server with counts, from the orchestrator's own table (indexed by status, customer and start
//! time); and actions on one saga or on every saga a filter matches: retry what it waits on, or
//! compensate now. Each action runs like a reply would (row locked, new state, commands into the
//! outbox, one transaction) in a span of the order's trace, and the saga's history records who
//! acted and why, which the dashboard's timeline shows.

use crate::engine::{ActionError, Status};
use crate::saga::Saga;
use crate::{Orchestrator, millis, store_one};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use contract::{
    BulkSagaAction, BulkSagaResult, OperatorReason, SagaActionKind, SagaFilter, SagaPage, SagaRefusal, SagaSummary,
};
use runtime::http::{ApiError, Json};
use runtime::identity::Caller;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::Instrument;

/// Sagas per page unless asked otherwise, and at most.
const PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;
/// Sagas one bulk call acts on at most.
pub const BULK_LIMIT: i64 = 1000;
/// Longest reason kept in a history entry.
const MAX_REASON: usize = 500;

/// A validated [`SagaFilter`]: `None` matches everything.
#[derive(Debug, Default, Clone, PartialEq)]
struct Where {
    status: Option<String>,
    step: Option<String>,
    customer: Option<String>,
    order_prefix: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

impl Where {
    fn parse(f: &SagaFilter) -> Result<Self, ApiError> {
        let status = match f.status.as_deref().filter(|s| !s.is_empty()) {
            Some(s) if Status::ALL.iter().any(|st| st.as_str() == s) => Some(s.to_owned()),
            Some(s) => {
                let known: Vec<&str> = Status::ALL.iter().map(|st| st.as_str()).collect();
                return Err(ApiError::bad_request(format!("status {s:?} is none of {}", known.join(", "))));
            }
            None => None,
        };
        let customer = match f.customer_id.as_deref().filter(|s| !s.is_empty()) {
            Some(c) => Some(
                uuid::Uuid::try_parse(c)
                    .map_err(|_| ApiError::bad_request(format!("customer_id {c:?} is not a UUID")))?
                    .to_string(),
            ),
            None => None,
        };
        let order_prefix = match f.order_id.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(o) if o.len() <= 36 && o.chars().all(|c| c.is_ascii_hexdigit() || c == '-') => {
                Some(o.to_ascii_lowercase())
            }
            Some(o) => return Err(ApiError::bad_request(format!("order_id {o:?} is not (the beginning of) a UUID"))),
            None => None,
        };
        let time = |name: &str, v: &Option<String>| -> Result<Option<DateTime<Utc>>, ApiError> {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| {
                    DateTime::parse_from_rfc3339(s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| ApiError::bad_request(format!("{name} {s:?} is not an RFC 3339 time")))
                })
                .transpose()
        };
        let step = f.step.clone().filter(|s| !s.is_empty());
        if step.as_ref().is_some_and(|s| s.len() > 64) {
            return Err(ApiError::bad_request("step is longer than a step name"));
        }
        Ok(Where { status, step, customer, order_prefix, from: time("from", &f.from)?, to: time("to", &f.to)? })
    }
}

/// The filter as SQL over `$1..$6` (status, step, customer, order prefix, from, to).
const WHERE: &str = "($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR step = $2) \
     AND ($3::text IS NULL OR customer_id = $3) AND ($4::text IS NULL OR starts_with(order_id, $4)) \
     AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6::timestamptz IS NULL OR created_at < $6)";

macro_rules! bind_where {
    ($query:expr, $w:expr, $status:expr) => {
        $query.bind($status).bind(&$w.step).bind(&$w.customer).bind(&$w.order_prefix).bind($w.from).bind($w.to)
    };
}

/// Where the next page starts: after this saga (newest first).
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    created_at: DateTime<Utc>,
    order_id: String,
}

impl Cursor {
    fn parse(raw: &str) -> Option<Self> {
        let (micros, order_id) = raw.split_once('.')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        (!order_id.is_empty()).then(|| Cursor { created_at, order_id: order_id.to_owned() })
    }

    fn render(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_micros(), self.order_id)
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// What the list and the panel show of every saga.
/// A saga row as the list shows it.
fn summary(
    state: serde_json::Value,
    created_at: DateTime<Utc>,
    traceparent: Option<&str>,
) -> Result<SagaSummary, ApiError> {
    let saga = Saga::from_stored(state).map_err(ApiError::internal)?;
    let v = saga.view();
    let ended = saga.ended_ms.and_then(DateTime::from_timestamp_millis);
    Ok(SagaSummary {
        state: v.state().map_err(ApiError::internal)?,
        started_at: rfc3339(created_at),
        ended_at: ended.map(rfc3339),
        duration_ms: ended.map(|e| (e - created_at).num_milliseconds().max(0)),
        trace_id: traceparent.and_then(|tp| tp.split('-').nth(1)).map(str::to_owned),
    })
}

type Row = (String, serde_json::Value, DateTime<Utc>, Option<String>);

/// `GET /sagas/{id}`: one saga with its lines and history, from the saga table, as the list
/// and the actions see it. (The projectors' `sagas` read model holds the same documents a
/// moment later: it is gathered in batches of half a second, and a panel opened from the list
/// or after an action must not show an older saga, or none yet.)
pub async fn find(State(o): State<Arc<Orchestrator>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let state: Option<serde_json::Value> = sqlx::query_scalar("SELECT state FROM sagas WHERE order_id = $1")
        .bind(&id)
        .fetch_optional(&o.pool)
        .await
        .map_err(ApiError::internal)?;
    let state = state.ok_or_else(|| ApiError::not_found(format!("saga {id} not found")))?;
    let saga = Saga::from_stored(state).map_err(ApiError::internal)?.view().to_api().map_err(ApiError::internal)?;
    Ok(axum::Json(saga).into_response())
}

/// `GET /sagas?status=&step=&customer_id=&order_id=&from=&to=&limit=&after=`: newest first.
pub async fn list(
    State(o): State<Arc<Orchestrator>>,
    caller: Caller,
    Query(mut params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require_privileged()?;
    let limit = match params.remove("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be 1 to {MAX_PAGE}")))?,
        None => PAGE,
    };
    let after = match params.remove("after").filter(|a| !a.is_empty()) {
        Some(a) => Some(Cursor::parse(&a).ok_or_else(|| ApiError::bad_request("after is not a cursor this API gave"))?),
        None => None,
    };
    let filter: SagaFilter = serde_json::to_value(&params)
        .and_then(serde_json::from_value)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let w = Where::parse(&filter)?;
    let sql = format!(
        "SELECT order_id, state, created_at, traceparent FROM sagas WHERE {WHERE} \
           AND ($7::timestamptz IS NULL OR (created_at, order_id) < ($7, $8)) \
         ORDER BY created_at DESC, order_id DESC LIMIT $9"
    );
    let rows: Vec<Row> = bind_where!(sqlx::query_as(&sql), w, &w.status)
        .bind(after.as_ref().map(|c| c.created_at))
        .bind(after.as_ref().map(|c| c.order_id.clone()))
        .bind(limit + 1)
        .fetch_all(&o.pool)
        .await
        .map_err(ApiError::internal)?;
    let counts: Vec<(String, i64)> = bind_where!(
        sqlx::query_as(&format!("SELECT status, count(*) FROM sagas WHERE {WHERE} GROUP BY status")),
        w,
        None::<String>
    )
    .fetch_all(&o.pool)
    .await
    .map_err(ApiError::internal)?;
    let counts: BTreeMap<String, i64> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), counts.iter().find(|(c, _)| c == s.as_str()).map_or(0, |(_, n)| *n)))
        .collect();
    let total = match &w.status {
        Some(s) => counts.get(s).copied().unwrap_or(0),
        None => counts.values().sum(),
    };
    let more = rows.len() as i64 > limit;
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for (order_id, state, created_at, traceparent) in rows.into_iter().take(limit as usize) {
        items.push(summary(state, created_at, traceparent.as_deref())?);
        last = Some(Cursor { created_at, order_id });
    }
    let next = if more { last.map(|c| c.render()) } else { None };
    Ok(axum::Json(SagaPage { items, next, total, counts }).into_response())
}

pub(crate) fn reason(raw: &str) -> Result<&str, ApiError> {
    let r = raw.trim();
    if r.is_empty() {
        return Err(ApiError::unprocessable("a reason is required: it is kept with who acted"));
    }
    if r.chars().count() > MAX_REASON {
        return Err(ApiError::unprocessable(format!("the reason is longer than {MAX_REASON} characters")));
    }
    Ok(r)
}

/// Why one action did not happen.
enum Failed {
    Unknown,
    Refused(ActionError),
    Store(anyhow::Error),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Store(e.into())
    }
}

impl Orchestrator {
    /// Apply one operator action to one saga, in its own transaction and in the order's trace.
    async fn act(&self, order_id: &str, kind: SagaActionKind, by: &str, why: &str) -> Result<(), Failed> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(serde_json::Value, Option<String>)> =
            sqlx::query_as("SELECT state, traceparent FROM sagas WHERE order_id = $1 FOR UPDATE")
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((state, traceparent)) = row else { return Err(Failed::Unknown) };
        let span = tracing::info_span!(
            "saga operator action",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            correlation_id = %order_id,
            action = ?kind,
        );
        runtime::telemetry::adopt(&span, runtime::telemetry::context_from_traceparent(traceparent.as_deref()));
        async move {
            let mut saga = Saga::from_stored(state).map_err(|e| Failed::Store(e.into()))?;
            let now = millis(Utc::now());
            let sent = match kind {
                SagaActionKind::Retry => saga.retry(by, why, now, self.timeouts),
                SagaActionKind::Compensate => saga.compensate_now(by, why, now),
            }
            .map_err(Failed::Refused)?;
            let traceparent = runtime::telemetry::current_traceparent().or(traceparent);
            store_one(tx, saga, sent, traceparent).await.map_err(Failed::Store)?;
            tracing::warn!(order_id, by, why, action = ?kind, "operator action on a saga");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// `POST /sagas/{id}/retry` (send again every command the saga waits on) and
/// `POST /sagas/{id}/compensate` (give up on the running step and compensate).
pub async fn act_on_one(
    State(o): State<Arc<Orchestrator>>,
    caller: Caller,
    Path((id, action)): Path<(String, String)>,
    Json(body): Json<OperatorReason>,
) -> Result<Response, ApiError> {
    caller.require_privileged()?;
    let kind = match action.as_str() {
        "retry" => SagaActionKind::Retry,
        "compensate" => SagaActionKind::Compensate,
        other => return Err(ApiError::not_found(format!("no saga action {other:?}: retry or compensate"))),
    };
    let why = reason(&body.reason)?;
    match o.act(&id, kind, &caller.who(), why).await {
        Ok(()) => Ok(axum::Json(serde_json::json!({ "id": id, "applied": true })).into_response()),
        Err(Failed::Unknown) => Err(ApiError::not_found(format!("saga {id} not found"))),
        Err(Failed::Refused(e)) => Err(ApiError::conflict(e.to_string())),
        Err(Failed::Store(e)) => Err(ApiError::internal(format!("{e:#}"))),
    }
}

/// `POST /sagas/actions`: one action on every saga the filter matches (oldest first, at most
/// [`BULK_LIMIT`] per call), or with `preview` only how many and which.
pub async fn bulk(
    State(o): State<Arc<Orchestrator>>,
    caller: Caller,
    Json(body): Json<BulkSagaAction>,
) -> Result<Response, ApiError> {
    caller.require_privileged()?;
    let why = reason(&body.reason)?;
    let w = Where::parse(&body.filter)?;
    let matched: i64 =
        bind_where!(sqlx::query_scalar(&format!("SELECT count(*) FROM sagas WHERE {WHERE}")), w, &w.status)
            .fetch_one(&o.pool)
            .await
            .map_err(ApiError::internal)?;
    let ids: Vec<String> = bind_where!(
        sqlx::query_scalar(&format!("SELECT order_id FROM sagas WHERE {WHERE} ORDER BY created_at, order_id LIMIT $7")),
        w,
        &w.status
    )
    .bind(BULK_LIMIT)
    .fetch_all(&o.pool)
    .await
    .map_err(ApiError::internal)?;
    let sample = ids.iter().take(20).cloned().collect();
    let more = matched > ids.len() as i64;
    if body.preview {
        return Ok(axum::Json(BulkSagaResult { matched, applied: 0, refused: vec![], sample, more }).into_response());
    }
    let by = caller.who();
    let (mut applied, mut refused) = (0, Vec::new());
    for id in ids {
        match o.act(&id, body.action, &by, why).await {
            Ok(()) => applied += 1,
            Err(Failed::Unknown) => {}
            Err(Failed::Refused(e)) => refused.push(SagaRefusal { id, error: e.to_string() }),
            Err(Failed::Store(e)) => return Err(ApiError::internal(format!("{e:#}"))),
        }
    }
    Ok(axum::Json(BulkSagaResult { matched, applied, refused, sample, more }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap(),
            order_id: "0190-ab".into(),
        };
        assert_eq!(Cursor::parse(&c.render()), Some(c));
        for bad in ["", "x", "12", "12.", "x.abc", ".abc"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn filters_are_checked() {
        let ok = SagaFilter {
            status: Some("RUNNING".into()),
            order_id: Some("01A2".into()),
            from: Some("2026-12-01T00:00:00Z".into()),
            ..SagaFilter::default()
        };
        let w = Where::parse(&ok).expect("valid");
        assert_eq!(w.order_prefix.as_deref(), Some("01a2"));
        for bad in [
            SagaFilter { status: Some("DONE".into()), ..SagaFilter::default() },
            SagaFilter { customer_id: Some("nope".into()), ..SagaFilter::default() },
            SagaFilter { order_id: Some("x%".into()), ..SagaFilter::default() },
            SagaFilter { to: Some("yesterday".into()), ..SagaFilter::default() },
        ] {
            assert!(Where::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_reason_is_required_and_bounded() {
        assert!(reason("  ").is_err());
        assert!(reason(&"x".repeat(MAX_REASON + 1)).is_err());
        assert_eq!(reason(" retry after the outage ").ok(), Some("retry after the outage"));
    }
}
