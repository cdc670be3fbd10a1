//! What the run cost PostgreSQL: each database's transactions (`pg_stat_database`, committed
//! and rolled back) between two snapshots, per accepted order. Each service has a database of
//! its own (FerretDB's holds the read models), so the deltas say which part of the pipeline
//! talks to PostgreSQL how often.
//!
//! The server gathers a busy session's counts at most once a second and an idle one's within
//! about ten seconds: the second snapshot is taken late enough for them ([`crate::run`]).

use crate::stats::per_order;
use anyhow::Context;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use std::collections::BTreeMap;
use std::time::Duration;

/// Transactions so far, by database.
pub type Transactions = BTreeMap<String, i64>;

/// A connection for both snapshots (the `postgres` database of the server).
pub async fn connect(url: &str) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redacted(url)))
}

/// Every database's transactions so far.
pub async fn snapshot(pool: &sqlx::PgPool) -> anyhow::Result<Transactions> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT datname::text, xact_commit + xact_rollback FROM pg_stat_database WHERE datname IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .context("reading pg_stat_database")?;
    Ok(rows.into_iter().collect())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatabaseDelta {
    pub transactions: i64,
    pub per_order: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PgReport {
    /// Databases with any transaction between the snapshots, by name.
    pub databases: BTreeMap<String, DatabaseDelta>,
    pub transactions: i64,
    pub per_order: Option<f64>,
    /// When the second snapshot was taken (see the note).
    pub measured_after: &'static str,
    pub note: &'static str,
}

/// The difference between two snapshots; `orders` (accepted) divides them.
pub fn compare(before: &Transactions, after: &Transactions, orders: u64, measured_after: &'static str) -> PgReport {
    let each = |x: i64| per_order(x as f64, orders);
    let databases: BTreeMap<String, DatabaseDelta> = after
        .iter()
        .map(|(name, a)| (name.clone(), a - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, delta)| *delta > 0)
        .map(|(name, delta)| (name, DatabaseDelta { transactions: delta, per_order: each(delta) }))
        .collect();
    let transactions = databases.values().map(|d| d.transactions).sum();
    PgReport {
        databases,
        transactions,
        per_order: each(transactions),
        measured_after,
        note: "pg_stat_database xact_commit + xact_rollback, from the load's start to the second snapshot: every \
               statement outside a transaction block is one; the audit's reads (through the services) and this \
               client's two snapshots count too",
    }
}

/// `url` without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(entries: &[(&str, i64)]) -> Transactions {
        entries.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    }

    #[test]
    fn deltas_per_database_and_per_order() {
        let before = counts(&[("order", 100), ("product", 50), ("idle", 7)]);
        let after = counts(&[("order", 130), ("product", 70), ("idle", 7), ("new", 10)]);
        let r = compare(&before, &after, 10, "idle");
        assert_eq!(r.databases.keys().collect::<Vec<_>>(), ["new", "order", "product"], "idle ones left out");
        assert_eq!(r.databases["order"], DatabaseDelta { transactions: 30, per_order: Some(3.0) });
        assert_eq!(r.databases["new"].transactions, 10, "a database created meanwhile counts from 0");
        assert_eq!((r.transactions, r.per_order), (60, Some(6.0)));
        assert_eq!(compare(&before, &after, 0, "idle").per_order, None);
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redacted("postgres://shop:secret@127.0.0.1:5432/postgres"),
            "postgres://shop:***@127.0.0.1:5432/postgres"
        );
        assert_eq!(redacted("postgres://127.0.0.1/postgres"), "postgres://127.0.0.1/postgres");
    }
}
