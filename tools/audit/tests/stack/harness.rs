//! The running stack, seen from the tests: orders placed through the gateway (as a client
//! would), the services' databases and read models reached directly (to corrupt them), and
//! the auditor run as a library.

use audit::{Offender, Report, Sources};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

pub fn sources() -> Sources {
    let local = Sources::local();
    Sources {
        postgres: env("SHOP_AUDIT_POSTGRES_URL", &local.postgres),
        kafka: env("SHOP_KAFKA_BROKERS", &local.kafka),
        registry: env("SHOP_SCHEMA_REGISTRY_URL", &local.registry),
        mongodb: env("SHOP_MONGODB_URL", &local.mongodb),
        mailpit: env("SHOP_MAILPIT_URL", &local.mailpit),
    }
}

fn gateway() -> String {
    env("SHOP_GATEWAY_URL", "http://127.0.0.1:8080")
}

fn keycloak() -> String {
    env("SHOP_KEYCLOAK_URL", "http://127.0.0.1:8180")
}

/// How long the audit may wait for a quiet stack.
pub const SETTLE: Duration = Duration::from_secs(120);

/// The auditor, as the CLI runs it; the table goes to the test's output.
pub async fn audit(label: &str, settle: Duration) -> Report {
    try_audit(label, settle).await.unwrap_or_else(|e| panic!("audit ({label}): {e:#}"))
}

/// [`audit`], without panicking: for the window in which a store is corrupted, which must be
/// closed (the store put back) whatever the audit does.
pub async fn try_audit(label: &str, settle: Duration) -> anyhow::Result<Report> {
    audit_promised(label, settle, Vec::new()).await
}

/// [`try_audit`], holding the stores to what a client was `promised`.
pub async fn audit_promised(label: &str, settle: Duration, promised: Vec<audit::Promise>) -> anyhow::Result<Report> {
    let report = audit::run_with(&sources(), settle, promised).await?;
    println!("--- audit: {label} ---\n{}", audit::report::render(&report));
    Ok(report)
}

/// An offender and the check that reported it.
pub type Found = (&'static str, Offender);

/// Every offender of a report, with its check.
pub fn offenders(r: &Report) -> BTreeSet<Found> {
    r.checks.iter().flat_map(|c| c.offenders.iter().map(move |o| (c.id, o.clone()))).collect()
}

/// What `after` reports that `before` did not, and what it no longer reports.
pub fn difference(before: &Report, after: &Report) -> (Vec<Found>, Vec<Found>) {
    let (b, a) = (offenders(before), offenders(after));
    (a.difference(&b).cloned().collect(), b.difference(&a).cloned().collect())
}

/// An access token of the dev user `admin` (password grant of the dev client `shop-web`).
async fn admin_token() -> String {
    static TOKEN: tokio::sync::Mutex<Option<(String, Instant)>> = tokio::sync::Mutex::const_new(None);
    let mut cached = TOKEN.lock().await;
    if let Some((token, until)) = cached.as_ref()
        && *until > Instant::now()
    {
        return token.clone();
    }
    let url = format!("{}/realms/shop/protocol/openid-connect/token", keycloak());
    let answer: Value = client(None)
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        // The dev realm's names and passwords are plain words: nothing to escape.
        .body("grant_type=password&client_id=shop-web&username=admin&password=admin")
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
        .json()
        .await
        .expect("token JSON");
    let token = answer["access_token"].as_str().unwrap_or_else(|| panic!("no token: {answer}")).to_owned();
    let lifetime =
        Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(60)).saturating_sub(Duration::from_secs(30));
    *cached = Some((token.clone(), Instant::now() + lifetime));
    token
}

fn client(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {t}").parse().expect("header"));
    }
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(40))
        .default_headers(headers)
        .build()
        .expect("http client")
}

/// A request through the gateway as `admin`; a shedding 503 with `Retry-After` is sent again.
async fn call(method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let http = client(Some(&admin_token().await));
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let mut request = http.request(method.clone(), format!("{}{path}", gateway()));
        if let Some(b) = &body {
            request = request.json(b);
        }
        let r = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status();
        if status == StatusCode::SERVICE_UNAVAILABLE
            && r.headers().contains_key("retry-after")
            && Instant::now() < give_up
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        return (status, r.json().await.unwrap_or(Value::Null));
    }
}

pub async fn post(path: &str, body: Value) -> (StatusCode, Value) {
    call(reqwest::Method::POST, path, Some(body)).await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A fresh customer (its payment account opens with the default credit, 1000.00 EUR).
pub async fn new_customer() -> String {
    let email = format!("{}@example.com", unique("audit"));
    let (status, body) = post("/api/customers", json!({ "name": "Audit Buyer", "email": email })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("customer id").to_owned()
}

pub async fn new_product(price_cents: i64, stock: i64) -> String {
    let sku = unique("AUDIT").to_uppercase();
    let (status, body) = post(
        "/api/products",
        json!({ "sku": sku, "name": "Audit product", "price_cents": price_cents, "currency": "EUR", "stock": stock }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("product id").to_owned()
}

pub async fn add_stock(product: &str, quantity: i64) {
    let (status, body) = post(&format!("/api/products/{product}/stock"), json!({ "quantity": quantity })).await;
    assert!(status.is_success(), "{status} {body}");
}

pub async fn place(customer: &str, items: &[(&str, i64)]) -> String {
    let items: Vec<Value> = items.iter().map(|(p, q)| json!({ "product_id": p, "quantity": q })).collect();
    let (status, body) = post("/api/orders", json!({ "customer_id": customer, "items": items })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["order_id"].as_str().expect("order id").to_owned()
}

/// Long-poll the order until it is settled (the event store says so), then answer its status.
pub async fn settled(order: &str) -> String {
    let start = Instant::now();
    loop {
        let (status, body) = call(reqwest::Method::GET, &format!("/api/orders/{order}?wait=20"), None).await;
        let s = body["status"].as_str().unwrap_or_default().to_owned();
        if status == StatusCode::OK && ["CONFIRMED", "REJECTED", "CANCELLED"].contains(&s.as_str()) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "order {order} not settled: {status} {body}");
    }
}

pub async fn cancel(order: &str) {
    let (status, body) = post(&format!("/api/orders/{order}/cancel"), json!({})).await;
    assert!(status.is_success(), "cancel {order}: {status} {body}");
    let start = Instant::now();
    while settled(order).await != "CANCELLED" {
        assert!(start.elapsed() < Duration::from_secs(120), "order {order} not cancelled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn db(database: &str) -> PgConnection {
    let url = format!("{}/{database}", sources().postgres.trim_end_matches('/'));
    PgConnection::connect(&url).await.unwrap_or_else(|e| panic!("connecting to {database}: {e}"))
}

/// Take the outbox relay's lock from the service ([`messaging::outbox::take_relay_lock`]): while
/// the returned connection lives, events still commit in that database but none is published.
pub async fn hold_relay(database: &str) -> PgConnection {
    let mut conn = db(database).await;
    messaging::outbox::take_relay_lock(&mut conn, database, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    conn
}

pub async fn mongo() -> mongodb::Client {
    readstore::readmodel::connect(&sources().mongodb).await.expect("mongodb")
}
