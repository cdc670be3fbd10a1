//! The saga on real PostgreSQL: the same replies handled one per transaction and in batches
//! (with repeats inside and across batches) leave every saga in the same state and send the
//! same commands in the same order; either way a saga that settled queued one `SagaUpdated`, its
//! final state. A saga that rests mid-way, or ended but still waits for the replies that follow
//! an end, is published by the publisher, once per version.

mod support;

use messaging::consumer::{Delivery, Envelope, Handler};
use saga_orchestrator::Orchestrator;
use saga_orchestrator::saga::Timeouts;
use schemas::Message;
use schemas::records as r;
use sqlx::PgPool;
use std::collections::BTreeMap;
use support::{drop_database, fresh_database};

/// The replies one order's saga sees, in order: a confirmation (and then the stock committed
/// and the payment confirmed), a declined payment, or a reservation that fails for the second
/// line.
fn replies(order: &str, outcome: usize) -> Vec<Message> {
    let customer = format!("c-{order}");
    let line = |p: &str| r::OrderLine { product_id: p.into(), quantity: 1, unit_price_cents: 100 };
    let placed: Message = r::OrderPlaced {
        order_id: order.into(),
        customer_id: customer.clone(),
        lines: vec![line("p1"), line("p2")],
        total_cents: 200,
        currency: "EUR".into(),
        owner: None,
    }
    .into();
    let reserved =
        |p: &str| -> Message { r::StockReserved { product_id: p.into(), order_id: order.into(), quantity: 1 }.into() };
    let released =
        |p: &str| -> Message { r::StockReleased { product_id: p.into(), order_id: order.into(), quantity: 1 }.into() };
    let committed =
        |p: &str| -> Message { r::StockCommitted { product_id: p.into(), order_id: order.into(), quantity: 1 }.into() };
    let payment = |amount_cents| (customer.clone(), order.to_owned(), amount_cents, "EUR".to_owned());
    match outcome % 3 {
        0 => {
            let (customer_id, order_id, amount_cents, currency) = payment(200);
            vec![
                placed,
                reserved("p1"),
                reserved("p2"),
                r::PaymentAuthorized {
                    customer_id: customer_id.clone(),
                    order_id: order_id.clone(),
                    amount_cents,
                    currency: currency.clone(),
                }
                .into(),
                r::OrderConfirmed { order_id: order.into() }.into(),
                committed("p1"),
                committed("p2"),
                r::PaymentConfirmed { customer_id, order_id, amount_cents, currency }.into(),
            ]
        }
        1 => {
            let (customer_id, order_id, amount_cents, currency) = payment(200);
            vec![
                placed,
                reserved("p1"),
                reserved("p2"),
                r::PaymentDeclined { customer_id, order_id, amount_cents, currency, reason: "no credit".into() }.into(),
                released("p1"),
                released("p2"),
                r::OrderRejected { order_id: order.into(), reason: "payment declined".into(), code: None }.into(),
            ]
        }
        _ => vec![
            placed,
            reserved("p1"),
            r::StockReservationFailed { product_id: "p2".into(), order_id: order.into(), requested: 1, available: 0 }
                .into(),
            released("p1"),
            r::OrderRejected { order_id: order.into(), reason: "out of stock".into(), code: None }.into(),
        ],
    }
}

