//! What every binary of the shop runs on, the gateway included: configuration, logs and traces,
//! HTTP serving and errors, metrics, the caller's identity, outgoing HTTP calls, service
//! discovery and central configuration in etcd, and the read-your-writes token.
//!
//! Must not depend on Kafka (rdkafka), PostgreSQL (sqlx), MongoDB, cqrs-es or the wire schemas:
//! the gateway links this crate and none of them (`gateway/tests/dependencies.rs` checks). What
//! needs them lives in `messaging`, `eventstore` and `readstore`, which build on this crate.
//!
//! - [`config`]: settings from the environment, defaults for the local stack, `dev`/`prod` profile.
//! - [`telemetry`]: logs (text or JSON with trace ids), spans exported to Zipkin, W3C propagation.
//! - [`error`]: the JSON error answer.
//! - [`http`]: a strict JSON extractor, health, serving with graceful shutdown.
//! - [`metrics`]: Prometheus recorder, `GET /metrics`, HTTP/consumer/outbox metrics.
//! - [`client`]: outgoing HTTP with timeouts, retries across instances and a circuit breaker.
//! - [`discovery`]: service registry in etcd: leased registrations, a watching [`discovery::Resolver`].
//! - [`live_config`]: central configuration (files < etcd < environment), safe keys applied live.
//! - [`cluster`]: joins a service to both at start.
//! - [`consistency`]: read-your-writes tokens and their headers (the waiting reads are
//!   `readstore`'s).
//! - [`identity`]: the caller, proven by a token the gateway (or a calling service) signs.

pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod consistency;
pub mod discovery;
pub mod error;
pub mod http;
pub mod identity;
pub mod live_config;
pub mod memory;
pub mod metrics;
pub mod telemetry;

pub use config::Settings;

/// What every service process does first: logging and tracing as `service`
/// ([`telemetry::init`]), and giving memory back after bursts ([`memory::release_when_quiet`]).
/// Tools that are not long-running services call [`telemetry::init`] alone.
pub fn start_service(service: &str) {
    telemetry::init(service);
    memory::release_when_quiet();
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
