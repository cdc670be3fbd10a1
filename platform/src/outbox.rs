//! The outbox relay: publishes outbox rows to Kafka in id order, then deletes them.
//!
//! - One relay per database at a time (a session advisory lock), so per-aggregate order holds.
//! - A row is deleted only after Kafka acknowledged it; a crash in between republishes it
//!   (at-least-once, with the same message id, which consumers deduplicate on).
//! - Nothing tracks a high-water mark, so rows of transactions that commit late are never
//!   skipped: they are simply still in the table on the next pass.

use crate::kafka;
use anyhow::Context;
use futures::future::try_join_all;
use rdkafka::producer::FutureProducer;
use schemas::headers as h;
use schemas::{Codec, Message};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// One row of the outbox.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub record: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Turns an event row (domain event JSON) into its wire message. Direct rows (already a wire
/// record, written by [`enqueue`]) are mapped by the relay itself.
pub type EventMapper = Arc<dyn Fn(&OutboxRow) -> anyhow::Result<Message> + Send + Sync>;

/// Aggregate type used for rows that hold a wire record directly.
pub const DIRECT: &str = "$message";

/// Queue a wire message in the caller's transaction (used where state is not event-sourced,
/// e.g. the saga's commands).
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    message: &Message,
    metadata: &HashMap<String, String>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO outbox (message_id, aggregate_type, aggregate_id, record, payload, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(DIRECT)
    .bind(message.key())
    .bind(message.full_name())
    .bind(message.to_json())
    .bind(serde_json::to_value(metadata)?)
    .execute(&mut **tx)
    .await?;
    sqlx::query("SELECT pg_notify('outbox', '')").execute(&mut **tx).await?;
    Ok(id)
}

pub struct Relay {
    pub pool: PgPool,
    pub producer: FutureProducer,
    pub codec: Arc<Codec>,
    pub map_event: EventMapper,
    pub batch: i64,
}

impl Relay {
    /// Run until `shutdown` resolves. Errors are logged and retried after a pause.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                result = self.run_locked() => {
                    if let Err(e) = result {
                        tracing::warn!(error = format!("{e:#}"), "outbox relay failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn run_locked(&self) -> anyhow::Result<()> {
        // The lock lives as long as this connection; other instances wait for it.
        let mut lock_conn = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(7062)").execute(&mut *lock_conn).await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("outbox").await?;
        loop {
            let sent = self.pass().await?;
            if sent < self.batch as usize {
                // Wait for a notification, or poll anyway after a while.
                let _ = tokio::time::timeout(Duration::from_millis(250), listener.try_recv()).await;
            }
        }
    }

    /// Publish one batch; returns how many rows went out.
    pub async fn pass(&self) -> anyhow::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as("SELECT * FROM outbox ORDER BY id LIMIT $1 FOR UPDATE")
            .bind(self.batch)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut encoded = Vec::with_capacity(rows.len());
        for row in &rows {
            let message = if row.aggregate_type == DIRECT {
                Message::from_json(&row.record, row.payload.clone())?
            } else {
                (self.map_event)(row).with_context(|| format!("mapping outbox row {}", row.id))?
            };
            let bytes = self.codec.encode(&message).await?;
            encoded.push((message, bytes));
        }
        // Sent concurrently but enqueued in order: the idempotent producer keeps per-partition order.
        let sends = rows.iter().zip(&encoded).map(|(row, (message, bytes))| {
            kafka::send(&self.producer, message.topic().name(), message.key(), bytes, headers(row, message))
        });
        try_join_all(sends).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::debug!(count = rows.len(), "relayed outbox rows");
        Ok(rows.len())
    }
}

fn meta<'a>(row: &'a OutboxRow, key: &str) -> Option<&'a str> {
    row.metadata.get(key).and_then(|v| v.as_str())
}

fn headers(row: &OutboxRow, message: &Message) -> rdkafka::message::OwnedHeaders {
    let mut pairs = vec![
        (h::MESSAGE_ID, row.message_id.to_string()),
        (h::CORRELATION_ID, meta(row, h::CORRELATION_ID).unwrap_or(&row.aggregate_id).to_owned()),
        (h::OCCURRED_AT, row.created_at.timestamp_millis().to_string()),
        (h::RECORD, message.full_name().to_owned()),
    ];
    if row.aggregate_type != DIRECT {
        pairs.push((h::AGGREGATE_VERSION, row.sequence.to_string()));
    }
    for key in [h::CAUSATION_ID, h::TRACEPARENT] {
        if let Some(v) = meta(row, key) {
            pairs.push((key, v.to_owned()));
        }
    }
    kafka::to_headers(pairs)
}

/// A mapper for an event-sourced aggregate: parse the stored event and convert it.
pub fn event_mapper<E, F>(convert: F) -> EventMapper
where
    E: serde::de::DeserializeOwned,
    F: Fn(&str, &E) -> anyhow::Result<Message> + Send + Sync + 'static,
{
    Arc::new(move |row: &OutboxRow| {
        let event: E = serde_json::from_value(row.payload.clone())
            .with_context(|| format!("stored {} event {} does not parse", row.aggregate_type, row.record))?;
        convert(&row.aggregate_id, &event)
    })
}
