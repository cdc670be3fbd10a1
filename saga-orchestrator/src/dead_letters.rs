//! The dead-letter topics and the consumer groups' lag for operators (admin only): `GET /dlq` lists every DLQ with its newest
//! parked messages, decoded with the schema registry where they decode, and what operators did
//! with them; `POST /dlq/{dlq}/{partition}/{offset}/redrive` republishes one to where it came
//! from and `.../discard` sets it aside, each with a reason, recorded in the DLQ with who and why
//! (`messaging::dlq`). The orchestrator serves them because it is the operators' service already
//! (saga search and actions) and holds a Kafka producer and the registry's codec.

use crate::operations::reason;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use contract::{
    ConsumerGroup, ConsumerGroups, ConsumerPartition, DeadLetter, DeadLetterHandled, DeadLetterQueue, DeadLetters,
    OperatorReason,
};
use messaging::dlq::{self, Action, Dlq, Position, Record};
use messaging::producer::Producer;
use runtime::http::{ApiError, Json};
use runtime::identity::Caller;
use schemas::Codec;
use schemas::headers as h;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long reading one DLQ may take.
const READ_PATIENCE: Duration = Duration::from_secs(20);
/// Messages shown per DLQ unless asked otherwise, and at most.
const SHOWN: usize = 50;
const MAX_SHOWN: usize = 500;

#[derive(Clone)]
pub struct DeadLetterDesk {
    pub brokers: String,
    pub codec: Arc<Codec>,
    pub producer: Producer,
    /// One action at a time, so two operators cannot both redrive the same message.
    pub acting: Arc<tokio::sync::Mutex<()>>,
}

fn rfc3339(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

async fn letter(codec: &Codec, dlq: &Dlq, r: &Record) -> DeadLetter {
    let (record, payload, undecodable) = match r.payload.as_deref() {
        None => (None, None, Some("no payload".to_owned())),
        Some(bytes) => match codec.decode(bytes).await {
            Ok(m) => (Some(m.full_name().to_owned()), Some(m.to_json()), None),
            Err(e) => (r.header(h::RECORD), None, Some(e.to_string())),
        },
    };
    let handled = dlq.handled.get(&dlq::position(r)).map(|m| DeadLetterHandled {
        action: m.action.as_str().to_owned(),
        by: m.by.clone(),
        reason: m.reason.clone(),
        at: rfc3339(m.marker.time()),
        to: m.to.clone(),
    });
    let state = match dlq.handled.get(&dlq::position(r)).map(|m| m.action) {
        None => "open",
        Some(Action::Redrive) => "redriven",
        Some(Action::Discard) => "discarded",
    };
    DeadLetter {
        dlq: dlq.name.clone(),
        partition: r.partition,
        offset: r.offset,
        parked_at: rfc3339(r.time()),
        error: r.header(h::DLQ_ERROR).unwrap_or_default(),
        attempts: r.header(h::DLQ_ATTEMPTS).and_then(|a| a.parse().ok()),
        origin: dlq.origin(r),
        key: r.key_text(),
        message_id: r.header(h::MESSAGE_ID),
        record,
        payload,
        undecodable,
        size: r.payload.as_ref().map_or(0, Vec::len),
        state: state.to_owned(),
        handled,
    }
}

async fn queue(desk: &DeadLetterDesk, name: &str, shown: usize) -> anyhow::Result<DeadLetterQueue> {
    let dlq = dlq::load(&desk.brokers, name, READ_PATIENCE).await?;
    let mut messages = Vec::new();
    for r in dlq.parked.iter().rev().take(shown) {
        messages.push(letter(&desk.codec, &dlq, r).await);
    }
    Ok(DeadLetterQueue {
        dlq: dlq.name.clone(),
        topic: dlq.base_topic().to_owned(),
        parked: dlq.parked.len(),
        open: dlq.open(),
        messages,
    })
}

fn unavailable(e: &anyhow::Error) -> ApiError {
    ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("reading the dead-letter topics failed: {e:#}"))
}

