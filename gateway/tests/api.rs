//! Router tests: the gateway's own checks with `oneshot` (no socket), and forwarding against a
//! tiny echo service on a loopback port.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gateway::{AppState, Downstreams, Service, Timeouts, app};
use runtime::discovery::Resolver;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

mod support;
use support::{admin_token, auth_config, bearer, caller_key};

const ORDER_ID: &str = "0190a8b0-1c2d-7e3f-8a4b-5c6d7e8f9a0b";

/// A loopback URL where nothing listens: calls to it are refused at once.
async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A service that answers everything by describing the request it got. The query picks
/// misbehaviour: `behave=fail` (500), `behave=slow` (2 s), `behave=text404` (plain-text 404).
async fn spawn_echo() -> String {
    async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let query = uri.query().unwrap_or_default();
        if query.contains("behave=fail") {
            return (StatusCode::INTERNAL_SERVER_ERROR, "database exploded").into_response();
        }
        if query.contains("behave=slow") {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if query.contains("behave=text404") {
            return (StatusCode::NOT_FOUND, "nothing here").into_response();
        }
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        let description = json!({
            "method": method.as_str(),
            "path": uri.path(),
            "query": uri.query(),
            "body": String::from_utf8_lossy(&body),
            "content_type": header("content-type"),
            "idempotency_key": header("idempotency-key"),
            "consistency_token": header("x-consistency-token"),
            "x_other": header("x-other"),
        });
        let location = format!("/orders/{ORDER_ID}");
        let headers = [("location", location.as_str()), ("x-consistency-token", "42"), ("x-internal", "secret")];
        (StatusCode::ACCEPTED, headers, Json(description)).into_response()
    }
    let service = Router::new().route("/health", get(|| async { "ok" })).fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    url
}

async fn gateway_with(urls: impl FnMut(Service) -> String, timeouts: Timeouts) -> Router {
    app(AppState::new(Downstreams::from_fn(urls), timeouts, caller_key()).unwrap().with_auth(auth_config().await))
}

/// A gateway whose services are all unreachable: any answer but 503 was given by the gateway.
async fn gateway_alone() -> Router {
    let url = closed_url().await;
    gateway_with(|_| url.clone(), Timeouts::default()).await
}

async fn gateway_to_echo() -> Router {
    let url = spawn_echo().await;
    gateway_with(|_| url.clone(), Timeouts::default()).await
}

