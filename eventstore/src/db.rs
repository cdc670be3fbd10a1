//! The service's own PostgreSQL database: created when missing, migrated at start.

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::time::Duration;

const OUTBOX_SQL: &str = include_str!("sql/outbox.sql");
const EVENT_STORE_SQL: &str = include_str!("sql/event_store.sql");

/// Connect to `url`, creating its database first if the server does not have it yet.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url).with_context(|| format!("bad database url {url:?}"))?;
    ensure_database(&options).await?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone().log_statements(tracing::log::LevelFilter::Trace))
        .await
        .with_context(|| format!("connecting to database {:?}", options.get_database()))
}

async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options.clone().database("postgres").connect().await.context("connecting to PostgreSQL")?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::raw_sql(&format!("CREATE DATABASE {quoted}")).execute(&mut admin).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another instance may have created it at the same moment.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("creating database"),
        }
    }
    Ok(())
}

/// Outbox and inbox tables (every service that publishes or consumes).
pub async fn migrate_outbox(pool: &PgPool) -> anyhow::Result<()> {
    with_migration_lock(pool, OUTBOX_SQL).await
}

/// postgres-es event store tables, with the trigger that fills the outbox.
pub async fn migrate_event_store(pool: &PgPool) -> anyhow::Result<()> {
    migrate_outbox(pool).await?;
    with_migration_lock(pool, EVENT_STORE_SQL).await
}

/// Run a migration script under an advisory lock, so concurrent starts do not race.
pub async fn with_migration_lock(pool: &PgPool, sql: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7061)").execute(&mut *tx).await?;
    sqlx::raw_sql(sql).execute(&mut *tx).await.context("running migration")?;
    tx.commit().await?;
    Ok(())
}
