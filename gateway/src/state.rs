//! What every handler shares: one pooled HTTP client, where the services are, and the limits
//! (live values from the central configuration when the gateway runs in the stack).

use crate::auth::{AuthConfig, Verifier};
use crate::downstream::Downstreams;
use crate::rate_limit::{LiveRateLimit, RateLimit};
use anyhow::Context;
use runtime::Settings;
use runtime::identity::CallerKey;
use runtime::live_config::Tunables;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Whole forwarded call, connect to last byte.
    pub request: Duration,
    pub connect: Duration,
    /// One downstream `/health` probe; kept short so `/health` itself answers fast.
    pub health: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { request: Duration::from_secs(10), connect: Duration::from_secs(2), health: Duration::from_secs(1) }
    }
}

#[derive(Clone)]
pub struct AppState {
    /// Pooled, shared by all services; clones share the pool.
    pub(crate) http: reqwest::Client,
    pub(crate) downstreams: Arc<Downstreams>,
    pub(crate) timeouts: Timeouts,
    pub(crate) rate_limit: LiveRateLimit,
    /// The central configuration's live settings (`http.timeout_ms` replaces `timeouts.request`).
    pub(crate) tunables: Option<watch::Receiver<Tunables>>,
    pub(crate) verifier: Verifier,
    /// Signs the caller token each forwarded call carries: services believe nothing else.
    pub(crate) caller_key: CallerKey,
}

/// Idle connections kept open to each service instance (100 orders/s with their long-polls
/// keep about 25 in use).
const IDLE_CONNECTIONS_PER_SERVICE: usize = 64;

impl AppState {
    pub fn new(downstreams: Downstreams, timeouts: Timeouts, caller_key: CallerKey) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeouts.request)
            .connect_timeout(timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(60))
            // A burst (a flood of long-polls) opens as many connections as calls in flight: once
            // it is over, keep a steady load's worth per service and close the rest, rather than
            // hold hundreds of idle connections and their buffers here and in the service.
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_SERVICE)
            // The environment may set HTTP proxies; services are always reached directly.
            .no_proxy()
            .build()
            .context("building the downstream HTTP client")?;
        let verifier = Verifier::new(AuthConfig::default(), http.clone());
        Ok(Self {
            http,
            downstreams: Arc::new(downstreams),
            timeouts,
            rate_limit: LiveRateLimit::fixed(RateLimit::default()),
            tunables: None,
            verifier,
            caller_key,
        })
    }

    /// Check tokens against another realm (tests, other deployments).
    pub fn with_auth(mut self, config: AuthConfig) -> Self {
        self.verifier = Verifier::new(config, self.http.clone());
        self
    }

    pub fn with_rate_limit(mut self, rate_limit: RateLimit) -> Self {
        self.rate_limit = LiveRateLimit::fixed(rate_limit);
        self
    }

    /// Follow the central configuration: rate limit, request timeout, feature flags.
    pub fn with_live_config(mut self, tunables: watch::Receiver<Tunables>) -> Self {
        self.rate_limit = LiveRateLimit::from_config(tunables.clone());
        self.tunables = Some(tunables);
        self
    }

    /// Fixed settings from the environment (no central configuration).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self::new(Downstreams::from_settings(settings), Timeouts::default(), CallerKey::from_settings(settings)?)?
            .with_rate_limit(RateLimit::from_env()?)
            .with_auth(AuthConfig::from_env()?))
    }

    /// The timeout of one forwarded call now.
    pub fn request_timeout(&self) -> Duration {
        self.tunables.as_ref().map_or(self.timeouts.request, |t| t.borrow().http_timeout)
    }

    /// A feature flag of the central configuration; without one, every feature is on.
    pub fn feature(&self, name: &str) -> bool {
        self.tunables.as_ref().is_none_or(|t| t.borrow().feature(name))
    }
}
