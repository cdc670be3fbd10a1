//! Tokens for router tests: a test realm whose JWKS is served on a loopback port, and tokens
//! signed with its key (`fixtures/test-rsa-key.pem`, a throw-away key made for these tests).
#![allow(dead_code)] // each test file uses part of it

use axum::Router;
use axum::routing::get;
use gateway::auth::AuthConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ISSUER: &str = "http://issuer.test/realms/shop";
pub const AUDIENCE: &str = "shop-api";
pub const KID: &str = "test-key-1";
pub const PRIVATE_KEY: &[u8] = include_bytes!("../fixtures/test-rsa-key.pem");
pub const PUBLIC_KEY: &[u8] = include_bytes!("../fixtures/test-rsa-pub.pem");
const JWKS: &str = include_str!("../fixtures/test-jwks.json");

/// The test realm: its JWKS answered by a listener of this test.
pub async fn auth_config() -> AuthConfig {
    let app = Router::new().route("/certs", get(|| async { ([("content-type", "application/json")], JWKS) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    AuthConfig { jwks_url: url, leeway: Duration::from_secs(5), ..AuthConfig::for_issuer(ISSUER) }
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The claims Keycloak puts in an access token of `shop-web`, for `sub` with `roles`.
pub fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({
        "iss": ISSUER, "aud": [AUDIENCE, "account"], "azp": "shop-web", "sub": sub,
        "preferred_username": sub, "exp": now() + 300, "iat": now(), "typ": "Bearer",
        "realm_access": { "roles": roles },
    })
}

/// `claims` signed RS256 with the test realm's key.
pub fn sign(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(PRIVATE_KEY).unwrap()).unwrap()
}

pub fn token(sub: &str, roles: &[&str]) -> String {
    sign(&claims(sub, roles))
}

pub fn admin_token() -> String {
    token("admin-subject", &["admin"])
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The key the gateway signs caller tokens with in these tests (the local stack's).
pub fn caller_key() -> runtime::identity::CallerKey {
    runtime::identity::CallerKey::new(runtime::identity::DEFAULT_CALLER_KEY.as_bytes()).unwrap()
}
