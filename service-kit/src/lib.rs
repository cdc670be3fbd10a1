//! Wiring shared by every service binary: database, registry codec, topics, producer, and
//! background tasks (outbox relay, consumers) stopped by one cancellation token.
//!
//! The one crate that composes the others: `runtime` (settings, etcd, HTTP serving), `messaging`
//! (Kafka, the outbox relay, consumers) and `eventstore` (the service's database); none of them
//! may depend on this one. Must not depend on `readstore`, `domain` or any service: it wires,
//! it decides nothing. The services and the saga orchestrator use it; the gateway, which has no
//! database and no Kafka, must not.

#[cfg(feature = "testing")]
pub mod testing;

use anyhow::Context;
use eventstore::db;
use messaging::consumer::{self, ConsumerConfig, Handler};
use messaging::kafka;
use messaging::outbox::{self, EventMapper, Relay};
use messaging::producer::Producer;
use runtime::Settings;
use runtime::cluster::{self, Cluster};
use runtime::identity::CallerKey;
use schemas::{Codec, Topic};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the outbox backlog gauge is refreshed.
const OUTBOX_SAMPLE_EVERY: Duration = Duration::from_secs(5);

pub struct Wiring {
    pub settings: Settings,
    pub codec: Arc<Codec>,
    pub producer: Producer,
    pub shutdown: CancellationToken,
    /// etcd: central configuration and the service registry.
    pub cluster: Cluster,
    /// Checks the caller token of every request, and signs this service's calls to others.
    pub caller_key: CallerKey,
    tasks: Vec<JoinHandle<()>>,
}

/// Retry `f` until it succeeds or `limit` passes: dependencies may still be starting.
pub async fn retry_until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let start = std::time::Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() < limit => {
                tracing::warn!(error = format!("{e:#}"), "{what} not ready; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.context(format!("{what} not ready after {limit:?}"))),
        }
    }
}

/// `kafka.partitions` of the configuration (files < etcd < environment), [`Topic::PARTITIONS`]
/// when no layer names it.
fn partitions(settings: &Settings) -> anyhow::Result<i32> {
    let n: i32 = settings.value("kafka.partitions", Topic::PARTITIONS)?;
    anyhow::ensure!(n >= 1, "kafka.partitions must be at least 1, not {n}");
    Ok(n)
}

impl Wiring {
    /// Register the schemas of the topics this service produces and make sure every topic it
    /// touches exists.
    pub async fn connect(mut settings: Settings, produces: &[Topic], consumes: &[Topic]) -> anyhow::Result<Self> {
        let caller_key = CallerKey::from_settings(&settings)?;
        let cluster = Cluster::join(&mut settings).await?;
        let codec = Arc::new(Codec::new(&settings.schema_registry_url)?);
        let wait = Duration::from_secs(120);
        let mut topics: Vec<Topic> = produces.iter().chain(consumes).copied().collect();
        topics.sort();
        topics.dedup();
        let partitions = partitions(&settings)?;
        retry_until("kafka", wait, || kafka::ensure_topics(&settings.kafka_brokers, &topics, partitions)).await?;
        let n = retry_until("schema registry", wait, || async {
            codec.register(produces).await.map_err(anyhow::Error::from)
        })
        .await?;
        tracing::info!(schemas = n, "schemas registered");
        let producer = kafka::producer(&settings.kafka_brokers)?;
        Ok(Self {
            settings,
            codec,
            producer,
            shutdown: CancellationToken::new(),
            cluster,
            caller_key,
            tasks: Vec::new(),
        })
    }

    /// The service's own database, migrated.
    pub async fn database(&self, event_store: bool) -> anyhow::Result<PgPool> {
        let pool =
            retry_until("postgres", Duration::from_secs(60), || db::connect(&self.settings.database_url, 16)).await?;
        if event_store {
            db::migrate_event_store(&pool).await?;
        } else {
            db::migrate_outbox(&pool).await?;
        }
        Ok(pool)
    }

    /// The outbox relay, and a task sampling the outbox backlog for `/metrics`.
    pub fn spawn_relay(&mut self, pool: PgPool, map_event: EventMapper) {
        let pool_for_metrics = pool.clone();
        let relay = Relay::new(pool, &self.settings.kafka_brokers, self.codec.clone(), map_event);
        let token = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move { relay.run(token.cancelled_owned()).await }));
        let token = self.shutdown.clone();
        self.tasks.push(tokio::spawn(outbox::sample_backlog(
            pool_for_metrics,
            OUTBOX_SAMPLE_EVERY,
            token.cancelled_owned(),
        )));
    }

    /// A command service's consumer. Its batches take what is waiting; with the service's
    /// `consumer.linger_ms` (default 0) a batch waits that long for more after its first
    /// message, trading that much latency per message for larger batches (whose commits the
    /// event store writes together). An unreadable value is an error.
    pub fn spawn_consumer(&mut self, group: &str, topics: &[Topic], handler: Arc<dyn Handler>) -> anyhow::Result<()> {
        let mut config = ConsumerConfig::new(&self.settings.kafka_brokers, group, topics);
        config.linger = std::time::Duration::from_millis(self.settings.value("consumer.linger_ms", 0)?);
        self.spawn_consumer_with(config, handler);
        Ok(())
    }

    /// Like [`Wiring::spawn_consumer`], with retry settings of the caller's choosing.
    /// Nothing with `SHOP_CONSUMERS=off`.
    pub fn spawn_consumer_with(&mut self, config: ConsumerConfig, handler: Arc<dyn Handler>) {
        if !self.settings.consumers {
            tracing::info!("Kafka consumers are off (SHOP_CONSUMERS=off): this instance serves HTTP only");
            return;
        }
        let (codec, producer, token) = (self.codec.clone(), self.producer.clone(), self.shutdown.clone());
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = consumer::run(config, codec, producer, handler, token.cancelled_owned()).await {
                tracing::error!(error = format!("{e:#}"), "consumer ended with an error");
            }
        }));
    }

    pub fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Serve HTTP until a shutdown signal, then stop the background tasks. The instance is in
    /// the service registry while it serves.
    pub async fn serve(self, router: axum::Router) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.settings.http_addr)
            .await
            .with_context(|| format!("binding {}", self.settings.http_addr))?;
        let token = self.shutdown.clone();
        let signal = async move {
            tokio::select! {
                () = runtime::shutdown_signal() => {},
                () = token.cancelled() => {},
            }
        };
        let router = router.merge(runtime::http::health());
        let result = cluster::serve_registered(
            &self.cluster,
            &self.settings,
            listener,
            router,
            signal,
            runtime::http::Trust::Callers(self.caller_key.clone()),
        )
        .await;
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        runtime::telemetry::shutdown().await;
        result
    }
}
