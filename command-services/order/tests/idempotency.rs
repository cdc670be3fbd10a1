//! `Idempotency-Key`s on real PostgreSQL: the key is claimed by the write that places the order
//! (nothing recorded after it, so a crash after the creation loses no answer), a repeat or a
//! concurrent duplicate places nothing and gets the first answer, refusals are recorded and
//! replayed, a server error records nothing. Each run uses its own database with the event store
//! in it. Needs a PostgreSQL server (`SHOP_TEST_POSTGRES`, default the local stack's).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domain::order::{Order, OrderCommand, OrderLine};
use domain::values::{Currency, CustomerId, Money, OrderId, ProductId, Quantity};
use eventstore::es::EventStoreOf;
use eventstore::pg_store::Guard;
use messaging::outbox::Metadata;
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
    orders: EventStoreOf<Order>,
}

impl Db {
    async fn fresh() -> Self {
        let name = format!("test_idem_{}", uuid::Uuid::new_v4().simple());
        let pool = eventstore::db::connect(&format!("{}/{name}", admin_url()), 8).await.expect("database");
        eventstore::db::migrate_event_store(&pool).await.expect("event store");
        let keys = Keys::migrate(pool.clone()).await.expect("migrate");
        Self { orders: EventStoreOf::new(pool.clone()), pool, name, keys }
    }

    async fn drop(self) {
        self.pool.close().await;
        let admin = PgPool::connect(&format!("{}/postgres", admin_url())).await.expect("admin");
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .execute(&admin)
            .await
            .expect("drop");
    }

    /// Place order `id` under `guard`, as the order service does.
    async fn place(&self, id: &str, guard: Arc<Guard>) -> Result<Response, ApiError> {
        let order_id = OrderId::parse(id).expect("order id");
        let line = OrderLine {
            product_id: ProductId::new(),
            quantity: Quantity::new(1).expect("quantity"),
            unit_price: Money::new(100, Currency::parse("EUR").expect("currency")),
        };
        let place = OrderCommand::Place { order_id, customer_id: CustomerId::new(), lines: vec![line], owner: None };
        self.orders.execute_new_guarded(id, place, Metadata::new(), guard).await?;
        Ok(created(id))
    }

    /// The answer for a placed order, as the order service builds it from the order.
    async fn made(&self, id: String) -> Result<Option<Response>, ApiError> {
        Ok((self.orders.version(&id).await? > 0).then(|| created(&id)))
    }

