//! Bad input through the gateway answers 4xx with a message, never 5xx.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::json;

async fn post_raw(path: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let r = http()
        .post(format!("{}{path}", gateway()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

fn assert_client_error(status: StatusCode, body: &serde_json::Value) {
    assert!(status.is_client_error(), "expected 4xx, got {status}: {body}");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "no error message: {body}");
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn bad_orders_are_rejected_with_a_message() {
    let customer = new_customer().await;
    let product = new_product(100, 5).await;

    let (s, b) = post_raw("/api/orders", "{\"customer_id\": ").await;
    assert_client_error(s, &b);

    let (s, b) = post(
        "/api/orders",
        json!({ "customer_id": customer, "items": [{ "product_id": uuid::Uuid::new_v4(), "quantity": 1 }] }),
    )
    .await;
    assert_client_error(s, &b);
    assert!(b["error"].as_str().unwrap().contains("unknown product"), "{b}");

    let (s, b) =
        post("/api/orders", json!({ "customer_id": customer, "items": [{ "product_id": product, "quantity": -2 }] }))
            .await;
    assert_client_error(s, &b);
    assert!(b["error"].as_str().unwrap().contains("quantity"), "{b}");

    let (s, b) = post("/api/orders", json!({ "customer_id": customer, "items": [], "coupon": "FREE" })).await;
    assert_client_error(s, &b);

    let (s, b) = post(
        "/api/orders",
        json!({ "customer_id": uuid::Uuid::new_v4(), "items": [{ "product_id": product, "quantity": 1 }] }),
    )
    .await;
    assert_client_error(s, &b);
    assert!(b["error"].as_str().unwrap().contains("unknown customer"), "{b}");

    let (s, b) = post(
        "/api/orders",
        json!({ "customer_id": "not-a-uuid", "items": [{ "product_id": product, "quantity": "two" }] }),
    )
    .await;
    assert_client_error(s, &b);
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn bad_customers_and_products_are_rejected_with_a_message() {
    let (s, b) = post("/api/customers", json!({ "name": "", "email": "x@example.com" })).await;
    assert_client_error(s, &b);
    let (s, b) = post("/api/customers", json!({ "name": "Eve", "email": "not-an-email" })).await;
    assert_client_error(s, &b);
    let (s, b) =
        post("/api/products", json!({ "sku": "X", "name": "n", "price_cents": -1, "currency": "EUR", "stock": 1 }))
            .await;
    assert_client_error(s, &b);
    let (s, b) =
        post("/api/products", json!({ "sku": "X", "name": "n", "price_cents": 1, "currency": "euro", "stock": 1 }))
            .await;
    assert_client_error(s, &b);
    let product = new_product(100, 1).await;
    let (s, b) = post(&format!("/api/products/{product}/stock"), json!({ "quantity": 0 })).await;
    assert_client_error(s, &b);
    let (s, b) = get(&format!("/api/orders/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}
