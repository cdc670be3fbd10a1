//! The services' own databases, seen from the test: locks that hold a service at a precise point,
//! and what its event store and outbox hold for an order.

use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};

fn url(database: &str) -> String {
    let base = std::env::var("SHOP_TEST_POSTGRES_URL").unwrap_or_else(|_| runtime::config::local_postgres());
    format!("{base}/{database}")
}

pub async fn connect(database: &str) -> PgConnection {
    PgConnection::connect(&url(database)).await.unwrap_or_else(|e| panic!("connecting to {database}: {e}"))
}

/// An open transaction holding `LOCK TABLE events IN SHARE MODE`: reads go on, every append to
/// the event store (the command handlers' INSERT) waits, before its commit.
pub async fn lock_events(database: &str) -> PgConnection {
    let mut conn = connect(database).await;
    sqlx::raw_sql("SET lock_timeout = '10s'; BEGIN; LOCK TABLE events IN SHARE MODE")
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("locking {database}.events: {e}"));
    conn
}

/// Take the outbox relay's lock from the service ([`messaging::outbox::take_relay_lock`]): the
/// relay then stands by, events still commit, none is published.
pub async fn take_relay_lock(database: &str) -> PgConnection {
    let mut conn = connect(database).await;
    messaging::outbox::take_relay_lock(&mut conn, database, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    conn
}

/// Backends of `database` waiting for a lock in an INSERT into the event store.
pub async fn waiting_appends(database: &str) -> i64 {
    let mut conn = connect("postgres").await;
    let n = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' \
         AND query ILIKE '%insert into events%'",
    )
    .bind(database)
    .fetch_one(&mut conn)
    .await
    .expect("pg_stat_activity");
    let _ = conn.close().await;
    n
}

/// Wait until some command handler of `database` is blocked on its append.
pub async fn wait_blocked_append(database: &str, limit: Duration) {
    let start = Instant::now();
    while waiting_appends(database).await == 0 {
        assert!(start.elapsed() < limit, "no append to {database}.events blocked within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many events of type `event_type` the order caused in `database` (committed ones).
pub async fn events(database: &str, order_id: &str, event_type: &str) -> i64 {
    let mut conn = connect(database).await;
    let n =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE metadata->>'correlation-id' = $1 AND event_type = $2")
            .bind(order_id)
            .bind(event_type)
            .fetch_one(&mut conn)
            .await
            .expect("events");
    let _ = conn.close().await;
    n
}

/// How many outbox rows of type `record` for the order wait in `database` (committed ones).
pub async fn outbox_rows(database: &str, order_id: &str, record: &str) -> i64 {
    let mut conn = connect(database).await;
    let n = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE metadata->>'correlation-id' = $1 AND record = $2")
        .bind(order_id)
        .bind(record)
        .fetch_one(&mut conn)
        .await
        .expect("outbox");
    let _ = conn.close().await;
    n
}

/// Wait until the order's `count` outbox rows of type `record` are committed in `database`.
pub async fn wait_outbox_rows(database: &str, order_id: &str, record: &str, count: i64, limit: Duration) {
    let start = Instant::now();
    loop {
        let n = outbox_rows(database, order_id, record).await;
        if n >= count {
            assert_eq!(n, count, "{database}.outbox: {record} rows for order {order_id}");
            return;
        }
        assert!(start.elapsed() < limit, "{database}.outbox: {n} of {count} {record} rows within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the order's outbox rows of type `record` are gone from `database`: the relay
/// deletes a batch Kafka acknowledged with its next pass (at the latest a poll interval later).
pub async fn wait_outbox_drained(database: &str, order_id: &str, record: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let n = outbox_rows(database, order_id, record).await;
        if n == 0 {
            return;
        }
        assert!(start.elapsed() < limit, "{database}.outbox: {n} {record} rows for order {order_id} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
