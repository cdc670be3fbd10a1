//! The gateway's API as the bench uses it: one shared HTTP client, the caller's token on each
//! request, and the answers' shapes (only the fields the bench reads; unknown ones are ignored
//! so the bench keeps working when the API grows).

use crate::auth::{Tokens, User};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, RETRY_AFTER};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub const CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// One client for every call of the run: its pool keeps connections open, so an order costs
/// no TCP handshake. No proxy, whatever the environment says: the stack is on loopback.
pub fn http_client(max_idle_per_host: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(max_idle_per_host)
        // Under the gateway's 75 s wait for a request head (runtime::http::EDGE_HEAD_TIMEOUT): the
        // client lets an idle connection go before the server closes it under a reuse.
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        // Long enough for an overloaded system to answer late (its latency is what is
        // measured), short enough that a lost request does not hold the drain.
        .timeout(Duration::from_secs(30))
        .build()?)
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("{what}: {status} {body}")]
    Status { what: String, status: StatusCode, body: String },
}

pub use contract::OrderStatus;

#[derive(Debug, Clone, Deserialize)]
pub struct OrderView {
    pub status: OrderStatus,
    pub reason: Option<String>,
    pub total_cents: i64,
    #[serde(default)]
    pub history: Vec<StatusChange>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatusChange {
    pub status: OrderStatus,
    pub at: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CustomerView {
    pub credit_limit_cents: i64,
    pub credit_available_cents: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProductView {
    pub available: i64,
    pub reserved: Option<i64>,
    pub sold: Option<i64>,
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

#[derive(Deserialize)]
struct Accepted {
    order_id: Uuid,
}

/// What `POST /api/orders` answered.
#[derive(Debug, Clone)]
pub struct PlaceAnswer {
    pub status: StatusCode,
    /// Present on a 202.
    pub order_id: Option<Uuid>,
    pub consistency_token: Option<String>,
}

/// What `GET /api/orders/{id}` answered.
#[derive(Debug, Clone)]
pub struct OrderAnswer {
    pub status: StatusCode,
    /// Present on a 200 whose body parsed.
    pub order: Option<OrderView>,
    /// The server's `Retry-After` on 429/503, if any.
    pub retry_after: Option<Duration>,
}

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    gateway: Arc<str>,
    tokens: Arc<Tokens>,
}

impl Api {
    pub fn new(http: reqwest::Client, gateway: &str, tokens: Arc<Tokens>) -> Self {
        Api { http, gateway: gateway.trim_end_matches('/').into(), tokens }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    fn get(&self, user: User, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).header(AUTHORIZATION, self.tokens.bearer(user))
    }

    fn post(&self, user: User, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).header(AUTHORIZATION, self.tokens.bearer(user))
    }

    /// `POST /api/customers` as `user`: the new id and the answer's consistency token.
    pub async fn create_customer(
        &self,
        user: User,
        name: &str,
        email: &str,
    ) -> Result<(Uuid, Option<String>), ApiError> {
        let r = self.post(user, "/api/customers").json(&json!({ "name": name, "email": email })).send().await?;
        let token = header_string(r.headers(), &CONSISTENCY_TOKEN);
        let created: Created = expect(r, StatusCode::CREATED, "POST /api/customers").await?.json().await?;
        Ok((created.id, token))
    }

    /// `GET /api/customers/{id}`; None while the read model does not have it.
    pub async fn customer(&self, user: User, id: Uuid, token: Option<&str>) -> Result<Option<CustomerView>, ApiError> {
        let mut req = self.get(user, &format!("/api/customers/{id}"));
        if let Some(t) = token {
            req = req.header(CONSISTENCY_TOKEN, t);
        }
        let r = req.send().await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(expect(r, StatusCode::OK, "GET /api/customers/{id}").await?.json().await?))
    }

    /// `POST /api/products` as admin.
    pub async fn create_product(&self, sku: &str, name: &str, price_cents: i64, stock: i64) -> Result<Uuid, ApiError> {
        let body = json!({ "sku": sku, "name": name, "price_cents": price_cents, "currency": "EUR", "stock": stock });
        let r = self.post(User::Admin, "/api/products").json(&body).send().await?;
        let created: Created = expect(r, StatusCode::CREATED, "POST /api/products").await?.json().await?;
        Ok(created.id)
    }

    /// `GET /api/products/{id}` as admin (who also sees reserved and sold); None while the
    /// read model does not have it.
    pub async fn product(&self, id: Uuid) -> Result<Option<ProductView>, ApiError> {
        let r = self.get(User::Admin, &format!("/api/products/{id}")).send().await?;
        if r.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(expect(r, StatusCode::OK, "GET /api/products/{id}").await?.json().await?))
    }

    /// `POST /api/orders` with a fresh idempotency key. Any status is an answer; only a
    /// transport failure is an error.
    pub async fn place_order(&self, user: User, body: &serde_json::Value) -> Result<PlaceAnswer, reqwest::Error> {
        let r = self
            .post(user, "/api/orders")
            .header(IDEMPOTENCY_KEY, Uuid::new_v4().to_string())
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let consistency_token = header_string(r.headers(), &CONSISTENCY_TOKEN);
        let order_id = if status == StatusCode::ACCEPTED {
            r.json::<Accepted>().await.ok().map(|a| a.order_id)
        } else {
            // Read the body to the end so the connection goes back to the pool.
            let _ = r.bytes().await;
            None
        };
        Ok(PlaceAnswer { status, order_id, consistency_token })
    }

    /// `GET /api/orders/{id}`, waiting for `token` (the read model's copy of the placement)
    /// when one is given, and with `wait_s` > 0 a long-poll: up to that many seconds for the
    /// order to settle.
    pub async fn order(
        &self,
        user: User,
        id: Uuid,
        token: Option<&str>,
        wait_s: u64,
    ) -> Result<OrderAnswer, reqwest::Error> {
        let path = if wait_s > 0 { format!("/api/orders/{id}?wait={wait_s}") } else { format!("/api/orders/{id}") };
        let mut req = self.get(user, &path);
        if let Some(t) = token {
            req = req.header(CONSISTENCY_TOKEN, t);
        }
        let r = req.send().await?;
        let status = r.status();
        let retry_after = header_string(r.headers(), &RETRY_AFTER)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let order = if status == StatusCode::OK {
            r.json::<OrderView>().await.ok()
        } else {
            let _ = r.bytes().await;
            None
        };
        Ok(OrderAnswer { status, order, retry_after })
    }

    /// `POST /api/orders/{id}/cancel` (no body: the cancel needs nothing but the id).
    pub async fn cancel(&self, user: User, id: Uuid) -> Result<StatusCode, reqwest::Error> {
        let r = self.post(user, &format!("/api/orders/{id}/cancel")).send().await?;
        let status = r.status();
        let _ = r.bytes().await;
        Ok(status)
    }
}

fn header_string(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn expect(r: reqwest::Response, want: StatusCode, what: &str) -> Result<reqwest::Response, ApiError> {
    if r.status() == want {
        return Ok(r);
    }
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    Err(ApiError::Status { what: what.to_owned(), status, body })
}
