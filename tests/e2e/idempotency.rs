//! `Idempotency-Key` on `POST /api/orders`: a retry gets the first answer, a reused key with
//! another body is refused, and concurrent duplicates place one order.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn place_with_key(key: &str, body: &Value) -> (StatusCode, Option<String>, Value) {
    let r = http()
        .post(format!("{}/api/orders", gateway()))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("POST /api/orders");
    let status = r.status();
    let location = r.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
    (status, location, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn the_same_key_gets_the_same_order_and_another_body_is_refused() {
    let customer = new_customer().await;
    let product = new_product(700, 10).await;
    let key = unique("order-key");
    let body = json!({ "customer_id": customer, "items": [{ "product_id": product, "quantity": 1 }] });

    let (status, location, first) = place_with_key(&key, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let order_id = first["order_id"].as_str().expect("order id").to_owned();
    assert_eq!(location.as_deref(), Some(format!("/api/orders/{order_id}").as_str()));

    // The same request again, its fields in another order: the original answer.
    let reordered = json!({ "items": [{ "quantity": 1, "product_id": product }], "customer_id": customer });
    let (status, again_location, again) = place_with_key(&key, &reordered).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again, first);
    assert_eq!(again_location, location);

    let other = json!({ "customer_id": customer, "items": [{ "product_id": product, "quantity": 2 }] });
    let (status, _, refused) = place_with_key(&key, &other).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused["error"].as_str().unwrap_or_default().contains("Idempotency-Key"), "{refused}");

    // One order was placed, and it goes through the saga as any other.
    final_order(&order_id).await;
    let list = get(&format!("/api/orders?customer_id={customer}")).await.1;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn concurrent_duplicates_place_one_order() {
    let customer = new_customer().await;
    let product = new_product(300, 10).await;
    let key = unique("order-key");
    let body = json!({ "customer_id": customer, "items": [{ "product_id": product, "quantity": 1 }] });

    let requests: Vec<_> = (0..5)
        .map(|_| {
            let (key, body) = (key.clone(), body.clone());
            tokio::spawn(async move { place_with_key(&key, &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("request task"));
    }
    let ids: Vec<&str> = answers
        .iter()
        .map(|(status, _, body)| {
            assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
            body["order_id"].as_str().expect("order id")
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");

    final_order(ids[0]).await;
    let list = eventually(&format!("/api/orders?customer_id={customer}"), SETTLE, |l| {
        l.as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}
