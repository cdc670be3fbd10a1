//! Router tests for what the gateway answers itself beyond forwarding: the OpenAPI contract,
//! Swagger UI, the browser UI (dashboard and storefront), and the per-client rate limit.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use axum::{Json, Router};
use gateway::{AppState, Downstreams, RateLimit, Timeouts, app};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tower::ServiceExt;

/// A service answering 200 to everything, so the gateway's own answers stand out.
async fn spawn_ok() -> String {
    let service = Router::new().fallback(get(|| async { Json(json!([])) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    url
}

async fn gateway(rate_limit: RateLimit) -> Router {
    let url = spawn_ok().await;
    app(AppState::new(
        Downstreams::from_fn(|_| url.clone()),
        Timeouts::default(),
        runtime::identity::CallerKey::new(runtime::identity::DEFAULT_CALLER_KEY.as_bytes()).unwrap(),
    )
    .unwrap()
    .with_rate_limit(rate_limit))
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, bytes.to_vec())
}

fn get_from(uri: &str, peer: &str) -> Request<Body> {
    let mut request = Request::get(uri).body(Body::empty()).unwrap();
    request.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    request
}

#[tokio::test]
async fn openapi_documents_every_route_of_the_contract() {
    let app = gateway(RateLimit::default()).await;
    let (status, headers, body) = call(&app, Request::get("/api/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    let spec: Value = serde_json::from_slice(&body).expect("the spec is JSON");
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."), "{spec}");
    let operations = [
        ("/api/customers", "post"),
        ("/api/customers", "get"),
        ("/api/customers/{id}", "get"),
        ("/api/products", "post"),
        ("/api/products", "get"),
        ("/api/products/{id}", "get"),
        ("/api/products/{id}/stock", "post"),
        ("/api/orders", "post"),
        ("/api/orders", "get"),
        ("/api/orders/{id}", "get"),
        ("/api/orders/{id}/cancel", "post"),
        ("/api/sagas", "get"),
        ("/api/sagas/definition", "get"),
        ("/api/sagas/{id}", "get"),
        ("/api/sagas/{id}/retry", "post"),
        ("/api/sagas/{id}/compensate", "post"),
        ("/api/sagas/actions", "post"),
        ("/health", "get"),
    ];
    for (path, method) in operations {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        if path.starts_with("/api/") {
            // Any /api call can be throttled or meet a failing service: the error shape says so.
            for status in ["429", "502", "503"] {
                let schema = &operation["responses"][status]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{method} {path} {status}");
            }
        }
    }
    let place = &spec["paths"]["/api/orders"]["post"];
    assert_eq!(
        place["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/PlaceOrder"
    );
    assert!(
        place["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
    for status in ["202", "400", "413", "415", "422"] {
        assert!(place["responses"][status].is_object(), "POST /api/orders lacks {status}");
    }
    assert!(place["responses"]["202"]["headers"]["Location"].is_object());
    let schemas = &spec["components"]["schemas"];
    assert_eq!(schemas["ErrorBody"]["required"], json!(["error", "detail"]));
    // Unknown fields are refused, and the contract says so.
    assert_eq!(schemas["PlaceOrder"]["additionalProperties"], json!(false));
    assert_eq!(schemas["OrderStatus"]["enum"], json!(["PENDING", "CONFIRMED", "REJECTED", "CANCELLED"]));
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let app = gateway(RateLimit::default()).await;
    let (status, headers, _) = call(&app, Request::get("/docs").body(Body::empty()).unwrap()).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(headers[header::LOCATION], "/docs/");
    let (status, headers, body) = call(&app, Request::get("/docs/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Nothing is fetched from elsewhere: every asset is relative to /docs/.
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    let (status, _, init) = call(&app, Request::get("/docs/swagger-initializer.js").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(init).unwrap().contains("/api/openapi.json"));
    let (status, headers, _) =
        call(&app, Request::get("/docs/swagger-ui-bundle.js").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{headers:?}");
}

#[tokio::test]
async fn the_dashboard_and_its_assets_are_served_from_the_binary_with_a_strict_policy() {
    let app = gateway(RateLimit::default()).await;
    let (status, headers, _) = call(&app, Request::get("/dashboard").body(Body::empty()).unwrap()).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(headers[header::LOCATION], "/dashboard/");
    let (status, headers, body) = call(&app, Request::get("/dashboard/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    // Scripts only from the gateway; calls only to the gateway and the realm (for tokens).
    assert!(csp.contains("default-src 'self'") && csp.contains("connect-src 'self' http://127.0.0.1:8180"), "{csp}");
    let html = String::from_utf8(body).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing from elsewhere: {html}");
    // The page links its script and style; the script imports the sign-in module.
    for (asset, kind, linked_from) in [
        ("/ui/dashboard.js", "javascript", html.clone()),
        ("/ui/app.css", "css", html.clone()),
        (
            "/ui/auth.js",
            "javascript",
            String::from_utf8(call(&app, Request::get("/ui/dashboard.js").body(Body::empty()).unwrap()).await.2)
                .unwrap(),
        ),
    ] {
        assert!(linked_from.contains(asset), "{asset} is not linked");
        let (status, headers, _) = call(&app, Request::get(asset).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(headers[header::CONTENT_TYPE].to_str().unwrap().contains(kind), "{asset}: {headers:?}");
    }
    let (status, _, body) = call(&app, Request::get("/ui/config.json").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let config: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(config["client_id"], "shop-web");
    assert_eq!(config["token_endpoint"], "http://127.0.0.1:8180/realms/shop/protocol/openid-connect/token");
    let (status, _, body) = call(&app, Request::get("/ui/nothing.js").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["error"].as_str().unwrap().contains("nothing.js"));
    let (status, _, body) = call(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8(body).unwrap().contains("/dashboard/"));
}

/// The `/ui/…` files a page or module names in double quotes (links, scripts, imports, fetches).
fn ui_files_named_in(text: &str) -> Vec<String> {
    text.match_indices("\"/ui/").filter_map(|(i, _)| text[i + 1..].split('"').next()).map(str::to_owned).collect()
}

#[tokio::test]
async fn every_page_and_every_file_it_loads_are_served_from_the_binary_with_a_strict_policy() {
    let app = gateway(RateLimit::default()).await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let (status, headers, _) = call(&app, get("/shop")).await;
    assert!(status.is_redirection(), "{status}");
    assert_eq!(headers[header::LOCATION], "/shop/");
    let (_, _, index) = call(&app, get("/")).await;
    assert!(String::from_utf8(index).unwrap().contains("href=\"/shop/\""), "the landing page links the shop");

    // Every page, and transitively every file it links or a module imports.
    let mut todo: Vec<String> =
        ["/", "/shop/", "/dashboard/", "/dashboard/dead-letters/", "/dashboard/projections/"].map(str::to_owned).into();
    let mut served = std::collections::BTreeSet::new();
    while let Some(path) = todo.pop() {
        if path == "/ui/config.json" || !served.insert(path.clone()) {
            continue; // the realm's endpoints as JSON, checked with the dashboard
        }
        let (status, headers, body) = call(&app, get(&path)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let kind = headers[header::CONTENT_TYPE].to_str().unwrap();
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            _ => "text/html",
        };
        assert!(kind.starts_with(expected), "{path}: {kind}");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "connect-src 'self' http://127.0.0.1:8180",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("http://") && !text.contains("https://"), "{path} loads something from elsewhere");
        if expected == "text/html" {
            // The policy would refuse inline scripts and styles: the page has none.
            assert!(text.matches("<script").count() == text.matches("<script type=\"module\" src=").count(), "{path}");
            assert!(!text.contains(" style=") && !text.contains("<style"), "{path}");
        }
        todo.extend(ui_files_named_in(&text));
    }
    for file in [
        "/ui/shop.js",
        "/ui/dashboard.js",
        "/ui/dead-letters.js",
        "/ui/projections.js",
        "/ui/auth.js",
        "/ui/dom.js",
        "/ui/app.css",
    ] {
        assert!(served.contains(file), "{file} is not loaded by any page: {served:?}");
    }
}

#[tokio::test]
async fn a_burst_over_the_limit_is_refused_until_the_bucket_refills() {
    // 20 per second = one request back every 50 ms; at most 3 at once.
    let app = gateway(RateLimit { per_second: 20, burst: 3 }).await;
    let alice = "203.0.113.7:50000";
    for _ in 0..3 {
        assert_eq!(call(&app, get_from("/api/products", alice)).await.0, StatusCode::OK);
    }
    let (status, headers, body) = call(&app, get_from("/api/products", alice)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "too many requests");
    assert_eq!(body["detail"]["retry_after_seconds"], retry_after);

    // Another client has its own bucket; probes and the docs are never limited.
    assert_eq!(call(&app, get_from("/api/products", "198.51.100.1:40000")).await.0, StatusCode::OK);
    assert_eq!(call(&app, get_from("/api/openapi.json", alice)).await.0, StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(call(&app, get_from("/api/products", alice)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_default_limit_lets_a_test_suite_through() {
    let app = gateway(RateLimit::default()).await;
    for _ in 0..300 {
        assert_eq!(call(&app, get_from("/api/products", "127.0.0.1:1")).await.0, StatusCode::OK);
    }
}
