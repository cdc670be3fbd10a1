//! The CreateOrder saga end to end: confirmed, rejected for credit, rejected for stock.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn stock(p: &Value) -> (i64, i64, i64) {
    (p["available"].as_i64().unwrap_or(-1), p["reserved"].as_i64().unwrap_or(-1), p["sold"].as_i64().unwrap_or(-1))
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn three_outcomes_of_the_create_order_saga() {
    let (customer, email) = new_customer_with_email().await;
    let cheap = new_product(1_000, 5).await;
    let dear = new_product(60_000, 10).await;

    // 1. Within stock and credit: CONFIRMED, stock sold, credit drawn.
    let ok = place_order(&customer, &[(&cheap, 2)]).await;
    let order = final_order(&ok).await;
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(order["total_cents"], 2_000);
    let statuses: Vec<&str> =
        order["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["PENDING", "CONFIRMED"]);
    let p = eventually(&format!("/api/products/{cheap}"), SETTLE, |p| stock(p) == (3, 0, 2)).await;
    assert_eq!(stock(&p), (3, 0, 2));

    // 2. Over the customer's credit (2 x 600.00 > 1000.00): REJECTED, stock released.
    let over_credit = place_order(&customer, &[(&dear, 2)]).await;
    let order = final_order(&over_credit).await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    assert!(order["reason"].as_str().unwrap_or_default().contains("credit"), "{order}");
    eventually(&format!("/api/products/{dear}"), SETTLE, |p| stock(p) == (10, 0, 0)).await;

    // 3. More than the stock: REJECTED, nothing charged.
    let too_many = place_order(&customer, &[(&cheap, 4)]).await;
    let order = final_order(&too_many).await;
    assert_eq!(order["status"], "REJECTED", "{order}");
    assert!(order["reason"].as_str().unwrap_or_default().contains("insufficient stock"), "{order}");
    eventually(&format!("/api/products/{cheap}"), SETTLE, |p| stock(p) == (3, 0, 2)).await;

    // Only the confirmed order was charged.
    let c = eventually(&format!("/api/customers/{customer}"), SETTLE, |c| c["credit_available_cents"] == 98_000).await;
    assert_eq!(c["credit_limit_cents"], 100_000);

    // The saga of the credit rejection shows its compensation.
    // (the orchestrator's own table, through the gateway)
    let saga = eventually(&format!("/api/sagas/{over_credit}"), SETTLE, |s| s["status"] == "REJECTED").await;
    let steps: Vec<&str> = saga["history"].as_array().unwrap().iter().map(|h| h["what"].as_str().unwrap()).collect();
    assert!(steps.iter().any(|s| s.starts_with("compensating")), "{steps:?}");

    // One e-mail per event: order confirmed + payment confirmed for the first order, one
    // rejection for each of the others.
    let subjects = exactly_mails(&email, 4).await;
    let about = |order: &str, what: &str| subjects.iter().filter(|s| s.contains(order) && s.contains(what)).count();
    assert_eq!(about(&ok, "is confirmed"), 1, "{subjects:?}");
    assert_eq!(about(&ok, "Payment received"), 1, "{subjects:?}");
    assert_eq!(about(&over_credit, "could not be completed"), 1, "{subjects:?}");
    assert_eq!(about(&too_many, "could not be completed"), 1, "{subjects:?}");
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn orders_are_listed_by_customer() {
    let customer = new_customer().await;
    let product = new_product(500, 10).await;
    let a = place_order(&customer, &[(&product, 1)]).await;
    let b = place_order(&customer, &[(&product, 2)]).await;
    final_order(&a).await;
    final_order(&b).await;
    let list = eventually(&format!("/api/orders?customer_id={customer}"), SETTLE, |l| {
        l.as_array().is_some_and(|a| a.len() == 2)
    })
    .await;
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()));
}

/// `GET /api/orders/{id}?wait=` is a long-poll: one request right after the 202 answers with
/// the settled order, as the read model shows it; a cancelled order is waited for until the
/// cancellation is through; a `wait` that is not a number is refused; someone else's order is
/// not waited for (404 at once).
#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_long_poll_answers_when_the_order_settles() {
    let customer = new_customer().await;
    let product = new_product(700, 10).await;
    let id = place_order(&customer, &[(&product, 1)]).await;
    let began = Instant::now();
    let (status, order) = get(&format!("/api/orders/{id}?wait=20")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "CONFIRMED", "one request, settled: {order}");
    assert!(began.elapsed() < Duration::from_secs(20), "answered when settled, not at the end of the wait");
    let statuses: Vec<&str> =
        order["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["PENDING", "CONFIRMED"], "the read model shows the outcome");

    let cancelled = place_order(&customer, &[(&product, 1)]).await;
    let (status, _) = post(&format!("/api/orders/{cancelled}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, order) = get(&format!("/api/orders/{cancelled}?wait=20")).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");

    let (status, body) = get(&format!("/api/orders/{id}?wait=soon")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let began = Instant::now();
    let r = http_as(Some("bob")).get(format!("{}/api/orders/{id}?wait=20", gateway())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(began.elapsed() < Duration::from_secs(10), "no wait for an order one may not see");
}
