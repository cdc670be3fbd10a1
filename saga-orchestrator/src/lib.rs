//! Saga orchestrator: drives the CreateOrder saga ([`saga`]) from the replies on the event
//! topics, with its state in its own PostgreSQL database.
//!
//! Each reply is handled in one transaction: inbox row (dedup by message id), saga row locked
//! (`FOR UPDATE`, so one instance drives a saga at a time), new state, and the commands into
//! the outbox. The relay sends them. Deadlines are rows too, so a restart forgets none.
//! Under load the consumer hands over what is waiting at once: one transaction for the whole
//! batch, each saga it touches stored once ([`Orchestrator::handle_many`]).
//! A saga's state goes to `saga.events` (`SagaUpdated`, the whole saga) in the transaction that
//! settles it (it ended, and the replies that follow an end, such as stock committed per line,
//! are in), and otherwise (still running, or ended but waiting for those replies) once it has
//! rested at one version for [`PUBLISH_AFTER`] ([`Orchestrator::publish_resting`]): one record
//! for most sagas, not one per step. Which version was published is a column of the saga's row,
//! written with the record.
//! Every transaction that moves sagas also announces them to all instances (PostgreSQL
//! `NOTIFY`, delivered iff it commits), for the dashboard's live stream ([`live`]).

pub mod dead_letters;
pub mod definition;
pub mod engine;
pub mod live;
pub mod operations;
pub mod saga;

use async_trait::async_trait;
use axum::Router;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use messaging::consumer::{Delivery, Envelope, Handler, HandlerError};
use messaging::outbox::{self, Metadata, event_mapper};
use runtime::Settings;
use saga::{Saga, Timeouts};
use schemas::headers as h;
use schemas::{Message, Topic};
use service_kit::Wiring;
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

pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn deadline(saga: &Saga) -> Option<DateTime<Utc>> {
    saga.deadline_ms.and_then(DateTime::from_timestamp_millis)
}

/// Metadata of what a saga sends: its order, the message that caused it (none for a deadline),
/// and the trace of the span that moved the saga.
fn sent_metadata(order_id: &str, cause: Option<&str>, traceparent: Option<&str>) -> Metadata {
    let mut metadata = Metadata::from([(h::CORRELATION_ID.to_owned(), order_id.to_owned())]);
    if let Some(c) = cause {
        metadata.insert(h::CAUSATION_ID.to_owned(), c.to_owned());
    }
    if let Some(tp) = traceparent {
        metadata.insert(h::TRACEPARENT.to_owned(), tp.to_owned());
    }
    metadata
}

#[async_trait]
impl Handler for Orchestrator {
    /// A batch of one: the same transaction as a longer batch.
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        self.handle_many(&[Delivery { envelope: envelope.clone(), span: tracing::Span::current() }]).await
    }

    async fn handle_batch(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        self.handle_many(batch).await
    }
}

/// A saga as one transaction leaves it.
struct Touched {
    saga: Saga,
    /// Not in the table before this transaction.
    new: bool,
    /// A message or deadline moved it: stored (and published if it is settled).
    moved: bool,
    /// The `traceparent` of the span of the last message that moved it.
    traceparent: Option<String>,
}

impl Touched {
    fn change(&self) -> live::Change {
        live::Change {
            id: self.saga.order_id().to_owned(),
            status: self.saga.status,
            step: self.saga.step.as_str().to_owned(),
        }
    }

    fn loaded(saga: Saga) -> Self {
        Self { saga, new: false, moved: false, traceparent: None }
    }

    /// This transaction settled it (ended, and the last reply it waited for came): its
    /// `SagaUpdated` goes out with it. One that ended but still waits for the replies that
    /// follow an end is published when they are in, or once it rests.
    fn publish_now(&self) -> bool {
        self.moved && self.saga.settled()
    }
}

