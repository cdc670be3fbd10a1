//! Talking to the running stack through the gateway.

use reqwest::StatusCode;
use runtime::config::local;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub fn gateway() -> String {
    std::env::var("SHOP_GATEWAY_URL").unwrap_or_else(|_| format!("http://{}", local("gateway")))
}

/// The services behind the gateway, each with the `SHOP_*_URL` variable that moves it.
pub const SERVICES: [(&str, &str); 7] = [
    ("customer", "SHOP_CUSTOMER_URL"),
    ("product", "SHOP_PRODUCT_URL"),
    ("order", "SHOP_ORDER_URL"),
    ("payment", "SHOP_PAYMENT_URL"),
    ("notification", "SHOP_NOTIFICATION_URL"),
    ("saga-orchestrator", "SHOP_SAGA_URL"),
    ("projectors", "SHOP_PROJECTORS_URL"),
];

/// A service's own base URL, past the gateway: its variable, else its local-stack address.
pub fn service_url(name: &str) -> String {
    let (_, var) = SERVICES.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no service {name}"));
    std::env::var(var).unwrap_or_else(|_| format!("http://{}", local(name)))
}

pub fn registry() -> String {
    std::env::var("SHOP_SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| format!("http://{}/apis/ccompat/v7", local("registry")))
}

pub fn brokers() -> String {
    std::env::var("SHOP_KAFKA_BROKERS").unwrap_or_else(|_| local("kafka"))
}

pub fn keycloak() -> String {
    std::env::var("SHOP_KEYCLOAK_URL").unwrap_or_else(|_| format!("http://{}", local("keycloak")))
}

/// A client that calls as the dev user `admin`, who may see and do everything.
pub fn http() -> reqwest::Client {
    http_as(Some("admin"))
}

/// A client that calls as one of the realm's dev users (`alice`, `bob`, `admin`; the password
/// is the name), or anonymously.
pub fn http_as(user: Option<&str>) -> reqwest::Client {
    let authorization = user.map(|user| format!("Bearer {}", token_for(user)).parse().expect("token header"));
    client_with(authorization)
}

/// A client that calls a service directly, past the gateway, as another service would: with a
/// caller token signed with the stack's key (`SHOP_CALLER_KEY`, else the local stack's). The
/// token is good for a minute, so make one per call or burst.
pub fn service_http() -> reqwest::Client {
    let key = runtime::identity::CallerKey::from_env().expect("caller key");
    client_with(Some(key.authorization(&runtime::identity::Caller::Internal, "tests")))
}

/// A client that sends `authorization` (if any) with every request.
fn client_with(authorization: Option<reqwest::header::HeaderValue>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .default_headers(headers)
        .build()
        .expect("http client")
}

/// An access token of `user`, from the realm's token endpoint (password grant of the dev client
/// `shop-web`), cached until a minute before it expires.
pub fn token_for(user: &str) -> String {
    static TOKENS: std::sync::Mutex<Vec<(String, String, Instant)>> = std::sync::Mutex::new(Vec::new());
    let mut tokens = TOKENS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tokens.retain(|(_, _, good_until)| *good_until > Instant::now());
    if let Some((_, token, _)) = tokens.iter().find(|(u, _, _)| u == user) {
        return token.clone();
    }
    let answer = password_grant("shop", "shop-web", user, user);
    let token = answer["access_token"].as_str().unwrap_or_else(|| panic!("no token for {user}: {answer}")).to_owned();
    let lifetime = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(60));
    tokens.push((user.to_owned(), token.clone(), Instant::now() + lifetime.saturating_sub(Duration::from_secs(60))));
    token
}

/// The token endpoint's JSON answer for a password grant. Blocking (on a thread of its own), so
/// that the synchronous [`http_as`] can use it from any test.
pub fn password_grant(realm: &str, client: &str, user: &str, password: &str) -> Value {
    let url = format!("{}/realms/{realm}/protocol/openid-connect/token", keycloak());
    // The dev realm's names and passwords are plain words: nothing to escape.
    let form = format!("grant_type=password&client_id={client}&username={user}&password={password}");
    let user = user.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
            let r = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {url}: {e}"));
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "token for {user}: {status} {body}");
            body
        })
    })
    .join()
    .expect("token thread")
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub async fn post(path: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = post_with_headers(path, body).await;
    (status, body)
}

/// How long a client tries again while the shop refuses new work with 503 and `Retry-After`.
pub const BUSY_RETRIES_FOR: Duration = Duration::from_secs(120);

