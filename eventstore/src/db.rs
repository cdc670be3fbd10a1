//! The service's own PostgreSQL database: created when missing, migrated at start.
//!
//! # Migrations
//!
//! Each part of a schema is a directory of versioned migrations, `<version>_<name>.sql` (digits
//! only before the first `_`, e.g. `2000002_events_by_type.sql`), embedded at build time with
//! `sqlx::migrate!` and run at start by [`migrate`]. A change to a part is a new file with the
//! part's next version; an applied file is never edited (sqlx refuses to start when an applied
//! migration's checksum changed). The first file of each part is the script the
//! services ran on every start before versioned migrations, unchanged: on a database made by that
//! code it changes nothing (`IF NOT EXISTS`) and is recorded as applied.
//!
//! sqlx records applied versions in one `_sqlx_migrations` table per database, shared by all the
//! parts that live there, so each part owns a million versions and ignores the others' rows:
//!
//! | part (in the database of)                       | directory                                  | versions    |
//! |-------------------------------------------------|--------------------------------------------|-------------|
//! | outbox and inbox (every service)                | `eventstore/migrations/outbox`             | 1_000_001.. |
//! | event store (customer, product, order, payment) | `eventstore/migrations/event_store`        | 2_000_001.. |
//! | sagas (saga orchestrator)                       | `saga-orchestrator/migrations`             | 3_000_001.. |
//! | SKUs (product)                                  | `command-services/product/migrations`      | 4_000_001.. |
//! | contacts, orders, sent (notification)           | `command-services/notification/migrations` | 5_000_001.. |
//! | idempotency keys (order)                        | `command-services/order/migrations`        | 6_000_001.. |
//!
//! A new part takes the next free million here (`eventstore/tests/migrations.rs` checks every
//! directory against this table). Concurrent starts are safe: sqlx holds a session-level advisory
//! lock, one per database, from before it reads `_sqlx_migrations` until the last pending
//! migration of the part is committed, and each migration runs in its own transaction together
//! with its row in `_sqlx_migrations`.

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::str::FromStr;
use std::time::Duration;

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
    migrate(pool, sqlx::migrate!("migrations/outbox")).await
}

/// postgres-es event store tables, with the trigger that fills the outbox.
pub async fn migrate_event_store(pool: &PgPool) -> anyhow::Result<()> {
    migrate_outbox(pool).await?;
    migrate(pool, sqlx::migrate!("migrations/event_store")).await
}

/// Apply the pending migrations of one part of the schema (a service passes its own
/// `sqlx::migrate!()`), leaving the versions of the database's other parts alone. Takes the
/// migrator by value to tell it so (`set_ignore_missing`): `migrate!` builds a fresh one.
pub async fn migrate(pool: &PgPool, mut part: Migrator) -> anyhow::Result<()> {
    part.set_ignore_missing(true);
    let versions = match (part.iter().next(), part.iter().last()) {
        (Some(first), Some(last)) => format!("{}..={}", first.version, last.version),
        _ => return Ok(()),
    };
    let mut conn = pool.acquire().await.context("connecting to migrate")?;
    if let Err(e) = part.run(&mut *conn).await {
        // sqlx returns without releasing its session-level advisory lock when a migration fails:
        // end the session rather than hand a connection holding the lock back to the pool.
        conn.close_on_drop();
        return Err(e).with_context(|| format!("migrating the database (versions {versions})"));
    }
    Ok(())
}
