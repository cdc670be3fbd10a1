//! What the tests on real PostgreSQL share: a fresh, migrated database per test (the server
//! from `SHOP_TEST_POSTGRES`, the local stack's by default) and replies as the consumer hands
//! them over.

use sqlx::PgPool;

pub fn admin_url() -> String {
    std::env::var("SHOP_TEST_POSTGRES").unwrap_or_else(|_| "postgres://shop:shop@127.0.0.1:5432".into())
}

/// A new database with the orchestrator's tables: its pool and its name.
pub async fn fresh_database() -> (PgPool, String) {
    let name = format!("test_saga_{}", uuid::Uuid::new_v4().simple());
    let pool = eventstore::db::connect(&format!("{}/{name}", admin_url()), 8).await.expect("database");
    eventstore::db::migrate_outbox(&pool).await.expect("outbox");
    saga_orchestrator::migrate(&pool).await.expect("sagas");
    (pool, name)
}

pub async fn drop_database(pool: PgPool, name: String) {
    pool.close().await;
    let admin = PgPool::connect(&format!("{}/postgres", admin_url())).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin).await.expect("drop");
}