/// Sends `request` as an admin unless it carries an `Authorization` header of its own.
async fn send(app: Router, mut request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    if !request.headers().contains_key(header::AUTHORIZATION) {
        request.headers_mut().insert(header::AUTHORIZATION, bearer(&admin_token()).parse().unwrap());
    }
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    (status, headers, body)
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post_json(uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(uri).header(header::CONTENT_TYPE, "application/json").body(body.into()).unwrap()
}

#[tokio::test]
async fn a_path_id_that_is_not_a_uuid_is_400() {
    for uri in ["/api/customers/42", "/api/products/nope", "/api/orders/%FF", "/api/sagas/1234"] {
        let (status, _, body) = send(gateway_alone().await, get_req(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"], "not a valid id", "{uri}");
    }
    let (status, _, body) = send(gateway_alone().await, post_json("/api/products/x/stock", r#"{"quantity":1}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "not a valid id");
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_415() {
    let text = Request::post("/api/customers")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"name":"a"}"#))
        .unwrap();
    let untyped = Request::post("/api/orders").body(Body::from(r#"{"name":"a"}"#)).unwrap();
    for request in [text, untyped] {
        let (status, _, body) = send(gateway_alone().await, request).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(body["error"].is_string());
    }
}

#[tokio::test]
async fn malformed_json_or_a_non_object_is_400() {
    for bad in [r#"{"name": "#, "", "[1, 2]", "\"text\""] {
        let (status, _, body) = send(gateway_alone().await, post_json("/api/customers", bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert!(body["error"].is_string(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_body_over_64_kib_is_413() {
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(64 * 1024));
    let (status, _, body) = send(gateway_alone().await, post_json("/api/products", big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "request body is larger than 64 KiB");
}

#[tokio::test]
async fn unknown_routes_are_404_json_and_wrong_methods_405_json() {
    for uri in ["/api/unknown", "/api/customers/x/y", "/nothing/here"] {
        let (status, _, body) = send(gateway_alone().await, get_req(uri)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(body["error"], "no such route", "{uri}");
    }
    let delete = Request::delete("/api/customers").body(Body::empty()).unwrap();
    let (status, headers, body) = send(gateway_alone().await, delete).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"], "method not allowed");
    assert!(headers.contains_key(header::ALLOW));
}

#[tokio::test]
async fn an_unreachable_service_is_503() {
    let (status, _, body) = send(gateway_alone().await, post_json("/api/customers", r#"{"name":"a"}"#)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "customer is unavailable");
}

#[tokio::test]
async fn a_service_slower_than_the_timeout_is_503() {
    let url = spawn_echo().await;
    let timeouts = Timeouts { request: Duration::from_millis(200), ..Timeouts::default() };
    let gateway = gateway_with(|_| url.clone(), timeouts).await;
    let (status, _, body) = send(gateway, get_req("/api/sagas?behave=slow")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "saga-orchestrator is unavailable");
}

#[tokio::test]
async fn forwards_method_path_query_body_and_headers_and_rewrites_location() {
    let body = r#"{"customer_id":"c","items":[]}"#;
    let request = Request::post("/api/orders?customer_id=a%20b&x=1")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("idempotency-key", "key-1")
        .header("x-consistency-token", "7")
        .header("x-other", "not for services")
        .body(Body::from(body))
        .unwrap();
    let (status, headers, echo) = send(gateway_to_echo().await, request).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        echo,
        json!({
            "method": "POST",
            "path": "/orders",
            "query": "customer_id=a%20b&x=1",
            "body": body,
            "content_type": "application/json; charset=utf-8",
            "idempotency_key": "key-1",
            "consistency_token": "7",
            "x_other": null,
        })
    );
    assert_eq!(headers[header::LOCATION], format!("/api/orders/{ORDER_ID}").as_str());
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(headers["x-consistency-token"], "42");
    assert!(!headers.contains_key("x-internal"));
}

#[tokio::test]
async fn ids_are_forwarded_hyphenated_and_cancel_needs_no_body() {
    let upper = ORDER_ID.to_uppercase();
    let (status, _, echo) = send(gateway_to_echo().await, get_req(&format!("/api/products/{upper}"))).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(echo["path"], format!("/products/{ORDER_ID}"));

    let cancel = Request::post(format!("/api/orders/{ORDER_ID}/cancel")).body(Body::empty()).unwrap();
    let (status, _, echo) = send(gateway_to_echo().await, cancel).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        (echo["method"].as_str(), echo["path"].as_str()),
        (Some("POST"), Some(&*format!("/orders/{ORDER_ID}/cancel")))
    );
    assert_eq!((echo["body"].as_str(), &echo["content_type"]), (Some(""), &Value::Null));
}

#[tokio::test]
async fn a_service_error_is_an_opaque_502_and_its_client_errors_stay_json() {
    let (status, _, body) = send(gateway_to_echo().await, get_req("/api/orders?behave=fail")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"], "order failed to answer");
    assert!(!body.to_string().contains("exploded"));

    let (status, _, body) = send(gateway_to_echo().await, get_req("/api/customers?behave=text404")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "nothing here");
}

#[tokio::test]
async fn health_is_up_only_when_every_service_is() {
    let (status, _, body) = send(gateway_to_echo().await, get_req("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "up");
    for service in Service::ALL {
        assert_eq!(body["downstream"][service.name()], "up");
    }

    let (echo, closed) = (spawn_echo().await, closed_url().await);
    let gateway =
        gateway_with(|s| if s == Service::Payment { closed.clone() } else { echo.clone() }, Timeouts::default()).await;
    let (status, _, body) = send(gateway, get_req("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "down");
    assert_eq!(body["downstream"]["payment"], "down");
    assert_eq!(body["downstream"]["order"], "up");
}

#[tokio::test]
async fn a_dead_instance_is_skipped_by_gets_and_by_calls_it_refused() {
    let (echo, dead) = (spawn_echo().await, closed_url().await);
    let unused = closed_url().await;
    let resolver =
        Resolver::fixed([("product", vec![dead.clone(), echo.clone()]), ("order", vec![dead.clone(), echo.clone()])]);
    let downstreams = Downstreams::from_fn(|_| unused.clone()).with_resolver(resolver);
    let gateway =
        app(AppState::new(downstreams, Timeouts::default(), caller_key()).unwrap().with_auth(auth_config().await));
    // Round-robin starts at each instance in turn; every call reaches the live one.
    for _ in 0..4 {
        let (status, _, body) = send(gateway.clone(), get_req(&format!("/api/products/{ORDER_ID}"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["path"], format!("/products/{ORDER_ID}"));
    }
    // A refused connection means the request was never sent: a POST moves on too.
    for _ in 0..2 {
        let request = Request::post("/api/orders")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"customer_id":"x","items":[]}"#))
            .unwrap();
        let (status, _, body) = send(gateway.clone(), request).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["method"], "POST");
    }
    // With no instance registered, the configured URL is used (here: nothing listens).
    let (status, _, body) = send(gateway, get_req(&format!("/api/customers/{ORDER_ID}"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}