    async fn placed(&self) -> i64 {
        sqlx::query_scalar("SELECT count(DISTINCT aggregate_id) FROM events")
            .fetch_one(&self.pool)
            .await
            .expect("count")
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
    OrderId::new().to_string()
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn a_placed_order_is_the_answer_and_a_repeat_places_nothing() {
    let db = Db::fresh().await;
    let request = json!({ "n": 1 });
    let first_id = fresh_id();
    let first = db.keys.once("k", &request, &first_id, |g| db.place(&first_id, g), |id| db.made(id)).await;
    let first = read(first.unwrap()).await;
    assert_eq!(first, (StatusCode::ACCEPTED, json!({ "id": first_id })));
    assert_eq!(db.recorded_status("k").await, None, "a creation records no answer: the order is the answer");

    // A repeat, which would place another order, gets the first one.
    let other_id = fresh_id();
    let again = db.keys.once("k", &request, &other_id, |g| db.place(&other_id, g), |id| db.made(id)).await;
    assert_eq!(read(again.unwrap()).await, first);
    assert_eq!(db.placed().await, 1, "the repeat placed nothing");
    assert!(db.made(other_id.clone()).await.unwrap().is_none());

    let different = json!({ "n": 2 });
    let refused = db.keys.once("k", &different, &other_id, |g| db.place(&other_id, g), |id| db.made(id)).await;
    assert_eq!(refused.unwrap_err().status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(db.placed().await, 1);
    db.drop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn concurrent_requests_with_one_key_place_one_order_and_get_its_answer() {
    let db = Arc::new(Db::fresh().await);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                let id = fresh_id();
                let answer = db.keys.once("same", &json!({}), &id, |g| db.place(&id, g), |id| db.made(id)).await;
                read(answer.expect("an answer")).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    assert_eq!(db.placed().await, 1, "one order for one key");
    assert_eq!(answers[0].0, StatusCode::ACCEPTED, "{answers:?}");
    assert!(answers.iter().all(|a| *a == answers[0]), "every request gets the one order: {answers:?}");
    Arc::try_unwrap(db).ok().expect("one owner").drop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn a_request_that_died_after_placing_is_answered_at_once_by_its_repeat() {
    let db = Arc::new(Db::fresh().await);
    let id = fresh_id();
    let placed = Arc::new(tokio::sync::Notify::new());
    let first = {
        let (db, id, placed) = (db.clone(), id.clone(), placed.clone());
        tokio::spawn(async move {
            let work = |guard| async {
                db.place(&id, guard).await?;
                placed.notify_one();
                std::future::pending::<Result<Response, ApiError>>().await
            };
            db.keys.once("k", &json!({}), &id, work, |id| db.made(id)).await
        })
    };
    placed.notified().await;
    first.abort(); // the process dies between the creation and its answer

    let started = std::time::Instant::now();
    let other = fresh_id();
    let answer = db.keys.once("k", &json!({}), &other, |g| db.place(&other, g), |id| db.made(id)).await;
    assert_eq!(read(answer.unwrap()).await, (StatusCode::ACCEPTED, json!({ "id": id })));
    assert!(started.elapsed() < Duration::from_secs(5), "not waited for: {:?}", started.elapsed());
    assert_eq!(db.placed().await, 1);
    Arc::try_unwrap(db).ok().expect("one owner").drop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn refusals_are_recorded_and_server_errors_record_nothing() {
    let db = Db::fresh().await;
    let refusals = AtomicUsize::new(0);
    let refuse = |_| async {
        refusals.fetch_add(1, Ordering::SeqCst);
        Err(ApiError::unprocessable("unknown customer"))
    };
    let first = read(db.keys.once("refused", &json!({}), &fresh_id(), refuse, |id| db.made(id)).await.unwrap()).await;
    assert_eq!(first.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(db.recorded_status("refused").await, Some(422));
    // A repeat that would succeed now (the customer registered since) gets the first answer.
    let id = fresh_id();
    let again = db.keys.once("refused", &json!({}), &id, |g| db.place(&id, g), |id| db.made(id)).await;
    assert_eq!(read(again.unwrap()).await, first);
    assert_eq!(db.placed().await, 0, "the repeat of a refusal places nothing");
    // And one refused again has its answer replaced by nothing: the first stays.
    let again = db.keys.once("refused", &json!({}), &fresh_id(), refuse, |id| db.made(id)).await;
    assert_eq!(read(again.unwrap()).await, first);
    assert_eq!(refusals.load(Ordering::SeqCst), 2);

    // A server error that created nothing: nothing is recorded, the repeat runs.
    let fail = |_| async { Err(ApiError::internal("database down")) };
    let failed = db.keys.once("failed", &json!({}), &fresh_id(), fail, |id| db.made(id)).await.unwrap();
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let id = fresh_id();
    let retried = db.keys.once("failed", &json!({}), &id, |g| db.place(&id, g), |id| db.made(id)).await.unwrap();
    assert_eq!(read(retried).await, (StatusCode::ACCEPTED, json!({ "id": id })));

    // A server error after the creation (its answer lost on the way): the order answers.
    let id = fresh_id();
    let work = |guard| async {
        db.place(&id, guard).await?;
        Err(ApiError::internal("connection reset"))
    };
    let answer = db.keys.once("lost", &json!({}), &id, work, |id| db.made(id)).await.unwrap();
    assert_eq!(read(answer).await, (StatusCode::ACCEPTED, json!({ "id": id })));
    db.drop().await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn a_claim_an_earlier_version_left_without_its_order_is_taken_over_once_abandoned() {
    let db = Db::fresh().await;
    // A claim of an hour ago whose order was never placed.
    sqlx::query(
        "INSERT INTO idempotency (key, request_hash, resource, created_at) \
         VALUES ('old', encode(sha256(convert_to('{}', 'UTF8')), 'hex'), $1, now() - interval '1 hour')",
    )
    .bind(fresh_id())
    .execute(&db.pool)
    .await
    .expect("old claim");
    let id = fresh_id();
    let answer = db.keys.once("old", &json!({}), &id, |g| db.place(&id, g), |id| db.made(id)).await;
    assert_eq!(answer.unwrap_err().status, StatusCode::CONFLICT, "freed, with a request to retry");
    let id = fresh_id();
    let retried = db.keys.once("old", &json!({}), &id, |g| db.place(&id, g), |id| db.made(id)).await;
    assert_eq!(read(retried.unwrap()).await, (StatusCode::ACCEPTED, json!({ "id": id })));
    db.drop().await;
}
