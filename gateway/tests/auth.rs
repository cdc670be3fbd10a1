//! Bearer tokens at the gateway: every way a token can be wrong is 401, a missing role is 403,
//! and the caller reaches the services only in the caller token the gateway signs.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gateway::auth::AuthConfig;
use gateway::{AppState, Downstreams, Timeouts, app};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tower::ServiceExt;

mod support;
use runtime::identity::Caller;
use support::{ISSUER, admin_token, auth_config, bearer, caller_key, claims, now, sign, token};

const ID: &str = "0190a8b0-1c2d-7e3f-8a4b-5c6d7e8f9a0b";

/// Every service: answers with the caller its token proves, and any identity header that
/// reached it.
async fn spawn_identity_echo() -> String {
    async fn echo(headers: HeaderMap) -> Json<Value> {
        let caller = match caller_key().caller_of(&headers) {
            Ok(Caller::User { id, name, roles }) => json!({ "user": id, "name": name, "roles": roles }),
            Ok(Caller::Anonymous) => json!("anonymous"),
            Ok(Caller::Internal) => json!("service"),
            Err(e) => json!({ "refused": e.to_string() }),
        };
        let forwarded: Vec<&str> = headers.keys().map(|k| k.as_str()).filter(|k| k.starts_with("x-user")).collect();
        Json(json!({ "caller": caller, "identity_headers": forwarded }))
    }
    let service = Router::new().fallback(get(echo).post(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    url
}

async fn gateway_with(config: AuthConfig) -> Router {
    let url = spawn_identity_echo().await;
    app(AppState::new(Downstreams::from_fn(|_| url.clone()), Timeouts::default(), caller_key())
        .unwrap()
        .with_auth(config))
}

async fn gateway() -> Router {
    gateway_with(auth_config().await).await
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn get_with(uri: &str, authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    request.body(Body::empty()).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[tokio::test]
async fn a_guarded_route_without_a_token_is_401() {
    let app = gateway().await;
    for uri in ["/api/orders", &format!("/api/orders/{ID}"), &format!("/api/customers/{ID}"), "/api/sagas"] {
        let (status, headers, body) = send(&app, get_with(uri, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(body["error"], "a bearer token is required", "{uri}");
        assert!(headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"), "{uri}");
    }
}

#[tokio::test]
async fn every_kind_of_bad_token_is_401() {
    let app = gateway().await;
    let alice = |tweak: &dyn Fn(&mut Value)| {
        let mut c = claims("alice-subject", &["customer"]);
        tweak(&mut c);
        sign(&c)
    };
    let expired = alice(&|c| c["exp"] = json!(now() - 60));
    let not_yet = alice(&|c| c["nbf"] = json!(now() + 600));
    let wrong_issuer = alice(&|c| c["iss"] = json!("http://127.0.0.1:8180/realms/other"));
    let wrong_audience = alice(&|c| c["aud"] = json!(["account"]));
    let no_subject = alice(&|c| {
        c.as_object_mut().unwrap().remove("sub");
    });
    let header = |alg: &str| json!({ "alg": alg, "typ": "JWT", "kid": support::KID });
    let payload = b64(&claims("alice-subject", &["admin"]));
    let alg_none = format!("{}.{payload}.", b64(&header("none")));
    // The classic key-confusion attack: HMAC keyed with the realm's *public* key.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(support::KID.into());
    let hs256 =
        jsonwebtoken::encode(&hs, &claims("alice-subject", &["admin"]), &EncodingKey::from_secret(support::PUBLIC_KEY))
            .unwrap();
    // A real signature over other claims: promote alice to admin.
    let valid = token("alice-subject", &["customer"]);
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let unknown_kid = {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("someone-elses-key".into());
        jsonwebtoken::encode(
            &h,
            &claims("alice-subject", &["customer"]),
            &EncodingKey::from_rsa_pem(support::PRIVATE_KEY).unwrap(),
        )
        .unwrap()
    };
    let cases = [
        ("expired", bearer(&expired), "invalid token: expired"),
        ("not yet valid", bearer(&not_yet), "invalid token: not valid yet"),
        ("wrong issuer", bearer(&wrong_issuer), "invalid token: wrong issuer"),
        ("wrong audience", bearer(&wrong_audience), "invalid token: wrong audience"),
        ("no subject", bearer(&no_subject), "invalid token: malformed or missing claims"),
        ("alg none", bearer(&alg_none), "malformed token"),
        ("HS256 with the public key", bearer(&hs256), "token algorithm HS256 is not accepted"),
        ("tampered payload", bearer(&tampered), "invalid token: bad signature"),
        ("unknown key", bearer(&unknown_kid), "token signed with an unknown key"),
        ("garbage", bearer("not.a.token"), "malformed token"),
        (
            "not bearer",
            format!("Basic {}", URL_SAFE_NO_PAD.encode("alice:alice")),
            "the Authorization header must be `Bearer <token>`",
        ),
        ("empty bearer", "Bearer ".into(), "the Authorization header must be `Bearer <token>`"),
    ];
    for (what, authorization, message) in cases {
        // Public routes too: a token that is there must be valid.
        for uri in [format!("/api/orders/{ID}"), "/api/products".into()] {
            let (status, headers, body) = send(&app, get_with(&uri, Some(&authorization))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} on {uri}: {body}");
            assert_eq!(body["error"], message, "{what} on {uri}");
            assert!(headers.contains_key(header::WWW_AUTHENTICATE), "{what}");
        }
    }
}

#[tokio::test]
async fn the_leeway_forgives_a_little_clock_skew() {
    let app = gateway().await;
    let mut c = claims("alice-subject", &["customer"]);
    c["exp"] = json!(now() - 2);
    let (status, _, _) = send(&app, get_with("/api/orders", Some(&bearer(&sign(&c))))).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_customer_on_an_admin_route_is_403_and_an_admin_passes() {
    let app = gateway().await;
    let alice = bearer(&token("alice-subject", &["customer"]));
    for uri in ["/api/sagas", "/api/customers", &format!("/api/sagas/{ID}")] {
        let (status, _, body) = send(&app, get_with(uri, Some(&alice))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(body["error"], "this needs the admin role");
        let (status, _, _) = send(&app, get_with(uri, Some(&bearer(&admin_token())))).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
    }
    let create = Request::post("/api/products")
        .header(header::AUTHORIZATION, &alice)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"sku":"X"}"#))
        .unwrap();
    assert_eq!(send(&app, create).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn services_get_the_checked_identity_and_never_the_clients_headers() {
    let app = gateway().await;
    let forged = |request: axum::http::request::Builder| {
        request
            .header("x-user-id", "bob-subject")
            .header("x-user-roles", "admin")
            .header("x-user-name", "bob")
            .body(Body::empty())
            .unwrap()
    };
    let alice = bearer(&token("alice-subject", &["customer", "offline_access"]));
    let (status, _, seen) = send(&app, forged(Request::get("/api/orders").header(header::AUTHORIZATION, &alice))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen,
        json!({
            "caller": { "user": "alice-subject", "name": "alice-subject", "roles": ["customer", "offline_access"] },
            "identity_headers": [],
        })
    );
    // Anonymous on a public route: marked as such, so the service does not take it for another service.
    let (status, _, seen) = send(&app, forged(Request::get("/api/products"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen, json!({ "caller": "anonymous", "identity_headers": [] }));
}

#[tokio::test]
async fn an_unreachable_key_set_is_503_not_401() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", closed.local_addr().unwrap());
    drop(closed);
    let app = gateway_with(AuthConfig { jwks_url: url, ..AuthConfig::for_issuer(ISSUER) }).await;
    let (status, _, body) = send(&app, get_with("/api/orders", Some(&bearer(&admin_token())))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "the identity provider is unavailable, try again later");
}
