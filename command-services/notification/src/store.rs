//! The service's tables (`migrations/`): what it learned from events, and what it sent.

use crate::plan::Kind;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Create or update the tables (versions 5_000_001.., see `eventstore::db`).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    eventstore::db::migrate(pool, sqlx::migrate!()).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Contact {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderFacts {
    pub customer_id: String,
    pub total_cents: i64,
    pub currency: String,
}

/// One e-mail the SMTP server accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Sent {
    /// The event that caused it.
    pub message_id: String,
    pub event_type: String,
    pub order_id: String,
    pub customer_id: String,
    pub recipient: String,
    pub subject: String,
    pub sent_at: DateTime<Utc>,
}

/// Events are immutable: a redelivered registration changes nothing.
pub async fn remember_contact(pool: &PgPool, customer_id: &str, name: &str, email: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO contacts (customer_id, name, email) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(customer_id)
        .bind(name)
        .bind(email)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn remember_order(
    pool: &PgPool,
    order_id: &str,
    customer_id: &str,
    total_cents: i64,
    currency: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, total_cents, currency) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(total_cents)
    .bind(currency)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn contact(pool: &PgPool, customer_id: &str) -> sqlx::Result<Option<Contact>> {
    sqlx::query_as("SELECT name, email FROM contacts WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(pool)
        .await
}

pub async fn order(pool: &PgPool, order_id: &str) -> sqlx::Result<Option<OrderFacts>> {
    sqlx::query_as("SELECT customer_id, total_cents, currency FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await
}

pub async fn already_sent(pool: &PgPool, message_id: &str) -> sqlx::Result<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM sent WHERE message_id = $1").bind(message_id).fetch_optional(pool).await?;
    Ok(found.is_some())
}

/// Claim the e-mail of event `message_id` for instance `me`, before it is sent: true when it
/// is ours to send (unclaimed, claimed by us before, or claimed by another more than `lease`
/// ago, which then died or stalled before recording it); false while another instance's claim
/// is fresh: it is sending this e-mail now.
pub async fn claim(pool: &PgPool, message_id: &str, me: &str, lease: std::time::Duration) -> sqlx::Result<bool> {
    let ours: Option<i32> = sqlx::query_scalar(
        "INSERT INTO sending (message_id, claimed_by) VALUES ($1, $2) \
         ON CONFLICT (message_id) DO UPDATE SET claimed_by = EXCLUDED.claimed_by, claimed_at = now() \
           WHERE sending.claimed_by = EXCLUDED.claimed_by OR sending.claimed_at < now() - make_interval(secs => $3) \
         RETURNING 1",
    )
    .bind(message_id)
    .bind(me)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(ours.is_some())
}

/// An e-mail the SMTP server just accepted, to be recorded.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message_id: String,
    pub kind: Kind,
    pub order_id: String,
    pub customer_id: String,
    pub recipient: String,
    pub subject: String,
}

/// Record an accepted e-mail and drop its claim, in one transaction. A row already there (a
/// claim taken over after its lease, whose first holder recorded late) is kept: it is the same
/// e-mail.
pub async fn record_sent(pool: &PgPool, d: &Delivery) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO sent (message_id, event_type, order_id, customer_id, recipient, subject) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&d.message_id)
    .bind(d.kind.as_str())
    .bind(&d.order_id)
    .bind(&d.customer_id)
    .bind(&d.recipient)
    .bind(&d.subject)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM sending WHERE message_id = $1").bind(&d.message_id).execute(&mut *tx).await?;
    tx.commit().await
}

pub async fn sent_for_order(pool: &PgPool, order_id: &str) -> sqlx::Result<Vec<Sent>> {
    sqlx::query_as(
        "SELECT message_id, event_type, order_id, customer_id, recipient, subject, sent_at \
         FROM sent WHERE order_id = $1 ORDER BY sent_at, message_id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await
}
