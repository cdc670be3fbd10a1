//! The saga on real PostgreSQL: the same replies handled one per transaction and in batches
//! (with repeats inside and across batches) leave every saga in the same state and send the
//! same commands in the same order; the batches store each saga once per batch, so they queue
//! fewer `SagaUpdated` events, the last of which is the saga's final state.

mod support;

use messaging::consumer::{Delivery, Envelope, Handler};
use saga_orchestrator::Orchestrator;
use saga_orchestrator::saga::Timeouts;
use schemas::Message;
use schemas::records as r;
use sqlx::PgPool;
use std::collections::BTreeMap;
use support::{drop_database, fresh_database};

/// The replies one order's saga sees, in order: a confirmation, a declined payment, or a
/// reservation that fails for the second line.
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
    let payment = |amount_cents| (customer.clone(), order.to_owned(), amount_cents, "EUR".to_owned());
    match outcome % 3 {
        0 => {
            let (customer_id, order_id, amount_cents, currency) = payment(200);
            vec![
                placed,
                reserved("p1"),
                reserved("p2"),
                r::PaymentAuthorized { customer_id, order_id, amount_cents, currency }.into(),
                r::OrderConfirmed { order_id: order.into() }.into(),
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

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn batches_leave_the_same_sagas_and_commands_as_one_by_one_with_fewer_updates() {
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
    let count = |u: &BTreeMap<String, Vec<serde_json::Value>>| u.values().map(Vec::len).sum::<usize>();
    assert!(count(&updates_many) < count(&updates_one), "{} vs {}", count(&updates_many), count(&updates_one));
    for (order, updates) in &updates_many {
        let last = updates.last().unwrap();
        assert_eq!(last["status"], states_many[order]["status"], "{order}: the last SagaUpdated is the final state");
        let versions: Vec<i64> = sqlx::query_scalar(
            "SELECT sequence FROM outbox WHERE aggregate_id = $1 AND record LIKE '%SagaUpdated' ORDER BY id",
        )
        .bind(order)
        .fetch_all(&pool_many)
        .await
        .unwrap();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{order}: versions rise: {versions:?}");
    }

    drop_database(pool_one, name_one).await;
    drop_database(pool_many, name_many).await;
}
