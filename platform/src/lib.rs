//! Plumbing every binary shares, written once.
//!
//! - [`config`]: settings from the environment, defaults for the local stack, `dev`/`prod` profile.
//! - [`telemetry`]: logs (text or JSON with trace ids), spans exported to Zipkin, W3C propagation.
//! - [`db`]: PostgreSQL pool for the service's own database (created if missing) and migrations.
//! - [`es`]: cqrs-es + postgres-es adapter for [`domain::Aggregate`]s: execute commands, load state.
//! - [`pg_store`]: the event store's queries: one per load, one statement per write.
//! - [`outbox`]: events reach Kafka only through the outbox, filled in the events' transaction.
//! - [`kafka`]: idempotent producer, topic creation.
//! - [`consumer`]: the one consumer loop (decode, handle, retry, DLQ, commit after the effect).
//! - [`http`]: JSON errors, a strict JSON extractor, health, serving with graceful shutdown.
//! - [`metrics`]: Prometheus recorder, `GET /metrics`, HTTP/consumer/outbox metrics.
//! - [`client`]: outgoing HTTP with timeouts, retries across instances and a circuit breaker.
//! - [`discovery`]: service registry in etcd: leased registrations, a watching [`discovery::Resolver`].
//! - [`live_config`]: central configuration (files < etcd < environment), safe keys applied live.
//! - [`cluster`]: joins a service to both at start.
//! - [`readmodel`]: MongoDB read models and their active-collection pointers.
//! - [`consistency`]: read-your-writes tokens; queries that wait for them.
//! - [`identity`]: the caller, as the gateway passes it on in trusted headers.

pub mod client;
pub mod cluster;
pub mod config;
pub mod consistency;
pub mod consumer;
pub mod db;
pub mod discovery;
pub mod es;
pub mod http;
pub mod identity;
pub mod kafka;
pub mod live_config;
pub mod metrics;
pub mod outbox;
pub mod pg_store;
pub mod readmodel;
pub mod service;
pub mod telemetry;

pub use config::Settings;

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
