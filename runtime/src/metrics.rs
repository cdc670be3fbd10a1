//! Prometheus metrics, the same in every binary: one process-wide recorder behind the `metrics`
//! facade (any module records with `metrics::counter!` and friends, no registry to pass
//! around), `GET /metrics` in the Prometheus text format, and the HTTP layer that times every
//! request by route template and status. `http::serve` adds the last two, so every service and
//! the gateway get them.

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Router, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Requests answered, by `method`, `route` (the template, e.g. `/orders/{id}`) and `status`.
pub const HTTP_REQUESTS: &str = "http_requests_total";
/// Time to the response head, same labels as [`HTTP_REQUESTS`].
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
/// Consumed messages by `group`, `topic` and `outcome` ([`Outcome`]).
pub const CONSUMER_MESSAGES: &str = "consumer_messages_total";
/// Batches the consumer loop took, by `group`: with [`CONSUMER_MESSAGES`], how many messages a
/// batch holds on average.
pub const CONSUMER_BATCHES: &str = "consumer_batches_total";
/// Requests a consumer's Kafka client sent, by `group`, `client` (librdkafka's name of the
/// client: a group may have several in one process) and `request` (librdkafka's request type:
/// `Fetch`, `OffsetCommit`, `Heartbeat`, …), as of its last statistics (every few seconds). With
/// [`CONSUMER_MESSAGES`]: how many messages a fetch brings.
pub const CONSUMER_KAFKA_REQUESTS: &str = "consumer_kafka_requests_total";
/// Messages between a partition's end and the group's position, by `group`, `topic`, `partition`.
/// As librdkafka computes it: on a partition written in Kafka transactions (by a relay of an
/// older version), an idle partition reads 1 (the last transaction's commit marker takes an offset).
pub const CONSUMER_LAG: &str = "consumer_lag_messages";
/// Rows waiting in the service's outbox for Kafka.
pub const OUTBOX_BACKLOG: &str = "outbox_backlog_rows";
/// Rows the relay gave up on (`outbox_dead`): each one holds back its aggregate's later events.
pub const OUTBOX_DEAD: &str = "outbox_dead_rows";
/// Each downstream's circuit breaker, by `downstream`: 0 closed, 1 open, 2 half-open.
pub const CIRCUIT_BREAKER_STATE: &str = "shop_circuit_breaker_state";

/// What became of one consumed message (or one failed attempt, for `Retried`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Handled,
    Retried,
    Parked,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Retried => "retried",
            Outcome::Parked => "parked",
        }
    }
}

/// Request latency buckets, in seconds: from a cache hit to a request that times out.
const LATENCY_BUCKETS: [f64; 12] = [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Route label of requests no route matched: the raw path would make a series per URL.
const UNMATCHED: &str = "unmatched";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), &LATENCY_BUCKETS)
            .expect("latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will miss its series");
        }
        let upkeep = handle.clone();
        // A plain thread: the recorder may be installed before (or without) a tokio runtime.
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "metrics upkeep thread not started");
        }
        handle
    })
}

/// `GET /metrics`.
pub fn router() -> Router {
    Router::new().route("/metrics", get(render))
}

async fn render() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle().render()).into_response()
}

/// Middleware (`axum::middleware::from_fn(track)`) counting and timing every request. Added with
/// `Router::layer`, it runs after routing, so the route template is known.
pub async fn track(request: Request, next: Next) -> Response {
    handle();
    let start = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();
    let method = method_label(request.method());
    let response = next.run(request).await;
    let labels = [("method", method.to_owned()), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(start.elapsed().as_secs_f64());
    response
}

/// Standard methods by name; anything a client invents shares one label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Count one consumed message's outcome.
pub fn consumed(group: &str, topic: &str, outcome: Outcome) {
    let labels = [("group", group.to_owned()), ("topic", topic.to_owned()), ("outcome", outcome.as_str().to_owned())];
    metrics::counter!(CONSUMER_MESSAGES, &labels).increment(1);
}

/// Count one batch taken by a consumer loop.
pub fn consumer_batch(group: &str) {
    metrics::counter!(CONSUMER_BATCHES, "group" => group.to_owned()).increment(1);
}

/// Record how many requests of one type a consumer's client has sent since it started.
pub fn consumer_kafka_requests(group: &str, client: &str, request: &str, sent: u64) {
    let labels = [("group", group.to_owned()), ("client", client.to_owned()), ("request", request.to_owned())];
    metrics::counter!(CONSUMER_KAFKA_REQUESTS, &labels).absolute(sent);
}

/// Record how far a partition's end is ahead of the group's position.
pub fn consumer_lag(group: &str, topic: &str, partition: i32, lag: i64) {
    let labels = [("group", group.to_owned()), ("topic", topic.to_owned()), ("partition", partition.to_string())];
    metrics::gauge!(CONSUMER_LAG, &labels).set(lag.max(0) as f64);
}

/// Record a circuit breaker's state (0 closed, 1 open, 2 half-open).
pub fn circuit_breaker_state(downstream: &str, state: u8) {
    handle();
    metrics::gauge!(CIRCUIT_BREAKER_STATE, "downstream" => downstream.to_owned()).set(f64::from(state));
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
        let response = app.clone().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template() {
        let app = Router::new()
            .route("/things/{id}", axum::routing::get(|| async { "a thing" }))
            .merge(router())
            .layer(axum::middleware::from_fn(track));
        assert_eq!(get(&app, "/things/1").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/things/2").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/nowhere/3").await.0, StatusCode::NOT_FOUND);
        let (status, text) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).map(str::to_owned);
        let ok = line(r#"http_requests_total{method="GET",route="/things/{id}",status="200"}"#);
        assert_eq!(ok.as_deref().and_then(|l| l.rsplit(' ').next()), Some("2"), "{text}");
        assert!(line(r#"http_requests_total{method="GET",route="unmatched",status="404"}"#).is_some(), "{text}");
        assert!(
            line(r#"http_request_duration_seconds_bucket{method="GET",route="/things/{id}",status="200",le="0.5"}"#)
                .is_some(),
            "{text}"
        );
        assert!(!text.contains("/things/1"), "raw paths must not become labels: {text}");
    }
}
