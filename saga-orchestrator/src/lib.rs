//! Saga orchestrator: drives the CreateOrder saga ([`saga`]) from the replies on the event
//! topics, with its state in its own PostgreSQL database.
//!
//! Each reply is handled in one transaction: inbox row (dedup by message id), saga row locked
//! (`FOR UPDATE`, so one instance drives a saga at a time), new state, and the commands into
//! the outbox. The relay sends them. Deadlines are rows too, so a restart forgets none.
//! Under load the consumer hands over what is waiting at once: one transaction for the whole
//! batch, each saga it touches stored once with one `SagaUpdated` ([`Orchestrator::handle_many`]).

pub mod definition;
pub mod saga;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};
use platform::consumer::{Delivery, Envelope, Handler, HandlerError};
use platform::es::Metadata;
use platform::http::ApiError;
use platform::outbox::{self, event_mapper};
use platform::readmodel::{self, ActiveCollection, ReadModel};
use platform::service::Wiring;
use platform::{Settings, db};
use saga::{Saga, Timeouts};
use schemas::headers as h;
use schemas::{Message, Topic};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub struct Orchestrator {
    pub pool: PgPool,
    pub timeouts: Timeouts,
}

/// The order a reply belongs to, if it is one the saga listens to.
fn order_of(message: &Message) -> Option<&str> {
    Some(match message {
        Message::OrderPlaced(m) => &m.order_id,
        Message::OrderConfirmed(m) => &m.order_id,
        Message::OrderRejected(m) => &m.order_id,
        Message::OrderCancellationRequested(m) => &m.order_id,
        Message::OrderCancelled(m) => &m.order_id,
        Message::StockReturned(m) => &m.order_id,
        Message::StockReserved(m) => &m.order_id,
        Message::StockReservationFailed(m) => &m.order_id,
        Message::StockReleased(m) => &m.order_id,
        Message::StockCommitted(m) => &m.order_id,
        Message::PaymentAuthorized(m) => &m.order_id,
        Message::PaymentDeclined(m) => &m.order_id,
        Message::PaymentRefunded(m) => &m.order_id,
        Message::PaymentConfirmed(m) => &m.order_id,
        _ => return None,
    })
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn deadline(saga: &Saga) -> Option<DateTime<Utc>> {
    saga.deadline_ms.and_then(DateTime::from_timestamp_millis)
}

/// Store the saga's new state and queue its `SagaUpdated` event, in the caller's transaction.
/// The current span becomes the saga's trace (for its deadline).
async fn save(tx: &mut Transaction<'_, Postgres>, saga: &mut Saga, insert: bool) -> anyhow::Result<()> {
    saga.version += 1;
    let sql = if insert {
        "INSERT INTO sagas (order_id, status, step, deadline, state, traceparent) VALUES ($1, $2, $3, $4, $5, $6)"
    } else {
        "UPDATE sagas SET status = $2, step = $3, deadline = $4, state = $5, \
         traceparent = COALESCE($6, traceparent), updated_at = now() WHERE order_id = $1"
    };
    sqlx::query(sql)
        .bind(&saga.order_id)
        .bind(saga.status.as_str())
        .bind(saga.step.as_str())
        .bind(deadline(saga))
        .bind(serde_json::to_value(&*saga)?)
        .bind(platform::telemetry::current_traceparent())
        .execute(&mut **tx)
        .await?;
    let metadata = Metadata::from([(h::CORRELATION_ID.to_owned(), saga.order_id.clone())]);
    outbox::enqueue_versioned(tx, &saga.view().into(), &metadata, saga.version).await?;
    Ok(())
}

async fn send_all(
    tx: &mut Transaction<'_, Postgres>,
    saga: &Saga,
    commands: &[Message],
    cause: Option<&str>,
) -> anyhow::Result<()> {
    let mut metadata = Metadata::from([(h::CORRELATION_ID.to_owned(), saga.order_id.clone())]);
    if let Some(c) = cause {
        metadata.insert(h::CAUSATION_ID.to_owned(), c.to_owned());
    }
    for command in commands {
        outbox::enqueue(tx, command, &metadata).await?;
    }
    Ok(())
}

#[async_trait]
impl Handler for Orchestrator {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        let Some(order_id) = order_of(&envelope.message) else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query("INSERT INTO inbox (message_id, topic) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&envelope.message_id)
            .bind(&envelope.topic)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if fresh == 0 {
            return Ok(()); // already handled
        }
        let now = millis(Utc::now());
        let row: Option<(serde_json::Value,)> =
            sqlx::query_as("SELECT state FROM sagas WHERE order_id = $1 FOR UPDATE")
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?;
        match (row, &envelope.message) {
            (None, Message::OrderPlaced(placed)) => {
                let (mut saga, commands) = Saga::start(placed, now, self.timeouts);
                save(&mut tx, &mut saga, true).await?;
                send_all(&mut tx, &saga, &commands, Some(&envelope.message_id)).await?;
                tracing::info!(order_id, "saga started");
            }
            (None, _) => {
                // A reply for a saga this orchestrator never started: nothing to drive.
                tracing::warn!(order_id, record = envelope.message.full_name(), "reply for unknown saga ignored");
            }
            (Some(_), Message::OrderPlaced(_)) => {}
            (Some((state,)), reply) => {
                let mut saga: Saga =
                    serde_json::from_value(state).map_err(|e| HandlerError::Permanent(e.to_string()))?;
                let before = (saga.status, saga.step);
                let commands = saga.on_reply(reply, now, self.timeouts);
                save(&mut tx, &mut saga, false).await?;
                send_all(&mut tx, &saga, &commands, Some(&envelope.message_id)).await?;
                if before != (saga.status, saga.step) {
                    metrics::counter!("shop_saga_transitions_total", "status" => saga.status.as_str()).increment(1);
                    tracing::info!(order_id, status = saga.status.as_str(), step = saga.step.as_str(), "saga moved");
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn handle_batch(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        self.handle_many(batch).await
    }
}

/// A saga as one batch leaves it.
struct Touched {
    saga: Saga,
    /// Not in the table before this batch.
    new: bool,
    /// The `traceparent` of the span of the last message that moved it.
    traceparent: Option<String>,
}

impl Orchestrator {
    /// A batch of replies in one transaction: the inbox rows at once, every saga they touch
    /// locked at once (in id order, so two instances never deadlock), the replies applied in
    /// the order received, then each touched saga stored once with one `SagaUpdated` (the
    /// states in between are history entries, not events of their own) and every command
    /// queued in one statement.
    async fn handle_many(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        let replies: Vec<(&Delivery, &str)> =
            batch.iter().filter_map(|d| order_of(&d.envelope.message).map(|o| (d, o))).collect();
        if replies.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let (ids, topics): (Vec<&str>, Vec<&str>) =
            replies.iter().map(|(d, _)| (d.envelope.message_id.as_str(), d.envelope.topic.as_str())).unzip();
        let mut fresh: HashSet<String> = sqlx::query_scalar(
            "INSERT INTO inbox (message_id, topic) SELECT * FROM UNNEST($1::text[], $2::text[]) \
             ON CONFLICT DO NOTHING RETURNING message_id",
        )
        .bind(&ids)
        .bind(&topics)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        if fresh.is_empty() {
            return Ok(()); // all handled before
        }
        let mut orders: Vec<&str> = replies.iter().map(|(_, o)| *o).collect();
        orders.sort_unstable();
        orders.dedup();
        let rows: Vec<(String, serde_json::Value)> =
            sqlx::query_as("SELECT order_id, state FROM sagas WHERE order_id = ANY($1) ORDER BY order_id FOR UPDATE")
                .bind(&orders)
                .fetch_all(&mut *tx)
                .await?;
        let mut sagas: HashMap<String, Touched> = HashMap::with_capacity(orders.len());
        let mut untouched: HashMap<String, Saga> = HashMap::with_capacity(rows.len());
        for (order_id, state) in rows {
            let saga: Saga = serde_json::from_value(state).map_err(|e| HandlerError::Permanent(e.to_string()))?;
            untouched.insert(order_id, saga);
        }
        let now = millis(Utc::now());
        let mut commands: Vec<outbox::Queued> = Vec::new();
        for (delivery, order_id) in replies {
            // A message id twice in one batch (a redelivered record) counts once.
            if !fresh.remove(&delivery.envelope.message_id) {
                continue;
            }
            let _in_span = delivery.span.enter();
            let envelope = &delivery.envelope;
            let traceparent = platform::telemetry::current_traceparent();
            let known = sagas.contains_key(order_id) || untouched.contains_key(order_id);
            let sent = match (known, &envelope.message) {
                (false, Message::OrderPlaced(placed)) => {
                    let (saga, sent) = Saga::start(placed, now, self.timeouts);
                    sagas.insert(order_id.to_owned(), Touched { saga, new: true, traceparent: None });
                    tracing::info!(order_id, "saga started");
                    sent
                }
                (false, _) => {
                    tracing::warn!(order_id, record = envelope.message.full_name(), "reply for unknown saga ignored");
                    continue;
                }
                (true, Message::OrderPlaced(_)) => continue,
                (true, reply) => {
                    let touched = match untouched.remove(order_id) {
                        Some(saga) => {
                            sagas.entry(order_id.to_owned()).or_insert(Touched { saga, new: false, traceparent: None })
                        }
                        None => sagas.get_mut(order_id).expect("known saga"),
                    };
                    let before = (touched.saga.status, touched.saga.step);
                    let sent = touched.saga.on_reply(reply, now, self.timeouts);
                    if before != (touched.saga.status, touched.saga.step) {
                        metrics::counter!("shop_saga_transitions_total", "status" => touched.saga.status.as_str())
                            .increment(1);
                        tracing::info!(
                            order_id,
                            status = touched.saga.status.as_str(),
                            step = touched.saga.step.as_str(),
                            "saga moved"
                        );
                    }
                    sent
                }
            };
            let touched = sagas.get_mut(order_id).expect("touched saga");
            touched.traceparent = traceparent.clone();
            let mut metadata = Metadata::from([
                (h::CORRELATION_ID.to_owned(), order_id.to_owned()),
                (h::CAUSATION_ID.to_owned(), envelope.message_id.clone()),
            ]);
            if let Some(tp) = traceparent {
                metadata.insert(h::TRACEPARENT.to_owned(), tp);
            }
            commands.extend(sent.into_iter().map(|message| outbox::Queued {
                message,
                metadata: metadata.clone(),
                version: 0,
            }));
        }
        store_all(&mut tx, &mut sagas).await?;
        // The sagas' events after the commands: a reader of both sees a step's command no later
        // than the state that says it was sent.
        let updates = sagas.values().map(|t| {
            let mut metadata = Metadata::from([(h::CORRELATION_ID.to_owned(), t.saga.order_id.clone())]);
            if let Some(tp) = &t.traceparent {
                metadata.insert(h::TRACEPARENT.to_owned(), tp.clone());
            }
            outbox::Queued { message: t.saga.view().into(), metadata, version: t.saga.version }
        });
        commands.extend(updates);
        outbox::enqueue_many(&mut tx, &commands).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Store the sagas a batch touched: one new version each, inserts and updates one statement each.
async fn store_all(tx: &mut Transaction<'_, Postgres>, sagas: &mut HashMap<String, Touched>) -> anyhow::Result<()> {
    for (new, sql) in [
        (
            true,
            "INSERT INTO sagas (order_id, status, step, deadline, state, traceparent) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]::jsonb[], $6::text[])",
        ),
        (
            false,
            "UPDATE sagas SET status = u.status, step = u.step, deadline = u.deadline, state = u.state, \
                    traceparent = COALESCE(u.traceparent, sagas.traceparent), updated_at = now() \
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]::jsonb[], $6::text[]) \
                    AS u (order_id, status, step, deadline, state, traceparent) \
              WHERE sagas.order_id = u.order_id",
        ),
    ] {
        let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for t in sagas.values_mut().filter(|t| t.new == new) {
            t.saga.version += 1;
            columns.0.push(t.saga.order_id.clone());
            columns.1.push(t.saga.status.as_str());
            columns.2.push(t.saga.step.as_str());
            columns.3.push(deadline(&t.saga));
            columns.4.push(serde_json::to_string(&t.saga)?);
            columns.5.push(t.traceparent.clone());
        }
        if columns.0.is_empty() {
            continue;
        }
        sqlx::query(sql)
            .bind(&columns.0)
            .bind(&columns.1)
            .bind(&columns.2)
            .bind(&columns.3)
            .bind(&columns.4)
            .bind(&columns.5)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Orchestrator {
    /// Fire the deadlines that passed. Each saga in its own transaction, locked, in a span of
    /// the saga's trace.
    pub async fn fire_timeouts(&self) -> anyhow::Result<usize> {
        let due: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT order_id, traceparent FROM sagas WHERE deadline IS NOT NULL AND deadline <= now() \
             ORDER BY deadline LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut fired = 0;
        for (order_id, traceparent) in due {
            let span = tracing::info_span!(
                "saga timeout",
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                correlation_id = %order_id,
            );
            platform::telemetry::adopt(&span, platform::telemetry::context_from_traceparent(traceparent.as_deref()));
            if self.fire_timeout(&order_id).instrument(span).await? {
                fired += 1;
            }
        }
        Ok(fired)
    }

    /// Fire the deadline of one saga if it is still due and nobody else holds it.
    async fn fire_timeout(&self, order_id: &str) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(serde_json::Value,)> =
            sqlx::query_as("SELECT state FROM sagas WHERE order_id = $1 AND deadline <= now() FOR UPDATE SKIP LOCKED")
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((state,)) = row else { return Ok(false) };
        let mut saga: Saga = serde_json::from_value(state)?;
        let commands = saga.on_timeout(millis(Utc::now()));
        save(&mut tx, &mut saga, false).await?;
        send_all(&mut tx, &saga, &commands, None).await?;
        tx.commit().await?;
        tracing::warn!(order_id, reason = saga.reason.as_deref().unwrap_or_default(), "saga step timed out");
        Ok(true)
    }
}

/// Queries answer from the `sagas` read model (built by the projectors from `saga.events`).
pub fn app(sagas: ActiveCollection) -> Router {
    Router::new()
        .route("/sagas", get(list))
        .route("/sagas/definition", get(|| async { axum::Json(definition::create_order()) }))
        .route("/sagas/{id}", get(find))
        .with_state(sagas)
}

/// A read-model document as API JSON: `_id` becomes `id`, version guards are dropped.
fn to_json(doc: Document) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (k, v) in doc {
        if k.starts_with("v_") {
            continue;
        }
        let key = if k == "_id" { "id".to_owned() } else { k };
        out.insert(key, v.into_relaxed_extjson());
    }
    serde_json::Value::Object(out)
}

async fn list(State(sagas): State<ActiveCollection>) -> Result<Response, ApiError> {
    let coll = sagas.get().await?;
    let docs: Vec<Document> = coll
        .find(doc! {})
        .projection(doc! { "history": 0, "lines": 0 })
        .sort(doc! { "_id": -1 })
        .limit(500)
        .await?
        .try_collect()
        .await?;
    Ok(axum::Json(docs.into_iter().map(to_json).collect::<Vec<_>>()).into_response())
}

async fn find(State(sagas): State<ActiveCollection>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let coll = sagas.get().await?;
    let doc = coll.find_one(doc! { "_id": &id }).await?;
    let doc = doc.ok_or_else(|| ApiError::not_found(format!("saga {id} not found")))?;
    Ok(axum::Json(to_json(doc)).into_response())
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let timeouts = Timeouts { step_ms: i64::try_from(settings.saga_step_timeout_ms)? };
    let consumes = [Topic::OrderEvents, Topic::ProductEvents, Topic::PaymentEvents];
    let produces = [Topic::ProductCommands, Topic::PaymentCommands, Topic::OrderCommands, Topic::SagaEvents];
    let mut wiring = Wiring::connect(settings, &produces, &consumes).await?;
    let pool = wiring.database(false).await?;
    db::with_migration_lock(&pool, include_str!("sagas.sql")).await?;
    // Only direct rows exist in this outbox; event rows would be a bug.
    wiring.spawn_relay(
        pool.clone(),
        event_mapper(|_: &str, e: &serde_json::Value| anyhow::bail!("unexpected event row in saga outbox: {e}")),
    );
    let orchestrator = Arc::new(Orchestrator { pool: pool.clone(), timeouts });
    wiring.spawn_consumer("saga-orchestrator", &consumes, orchestrator.clone());
    let token = wiring.shutdown.clone();
    wiring.spawn(async move {
        while !token.is_cancelled() {
            if let Err(e) = orchestrator.fire_timeouts().await {
                tracing::warn!(error = format!("{e:#}"), "timeout scan failed");
            }
            tokio::select! {
                () = token.cancelled() => {},
                () = tokio::time::sleep(Duration::from_millis(500)) => {},
            }
        }
    });
    let token = wiring.shutdown.clone();
    wiring.spawn(sample_saga_counts(pool.clone(), token));
    let mongo = readmodel::connect(&wiring.settings.mongodb_url).await?;
    wiring.serve(app(ActiveCollection::new(&mongo, ReadModel::Sagas))).await
}

/// Gauge of sagas by status (`shop_sagas{status}`), counted in the saga table every few seconds.
pub const SAGAS_GAUGE: &str = "shop_sagas";

async fn sample_saga_counts(pool: PgPool, token: tokio_util::sync::CancellationToken) {
    while !token.is_cancelled() {
        let counts: Result<Vec<(String, i64)>, sqlx::Error> =
            sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status").fetch_all(&pool).await;
        match counts {
            Ok(counts) => {
                for status in saga::Status::ALL.map(saga::Status::as_str) {
                    let n = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                    metrics::gauge!(SAGAS_GAUGE, "status" => status).set(n as f64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting sagas failed"),
        }
        tokio::select! {
            () = token.cancelled() => {},
            () = tokio::time::sleep(Duration::from_secs(5)) => {},
        }
    }
}
