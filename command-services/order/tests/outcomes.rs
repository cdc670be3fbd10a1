//! Waiting for an order's outcome across instances, on real PostgreSQL: an order settled by one
//! instance wakes the waiters of another at once (its announcement), not at their next
//! re-check. Needs a PostgreSQL server (`SHOP_TEST_POSTGRES`, default the local stack's).

use eventstore::notify;
use order_service::outcome::{self, Outcomes, RECHECK};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn url() -> String {
    let admin = std::env::var("SHOP_TEST_POSTGRES").unwrap_or_else(|_| "postgres://shop:shop@127.0.0.1:5432".into());
    format!("{admin}/postgres")
}

/// A waiter's own receiver, to know when its session listens.
#[derive(Clone)]
struct Listening {
    outcomes: Outcomes,
    started: std::sync::Arc<tokio::sync::Notify>,
}

impl notify::Receiver for Listening {
    fn received(&self, payload: &str) {
        self.outcomes.received(payload);
    }

    fn listening(&self) {
        self.outcomes.listening();
        self.started.notify_one();
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: ./stack test"]
async fn an_order_settled_by_one_instance_wakes_the_waiters_of_another_at_once() {
    let shutdown = CancellationToken::new();
    let other = Outcomes::default();
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let receiver = Listening { outcomes: other.clone(), started: started.clone() };
    tokio::spawn(notify::listen(url(), outcome::CHANNEL, receiver, shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(10), started.notified()).await.expect("listening");

    let order = uuid::Uuid::new_v4().to_string();
    let mut watch = other.watch(&order).expect("a watch");
    let waiting = tokio::spawn(async move {
        let began = Instant::now();
        let version = watch.woken(Duration::from_secs(30)).await;
        (began.elapsed(), version)
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The instance that settled it announces it, with other orders, after its commit.
    let pool = sqlx::PgPool::connect(&url()).await.expect("postgres");
    let mut settled: Vec<(String, Option<i64>)> =
        (0..200).map(|i| (uuid::Uuid::new_v4().to_string(), (i % 2 == 0).then_some(i))).collect();
    settled.insert(170, (order.clone(), Some(4))); // in the second announcement of the batch
    outcome::announce(&pool, &settled).await;
    let (waited, version) = waiting.await.expect("woken");
    assert!(waited < RECHECK / 2, "woken by the announcement, not a re-check: {waited:?}");
    assert_eq!(version, Some(4), "the version that settled it, as announced");
    assert_eq!(other.waiters(), 0);
    shutdown.cancel();
}