impl Orchestrator {
    /// A batch of replies in one transaction: the inbox rows at once, every saga they touch
    /// locked at once (in id order, so two instances never deadlock), the replies applied in
    /// the order received, then each touched saga stored once (the states in between are
    /// history entries, not events of their own) and every command queued in one statement,
    /// with the `SagaUpdated` of each saga that ended.
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
        for (order_id, state) in rows {
            let saga = Saga::from_stored(state).map_err(|e| HandlerError::Permanent(e.to_string()))?;
            sagas.insert(order_id, Touched::loaded(saga));
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
            let traceparent = runtime::telemetry::current_traceparent();
            let sent = match (sagas.get_mut(order_id), &envelope.message) {
                (None, Message::OrderPlaced(placed)) => {
                    let (saga, sent) = Saga::start(placed, now, self.timeouts);
                    sagas.insert(order_id.to_owned(), Touched { saga, new: true, moved: true, traceparent: None });
                    tracing::info!(order_id, "saga started");
                    sent
                }
                (None, _) => {
                    tracing::warn!(order_id, record = envelope.message.full_name(), "reply for unknown saga ignored");
                    continue;
                }
                (Some(_), Message::OrderPlaced(_)) => continue,
                (Some(touched), reply) => {
                    let before = (touched.saga.status, touched.saga.step.clone());
                    let sent = touched.saga.on_reply(reply, now, self.timeouts);
                    touched.moved = true;
                    if (before.0, before.1.as_str()) != (touched.saga.status, touched.saga.step.as_str()) {
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
            let metadata = sent_metadata(order_id, Some(&envelope.message_id), traceparent.as_deref());
            sagas.get_mut(order_id).expect("touched saga").traceparent = traceparent;
            commands.extend(sent.into_iter().map(|message| outbox::Queued {
                message,
                metadata: metadata.clone(),
                version: 0,
            }));
        }
        persist(&mut tx, &mut sagas, commands).await?;
        tx.commit().await?;
        outbox::written();
        Ok(())
    }
}

/// Store the sagas a transaction touched (one new version each), queue `commands` and, after
/// them, the `SagaUpdated` of each saga that settled, and announce them to the live streams of
/// all instances. Any other is published once it rests ([`Orchestrator::publish_resting`]).
async fn persist(
    tx: &mut Transaction<'_, Postgres>,
    sagas: &mut HashMap<String, Touched>,
    mut commands: Vec<outbox::Queued>,
) -> anyhow::Result<()> {
    store_all(tx, sagas).await?;
    // The sagas' events after the commands: a reader of both sees a step's command no later
    // than the state that says it was sent.
    commands
        .extend(sagas.values().filter(|t| t.publish_now()).map(|t| state_update(&t.saga, t.traceparent.as_deref())));
    outbox::enqueue_many(tx, &commands).await?;
    live::announce(tx, sagas.values().filter(|t| t.moved).map(Touched::change)).await?;
    Ok(())
}

/// A saga's state as the `SagaUpdated` to queue.
fn state_update(saga: &Saga, traceparent: Option<&str>) -> outbox::Queued {
    outbox::Queued {
        message: saga.view().into(),
        metadata: sent_metadata(saga.order_id(), None, traceparent),
        version: saga.version,
    }
}

/// Store the sagas that moved: one new version each, inserts and updates one statement each.
/// A saga that ended is marked published at its new version (its `SagaUpdated` goes out in this
/// transaction); the others keep their published version.
async fn store_all(tx: &mut Transaction<'_, Postgres>, sagas: &mut HashMap<String, Touched>) -> anyhow::Result<()> {
    for (new, sql) in [
        (
            true,
            "INSERT INTO sagas (order_id, status, step, deadline, state, traceparent, customer_id, version, published) \
             SELECT u.order_id, u.status, u.step, u.deadline, u.state, u.traceparent, u.customer_id, u.version, \
                    COALESCE(u.published, 0) \
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]::jsonb[], $6::text[], \
                           $7::text[], $8::bigint[], $9::bigint[]) \
                    AS u (order_id, status, step, deadline, state, traceparent, customer_id, version, published)",
        ),
        (
            false,
            "UPDATE sagas SET status = u.status, step = u.step, deadline = u.deadline, state = u.state, \
                    traceparent = COALESCE(u.traceparent, sagas.traceparent), version = u.version, \
                    published = COALESCE(u.published, sagas.published), updated_at = now() \
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]::jsonb[], $6::text[], \
                          $7::text[], $8::bigint[], $9::bigint[]) \
                    AS u (order_id, status, step, deadline, state, traceparent, customer_id, version, published) \
              WHERE sagas.order_id = u.order_id",
        ),
    ] {
        let mut columns = Columns::default();
        for t in sagas.values_mut().filter(|t| t.moved && t.new == new) {
            t.saga.version += 1;
            columns.order_id.push(t.saga.order_id().to_owned());
            columns.status.push(t.saga.status.as_str());
            columns.step.push(t.saga.step.as_str());
            columns.deadline.push(deadline(&t.saga));
            columns.state.push(serde_json::to_string(&t.saga)?);
            columns.traceparent.push(t.traceparent.clone());
            columns.customer_id.push(t.saga.data.customer_id.clone());
            columns.version.push(t.saga.version);
            columns.published.push(t.publish_now().then_some(t.saga.version));
        }
        if columns.order_id.is_empty() {
            continue;
        }
        sqlx::query(sql)
            .bind(&columns.order_id)
            .bind(&columns.status)
            .bind(&columns.step)
            .bind(&columns.deadline)
            .bind(&columns.state)
            .bind(&columns.traceparent)
            .bind(&columns.customer_id)
            .bind(&columns.version)
            .bind(&columns.published)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// The stored columns of the sagas one statement writes.
#[derive(Default)]
struct Columns<'a> {
    order_id: Vec<String>,
    status: Vec<&'a str>,
    step: Vec<&'a str>,
    deadline: Vec<Option<DateTime<Utc>>>,
    state: Vec<String>,
    traceparent: Vec<Option<String>>,
    customer_id: Vec<String>,
    version: Vec<i64>,
    /// The version marked published: the new one for a saga this move settled, else none (kept).
    published: Vec<Option<i64>>,
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
            runtime::telemetry::adopt(&span, runtime::telemetry::context_from_traceparent(traceparent.as_deref()));
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
        let mut saga = Saga::from_stored(state)?;
        let sent = saga.on_timeout(millis(Utc::now()));
        let reason = saga.reason.clone().unwrap_or_default();
        store_one(tx, saga, sent, runtime::telemetry::current_traceparent()).await?;
        tracing::warn!(order_id, reason, "saga step timed out");
        Ok(true)
    }
}

impl Orchestrator {
    /// Publish the state of every saga that has rested at an unpublished version for `after`
    /// (it waits for a reply, an operator or its deadline): one `SagaUpdated` each, queued
    /// with the mark in one transaction. Sagas another transaction holds are left for the next
    /// call. Returns how many were published.
    pub async fn publish_resting(&self, after: Duration) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(serde_json::Value, Option<String>)> = sqlx::query_as(
            "SELECT state, traceparent FROM sagas \
              WHERE published < version AND updated_at <= now() - make_interval(secs => $1) \
              ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(after.as_secs_f64())
        .bind(PUBLISH_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut updates = Vec::with_capacity(rows.len());
        for (state, traceparent) in rows {
            let saga = Saga::from_stored(state)?;
            updates.push(state_update(&saga, traceparent.as_deref()));
            ids.push(saga.order_id().to_owned());
        }
        outbox::enqueue_many(&mut tx, &updates).await?;
        sqlx::query("UPDATE sagas SET published = version WHERE order_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        outbox::written();
        Ok(ids.len())
    }
}

/// Sagas [`Orchestrator::publish_resting`] takes at most per transaction.
const PUBLISH_BATCH: i64 = 500;

/// How long a saga rests at one version before that version is published (the move that settles
/// it is published at once): most sagas run through their steps, and get the replies that
/// follow their end, faster, and are one `SagaUpdated`. No answer waits for these records (the
/// dashboard reads the saga table).
pub const PUBLISH_AFTER: Duration = Duration::from_secs(1);
/// How often [`Orchestrator::publish_resting`] looks (an index holds the unpublished sagas).
const PUBLISH_SCAN: Duration = Duration::from_millis(250);

/// Store one saga that moved outside a consumer batch (its deadline passed, an operator acted)
/// with the commands it sent, under the row lock `tx` holds, and commit.
pub(crate) async fn store_one(
    mut tx: Transaction<'_, Postgres>,
    saga: Saga,
    sent: Vec<Message>,
    traceparent: Option<String>,
) -> anyhow::Result<()> {
    let order_id = saga.order_id().to_owned();
    let metadata = sent_metadata(&order_id, None, traceparent.as_deref());
    let commands =
        sent.into_iter().map(|message| outbox::Queued { message, metadata: metadata.clone(), version: 0 }).collect();
    let mut touched = HashMap::from([(order_id, Touched { saga, new: false, moved: true, traceparent })]);
    persist(&mut tx, &mut touched, commands).await?;
    tx.commit().await?;
    outbox::written();
    Ok(())
}

/// The HTTP API: the saga's declaration; the operators' search, one saga and the actions on
/// the saga table ([`operations`]); the dead-letter topics and the operators' redrive and
/// discard ([`dead_letters`]); the live stream of saga changes ([`live`]).
pub fn app(orchestrator: Arc<Orchestrator>, desk: dead_letters::DeadLetterDesk, feed: live::Feed) -> Router {
    let ops = Router::new()
        .route("/sagas", get(operations::list))
        .route("/sagas/actions", post(operations::bulk))
        .route("/sagas/{id}", get(operations::find))
        .route("/sagas/{id}/{action}", post(operations::act_on_one))
        .with_state(orchestrator);
    let dead_letters = Router::new()
        .route("/dlq", get(dead_letters::list))
        .route("/consumers", get(dead_letters::consumers))
        .route("/dlq/{dlq}/{partition}/{offset}/{action}", post(dead_letters::act))
        .with_state(desk);
    let live = Router::new().route("/sagas/live", get(live::stream)).with_state(feed);
    Router::new()
        .route("/sagas/definition", get(|| async { axum::Json(definition::create_order()) }))
        .merge(live)
        .merge(ops)
        .merge(dead_letters)
}

pub const CONSUMER_GROUP: &str = "saga-orchestrator";

/// How long a batch of replies waits for more after its first: each batch is one transaction
/// (about eight statements), and under load the replies of several sagas arrive within this.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Create or update the orchestrator's tables (`migrations/`, versions 3_000_001.., see
/// `eventstore::db`); the outbox is migrated with the database.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    eventstore::db::migrate(pool, sqlx::migrate!()).await
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let consumes = [Topic::OrderEvents, Topic::ProductEvents, Topic::PaymentEvents];
    let produces = [Topic::ProductCommands, Topic::PaymentCommands, Topic::OrderCommands, Topic::SagaEvents];
    let mut wiring = Wiring::connect(settings, &produces, &consumes).await?;
    // How long a step waits for its reply: `saga.step_timeout_ms` of the saga-orchestrator scope
    // (config/defaults.toml, etcd, SHOP_SAGA_STEP_TIMEOUT_MS).
    let step_ms: i64 = wiring.settings.required("saga.step_timeout_ms")?;
    anyhow::ensure!(step_ms > 0, "saga.step_timeout_ms must be positive, not {step_ms}");
    let timeouts = Timeouts { step_ms };
    let pool = wiring.database(false).await?;
    migrate(&pool).await?;
    // Only direct rows exist in this outbox; event rows would be a bug.
    wiring.spawn_relay(
        pool.clone(),
        event_mapper(|_: &str, e: &serde_json::Value| anyhow::bail!("unexpected event row in saga outbox: {e}")),
    );
    let orchestrator = Arc::new(Orchestrator { pool: pool.clone(), timeouts });
    let mut config =
        messaging::consumer::ConsumerConfig::new(&wiring.settings.kafka_brokers, CONSUMER_GROUP, &consumes);
    config.linger = LINGER;
    wiring.spawn_consumer_with(config, orchestrator.clone());
    let timer = orchestrator.clone();
    wiring.spawn(every(wiring.shutdown.clone(), Duration::from_millis(500), "timeout scan", move || {
        let timer = timer.clone();
        async move { timer.fire_timeouts().await }
    }));
    let publisher = orchestrator.clone();
    wiring.spawn(every(wiring.shutdown.clone(), PUBLISH_SCAN, "publishing resting sagas", move || {
        let publisher = publisher.clone();
        async move { publisher.publish_resting(PUBLISH_AFTER).await }
    }));
    let counter = pool.clone();
    wiring.spawn(every(wiring.shutdown.clone(), Duration::from_secs(5), "counting sagas", move || {
        sample_saga_counts(counter.clone())
    }));
    // Its own session on the database, to hear the changes of every instance.
    let feed = live::Feed::default();
    let token = wiring.shutdown.clone();
    wiring.spawn(live::listen(wiring.settings.database_url.clone(), feed.clone(), token));
    let desk = dead_letters::DeadLetterDesk {
        brokers: wiring.settings.kafka_brokers.clone(),
        codec: wiring.codec.clone(),
        producer: wiring.producer.clone(),
        acting: Arc::default(),
    };
    wiring.serve(app(orchestrator, desk, feed)).await
}

/// Gauge of sagas by status (`shop_sagas{status}`), counted in the saga table every few seconds.
pub const SAGAS_GAUGE: &str = "shop_sagas";

async fn sample_saga_counts(pool: PgPool) -> anyhow::Result<()> {
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM sagas GROUP BY status").fetch_all(&pool).await?;
    for status in saga::Status::ALL.map(saga::Status::as_str) {
        let n = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        metrics::gauge!(SAGAS_GAUGE, "status" => status).set(n as f64);
    }
    Ok(())
}

/// Run `work` every `period` (after each run) until `token` is cancelled; a failure is logged
/// as `what` and the next run comes as usual.
async fn every<F, Fut, T>(token: tokio_util::sync::CancellationToken, period: Duration, what: &'static str, work: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    while !token.is_cancelled() {
        if let Err(e) = work().await {
            tracing::warn!(error = format!("{e:#}"), task = what, "periodic task failed; next run as usual");
        }
        tokio::select! {
            () = token.cancelled() => {},
            () = tokio::time::sleep(period) => {},
        }
    }
}
