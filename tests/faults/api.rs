//! HTTP to the stack that rides out a service being down for a moment: these tests kill and
//! stop services (and other tests may restart them meanwhile), so a refused connection or a
//! 502/503 from the gateway is retried, within a bound.

use crate::harness::{gateway, http, service_http, unique};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub const SETTLE: Duration = Duration::from_secs(60);

fn url(path_or_url: &str) -> String {
    if path_or_url.starts_with("http") { path_or_url.to_owned() } else { format!("{}{path_or_url}", gateway()) }
}

/// GET (a path through the gateway, a URL straight to a service); `None` unless it answered
/// 2xx with JSON.
pub async fn get(path_or_url: &str) -> Option<Value> {
    let client = if path_or_url.starts_with("http") { service_http() } else { http() };
    let r = client.get(url(path_or_url)).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Poll until `done` holds, or fail after `limit`.
pub async fn eventually(path_or_url: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        last = get(path_or_url).await;
        if let Some(v) = &last
            && done(v)
        {
            return v.clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{} did not reach the expected state within {limit:?}; last answer: {last:?}", url(path_or_url));
}

/// POST, retried while the connection is refused or the gateway answers 502/503 (the request
/// did not reach the service), for up to 30 s.
pub async fn post(path: &str, body: &Value) -> (StatusCode, Value) {
    let start = Instant::now();
    loop {
        let outcome = http().post(url(path)).json(body).send().await;
        let retry = match &outcome {
            Err(e) => e.is_connect(),
            Ok(r) => matches!(r.status(), StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE),
        };
        if retry && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let r = outcome.unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status();
        return (status, r.json().await.unwrap_or(Value::Null));
    }
}

pub async fn new_customer() -> String {
    let email = format!("{}@example.com", unique("faults"));
    let (status, body) = post("/api/customers", &json!({ "name": "Fault Tester", "email": email })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("customer id").to_owned()
}

pub async fn new_product(price_cents: i64, stock: i64) -> String {
    let body = json!({ "sku": unique("FLT").to_uppercase(), "name": "Fault test product", "price_cents": price_cents,
                       "currency": "EUR", "stock": stock });
    let (status, body) = post("/api/products", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("product id").to_owned()
}

pub async fn place_order(customer: &str, items: &[(&str, i64)]) -> String {
    let items: Vec<Value> = items.iter().map(|(p, q)| json!({ "product_id": p, "quantity": q })).collect();
    let (status, body) = post("/api/orders", &json!({ "customer_id": customer, "items": items })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["order_id"].as_str().expect("order id").to_owned()
}
