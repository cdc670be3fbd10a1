//! Requests per client, as a token bucket (GCRA, `governor`): a client may send `burst`
//! requests at once and `per_second` on average; past that it gets 429 with `Retry-After` and
//! the usual JSON error. Signed-in users are counted by token subject (authentication runs in
//! front of this layer), anonymous clients by peer IP ([`ClientKey`]).
//!
//! The limit is a live value ([`LiveRateLimit`]): when the central configuration changes
//! `rate_limit.per_second` or `rate_limit.burst`, the next request sees new buckets (every
//! client starts with a full burst again).

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};
use runtime::http::ApiError;
use runtime::live_config::Tunables;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tower_governor::GovernorError;
use tower_governor::key_extractor::KeyExtractor;

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

    /// The limit in the central configuration's settings.
    pub fn of(tunables: &Tunables) -> Self {
        Self { per_second: tunables.rate_limit_per_second, burst: tunables.rate_limit_burst }
    }

    /// `router` behind this fixed limit; one set of buckets is shared by all its routes.
    pub fn apply<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        LiveRateLimit::fixed(self).apply(router)
    }
}

type KeyedLimiter = RateLimiter<ClientKey, governor::state::keyed::DefaultKeyedStateStore<ClientKey>, DefaultClock>;

/// A rate limit that follows a live value: the buckets are rebuilt when it changes.
#[derive(Clone)]
pub struct LiveRateLimit {
    wanted: watch::Receiver<RateLimit>,
    current: Arc<RwLock<(RateLimit, Arc<KeyedLimiter>)>>,
    clock: DefaultClock,
}

impl LiveRateLimit {
    pub fn fixed(limit: RateLimit) -> Self {
        Self::following(watch::channel(limit).1)
    }

    pub fn following(wanted: watch::Receiver<RateLimit>) -> Self {
        let clock = DefaultClock::default();
        let limit = *wanted.borrow();
        let limiter = Arc::new(build(limit, &clock));
        Self { wanted, current: Arc::new(RwLock::new((limit, limiter))), clock }
    }

    /// The live limit from the central configuration's `rate_limit.*`.
    pub fn from_config(tunables: watch::Receiver<Tunables>) -> Self {
        let (tx, rx) = watch::channel(RateLimit::of(&tunables.borrow()));
        let mut tunables = tunables;
        tokio::spawn(async move {
            while tunables.changed().await.is_ok() {
                let limit = RateLimit::of(&tunables.borrow_and_update());
                tx.send_if_modified(|current| std::mem::replace(current, limit) != limit);
            }
        });
        Self::following(rx)
    }

    /// The limit in force now.
    pub fn limit(&self) -> RateLimit {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0
    }

    fn limiter(&self) -> Arc<KeyedLimiter> {
        let wanted = *self.wanted.borrow();
        {
            let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.0 == wanted {
                return current.1.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != wanted {
            tracing::info!(per_second = wanted.per_second, burst = wanted.burst, "rate limit changed");
            *current = (wanted, Arc::new(build(wanted, &self.clock)));
        }
        current.1.clone()
    }

    /// `router` behind the limit; one set of buckets is shared by all its routes.
    pub fn apply<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        let current = Arc::downgrade(&self.current);
        // Drop the buckets of clients back to a full burst, until the limiter is gone.
        let spawned = std::thread::Builder::new().name("rate-limit-gc".into()).spawn(move || {
            loop {
                std::thread::sleep(FORGET_QUIET_CLIENTS_EVERY);
                let Some(current) = current.upgrade() else { return };
                let limiter = current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone();
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "rate limit cleanup thread not started");
        }
        router.layer(axum::middleware::from_fn_with_state(self, limit))
    }
}

fn build(limit: RateLimit, clock: &DefaultClock) -> KeyedLimiter {
    let period = Duration::from_secs(1) / limit.per_second.max(1);
    let burst = NonZeroU32::new(limit.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
    RateLimiter::dashmap_with_clock(quota, clock.clone())
}

async fn limit(State(limits): State<LiveRateLimit>, request: Request, next: Next) -> Response {
    let key = match ClientKeyExtractor.extract(&request) {
        Ok(key) => key,
        Err(e) => return ApiError::internal(format!("rate limiter: {e}")).into_response(),
    };
    match limits.limiter().check_key(&key) {
        Ok(()) => next.run(request).await,
        Err(not_until) => too_many_requests(not_until.wait_time_from(limits.clock.now()).as_secs()),
    }
}

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The peer address. The gateway is the edge, so `Forwarded`/`X-Forwarded-For` are not
    /// trusted: any client could set them.
    Ip(IpAddr),
    /// A signed-in user, by the token's subject: one bucket per user, from any address.
    User(String),
    /// No peer address (a router driven without a socket): one shared bucket.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub struct ClientKeyExtractor;

impl KeyExtractor for ClientKeyExtractor {
    type Key = ClientKey;

    /// Users by subject (the auth layer runs first and leaves the caller in the request);
    /// anonymous requests by peer address.
    fn extract<T>(&self, request: &Request<T>) -> Result<ClientKey, GovernorError> {
        if let Some(runtime::identity::Caller::User { id, .. }) = request.extensions().get() {
            return Ok(ClientKey::User(id.clone()));
        }
        Ok(request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(ClientKey::Unknown, |ConnectInfo(peer)| ClientKey::Ip(peer.ip())))
    }
}

fn too_many_requests(wait_seconds: u64) -> Response {
    // The wait is rounded down; a client must not come back too early.
    let retry_after = wait_seconds + 1;
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests")
        .with_detail(json!({ "retry_after_seconds": retry_after }))
        .with_retry_after(retry_after)
        .into_response()
}
