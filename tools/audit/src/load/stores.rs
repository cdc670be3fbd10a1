//! The PostgreSQL side: each service's `events`, `snapshots_v2`, `outbox` and `outbox_dead`
//! tables, read in one snapshot per database; the saga orchestrator's `sagas` and outbox.

use crate::model::{Event, Queued, SAGA_DATABASE, SagaRow, Store, StoredEvent, StoredState};
use anyhow::Context;
use serde::de::DeserializeOwned;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::time::Duration;

/// A pool on one database of the server at `base` (`postgres://user:password@host:port`).
pub async fn connect(base: &str, database: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&format!("{}/{database}", base.trim_end_matches('/')))
        .await
        .with_context(|| format!("connecting to PostgreSQL database {database}"))
}

/// The message id the outbox trigger gives an event (`eventstore/migrations/event_store/`).
const MESSAGE_ID: &str = "md5(aggregate_type || '/' || aggregate_id || '/' || sequence)::uuid::text";

/// One store as of one instant.
pub struct StoreContents {
    pub events: Vec<StoredEvent>,
    pub queued: Vec<Queued>,
    pub snapshots: Vec<StoredState>,
    /// Events of another aggregate type than the store's (none expected).
    pub foreign: usize,
}

async fn snapshot_tx(pool: &PgPool) -> anyhow::Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    Ok(tx)
}

pub async fn read_store(pool: &PgPool, store: Store) -> anyhow::Result<StoreContents> {
    let mut tx = snapshot_tx(pool).await?;
    let rows = sqlx::query(&format!(
        "SELECT aggregate_type, aggregate_id, sequence, event_type, payload, {MESSAGE_ID} AS message_id \
           FROM events ORDER BY aggregate_type, aggregate_id, sequence"
    ))
    .fetch_all(&mut *tx)
    .await
    .with_context(|| format!("reading {}.events", store.database()))?;
    let mut events = Vec::with_capacity(rows.len());
    let mut foreign = 0;
    for row in rows {
        if row.get::<String, _>("aggregate_type") != store.aggregate_type() {
            foreign += 1;
            continue;
        }
        let payload: serde_json::Value = row.get("payload");
        events.push(StoredEvent {
            store,
            aggregate_id: row.get("aggregate_id"),
            sequence: row.get("sequence"),
            event_type: row.get("event_type"),
            message_id: row.get("message_id"),
            event: parse(store, payload),
        });
    }
    let queued = read_queued(&mut tx, store.database()).await?;
    let snapshots = sqlx::query(
        "SELECT aggregate_id, last_sequence, payload FROM snapshots_v2 WHERE aggregate_type = $1 \
          ORDER BY aggregate_id, last_sequence",
    )
    .bind(store.aggregate_type())
    .fetch_all(&mut *tx)
    .await
    .with_context(|| format!("reading {}.snapshots_v2", store.database()))?
    .into_iter()
    .map(|row| StoredState {
        store,
        aggregate_id: row.get("aggregate_id"),
        last_sequence: row.get("last_sequence"),
        state: row.get("payload"),
    })
    .collect();
    tx.commit().await?;
    Ok(StoreContents { events, queued, snapshots, foreign })
}

fn parse(store: Store, payload: serde_json::Value) -> Result<Event, String> {
    fn as_<E: DeserializeOwned>(payload: serde_json::Value) -> Result<E, String> {
        serde_json::from_value(payload).map_err(|e| e.to_string())
    }
    match store {
        Store::Customer => as_(payload).map(Event::Customer),
        Store::Product => as_(payload).map(Event::Product),
        Store::Order => as_(payload).map(Event::Order),
        Store::Payment => as_(payload).map(Event::Account),
    }
}

/// The outbox rows waiting and the ones parked.
async fn read_queued(tx: &mut Transaction<'static, Postgres>, database: &str) -> anyhow::Result<Vec<Queued>> {
    let mut queued = Vec::new();
    for (table, error) in [("outbox", "NULL::text"), ("outbox_dead", "error")] {
        let rows = sqlx::query(&format!(
            "SELECT message_id::text AS message_id, aggregate_id, sequence, record, {error} AS error FROM {table} ORDER BY id"
        ))
        .fetch_all(&mut **tx)
        .await
        .with_context(|| format!("reading {database}.{table}"))?;
        queued.extend(rows.into_iter().map(|row| Queued {
            database: database.to_owned(),
            message_id: row.get("message_id"),
            aggregate_id: row.get("aggregate_id"),
            sequence: row.get("sequence"),
            record: row.get("record"),
            dead: row.get("error"),
        }));
    }
    Ok(queued)
}

/// The message ids a store holds now.
pub async fn message_ids(pool: &PgPool, store: Store) -> anyhow::Result<Vec<String>> {
    sqlx::query_scalar(&format!("SELECT {MESSAGE_ID} FROM events WHERE aggregate_type = $1"))
        .bind(store.aggregate_type())
        .fetch_all(pool)
        .await
        .with_context(|| format!("reading {}.events again", store.database()))
}

/// The saga rows and the saga orchestrator's outbox, in one snapshot.
pub async fn read_sagas(pool: &PgPool) -> anyhow::Result<(Vec<SagaRow>, Vec<Queued>)> {
    let mut tx = snapshot_tx(pool).await?;
    let rows = sqlx::query(
        "SELECT order_id, status, step, COALESCE((state ->> 'version')::bigint, 0) AS version FROM sagas ORDER BY order_id",
    )
    .fetch_all(&mut *tx)
    .await
    .context("reading shop_saga.sagas")?;
    let sagas = rows
        .into_iter()
        .map(|row| SagaRow {
            order_id: row.get("order_id"),
            status: row.get("status"),
            step: row.get("step"),
            version: row.get("version"),
        })
        .collect();
    let queued = read_queued(&mut tx, SAGA_DATABASE).await?;
    tx.commit().await?;
    Ok((sagas, queued))
}

/// Rows waiting in an outbox (for the settle wait).
pub async fn outbox_backlog(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(pool).await?)
}
