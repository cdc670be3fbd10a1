//! The browser UI: a landing page at `/`, the customers' storefront at `/shop/`, the saga
//! dashboard at `/dashboard/`, the dead letters at `/dashboard/dead-letters/` and the
//! projections at `/dashboard/projections/`. Plain HTML, CSS and JavaScript modules from `gateway/ui/`, compiled
//! into the binary: no build step, no CDN.
//! The pages sign in against the realm themselves (authorization code + PKCE, client
//! `SHOP_UI_CLIENT_ID`, default `shop-web`) and call `/api` with the token like any client.

use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use runtime::http::ApiError;
use serde_json::json;

pub const CLIENT_ID_VAR: &str = "SHOP_UI_CLIENT_ID";
/// Where an operator's browser opens one trace: a URL with `{trace_id}` in it. By default the
/// local stack's Zipkin UI.
pub const TRACE_URL_VAR: &str = "SHOP_UI_TRACE_URL";

/// `(name, content type, body)` of every file under `/ui/`.
const ASSETS: [(&str, &str, &str); 12] = [
    ("app.css", "text/css; charset=utf-8", include_str!("../../ui/app.css")),
    ("auth.js", "text/javascript; charset=utf-8", include_str!("../../ui/auth.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("../../ui/dom.js")),
    ("dashboard.js", "text/javascript; charset=utf-8", include_str!("../../ui/dashboard.js")),
    ("shop.js", "text/javascript; charset=utf-8", include_str!("../../ui/shop.js")),
    ("dead-letters.js", "text/javascript; charset=utf-8", include_str!("../../ui/dead-letters.js")),
    ("projections.js", "text/javascript; charset=utf-8", include_str!("../../ui/projections.js")),
    ("index.html", "text/html; charset=utf-8", include_str!("../../ui/index.html")),
    ("dashboard.html", "text/html; charset=utf-8", include_str!("../../ui/dashboard.html")),
    ("shop.html", "text/html; charset=utf-8", include_str!("../../ui/shop.html")),
    ("dead-letters.html", "text/html; charset=utf-8", include_str!("../../ui/dead-letters.html")),
    ("projections.html", "text/html; charset=utf-8", include_str!("../../ui/projections.html")),
];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|s: State<AppState>| async move { page(&s, "index.html") }))
        .route("/dashboard", get(|| async { Redirect::permanent("/dashboard/") }))
        .route("/dashboard/", get(|s: State<AppState>| async move { page(&s, "dashboard.html") }))
        .route("/dashboard/dead-letters", get(|| async { Redirect::permanent("/dashboard/dead-letters/") }))
        .route("/dashboard/dead-letters/", get(|s: State<AppState>| async move { page(&s, "dead-letters.html") }))
        .route("/dashboard/projections", get(|| async { Redirect::permanent("/dashboard/projections/") }))
        .route("/dashboard/projections/", get(|s: State<AppState>| async move { page(&s, "projections.html") }))
        .route("/shop", get(|| async { Redirect::permanent("/shop/") }))
        .route("/shop/", get(|s: State<AppState>| async move { page(&s, "shop.html") }))
        .route("/ui/config.json", get(config))
        .route("/ui/{file}", get(asset))
}

fn find(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS.iter().find(|(n, _, _)| *n == name).map(|(_, t, body)| (*t, *body))
}

/// The realm's origin (`scheme://host:port`), the one other place the pages may talk to.
fn realm_origin(issuer: &str) -> &str {
    let after_scheme = issuer.find("://").map_or(0, |i| i + 3);
    issuer[after_scheme..].find('/').map_or(issuer, |i| &issuer[..after_scheme + i])
}

fn served(s: &AppState, content_type: &'static str, body: &'static str) -> Response {
    let csp = format!(
        "default-src 'self'; connect-src 'self' {}; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
         frame-ancestors 'none'",
        realm_origin(&s.verifier.config().issuer)
    );
    let mut res = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

fn page(s: &AppState, name: &str) -> Response {
    match find(name) {
        Some((t, body)) => served(s, t, body),
        None => ApiError::not_found(format!("no page {name}")).into_response(),
    }
}

async fn asset(State(s): State<AppState>, Path(file): Path<String>) -> Response {
    match find(&file) {
        Some((t, body)) => served(&s, t, body),
        None => ApiError::not_found(format!("no UI file {file:?}")).into_response(),
    }
}

/// Where the pages sign in (the realm's OpenID Connect endpoints and the public client), and
/// where a trace is shown.
async fn config(State(s): State<AppState>) -> Json<serde_json::Value> {
    let issuer = &s.verifier.config().issuer;
    let setting = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let client_id = setting(CLIENT_ID_VAR).unwrap_or_else(|| "shop-web".into());
    let trace_url = setting(TRACE_URL_VAR)
        .unwrap_or_else(|| format!("http://{}/zipkin/traces/{{trace_id}}", runtime::config::local("zipkin")));
    Json(json!({
        "trace_url": trace_url,
        "issuer": issuer,
        "client_id": client_id,
        "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
        "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
        "end_session_endpoint": format!("{issuer}/protocol/openid-connect/logout"),
    }))
}

#[cfg(test)]
mod tests {
    use super::realm_origin;

    #[test]
    fn the_realm_origin_is_the_issuers_scheme_host_and_port() {
        assert_eq!(realm_origin("http://127.0.0.1:8180/realms/shop"), "http://127.0.0.1:8180");
        assert_eq!(realm_origin("https://id.example.com/realms/shop"), "https://id.example.com");
        assert_eq!(realm_origin("http://keycloak:8080"), "http://keycloak:8080");
    }
}