/// Send `request`; while the answer is 503 with `Retry-After` (the shop shedding load), wait as
/// told and send it again, as a client should, for up to [`BUSY_RETRIES_FOR`].
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    let give_up = Instant::now() + BUSY_RETRIES_FOR;
    loop {
        let attempt = request.try_clone().expect("a request with a cloneable body");
        let r = attempt.send().await.expect("request");
        let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match retry_after {
            Some(seconds) if r.status() == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            _ => return r,
        }
    }
}

/// Like [`post`], with the answer's headers.
pub async fn post_with_headers(path: &str, body: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = send(http().post(format!("{}{path}", gateway())).json(&body)).await;
    let status = r.status();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

pub async fn get(path: &str) -> (StatusCode, Value) {
    let r = http().get(format!("{}{path}", gateway())).send().await.expect("GET");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Poll `path` until `done` holds for its JSON, or fail after `limit`.
pub async fn eventually(path: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < limit {
        let (status, body) = get(path).await;
        if status == StatusCode::OK && done(&body) {
            return body;
        }
        last = json!({ "status": status.as_u16(), "body": body });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{path} did not reach the expected state within {limit:?}; last answer: {last}");
}

pub async fn new_customer() -> String {
    new_customer_with_email().await.0
}

/// A fresh customer and the unique e-mail address their notifications go to.
pub async fn new_customer_with_email() -> (String, String) {
    let email = format!("{}@example.com", unique("buyer"));
    let (status, body) = post("/api/customers", json!({ "name": "Test Buyer", "email": email })).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (body["id"].as_str().expect("customer id").to_owned(), email)
}

pub fn mailpit() -> String {
    std::env::var("SHOP_MAILPIT_URL").unwrap_or_else(|_| format!("http://{}", local("mailpit")))
}

/// The e-mails Mailpit holds for `to`, newest first.
pub async fn mails_to(to: &str) -> Vec<mailpit::Mail> {
    mailpit::Mailpit::new(http(), &mailpit()).search(&format!("to:\"{to}\"")).await.expect("mailpit search")
}

/// Subjects of the e-mails Mailpit holds for `to`.
pub async fn mail_subjects(to: &str) -> Vec<String> {
    mails_to(to).await.into_iter().map(|m| m.subject).collect()
}

/// Wait until `to` has received `n` e-mails, then make sure no more arrive for a moment.
pub async fn exactly_mails(to: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    let mut subjects = mail_subjects(to).await;
    while subjects.len() < n && start.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(300)).await;
        subjects = mail_subjects(to).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let subjects = mail_subjects(to).await;
    assert_eq!(subjects.len(), n, "expected exactly {n} e-mails to {to}, got {subjects:?}");
    subjects
}

pub async fn new_product(price_cents: i64, stock: i64) -> String {
    let (status, body) = post(
        "/api/products",
        json!({ "sku": unique("SKU").to_uppercase(), "name": "Test product", "price_cents": price_cents,
                "currency": "EUR", "stock": stock }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("product id").to_owned()
}

pub async fn place_order(customer: &str, items: &[(&str, i64)]) -> String {
    place_order_traced(customer, items).await.0
}

/// Place an order; its id and the trace id the gateway answered with (`X-Trace-Id`). While the
/// shop is behind and says so, it tries again when told (see [`send`]).
pub async fn place_order_traced(customer: &str, items: &[(&str, i64)]) -> (String, String) {
    let items: Vec<Value> = items.iter().map(|(p, q)| json!({ "product_id": p, "quantity": q })).collect();
    let (status, headers, body) =
        post_with_headers("/api/orders", json!({ "customer_id": customer, "items": items })).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "PENDING");
    let trace_id = headers.get("x-trace-id").and_then(|v| v.to_str().ok()).expect("an X-Trace-Id header").to_owned();
    (body["order_id"].as_str().expect("order id").to_owned(), trace_id)
}

pub fn zipkin() -> String {
    std::env::var("SHOP_ZIPKIN_API_URL").unwrap_or_else(|_| format!("http://{}/api/v2", local("zipkin")))
}

/// The spans Zipkin holds for `trace_id` (empty while it has none).
pub async fn trace_spans(trace_id: &str) -> Vec<Value> {
    match http().get(format!("{}/trace/{trace_id}", zipkin())).send().await {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        _ => Vec::new(),
    }
}

pub const SETTLE: Duration = Duration::from_secs(60);

pub async fn final_order(id: &str) -> Value {
    eventually(&format!("/api/orders/{id}"), SETTLE, |o| o["status"] == "CONFIRMED" || o["status"] == "REJECTED").await
}