/// Every order's replies interleaved (each order's own in order), some delivered twice.
fn traffic(orders: usize) -> Vec<Envelope> {
    let streams: Vec<Vec<Envelope>> = (0..orders)
        .map(|i| {
            let order = format!("o{i:03}");
            replies(&order, i)
                .into_iter()
                .enumerate()
                .map(|(n, m)| Envelope::unsent(m, format!("{order}/{n}")))
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    let longest = streams.iter().map(Vec::len).max().unwrap_or(0);
    for n in 0..longest {
        for (i, stream) in streams.iter().enumerate() {
            if let Some(e) = stream.get(n) {
                out.push(e.clone());
                if (i + n) % 4 == 0 {
                    out.push(e.clone()); // a repeat right behind the original
                }
            }
        }
    }
    // And a whole stretch again, as after a consumer restart.
    let again: Vec<Envelope> = out[out.len() / 3..out.len() / 2].to_vec();
    out.extend(again);
    out
}

/// Per order: status, step, payment, lines and the history's words (not its times).
async fn sagas(pool: &PgPool) -> BTreeMap<String, serde_json::Value> {
    let rows: Vec<(String, serde_json::Value)> =
        sqlx::query_as("SELECT order_id, state FROM sagas").fetch_all(pool).await.expect("sagas");
    rows.into_iter()
        .map(|(id, s)| {
            let history: Vec<_> =
                s["history"].as_array().unwrap().iter().map(|e| (e["step"].clone(), e["what"].clone())).collect();
            let view = serde_json::json!({
                "status": s["status"], "step": s["step"], "payment": s["payment"], "lines": s["lines"],
                "reason": s["reason"], "history": history,
            });
            (id, view)
        })
        .collect()
}

/// Per key: the records queued for it, in outbox order, SagaUpdated apart.
async fn outbox(pool: &PgPool) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<serde_json::Value>>) {
    let rows: Vec<(String, String, serde_json::Value)> =
        sqlx::query_as("SELECT aggregate_id, record, payload::jsonb FROM outbox ORDER BY id")
            .fetch_all(pool)
            .await
            .expect("outbox");
    let (mut commands, mut updates) = (BTreeMap::<String, Vec<String>>::new(), BTreeMap::<String, Vec<_>>::new());
    for (key, record, payload) in rows {
        if record.ends_with("SagaUpdated") {
            updates.entry(key).or_default().push(payload);
        } else {
            let order = payload["order_id"].as_str().unwrap_or_default().to_owned();
            commands.entry(format!("{order}/{key}")).or_default().push(record);
        }
    }
    (commands, updates)
}

/// Per order: the versions of its `SagaUpdated` rows in the outbox, in outbox order.
async fn published_versions(pool: &PgPool, order: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT sequence FROM outbox WHERE aggregate_id = $1 AND record LIKE '%SagaUpdated' ORDER BY id")
        .bind(order)
        .fetch_all(pool)
        .await
        .expect("outbox")
}

/// Per order: (version, published) of its row.
async fn row_versions(pool: &PgPool, order: &str) -> (i64, i64) {
    sqlx::query_as("SELECT version, published FROM sagas WHERE order_id = $1")
        .bind(order)
        .fetch_one(pool)
        .await
        .expect("saga row")
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn batches_leave_the_same_sagas_and_commands_as_one_by_one_and_each_settled_saga_one_update() {
    let timeouts = Timeouts { step_ms: 60_000 };
    let traffic = traffic(30);
    let (pool_one, name_one) = fresh_database().await;
    let (pool_many, name_many) = fresh_database().await;
    let one = Orchestrator { pool: pool_one.clone(), timeouts };
    let many = Orchestrator { pool: pool_many.clone(), timeouts };

    for e in &traffic {
        one.handle(e).await.expect("one by one");
    }
    // Batches of varied sizes, as the consumer takes what is waiting.
    let mut rest = traffic.as_slice();
    for size in [1, 7, 2, 40, 13, 5, 64, 3].into_iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        let deliveries: Vec<Delivery> =
            batch.iter().map(|e| Delivery { envelope: e.clone(), span: tracing::Span::none() }).collect();
        many.handle_batch(&deliveries).await.expect("batch");
    }

    let (states_one, states_many) = (sagas(&pool_one).await, sagas(&pool_many).await);
    assert_eq!(states_one.len(), 30);
    assert_eq!(states_one, states_many, "the same sagas either way");
    let statuses: Vec<_> = states_many.values().map(|s| s["status"].as_str().unwrap().to_owned()).collect();
    assert_eq!(statuses.iter().filter(|s| *s == "CONFIRMED").count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "REJECTED").count(), 20, "{statuses:?}");

    let ((commands_one, updates_one), (commands_many, updates_many)) =
        (outbox(&pool_one).await, outbox(&pool_many).await);
    assert_eq!(commands_one, commands_many, "the same commands, per key in the same order");
    for (pool, updates) in [(&pool_one, &updates_one), (&pool_many, &updates_many)] {
        assert_eq!(updates.len(), 30, "every saga published");
        for (order, updates) in updates {
            assert_eq!(updates.len(), 1, "{order}: one SagaUpdated, when it settled: {updates:?}");
            assert_eq!(updates[0]["status"], states_many[order]["status"], "{order}: the final state");
            let (version, published) = row_versions(pool, order).await;
            assert_eq!(published_versions(pool, order).await, vec![version], "{order}: the row's version");
            assert_eq!(published, version, "{order}: marked published");
        }
    }
    // Nothing rests unpublished.
    assert_eq!(many.publish_resting(std::time::Duration::ZERO).await.expect("publish"), 0);

    drop_database(pool_one, name_one).await;
    drop_database(pool_many, name_many).await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_resting_saga_is_published_once_per_version_and_a_settled_one_at_once() {
    use std::time::Duration;
    let (pool, name) = fresh_database().await;
    let orchestrator = Orchestrator { pool: pool.clone(), timeouts: Timeouts { step_ms: 60_000 } };
    let order = "o-rest";
    let steps: Vec<Envelope> =
        replies(order, 0).into_iter().enumerate().map(|(n, m)| Envelope::unsent(m, format!("{order}/{n}"))).collect();
    let handle = |n: usize| orchestrator.handle(&steps[n]);

    // Placed and one line reserved: running, nothing published yet.
    handle(0).await.expect("placed");
    handle(1).await.expect("reserved p1");
    assert_eq!(published_versions(&pool, order).await, Vec::<i64>::new());
    // Not rested long enough: left alone.
    assert_eq!(orchestrator.publish_resting(Duration::from_secs(60)).await.expect("publish"), 0);
    // Rested: its state once, at its version, however often asked.
    assert_eq!(orchestrator.publish_resting(Duration::ZERO).await.expect("publish"), 1);
    assert_eq!(orchestrator.publish_resting(Duration::ZERO).await.expect("publish"), 0);
    let (v2, published) = row_versions(&pool, order).await;
    assert_eq!((published_versions(&pool, order).await, published), (vec![v2], v2));
    let (_, updates) = outbox(&pool).await;
    assert_eq!(updates[order][0]["status"], "RUNNING", "{:?}", updates[order]);

    // Moved on (the second line reserved): published again at the new version.
    handle(2).await.expect("reserved p2");
    assert_eq!(orchestrator.publish_resting(Duration::ZERO).await.expect("publish"), 1);
    let (v3, _) = row_versions(&pool, order).await;
    assert!(v3 > v2, "{v3} after {v2}");
    assert_eq!(published_versions(&pool, order).await, vec![v2, v3]);

    // Ended, but the replies that follow its end (stock committed per line, the payment
    // confirmed) are not in: not published at once; once it rests, the publisher shows it ended.
    handle(3).await.expect("authorized");
    handle(4).await.expect("confirmed");
    let (v5, published) = row_versions(&pool, order).await;
    assert_eq!(published, v3, "not published at once while replies are due");
    assert_eq!(orchestrator.publish_resting(Duration::from_secs(60)).await.expect("publish"), 0);
    assert_eq!(orchestrator.publish_resting(Duration::ZERO).await.expect("publish"), 1);
    assert_eq!(published_versions(&pool, order).await.last(), Some(&v5));
    let (_, updates) = outbox(&pool).await;
    assert_eq!(updates[order].last().unwrap()["status"], "CONFIRMED");

    // One line's stock committed: still waiting for the rest, not published.
    handle(5).await.expect("committed p1");
    let (v6, published) = row_versions(&pool, order).await;
    assert_eq!((v6 > v5, published), (true, v5), "{v6} after {v5}");
    // The last reply settles it: published in that transaction, nothing left for the publisher.
    handle(6).await.expect("committed p2");
    handle(7).await.expect("payment confirmed");
    let (v8, published) = row_versions(&pool, order).await;
    assert_eq!(published, v8);
    assert_eq!(published_versions(&pool, order).await, vec![v2, v3, v5, v8]);
    let (_, updates) = outbox(&pool).await;
    assert_eq!(updates[order].last().unwrap()["status"], "CONFIRMED");
    assert_eq!(orchestrator.publish_resting(Duration::ZERO).await.expect("publish"), 0);

    drop_database(pool, name).await;
}
