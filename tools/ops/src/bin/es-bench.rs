//! Event store benchmark: append throughput with one event per command and with batches of
//! events per command, 16 concurrent writers (as many commands as a service's connection pool has
//! in flight) over 100 aggregates, on the real PostgreSQL of the
//! local stack (a throwaway database); then the outbox relay's throughput publishing real
//! product events to Kafka (idempotent producer, topics of its own). Writes
//! `bench-results/event-store.json`.
//!
//! `cargo run --release -p ops --bin es-bench -- [--events N] [--snapshot-every N] [--writers N]`

use domain::{Aggregate, DomainEvent};
use eventstore::es::EventStoreOf;
use messaging::outbox::Metadata;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// A minimal aggregate whose commands emit as many events as asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ledger {
    entries: u64,
}

#[derive(Debug, Clone)]
struct Record {
    count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Recorded {
    n: u64,
}

impl DomainEvent for Recorded {
    fn event_type(&self) -> &'static str {
        "Recorded"
    }
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Ledger {
    const TYPE: &'static str = "BenchLedger";
    type Command = Record;
    type Event = Recorded;
    type Error = Never;

    fn decide(&self, command: Record) -> Result<Vec<Recorded>, Never> {
        Ok((1..=u64::from(command.count)).map(|i| Recorded { n: self.entries + i }).collect())
    }

    fn apply(&mut self, event: Recorded) {
        self.entries = event.n;
    }
}

/// Concurrent writers unless `--writers` says otherwise: a service's pool size (`service_kit`).
const WRITERS: usize = 16;
const AGGREGATES: usize = 100;

/// Append `events` events in commands of `per_command` events; returns events per second.
async fn append(
    store: Arc<EventStoreOf<Ledger>>,
    writers: usize,
    events: usize,
    per_command: u32,
    tag: &str,
) -> anyhow::Result<f64> {
    let commands = events / per_command as usize;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            // Writer w owns aggregates w, w+writers, ...: no conflicts, so this measures appends.
            let mine: Vec<usize> = (w..AGGREGATES).step_by(writers).collect();
            for i in (w..commands).step_by(writers) {
                let id = format!("{tag}-{}", mine[i / writers % mine.len()]);
                store.execute(&id, Record { count: per_command }, Metadata::new()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((commands * per_command as usize) as f64 / start.elapsed().as_secs_f64())
}

/// Append `events` product events (the writers, 100 products), then time the relay draining them.
async fn relay_throughput(admin: &str, writers: usize, events: usize) -> anyhow::Result<f64> {
    use domain::product::{Product, ProductCommand};
    use domain::values::{Currency, Money, Name, ProductId, Quantity, Sku};
    use schemas::{Codec, Topic, convert};

    let settings = runtime::Settings::from_env("es-bench")?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let name = format!("bench_relay_{run}");
    let pool = eventstore::db::connect(&format!("{admin}/{name}"), 16).await?;
    eventstore::db::migrate_event_store(&pool).await?;
    let store = Arc::new(EventStoreOf::<Product>::new(pool.clone()));
    let ids: Vec<ProductId> = (0..AGGREGATES).map(|_| ProductId::new()).collect();
    for (i, id) in ids.iter().enumerate() {
        let create = ProductCommand::Create {
            product_id: *id,
            sku: Sku::parse(&format!("BENCH-{i}"))?,
            name: Name::parse("name", "Bench")?,
            price: Money::new(100, Currency::EUR),
            stock: 0,
        };
        store.execute(&id.to_string(), create, Metadata::new()).await?;
    }
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, ids) = (store.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..events.saturating_sub(AGGREGATES)).step_by(writers) {
                let id = ids[(i / writers) % (AGGREGATES / writers) * writers + w % writers];
                let cmd = ProductCommand::AddStock { quantity: Quantity::new(1)? };
                store.execute(&id.to_string(), cmd, Metadata::new()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await?;

    let prefix = format!("bench.{run}.");
    let topic = format!("{prefix}{}", Topic::ProductEvents.name());
    let spec = messaging::kafka::TopicSpec { name: topic.clone(), partitions: Topic::PARTITIONS, config: vec![] };
    messaging::kafka::create_missing(&settings.kafka_brokers, &[spec]).await?;
    let codec = Arc::new(Codec::new(&settings.schema_registry_url)?);
    let mapper = messaging::outbox::event_mapper(|id: &str, e| Ok(convert::product_event(convert::product_id(id)?, e)));
    let relay = messaging::outbox::Relay::new(pool.clone(), &settings.kafka_brokers, codec, mapper)
        .with_relay_id(format!("bench-relay-{run}"))
        .with_topic_prefix(prefix)
        .with_batch(500);
    let start = Instant::now();
    let mut sent = 0usize;
    while sent < usize::try_from(queued)? {
        let n = relay.pass().await?;
        if n == 0 && start.elapsed().as_secs() > 300 {
            anyhow::bail!("relay made no progress");
        }
        sent += n;
    }
    let rate = sent as f64 / start.elapsed().as_secs_f64();

    pool.close().await;
    let admin_pool = sqlx::PgPool::connect(&format!("{admin}/postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin_pool).await?;
    Ok(rate)
}

/// Event-store throughput on a scratch database: appends (one and a hundred events per
/// command) and the outbox relay to Kafka; writes bench-results/event-store.json.
#[derive(Debug, clap::Parser)]
#[command(name = "es-bench", version)]
struct Args {
    /// Events per measurement.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Concurrent writers (1 to 50).
    #[arg(long, default_value_t = WRITERS as u64, value_parser = clap::value_parser!(u64).range(1..=50))]
    writers: u64,
    /// A snapshot every this many events, as the services run it.
    #[arg(long, default_value_t = 50)]
    snapshot_every: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { events, writers, snapshot_every } = clap::Parser::parse();
    let writers = usize::try_from(writers)?;
    let admin = std::env::var("SHOP_BENCH_POSTGRES").unwrap_or_else(|_| "postgres://shop:shop@127.0.0.1:5432".into());
    let name = format!("bench_es_{}", uuid::Uuid::new_v4().simple());
    let pool = eventstore::db::connect(&format!("{admin}/{name}"), 16).await?;
    eventstore::db::migrate_event_store(&pool).await?;
    let store = Arc::new(EventStoreOf::<Ledger>::with_snapshots(pool.clone(), snapshot_every));

    // Warm up connections and caches.
    append(store.clone(), writers, 800, 1, "warm").await?;
    let single = append(store.clone(), writers, events, 1, "single").await?;
    println!("append, 1 event per command:   {single:>10.0} events/s");
    let batched = append(store.clone(), writers, events * 5, 100, "batch").await?;
    println!("append, 100 events per command: {batched:>10.0} events/s");

    let relay = relay_throughput(&admin, writers, events).await?;
    println!("outbox relay to Kafka:          {relay:>10.0} events/s");

    let results = serde_json::json!({
        "benchmark": "event-store append (postgres-es, outbox trigger included)",
        "when": chrono::Utc::now().to_rfc3339(),
        "writers": writers,
        "snapshot_every": snapshot_every,
        "aggregates": AGGREGATES,
        "events_single": events,
        "events_batched": events * 5,
        "append_single_events_per_s": single.round(),
        "append_batched_events_per_s": batched.round(),
        "relay_events": events,
        "relay_events_per_s": relay.round(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("event-store.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    println!("results written to {}", path.display());

    pool.close().await;
    let admin_pool = sqlx::PgPool::connect(&format!("{admin}/postgres")).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin_pool).await?;
    Ok(())
}
