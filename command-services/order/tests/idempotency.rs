//! `Idempotency-Key`s on real PostgreSQL: a request that created its resource is answered from
//! it (nothing recorded after it, so a crash after the creation loses no answer), refusals are
//! recorded and replayed, a server error frees the key. Each run uses its own database; the
//! "resource" is a row of a table of that database. Needs a PostgreSQL server
//! (`SHOP_TEST_POSTGRES`, default the local stack's).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use order_service::idempotency::Keys;
use runtime::http::ApiError;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn admin_url() -> String {
    std::env::var("SHOP_TEST_POSTGRES").unwrap_or_else(|_| "postgres://shop:shop@127.0.0.1:5432".into())
}

struct Db {
    pool: PgPool,
    name: String,
    keys: Keys,
}

impl Db {
    async fn fresh() -> Self {
        let name = format!("test_idem_{}", uuid::Uuid::new_v4().simple());
        let pool = eventstore::db::connect(&format!("{}/{name}", admin_url()), 8).await.expect("database");
        let keys = Keys::migrate(pool.clone()).await.expect("migrate");
        sqlx::query("CREATE TABLE made (id text PRIMARY KEY)").execute(&pool).await.expect("table");
        Self { pool, name, keys }
    }

    async fn drop(self) {
        self.pool.close().await;
        let admin = PgPool::connect(&format!("{}/postgres", admin_url())).await.expect("admin");
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .execute(&admin)
            .await
            .expect("drop");
    }

    async fn make(&self, id: &str) {
        sqlx::query("INSERT INTO made (id) VALUES ($1)").bind(id).execute(&self.pool).await.expect("make");
    }

    /// The answer for a made resource, as the order service builds it from the order.
    async fn made(&self, id: String) -> Result<Option<Response>, ApiError> {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM made WHERE id = $1")
            .bind(&id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ApiError::internal)?;
        Ok(found.map(|id| created(&id)))
    }

    async fn recorded_status(&self, key: &str) -> Option<i32> {
        sqlx::query_scalar("SELECT status FROM idempotency WHERE key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .expect("claim")
    }
}

fn created(id: &str) -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({ "id": id }))).into_response()
}

async fn read(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn a_created_resource_is_the_answer_and_nothing_is_recorded_after_it() {
    let db = Db::fresh().await;
    let runs = AtomicUsize::new(0);
    let request = json!({ "n": 1 });
    let first_id = fresh_id();
    let work = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        db.make(&first_id).await;
        Ok(created(&first_id))
    };
    let first = read(db.keys.once("k", &request, &first_id, work, |id| db.made(id)).await.unwrap()).await;
    assert_eq!(first, (StatusCode::ACCEPTED, json!({ "id": first_id })));
    assert_eq!(db.recorded_status("k").await, None, "a creation records no answer: the resource is the answer");

    // A repeat (which would have created another resource) gets the first one.
    let other_id = fresh_id();
    let again = db
        .keys
        .once("k", &request, &other_id, || async { panic!("a repeat runs nothing") }, |id| db.made(id))
        .await
        .unwrap();
    assert_eq!(read(again).await, first);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let refused = db.keys.once("k", &json!({ "n": 2 }), &other_id, || async { unreachable!() }, |id| db.made(id)).await;
    assert_eq!(refused.unwrap_err().status, StatusCode::UNPROCESSABLE_ENTITY);
    db.drop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn a_request_that_died_after_creating_is_answered_at_once_by_its_repeat() {
    let db = Arc::new(Db::fresh().await);
    let id = fresh_id();
    let made = Arc::new(tokio::sync::Notify::new());
    let first = {
        let (db, id, made) = (db.clone(), id.clone(), made.clone());
        tokio::spawn(async move {
            let work = || async {
                db.make(&id).await;
                made.notify_one();
                std::future::pending::<Result<Response, ApiError>>().await
            };
            db.keys.once("k", &json!({}), &id, work, |id| db.made(id)).await
        })
    };
    made.notified().await;
    first.abort(); // the process dies between the creation and its answer

    let started = std::time::Instant::now();
    let answer = db.keys.once("k", &json!({}), &fresh_id(), || async { unreachable!() }, |id| db.made(id)).await;
    assert_eq!(read(answer.unwrap()).await, (StatusCode::ACCEPTED, json!({ "id": id })));
    assert!(started.elapsed() < Duration::from_secs(5), "not waited for: {:?}", started.elapsed());
    Arc::try_unwrap(db).ok().expect("one owner").drop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn refusals_are_recorded_and_server_errors_free_the_key() {
    let db = Db::fresh().await;
    let refuse = || async { Err(ApiError::unprocessable("unknown customer")) };
    let first = read(db.keys.once("refused", &json!({}), &fresh_id(), refuse, |id| db.made(id)).await.unwrap()).await;
    assert_eq!(first.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(db.recorded_status("refused").await, Some(422));
    let again = db.keys.once("refused", &json!({}), &fresh_id(), || async { unreachable!() }, |id| db.made(id)).await;
    assert_eq!(read(again.unwrap()).await, first);

    // A server error that created nothing: the key is free, the repeat runs.
    let fail = || async { Err(ApiError::internal("database down")) };
    let failed = db.keys.once("failed", &json!({}), &fresh_id(), fail, |id| db.made(id)).await.unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let id = fresh_id();
    let work = || async {
        db.make(&id).await;
        Ok(created(&id))
    };
    let retried = db.keys.once("failed", &json!({}), &id, work, |id| db.made(id)).await.unwrap();
    assert_eq!(read(retried).await, (StatusCode::ACCEPTED, json!({ "id": id })));

    // A server error after the creation (its answer lost on the way): the resource answers.
    let id = fresh_id();
    let work = || async {
        db.make(&id).await;
        Err(ApiError::internal("connection reset"))
    };
    let answer = db.keys.once("lost", &json!({}), &id, work, |id| db.made(id)).await.unwrap();
    assert_eq!(read(answer).await, (StatusCode::ACCEPTED, json!({ "id": id })));
    db.drop().await;
}
