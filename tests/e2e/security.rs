//! Tokens from the real Keycloak against the running gateway: every bad token is 401, a
//! customer on an admin route is 403, and one customer cannot see another's data (404).

use crate::harness::{
    SERVICES, gateway, http, http_as, keycloak, new_product, password_grant, send, service_http, service_url,
    token_for, unique,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

async fn get_with(path: &str, authorization: Option<String>) -> (StatusCode, Value) {
    let client = http_as(None);
    let mut request = client.get(format!("{}{path}", gateway()));
    if let Some(value) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let r = request.send().await.expect("GET");
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

async fn as_user(user: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let client = http_as(Some(user));
    let mut request = client.request(method, format!("{}{path}", gateway()));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = send(request).await;
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn every_bad_token_is_401() {
    let path = format!("/api/orders/{}", uuid::Uuid::new_v4());
    let good = token_for("alice");
    let parts: Vec<&str> = good.split('.').collect();
    let (header, claims) = (decode(parts[0]), decode(parts[1]));
    assert_eq!(header["alg"], "RS256");

    let mut promoted = claims.clone();
    promoted["realm_access"] = json!({ "roles": ["admin"] });
    let tampered = format!("{}.{}.{}", parts[0], encode(&promoted), parts[2]);
    let mut none_header = header.clone();
    none_header["alg"] = json!("none");
    let alg_none = format!("{}.{}.", encode(&none_header), parts[1]);
    // HS256 keyed with the realm's public key, as published by the realm itself.
    let realm: Value = http().get(format!("{}/realms/shop", keycloak())).send().await.unwrap().json().await.unwrap();
    let der = realm["public_key"].as_str().expect("realm public key");
    let lines: Vec<String> = der.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"));
    assert!(STANDARD.decode(der).is_ok());
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = header["kid"].as_str().map(str::to_owned);
    let hs256 = jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes())).unwrap();
    // Another client of the realm: a real signature, but not for this API.
    let other = password_grant("shop", "shop-other", "alice", "alice");
    let wrong_audience = other["access_token"].as_str().expect("shop-other token").to_owned();
    // Another realm: a real signature by another issuer.
    let master = password_grant("master", "admin-cli", "admin", "admin");
    let wrong_issuer = master["access_token"].as_str().expect("master token").to_owned();
    // A client whose tokens live 2 s: wait past that and the gateway's leeway.
    let short = password_grant("shop", "shop-short", "alice", "alice");
    let expired = short["access_token"].as_str().expect("shop-short token").to_owned();
    assert_eq!(get_with(&path, Some(format!("Bearer {expired}"))).await.0, StatusCode::NOT_FOUND, "fresh short token");
    tokio::time::sleep(Duration::from_secs(9)).await;

    let cases = [
        ("no token", None),
        ("expired", Some(format!("Bearer {expired}"))),
        ("wrong issuer", Some(format!("Bearer {wrong_issuer}"))),
        ("wrong audience", Some(format!("Bearer {wrong_audience}"))),
        ("alg none", Some(format!("Bearer {alg_none}"))),
        ("HS256 signed with the public key", Some(format!("Bearer {hs256}"))),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        ("garbage", Some("Bearer abc.def.ghi".to_owned())),
    ];
    for (what, authorization) in cases {
        let (status, body) = get_with(&path, authorization).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(body["error"].is_string(), "{what}: {body}");
    }
    // And the good one passes (404: no such order, but the token was accepted).
    assert_eq!(get_with(&path, Some(format!("Bearer {good}"))).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_customer_on_an_admin_route_is_403() {
    for path in ["/api/sagas", "/api/customers"] {
        let (status, body) = as_user("alice", reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(as_user("admin", reqwest::Method::GET, path, None).await.0, StatusCode::OK, "{path}");
    }
    let product =
        json!({ "sku": unique("SEC").to_uppercase(), "name": "x", "price_cents": 1, "currency": "EUR", "stock": 1 });
    assert_eq!(as_user("alice", reqwest::Method::POST, "/api/products", Some(product)).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn alice_cannot_see_bobs_customer_or_order() {
    use reqwest::Method;
    let email = format!("{}@example.com", unique("bob"));
    let (status, body) =
        as_user("bob", Method::POST, "/api/customers", Some(json!({ "name": "Bob", "email": email }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let bobs = body["id"].as_str().unwrap().to_owned();
    let product = new_product(100, 10).await;
    let order = json!({ "customer_id": bobs, "items": [{ "product_id": product, "quantity": 1 }] });
    // Alice cannot order on Bob's profile: it is as unknown to her as a made-up one.
    let (status, body) = as_user("alice", Method::POST, "/api/orders", Some(order.clone())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = as_user("bob", Method::POST, "/api/orders", Some(order)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let order_id = body["order_id"].as_str().unwrap().to_owned();

    // Bob sees his own (once projected), and so does an admin.
    for path in [format!("/api/customers/{bobs}"), format!("/api/orders/{order_id}")] {
        let mut seen = StatusCode::NOT_FOUND;
        for _ in 0..100 {
            seen = as_user("bob", Method::GET, &path, None).await.0;
            if seen == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(seen, StatusCode::OK, "bob on {path}");
        assert_eq!(as_user("admin", Method::GET, &path, None).await.0, StatusCode::OK, "admin on {path}");
        let (status, body) = as_user("alice", Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "alice on {path}: {body}");
    }
    let (status, list) = as_user("alice", Method::GET, &format!("/api/orders?customer_id={bobs}"), None).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
    let (_, list) = as_user("bob", Method::GET, &format!("/api/orders?customer_id={bobs}"), None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (status, _) = as_user("alice", Method::POST, &format!("/api/orders/{order_id}/cancel"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "alice cancelling bob's order");
}

/// Behind the gateway nobody is trusted on their word: every service's port refuses identity
/// headers without a caller token, a realm token (it proves a user to the gateway, not a caller
/// to a service), and a caller token signed with another key (401 each); it answers a caller
/// token signed with the stack's key, and `/health` without any.
#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn every_service_refuses_callers_without_a_valid_caller_token() {
    use runtime::identity::{Caller, CallerKey};
    let admin = Caller::User { id: "someone".into(), name: "mallory".into(), roles: vec!["admin".into()] };
    let foreign = CallerKey::new(b"a key that is not the stack's, 32+ bytes").unwrap();
    let realm_token = format!("Bearer {}", token_for("admin"));
    let raw = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let account = uuid::Uuid::now_v7(); // no such account or order: 404 or an empty list
    let routes = [
        ("customer", "/customers".to_owned()),
        ("product", "/products".to_owned()),
        ("order", "/orders".to_owned()),
        ("payment", format!("/accounts/{account}")),
        ("notification", format!("/notifications?order_id={account}")),
        ("saga-orchestrator", "/sagas".to_owned()),
        ("projectors", "/status".to_owned()),
    ];
    assert_eq!(routes.len(), SERVICES.len(), "a route for every service");
    for (service, path) in routes {
        let url = format!("{}{path}", service_url(service));
        let refusals = [
            ("identity headers alone", raw.get(&url).header("x-user-id", "someone").header("x-user-roles", "admin")),
            ("a realm token", raw.get(&url).header(reqwest::header::AUTHORIZATION, &realm_token)),
            (
                "a caller token of another key",
                raw.get(&url).header(reqwest::header::AUTHORIZATION, foreign.authorization(&admin, "gateway")),
            ),
        ];
        for (what, request) in refusals {
            let r = request.send().await.unwrap_or_else(|e| panic!("{service}: GET {url}: {e}"));
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{service} with {what}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer", "{service} with {what}");
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(body["error"].as_str().is_some_and(|e| e.contains("caller token")), "{service}: {body}");
        }
        let r = service_http().get(&url).send().await.expect("GET as a service");
        assert!(r.status().is_success() || r.status() == StatusCode::NOT_FOUND, "{service}: {}", r.status());
        let health = raw.get(format!("{}/health", service_url(service))).send().await.expect("health");
        assert!(health.status() != StatusCode::UNAUTHORIZED, "{service}: /health needs no token");
    }
}