/// `GET /dlq?limit=N`: every DLQ, with its newest `N` parked messages (50 by default).
pub async fn list(
    State(desk): State<DeadLetterDesk>,
    caller: Caller,
    Query(mut params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    caller.require_privileged()?;
    let shown = match params.remove("limit") {
        None => SHOWN,
        Some(l) => l.parse::<usize>().ok().filter(|n| (1..=MAX_SHOWN).contains(n)).ok_or_else(|| {
            ApiError::bad_request(format!("limit must be a whole number from 1 to {MAX_SHOWN}, not {l:?}"))
        })?,
    };
    if let Some(unknown) = params.keys().next() {
        return Err(ApiError::bad_request(format!("unknown parameter {unknown:?}: only limit")));
    }
    let names = dlq::topics(&desk.brokers).await.map_err(|e| unavailable(&e))?;
    let queues = futures::future::join_all(names.iter().map(|n| queue(&desk, n, shown))).await;
    let queues = queues.into_iter().collect::<anyhow::Result<Vec<_>>>().map_err(|e| unavailable(&e))?;
    Ok(axum::Json(DeadLetters { queues }).into_response())
}

/// `POST /dlq/{dlq}/{partition}/{offset}/{redrive|discard}` with a reason.
pub async fn act(
    State(desk): State<DeadLetterDesk>,
    caller: Caller,
    Path((name, partition, offset, action)): Path<(String, String, String, String)>,
    Json(body): Json<OperatorReason>,
) -> Result<Response, ApiError> {
    caller.require_privileged()?;
    let action = Action::parse(&action)
        .ok_or_else(|| ApiError::not_found(format!("no dead-letter action {action:?}: redrive or discard")))?;
    if !name.ends_with(dlq::SUFFIX) {
        return Err(ApiError::not_found(format!("{name:?} is not a dead-letter topic (<topic>{})", dlq::SUFFIX)));
    }
    let at = match (partition.parse::<i32>(), offset.parse::<i64>()) {
        (Ok(partition), Ok(offset)) if partition >= 0 && offset >= 0 => Position { partition, offset },
        _ => return Err(ApiError::bad_request("partition and offset are non-negative integers")),
    };
    let why = reason(&body.reason)?;
    let by = caller.who();
    let _one_at_a_time = desk.acting.lock().await;
    let known = dlq::topics(&desk.brokers).await.map_err(|e| unavailable(&e))?;
    if !known.contains(&name) {
        return Err(ApiError::not_found(format!("no dead-letter topic {name}")));
    }
    let dlq = dlq::load(&desk.brokers, &name, READ_PATIENCE).await.map_err(|e| unavailable(&e))?;
    let r = dlq.message(at).map_err(|e| ApiError::not_found(e.to_string()))?;
    if let Some(m) = dlq.handled.get(&at) {
        return Err(ApiError::conflict(format!("this message was {}", dlq::describe_handled(m))));
    }
    let to = match action {
        Action::Redrive => {
            let (topic, partition) = dlq::target(&desk.brokers, &dlq, r).await.map_err(|e| unavailable(&e))?;
            let to = dlq::redrive(&desk.producer, &dlq, r, (&topic, partition), &by, why)
                .await
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            Some(to)
        }
        Action::Discard => {
            dlq::discard(&desk.producer, &dlq, r, &by, why).await.map_err(|e| ApiError::internal(format!("{e:#}")))?;
            None
        }
    };
    tracing::warn!(dlq = name, position = %at, action = action.as_str(), by, why, to, "operator action on a dead letter");
    Ok(axum::Json(serde_json::json!({ "dlq": name, "partition": at.partition, "offset": at.offset,
        "action": action.as_str(), "to": to }))
    .into_response())
}

/// `GET /consumers`: every consumer group with its lag per partition (admin).
pub async fn consumers(State(desk): State<DeadLetterDesk>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_privileged()?;
    let groups = messaging::topic::groups(&desk.brokers)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")))?;
    let groups = groups
        .into_iter()
        .map(|g| {
            let partitions: Vec<ConsumerPartition> = g
                .partitions
                .into_iter()
                .map(|p| ConsumerPartition {
                    lag: (p.high_watermark - p.committed).max(0),
                    topic: p.topic,
                    partition: p.partition,
                    committed: p.committed,
                    high_watermark: p.high_watermark,
                })
                .collect();
            ConsumerGroup {
                group: g.name,
                state: g.state,
                members: g.members,
                lag: partitions.iter().map(|p| p.lag).sum(),
                partitions,
            }
        })
        .collect();
    Ok(axum::Json(ConsumerGroups { groups }).into_response())
}
