//! Requests per client, as a token bucket (GCRA, `tower_governor`): a client may send `burst`
//! requests at once and `per_second` on average; past that it gets 429 with `Retry-After` and
//! the usual JSON error. Clients are counted by peer IP today; once JWT authentication runs in
//! front of this layer, [`ClientKey`] gains the token's subject and counts users instead.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header::RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use platform::http::ApiError;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

pub const PER_SECOND_VAR: &str = "SHOP_RATE_LIMIT_PER_SECOND";
pub const BURST_VAR: &str = "SHOP_RATE_LIMIT_BURST";

/// How often buckets of clients gone quiet are dropped, so the table does not grow forever.
const FORGET_QUIET_CLIENTS_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second per client.
    pub per_second: u32,
    /// Requests a client may send at once.
    pub burst: u32,
}

/// Generous: the test suites send hundreds of requests quickly from one address.
impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 500, burst: 1000 }
    }
}

impl RateLimit {
    /// [`PER_SECOND_VAR`] and [`BURST_VAR`], each defaulting to [`RateLimit::default`].
    pub fn from_env() -> anyhow::Result<Self> {
        let default = Self::default();
        let var = |name: &str, default: u32| -> anyhow::Result<u32> {
            match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(raw) => match raw.trim().parse::<u32>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => anyhow::bail!("{name} must be a whole number above 0, not {raw:?}"),
                },
            }
        };
        Ok(Self { per_second: var(PER_SECOND_VAR, default.per_second)?, burst: var(BURST_VAR, default.burst)? })
    }

    /// `router` behind the limit; one set of buckets is shared by all its routes.
    pub fn apply<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        let config = GovernorConfigBuilder::default()
            .period(Duration::from_secs(1) / self.per_second.max(1))
            .burst_size(self.burst.max(1))
            .key_extractor(ClientKeyExtractor)
            .finish()
            .expect("period and burst are above zero");
        let limiter = Arc::downgrade(config.limiter());
        // Drop the buckets of clients back to a full burst, until the limiter is gone.
        let spawned = std::thread::Builder::new().name("rate-limit-gc".into()).spawn(move || {
            loop {
                std::thread::sleep(FORGET_QUIET_CLIENTS_EVERY);
                let Some(limiter) = limiter.upgrade() else { return };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "rate limit cleanup thread not started");
        }
        router.layer(GovernorLayer::new(config).error_handler(too_many_requests))
    }
}

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The peer address. The gateway is the edge, so `Forwarded`/`X-Forwarded-For` are not
    /// trusted: any client could set them.
    Ip(IpAddr),
    /// No peer address (a router driven without a socket): one shared bucket.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub struct ClientKeyExtractor;

impl KeyExtractor for ClientKeyExtractor {
    type Key = ClientKey;

    fn extract<T>(&self, request: &Request<T>) -> Result<ClientKey, GovernorError> {
        Ok(request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(ClientKey::Unknown, |ConnectInfo(peer)| ClientKey::Ip(peer.ip())))
    }
}

fn too_many_requests(e: GovernorError) -> Response {
    match e {
        GovernorError::TooManyRequests { wait_time, .. } => {
            // `wait_time` is rounded down; a client must not come back too early.
            let retry_after = wait_time + 1;
            let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests")
                .with_detail(json!({ "retry_after_seconds": retry_after }))
                .into_response();
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after));
            response
        }
        other => ApiError::internal(format!("rate limiter: {other}")).into_response(),
    }
}
