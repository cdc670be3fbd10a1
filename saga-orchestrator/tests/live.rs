//! The live stream across instances, on real PostgreSQL: what one instance commits, through
//! the consumer's batches or a deadline, reaches the feed of every instance as the saga table
//! has it; what is rolled back reaches none; an instance whose session was cut listens again
//! and tells its subscribers they may have lagged.

mod support;

use futures::{Stream, StreamExt};
use messaging::consumer::{Delivery, Envelope, Handler};
use saga_orchestrator::Orchestrator;
use saga_orchestrator::live::{self, Change, Feed, Update};
use saga_orchestrator::saga::Timeouts;
use schemas::Message;
use schemas::records as r;
use sqlx::PgPool;
use std::time::Duration;
use support::{admin_url, drop_database, fresh_database};
use tokio_util::sync::CancellationToken;

fn placed(order: &str) -> Message {
    r::OrderPlaced {
        order_id: order.into(),
        customer_id: format!("c-{order}"),
        lines: vec![r::OrderLine { product_id: "p1".into(), quantity: 1, unit_price_cents: 100 }],
        total_cents: 100,
        currency: "EUR".into(),
        owner: None,
    }
    .into()
}

/// The sagas as the table has them, as the live stream announces them.
async fn stored(pool: &PgPool, orders: &[String]) -> Vec<Change> {
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT order_id, status, step FROM sagas WHERE order_id = ANY($1) ORDER BY order_id")
            .bind(orders)
            .fetch_all(pool)
            .await
            .expect("sagas");
    rows.into_iter()
        .map(|(id, status, step)| {
            serde_json::from_value(serde_json::json!({"id": id, "status": status, "step": step})).expect("a change")
        })
        .collect()
}

async fn next(updates: &mut (impl Stream<Item = Update> + Unpin)) -> Update {
    tokio::time::timeout(Duration::from_secs(10), updates.next()).await.expect("an update in time").expect("open")
}

/// The next `n` updates, which must all be changes, sorted by saga.
async fn changes(updates: &mut (impl Stream<Item = Update> + Unpin), n: usize) -> Vec<Change> {
    let mut changes = Vec::with_capacity(n);
    for _ in 0..n {
        match next(updates).await {
            Update::Saga(change) => changes.push(change),
            other => panic!("a change expected, got {other:?}"),
        }
    }
    changes.sort_by(|a, b| a.id.cmp(&b.id));
    changes
}

/// Instances that listen on `database` with their feeds; each has started listening.
async fn instances(
    database: &str,
    n: usize,
    shutdown: &CancellationToken,
) -> Vec<impl Stream<Item = Update> + Unpin + use<>> {
    let mut subscribers = Vec::new();
    for _ in 0..n {
        let feed = Feed::default();
        let mut updates = Box::pin(feed.subscribe());
        tokio::spawn(live::listen(format!("{}/{database}", admin_url()), feed, shutdown.clone()));
        assert_eq!(next(&mut updates).await, Update::Lagged(None), "told when it starts listening");
        subscribers.push(updates);
    }
    subscribers
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn every_instance_hears_what_any_instance_commits_and_none_what_is_rolled_back() {
    let (pool, name) = fresh_database().await;
    let shutdown = CancellationToken::new();
    let mut subscribers = instances(&name, 2, &shutdown).await;
    // Two orchestrators on the one database; deadlines pass at once.
    let timeouts = Timeouts { step_ms: 1 };
    let (first, second) =
        (Orchestrator { pool: pool.clone(), timeouts }, Orchestrator { pool: pool.clone(), timeouts });

    let mut tx = pool.begin().await.expect("begin");
    let ghost: Change =
        serde_json::from_value(serde_json::json!({"id": "ghost", "status": "RUNNING", "step": "x"})).expect("a change");
    live::announce(&mut tx, [ghost]).await.expect("announced");
    tx.rollback().await.expect("rolled back");

    // A reply handled by the first.
    let o1 = vec!["o1".to_owned()];
    first.handle(&Envelope::unsent(placed("o1"), "o1/0")).await.expect("handled");
    let started = stored(&pool, &o1).await;
    for updates in &mut subscribers {
        assert_eq!(changes(updates, 1).await, started, "the committed change, not the rolled-back one");
    }

    // A deadline fired by the second (one saga in its own transaction).
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(second.fire_timeouts().await.expect("fired"), 1);
    let timed_out = stored(&pool, &o1).await;
    assert_ne!(timed_out, started);
    for updates in &mut subscribers {
        assert_eq!(changes(updates, 1).await, timed_out);
    }

    // A batch that moves more sagas than one announcement holds.
    let orders: Vec<String> = (0..300).map(|i| format!("{i:08x}-0000-4000-8000-{i:012}")).collect();
    let batch: Vec<Delivery> = orders
        .iter()
        .map(|o| Delivery { envelope: Envelope::unsent(placed(o), format!("{o}/0")), span: tracing::Span::none() })
        .collect();
    first.handle_batch(&batch).await.expect("batch");
    let started = stored(&pool, &orders).await;
    assert_eq!(started.len(), 300);
    for updates in &mut subscribers {
        assert_eq!(changes(updates, 300).await, started);
    }

    shutdown.cancel();
    drop_database(pool, name).await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn an_instance_whose_session_was_cut_listens_again_and_says_it_may_have_lagged() {
    let (pool, name) = fresh_database().await;
    let shutdown = CancellationToken::new();
    let mut subscribers = instances(&name, 1, &shutdown).await;
    let updates = &mut subscribers[0];

    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
          WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&pool)
    .await
    .expect("terminated");
    assert_eq!(cut, [true], "one listening session");
    assert_eq!(next(updates).await, Update::Lagged(None), "listening again");

    let orchestrator = Orchestrator { pool: pool.clone(), timeouts: Timeouts { step_ms: 60_000 } };
    orchestrator.handle(&Envelope::unsent(placed("o1"), "o1/0")).await.expect("handled");
    assert_eq!(changes(updates, 1).await, stored(&pool, &["o1".to_owned()]).await);

    shutdown.cancel();
    drop_database(pool, name).await;
}
