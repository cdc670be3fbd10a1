//! Outgoing HTTP between services: instances found through discovery (round-robin, the
//! configured URL when none is registered), a timeout on every call (live from the central
//! configuration), retries with jittered backoff for idempotent GETs (a connection error moves
//! on to the next instance at once), a circuit breaker per downstream, and errors that say
//! which downstream failed.

use crate::discovery::Resolver;
use crate::identity::{Caller, CallerKey};
use crate::live_config::Tunables;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{service} is unavailable: {reason}")]
    Unavailable { service: &'static str, reason: String },
    #[error("{service} answered {status}")]
    Status { service: &'static str, status: StatusCode },
    /// Recent calls failed: the breaker answers for the downstream until its cool-down ends.
    #[error("{service} is unavailable: circuit breaker open after repeated failures")]
    CircuitOpen { service: &'static str },
}

#[derive(Clone)]
pub struct Downstream {
    pub service: &'static str,
    /// The configured URL, used when discovery knows no instance.
    pub base_url: String,
    http: reqwest::Client,
    attempts: u32,
    resolver: Resolver,
    timeout: Option<watch::Receiver<Tunables>>,
    breaker: Arc<CircuitBreaker>,
    /// Signs each call's caller token: the key and this service's name.
    signer: Option<(CallerKey, &'static str)>,
}

impl Downstream {
    pub fn new(service: &'static str, base_url: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            service,
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
            attempts: 3,
            resolver: Resolver::disabled(),
            timeout: None,
            breaker: Arc::new(CircuitBreaker::new(service, BreakerConfig::default())),
            signer: None,
        }
    }

    /// Call as the service `me`, with caller tokens signed with `key`: services answer nothing
    /// else (see `identity`).
    pub fn calling_as(mut self, me: &'static str, key: CallerKey) -> Self {
        self.signer = Some((key, me));
        self
    }

    /// Find instances through `resolver` (by this downstream's service name).
    pub fn with_resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Take each call's timeout from the live `http.timeout_ms`.
    pub fn with_live_timeout(mut self, tunables: watch::Receiver<Tunables>) -> Self {
        self.timeout = Some(tunables);
        self
    }

    pub fn with_breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = Arc::new(CircuitBreaker::new(self.service, config));
        self
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// GET a JSON resource; `Ok(None)` on 404. Connection errors, timeouts and 5xx are retried
    /// (on the next instance first); enough consecutive failed calls open the breaker. The call
    /// is a client span whose `traceparent` goes with the request.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, CallError> {
        use tracing::Instrument;
        let span = tracing::info_span!(
            "http call",
            otel.name = %format_args!("GET {}", self.service),
            otel.kind = "client",
            peer.service = self.service,
            url.path = path,
        );
        self.get_json_guarded(path).instrument(span).await
    }

    async fn get_json_guarded<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, CallError> {
        let Some(permit) = self.breaker.try_acquire(Instant::now()) else {
            return Err(CallError::CircuitOpen { service: self.service });
        };
        let result = self.get_json_with_retries(path).await;
        match &result {
            Err(CallError::Unavailable { .. }) => permit.failure(Instant::now()),
            _ => permit.success(),
        }
        result
    }

    async fn get_json_with_retries<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, CallError> {
        let instances = self.resolver.candidates(self.service, &self.base_url);
        let tries = (self.attempts as usize).max(instances.len());
        let timeout = self.timeout.as_ref().map(|t| t.borrow().http_timeout);
        let mut headers = reqwest::header::HeaderMap::new();
        crate::telemetry::inject_headers(&mut headers);
        if let Some((key, me)) = &self.signer {
            headers.insert(reqwest::header::AUTHORIZATION, key.authorization(&Caller::Internal, me));
        }
        let mut last = String::new();
        for (attempt, base) in instances.iter().cycle().take(tries).enumerate() {
            // Each instance is tried once at once; past that, back off before trying again.
            if attempt >= instances.len() {
                let round = (attempt - instances.len() + 1).min(6) as u32;
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 50;
                tokio::time::sleep(Duration::from_millis(100 * (1 << round) + jitter)).await;
            }
            let mut request = self.http.get(format!("{base}{path}")).headers(headers.clone());
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            match request.send().await {
                Ok(r) if r.status() == StatusCode::NOT_FOUND => return Ok(None),
                Ok(r) if r.status().is_success() => {
                    return r.json::<T>().await.map(Some).map_err(|e| CallError::Unavailable {
                        service: self.service,
                        reason: format!("bad answer: {e}"),
                    });
                }
                Ok(r) if r.status().is_server_error() => last = format!("{base}: status {}", r.status()),
                Ok(r) => return Err(CallError::Status { service: self.service, status: r.status() }),
                Err(e) => {
                    tracing::debug!(downstream = self.service, instance = %base, error = %e, "call failed; trying again");
                    last = format!("{base}: {e}");
                }
            }
        }
        Err(CallError::Unavailable { service: self.service, reason: last })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed calls that open the breaker.
    pub failures: u32,
    /// Time the breaker stays open before it lets one probe call through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failures: 5, cool_down: Duration::from_secs(5) }
    }
}

/// The breaker's state; the numbers are the `shop_circuit_breaker_state` gauge's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// Circuit breaker: closed → open after `failures` consecutive failed calls → half-open after
/// `cool_down` (one probe call goes through, the others are refused) → closed when the probe
/// succeeds, open again when it fails.
#[derive(Debug)]
pub struct CircuitBreaker {
    downstream: &'static str,
    config: BreakerConfig,
    inner: Mutex<BreakerInner>,
}

#[derive(Debug)]
struct BreakerInner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

impl CircuitBreaker {
    pub fn new(downstream: &'static str, config: BreakerConfig) -> Self {
        let breaker = Self {
            downstream,
            config,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                probe_in_flight: false,
            }),
        };
        crate::metrics::circuit_breaker_state(downstream, BreakerState::Closed as u8);
        breaker
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, inner: &mut BreakerInner, state: BreakerState) {
        if inner.state != state {
            match state {
                BreakerState::Open => tracing::warn!(downstream = self.downstream, "circuit breaker open"),
                BreakerState::HalfOpen => tracing::info!(downstream = self.downstream, "circuit breaker half-open"),
                BreakerState::Closed => tracing::info!(downstream = self.downstream, "circuit breaker closed"),
            }
            inner.state = state;
            crate::metrics::circuit_breaker_state(self.downstream, state as u8);
        }
    }

    /// May a call go out now? The permit must be told how the call went; dropping it untold
    /// (the caller gave up) counts as neither.
    pub fn try_acquire(&self, now: Instant) -> Option<Permit<'_>> {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => {}
            BreakerState::Open => {
                let opened = inner.opened_at.unwrap_or(now);
                if now.saturating_duration_since(opened) < self.config.cool_down {
                    return None;
                }
                self.set(&mut inner, BreakerState::HalfOpen);
                inner.probe_in_flight = true;
                return Some(Permit { breaker: self, probe: true, told: false });
            }
            BreakerState::HalfOpen => {
                if inner.probe_in_flight {
                    return None;
                }
                inner.probe_in_flight = true;
                return Some(Permit { breaker: self, probe: true, told: false });
            }
        }
        Some(Permit { breaker: self, probe: false, told: false })
    }

    fn succeeded(&self, probe: bool) {
        let mut inner = self.lock();
        inner.consecutive_failures = 0;
        if probe {
            inner.probe_in_flight = false;
        }
        // A late success of a call sent while closed does not close an open breaker early.
        if probe || inner.state == BreakerState::Closed {
            inner.opened_at = None;
            self.set(&mut inner, BreakerState::Closed);
        }
    }

    fn failed(&self, probe: bool, now: Instant) {
        let mut inner = self.lock();
        if probe {
            inner.probe_in_flight = false;
        }
        match inner.state {
            BreakerState::Closed => {
                inner.consecutive_failures += 1;
                if inner.consecutive_failures >= self.config.failures.max(1) {
                    inner.opened_at = Some(now);
                    self.set(&mut inner, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen if probe => {
                inner.opened_at = Some(now);
                self.set(&mut inner, BreakerState::Open);
            }
            _ => {}
        }
    }
}

/// Leave to make one call; report its outcome with [`Permit::success`] or [`Permit::failure`].
#[must_use]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    told: bool,
}

impl Permit<'_> {
    pub fn success(mut self) {
        self.told = true;
        self.breaker.succeeded(self.probe);
    }

    pub fn failure(mut self, now: Instant) {
        self.told = true;
        self.breaker.failed(self.probe, now);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.told && self.probe {
            // The probe was abandoned: let the next call probe instead.
            self.breaker.lock().probe_in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new("test", BreakerConfig { failures: 3, cool_down: Duration::from_secs(10) })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        let t = Instant::now();
        b.try_acquire(t).unwrap().failure(t);
        b.try_acquire(t).unwrap().failure(t);
        b.try_acquire(t).unwrap().success(); // resets the count
        b.try_acquire(t).unwrap().failure(t);
        b.try_acquire(t).unwrap().failure(t);
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire(t).unwrap().failure(t);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire(t + Duration::from_secs(9)).is_none(), "open refuses calls during the cool-down");
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_its_success() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.try_acquire(t).unwrap().failure(t);
        }
        let later = t + Duration::from_secs(10);
        let probe = b.try_acquire(later).expect("probe after the cool-down");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire(later).is_none(), "only one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire(later).unwrap().success();
    }

    #[test]
    fn a_failed_probe_opens_again_for_a_whole_cool_down() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.try_acquire(t).unwrap().failure(t);
        }
        let t1 = t + Duration::from_secs(11);
        b.try_acquire(t1).unwrap().failure(t1);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire(t1 + Duration::from_secs(9)).is_none());
        assert!(b.try_acquire(t1 + Duration::from_secs(10)).is_some());
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot() {
        let b = breaker();
        let t = Instant::now();
        for _ in 0..3 {
            b.try_acquire(t).unwrap().failure(t);
        }
        let later = t + Duration::from_secs(10);
        drop(b.try_acquire(later).unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire(later).is_some());
    }

    #[test]
    fn state_is_exported_as_a_gauge() {
        let b = CircuitBreaker::new("gauge-test", BreakerConfig { failures: 1, cool_down: Duration::from_secs(60) });
        let t = Instant::now();
        b.try_acquire(t).unwrap().failure(t);
        let text = crate::metrics::handle().render();
        assert!(text.contains(r#"shop_circuit_breaker_state{downstream="gauge-test"} 1"#), "{text}");
    }

    #[tokio::test]
    async fn a_closed_port_fails_fast_then_the_breaker_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener); // nothing listens there any more
        let d = Downstream::new("closed-port", &url, Duration::from_secs(1))
            .with_breaker(BreakerConfig { failures: 2, cool_down: Duration::from_secs(60) });
        for _ in 0..2 {
            let e = d.get_json::<serde_json::Value>("/x").await.unwrap_err();
            assert!(matches!(e, CallError::Unavailable { .. }), "{e}");
        }
        let e = d.get_json::<serde_json::Value>("/x").await.unwrap_err();
        assert!(matches!(e, CallError::CircuitOpen { service: "closed-port" }), "{e}");
    }
}
