//! The service's tables (`migrations/`): what it learned from events, and what it sent.

use crate::plan::Kind;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};

/// Create or update the tables (versions 5_000_001.., see `eventstore::db`).
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    eventstore::db::migrate(pool, sqlx::migrate!()).await
}

#[derive(Debug, Clone)]
pub struct Contact {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone)]
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

/// Events are immutable: a redelivered registration changes nothing. Each is (customer id,
/// name, e-mail address).
pub async fn remember_contacts(pool: &PgPool, contacts: &[(&str, &str, &str)]) -> sqlx::Result<()> {
    if contacts.is_empty() {
        return Ok(());
    }
    let (ids, (names, emails)): (Vec<&str>, (Vec<&str>, Vec<&str>)) =
        contacts.iter().map(|&(id, name, email)| (id, (name, email))).unzip();
    sqlx::query(
        "INSERT INTO contacts (customer_id, name, email) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(names)
    .bind(emails)
    .execute(pool)
    .await?;
    Ok(())
}

/// Orders as placed: (order id, facts).
pub async fn remember_orders(pool: &PgPool, orders: &[(&str, OrderFacts)]) -> sqlx::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = orders.iter().map(|(id, _)| *id).collect();
    let customers: Vec<&str> = orders.iter().map(|(_, o)| o.customer_id.as_str()).collect();
    let totals: Vec<i64> = orders.iter().map(|(_, o)| o.total_cents).collect();
    let currencies: Vec<&str> = orders.iter().map(|(_, o)| o.currency.as_str()).collect();
    sqlx::query(
        "INSERT INTO orders (order_id, customer_id, total_cents, currency) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(customers)
    .bind(totals)
    .bind(currencies)
    .execute(pool)
    .await?;
    Ok(())
}

/// The contacts known of these customers, by customer id.
pub async fn contacts(pool: &PgPool, customer_ids: &[&str]) -> sqlx::Result<HashMap<String, Contact>> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT customer_id, name, email FROM contacts WHERE customer_id = ANY($1)")
            .bind(customer_ids)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(id, name, email)| (id, Contact { name, email })).collect())
}

/// The facts known of these orders, by order id.
pub async fn orders(pool: &PgPool, order_ids: &[&str]) -> sqlx::Result<HashMap<String, OrderFacts>> {
    let rows: Vec<(String, String, i64, String)> =
        sqlx::query_as("SELECT order_id, customer_id, total_cents, currency FROM orders WHERE order_id = ANY($1)")
            .bind(order_ids)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, customer_id, total_cents, currency)| (id, OrderFacts { customer_id, total_cents, currency }))
        .collect())
}

/// Which of these events' e-mails were sent already.
pub async fn already_sent(pool: &PgPool, message_ids: &[&str]) -> sqlx::Result<HashSet<String>> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT message_id FROM sent WHERE message_id = ANY($1)")
        .bind(message_ids)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Claim the e-mails of these events for instance `me`, before they are sent; the ones that
/// are ours to send: unclaimed, claimed by us before, or claimed by another more than `lease`
/// ago (which then died or stalled before recording it). Another instance's fresh claim means
/// it is sending that e-mail now. Claims are taken in id order, so two instances claiming
/// overlapping sets wait for each other rather than deadlock.
pub async fn claim(
    pool: &PgPool,
    message_ids: &[&str],
    me: &str,
    lease: std::time::Duration,
) -> sqlx::Result<HashSet<String>> {
    let mut ids = message_ids.to_vec();
    ids.sort_unstable();
    ids.dedup(); // one row may not be claimed twice by one statement
    let ours: Vec<String> = sqlx::query_scalar(
        "INSERT INTO sending (message_id, claimed_by) SELECT id, $2 FROM UNNEST($1::text[]) AS id \
         ON CONFLICT (message_id) DO UPDATE SET claimed_by = EXCLUDED.claimed_by, claimed_at = now() \
           WHERE sending.claimed_by = EXCLUDED.claimed_by OR sending.claimed_at < now() - make_interval(secs => $3) \
         RETURNING message_id",
    )
    .bind(ids)
    .bind(me)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(ours.into_iter().collect())
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

/// Record accepted e-mails and drop their claims, in one statement (so one transaction). A
/// row already there (a claim taken over after its lease, whose first holder recorded late) is
/// kept: it is the same e-mail.
pub async fn record_sent(pool: &PgPool, deliveries: &[Delivery]) -> sqlx::Result<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Delivery) -> &str| deliveries.iter().map(f).collect::<Vec<&str>>();
    sqlx::query(
        "WITH claims AS (DELETE FROM sending WHERE message_id = ANY($1)) \
         INSERT INTO sent (message_id, event_type, order_id, customer_id, recipient, subject) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(column(|d| &d.message_id))
    .bind(column(|d| d.kind.as_str()))
    .bind(column(|d| &d.order_id))
    .bind(column(|d| &d.customer_id))
    .bind(column(|d| &d.recipient))
    .bind(column(|d| &d.subject))
    .execute(pool)
    .await?;
    Ok(())
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
