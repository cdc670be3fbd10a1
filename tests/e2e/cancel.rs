//! Customer cancellation: before confirmation the saga compensates; after confirmation a
//! second saga returns the stock and refunds. Either way the order ends CANCELLED.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn stock(p: &Value) -> (i64, i64, i64) {
    (p["available"].as_i64().unwrap_or(-1), p["reserved"].as_i64().unwrap_or(-1), p["sold"].as_i64().unwrap_or(-1))
}

async fn cancelled(order: &str) -> Value {
    eventually(&format!("/api/orders/{order}"), SETTLE, |o| o["status"] == "CANCELLED").await
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn cancelling_a_confirmed_order_returns_stock_and_refunds() {
    let (customer, email) = new_customer_with_email().await;
    let product = new_product(1_500, 5).await;
    let order = place_order(&customer, &[(&product, 2)]).await;
    assert_eq!(final_order(&order).await["status"], "CONFIRMED");
    eventually(&format!("/api/products/{product}"), SETTLE, |p| stock(p) == (3, 0, 2)).await;

    let (status, body) = post(&format!("/api/orders/{order}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let o = cancelled(&order).await;
    let statuses: Vec<&str> = o["history"].as_array().unwrap().iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["PENDING", "CONFIRMED", "CANCELLED"]);

    eventually(&format!("/api/products/{product}"), SETTLE, |p| stock(p) == (5, 0, 0)).await;
    eventually(&format!("/api/customers/{customer}"), SETTLE, |c| c["credit_available_cents"] == 100_000).await;
    eventually(&format!("/api/sagas/{order}"), SETTLE, |s| s["status"] == "CANCELLED").await;
    let subjects = exactly_mails(&email, 3).await;
    assert_eq!(subjects.iter().filter(|s| s.contains("is cancelled")).count(), 1, "{subjects:?}");

    // A second request changes nothing.
    let (status, _) = post(&format!("/api/orders/{order}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn cancelling_right_after_placing_ends_cancelled_with_nothing_kept() {
    let customer = new_customer().await;
    let product = new_product(700, 4).await;
    let order = place_order(&customer, &[(&product, 3)]).await;
    let (status, body) = post(&format!("/api/orders/{order}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    cancelled(&order).await;
    eventually(&format!("/api/products/{product}"), SETTLE, |p| stock(p) == (4, 0, 0)).await;
    eventually(&format!("/api/customers/{customer}"), SETTLE, |c| c["credit_available_cents"] == 100_000).await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn rejected_and_unknown_orders_cannot_be_cancelled() {
    let customer = new_customer().await;
    let product = new_product(100, 1).await;
    let order = place_order(&customer, &[(&product, 5)]).await;
    assert_eq!(final_order(&order).await["status"], "REJECTED");
    let (status, body) = post(&format!("/api/orders/{order}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("REJECTED")), "{body}");
    let (status, _) = post(&format!("/api/orders/{}/cancel", uuid::Uuid::new_v4()), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
