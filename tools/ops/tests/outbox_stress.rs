//! The outbox relay against the real stack: exactly once on Kafka and in per-aggregate order
//! while the relay process is SIGKILLed and restarted; rows that commit late; a batch on Kafka
//! whose DELETE was lost; a row that cannot be mapped.
//! Each test has its own database, relay id and topics, and removes them.

use domain::product::{Product, ProductCommand, ProductEvent};
use domain::values::{Currency, Money, Name, ProductId, Quantity, Sku};
use eventstore::db;
use eventstore::es::{CommandError, EventStoreOf};
use messaging::kafka;
use messaging::outbox::Metadata;
use messaging::outbox::{self, DEAD_AFTER_ATTEMPTS, EventMapper, Relay, event_mapper};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use runtime::Settings;
use schemas::records::StockAdded;
use schemas::{Codec, Message, Topic, convert, headers as h};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WRITERS: usize = 8;
const AGGREGATES: usize = 100;
const EVENTS: usize = 10_000;
const MIN_KILLS: usize = 5;
const LIMIT: Duration = Duration::from_secs(240);

/// A database, relay id and topic prefix of one test's own.
#[derive(Clone)]
struct Env {
    settings: Arc<Settings>,
    admin_url: String,
    db_name: String,
    db_url: String,
    pool: PgPool,
    prefix: String,
    relay_id: String,
}

impl Env {
    async fn new(label: &str) -> Env {
        let settings = Settings::from_env("outbox-test").expect("settings");
        let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let (base, _) = settings.database_url.rsplit_once('/').expect("database url ends with /<database>");
        let db_name = format!("test_outbox_{label}_{run}");
        let db_url = format!("{base}/{db_name}");
        let pool = db::connect(&db_url, 20).await.expect("database");
        db::migrate_event_store(&pool).await.expect("migrate");
        let prefix = format!("test.outbox.{label}.{run}.");
        let topic = format!("{prefix}{}", Topic::ProductEvents.name());
        let spec = kafka::TopicSpec { name: topic, partitions: Topic::PARTITIONS, config: vec![] };
        kafka::create_missing(&settings.kafka_brokers, &[spec]).await.expect("topics");
        Env {
            admin_url: format!("{base}/postgres"),
            settings: Arc::new(settings),
            db_name,
            db_url,
            pool,
            prefix,
            relay_id: format!("outbox-relay-test-{label}-{run}"),
        }
    }

    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn relay(&self) -> Relay {
        let codec = Arc::new(Codec::new(&self.settings.schema_registry_url).expect("codec"));
        Relay::new(self.pool.clone(), &self.settings.kafka_brokers, codec, product_events())
            .with_relay_id(&self.relay_id)
            .with_topic_prefix(&self.prefix)
    }

    async fn outbox_len(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&self.pool).await.expect("count")
    }

    /// Every record of the test's product events topic.
    async fn records(&self) -> Vec<Rec> {
        let (brokers, topic) = (self.settings.kafka_brokers.clone(), self.topic(Topic::ProductEvents.name()));
        let read = messaging::topic::read(&brokers, &topic, &Default::default(), true, Duration::from_secs(60)).await;
        read.unwrap_or_else(|e| panic!("{e:#}"))
            .into_iter()
            .map(|r| Rec {
                partition: r.partition,
                key: r.key_text().unwrap_or_default(),
                version: r.header(h::AGGREGATE_VERSION).and_then(|v| v.parse().ok()),
                message_id: r.header(h::MESSAGE_ID).unwrap_or_default(),
            })
            .collect()
    }

    async fn cleanup(self) {
        self.pool.close().await;
        match PgPool::connect(&self.admin_url).await {
            Ok(admin) => {
                let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db_name);
                if let Err(e) = sqlx::query(&drop).execute(&admin).await {
                    eprintln!("dropping {}: {e}", self.db_name);
                }
            }
            Err(e) => eprintln!("dropping {}: {e}", self.db_name),
        }
        let admin: AdminClient<DefaultClientContext> = messaging::connect::client_config(&self.settings.kafka_brokers)
            .expect("Kafka address")
            .create()
            .expect("admin");
        let topic = self.topic(Topic::ProductEvents.name());
        let names = [topic.as_str()];
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
        if let Err(e) = admin.delete_topics(&names, &options).await {
            eprintln!("deleting topics: {e}");
        }
    }
}

/// Run `test` within [`LIMIT`], then clean up whatever happened.
async fn within_limit<F, Fut>(env: Env, test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut task = tokio::spawn(test(env.clone()));
    let outcome = tokio::time::timeout(LIMIT, &mut task).await;
    if outcome.is_err() {
        task.abort();
        let _ = task.await;
    }
    env.cleanup().await;
    match outcome {
        Err(_) => panic!("the test did not finish within {LIMIT:?}"),
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("{e}"),
        Ok(Ok(())) => {}
    }
}

fn product_events() -> EventMapper {
    event_mapper(|id: &str, e| Ok(convert::product_event(convert::product_id(id)?, e)))
}

/// One record as a read_committed consumer sees it.
#[derive(Debug)]
struct Rec {
    partition: i32,
    key: String,
    version: Option<i64>,
    message_id: String,
}

/// A small xorshift generator: the test needs spread, not quality.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Rng(uuid::Uuid::new_v4().as_u64_pair().0 | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn create(id: ProductId, n: usize) -> ProductCommand {
    ProductCommand::Create {
        product_id: id,
        sku: Sku::parse(&format!("STRESS-{n}")).expect("sku"),
        name: Name::parse("name", "Stress mug").expect("name"),
        price: Money::new(100, Currency::EUR),
        stock: 0,
    }
}

/// Execute until the command lands: writers to the same aggregate conflict now and then.
async fn execute(store: &EventStoreOf<Product>, id: ProductId, command: ProductCommand) {
    for _ in 0..100 {
        match store.execute(&id.to_string(), command.clone(), Metadata::new()).await {
            Ok(()) => return,
            Err(CommandError::Conflict) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(e) => panic!("command on {id} failed: {e}"),
        }
    }
    panic!("command on {id} kept conflicting");
}

/// What the relay logs when it starts relaying, and when it deletes the rows of a batch that
/// reached Kafka before its predecessor died.
const ACTIVE: &str = "outbox relay active";
const RECOVERED: &str = "deleted the rows of the last batch found on Kafka";

fn count_in(log: &std::path::Path, line: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches(line).count()
}

/// The relay as a process of its own, logging to `log`.
fn spawn_relay(env: &Env, log: &std::path::Path) -> tokio::process::Child {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_outbox-relay-probe"))
        .env("SHOP_DATABASE_URL", &env.db_url)
        .env("SHOP_KAFKA_BROKERS", &env.settings.kafka_brokers)
        .env("SHOP_SCHEMA_REGISTRY_URL", &env.settings.schema_registry_url)
        .env("SHOP_OUTBOX_RELAY_ID", &env.relay_id)
        .env("SHOP_OUTBOX_TOPIC_PREFIX", &env.prefix)
        .env("SHOP_OUTBOX_BATCH", "200")
        .env("RUST_LOG", "info,sqlx=warn,rdkafka=warn")
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("starting the relay probe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the running stack: ./stack test"]
async fn ten_thousand_events_reach_kafka_exactly_once_in_order_while_the_relay_is_killed() {
    within_limit(Env::new("stress").await, stress).await;
}

async fn stress(env: Env) {
    let started = Instant::now();
    let log = std::env::temp_dir().join(format!("{}.log", env.relay_id));
    let writing = Arc::new(AtomicBool::new(true));

    // The relay, SIGKILLed at random points and restarted, while the writers write: every
    // other kill comes 0.3-1.5 s after the start (often still starting up), the others within
    // 0.3 s of the relay reporting itself active (mid-batch).
    let killer = {
        let (env, log, writing) = (env.clone(), log.clone(), writing.clone());
        tokio::spawn(async move {
            let mut rng = Rng::new();
            let mut kills = 0;
            let mut started = 0;
            let mut child = spawn_relay(&env, &log);
            while writing.load(Ordering::SeqCst) || kills < MIN_KILLS {
                if kills % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
                } else {
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while count_in(&log, ACTIVE) == started && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
                }
                child.kill().await.expect("SIGKILL");
                kills += 1;
                started = count_in(&log, ACTIVE);
                child = spawn_relay(&env, &log);
            }
            (child, kills)
        })
    };

    let store = Arc::new(EventStoreOf::<Product>::new(env.pool.clone()));
    let ids: Arc<Vec<ProductId>> = Arc::new((0..AGGREGATES).map(|_| ProductId::new()).collect());
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..AGGREGATES).map(|_| AtomicU64::new(0)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, ids, counts, next) = (store.clone(), ids.clone(), counts.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            for (n, id) in ids.iter().enumerate().skip(w).step_by(WRITERS) {
                execute(&store, *id, create(*id, n)).await;
                counts[n].fetch_add(1, Ordering::SeqCst);
            }
            // Everyone waits for every product to exist before adding stock.
            while counts.iter().any(|c| c.load(Ordering::SeqCst) == 0) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut rng = Rng::new();
            while next.fetch_add(1, Ordering::SeqCst) < (EVENTS - AGGREGATES) as u64 {
                let n = usize::try_from(rng.below(AGGREGATES as u64)).expect("index");
                let add = ProductCommand::AddStock { quantity: Quantity::new(1).expect("quantity") };
                execute(&store, ids[n], add).await;
                counts[n].fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let written = started.elapsed();
    writing.store(false, Ordering::SeqCst);
    let (mut relay, kills) = killer.await.expect("killer");

    // The last relay process drains the outbox.
    while env.outbox_len().await > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = started.elapsed();
    relay.kill().await.expect("SIGKILL");

    let records = env.records().await;
    let (active, recovered) = (count_in(&log, ACTIVE), count_in(&log, RECOVERED));
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "{EVENTS} events by {WRITERS} writers over {AGGREGATES} aggregates in {written:?}; \
         relay killed {kills} times, {active} of its starts got as far as relaying; {recovered} starts found rows of the last batch on Kafka and still in the outbox; \
         outbox drained after {drained:?}; {} records read",
        records.len()
    );

    let expected: HashMap<String, u64> =
        ids.iter().zip(counts.iter()).map(|(id, c)| (id.to_string(), c.load(Ordering::SeqCst))).collect();
    assert_eq!(expected.values().sum::<u64>(), EVENTS as u64, "the writers wrote every event");
    // Each key lives in one partition, so the records' order per key is the order Kafka gives.
    let mut seen: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut partitions: HashMap<&str, i32> = HashMap::new();
    for r in &records {
        let version = r.version.unwrap_or_else(|| panic!("record without {} header: {r:?}", h::AGGREGATE_VERSION));
        seen.entry(&r.key).or_default().push(version);
        assert_eq!(*partitions.entry(&r.key).or_insert(r.partition), r.partition, "one partition per key");
    }
    let mut wrong = Vec::new();
    for (key, n) in &expected {
        let want: Vec<i64> = (1..=i64::try_from(*n).expect("count")).collect();
        let got = seen.get(key.as_str()).cloned().unwrap_or_default();
        if got != want {
            wrong.push(format!(
                "{key}: expected 1..={n}, got {} records, first {:?}",
                got.len(),
                &got[..got.len().min(12)]
            ));
        }
    }
    assert!(wrong.is_empty(), "{} aggregates are wrong on Kafka:\n{}", wrong.len(), wrong.join("\n"));
    assert_eq!(seen.len(), AGGREGATES, "no record of an unknown aggregate");
    assert_eq!(records.len(), EVENTS, "every event exactly once");
}

fn stock_added(product: ProductId) -> Message {
    StockAdded { product_id: product.to_string(), quantity: 1 }.into()
}

async fn enqueue_committed(pool: &PgPool, message: &Message) -> uuid::Uuid {
    let mut tx = pool.begin().await.expect("begin");
    let id = outbox::enqueue(&mut tx, message, &HashMap::new()).await.expect("enqueue");
    tx.commit().await.expect("commit");
    id
}

/// Pass until the outbox is empty; returns the rows sent.
async fn drain(env: &Env, relay: &Relay) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while env.outbox_len().await > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        match relay.pass().await {
            Ok(n) => sent += n,
            Err(e) => eprintln!("pass failed (retrying): {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent
}

/// The records' message ids, sorted: records of different keys may sit in different partitions.
fn message_ids(records: &[Rec]) -> Vec<String> {
    let mut ids: Vec<String> = records.iter().map(|r| r.message_id.clone()).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[uuid::Uuid]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.sort();
    ids
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_row_that_commits_late_is_relayed_after_a_higher_id_went_out() {
    within_limit(Env::new("hole").await, |env| async move {
        let relay = env.relay();
        let codec = Arc::new(Codec::new(&env.settings.schema_registry_url).expect("codec"));
        let derived = Relay::new(env.pool.clone(), &env.settings.kafka_brokers, codec, product_events());
        assert_eq!(derived.relay_id(), format!("outbox-relay-{}", env.db_name), "one stable id per database");
        let mut late = env.pool.begin().await.expect("begin");
        let first =
            outbox::enqueue(&mut late, &stock_added(ProductId::new()), &HashMap::new()).await.expect("late row");
        let second = enqueue_committed(&env.pool, &stock_added(ProductId::new())).await;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY id").fetch_all(&env.pool).await.unwrap();
        assert_eq!(ids.len(), 1, "the late row is not visible yet");

        assert_eq!(relay.pass().await.expect("pass"), 1, "the committed row goes out past the hole");
        assert_eq!(relay.pass().await.expect("pass"), 0);
        late.commit().await.expect("commit");
        let late_id: i64 = sqlx::query_scalar("SELECT id FROM outbox").fetch_one(&env.pool).await.unwrap();
        assert!(late_id < ids[0], "the late row has the lower id");
        assert_eq!(relay.pass().await.expect("pass"), 1, "the late row is picked up on a later pass");
        assert_eq!(env.outbox_len().await, 1, "sent rows are deleted by the next pass");
        assert_eq!(relay.pass().await.expect("pass"), 0);
        assert_eq!(env.outbox_len().await, 0);

        let records = env.records().await;
        assert_eq!(message_ids(&records), sorted(&[first, second]), "each row once");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_batch_on_kafka_whose_delete_was_lost_is_not_sent_again() {
    within_limit(Env::new("gap").await, |env| async move {
        let mut sent = Vec::new();
        for _ in 0..3 {
            sent.push(enqueue_committed(&env.pool, &stock_added(ProductId::new())).await);
        }
        sqlx::query("CREATE TABLE lost AS SELECT * FROM outbox").execute(&env.pool).await.unwrap();
        let relay = env.relay();
        assert_eq!(relay.pass().await.expect("pass"), 3);
        assert_eq!(relay.pass().await.expect("pass"), 0, "the next pass deletes them");
        drop(relay);
        // As if the relay had died between Kafka's acknowledgement and its DELETE.
        sqlx::query("INSERT INTO outbox SELECT * FROM lost").execute(&env.pool).await.unwrap();
        sent.push(enqueue_committed(&env.pool, &stock_added(ProductId::new())).await);
        // ... and had recorded the new row as being sent too, though it never reached Kafka.
        sqlx::query("UPDATE outbox_relay SET sending = sending || (SELECT max(id) FROM outbox)")
            .execute(&env.pool)
            .await
            .unwrap();

        let relay = env.relay();
        assert_eq!(drain(&env, &relay).await, 1, "only the row not on Kafka goes out");
        let records = env.records().await;
        assert_eq!(message_ids(&records), sorted(&sent), "each row once");
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_row_that_cannot_be_mapped_goes_to_outbox_dead_and_holds_back_only_its_aggregate() {
    within_limit(Env::new("dead").await, |env| async move {
        let (bad, good) = (ProductId::new(), ProductId::new());
        let added = serde_json::to_value(ProductEvent::StockAdded { quantity: 1 }).unwrap();
        let rows =
            [(bad, 1, serde_json::json!({ "NoSuchEvent": {} })), (bad, 2, added.clone()), (good, 1, added.clone())];
        for (id, sequence, payload) in rows {
            sqlx::query(
                "INSERT INTO outbox (message_id, aggregate_type, aggregate_id, sequence, record, payload) \
                 VALUES ($1, 'Product', $2, $3, 'StockAdded', $4)",
            )
            .bind(uuid::Uuid::new_v4())
            .bind(id.to_string())
            .bind(sequence)
            .bind(payload)
            .execute(&env.pool)
            .await
            .unwrap();
        }
        let relay = env.relay();
        let mut sent = 0;
        for _ in 0..DEAD_AFTER_ATTEMPTS + 1 {
            sent += relay.pass().await.expect("pass");
        }
        assert_eq!(sent, 1, "the other aggregate's row went out");
        assert_eq!(relay.pass().await.expect("pass"), 0, "and the next pass deleted it");
        let dead: Vec<(String, i64, i32)> = sqlx::query_as("SELECT aggregate_id, sequence, attempts FROM outbox_dead")
            .fetch_all(&env.pool)
            .await
            .unwrap();
        assert_eq!(dead, vec![(bad.to_string(), 1, DEAD_AFTER_ATTEMPTS as i32)]);
        let waiting: Vec<(String, i64)> =
            sqlx::query_as("SELECT aggregate_id, sequence FROM outbox").fetch_all(&env.pool).await.unwrap();
        assert_eq!(waiting, vec![(bad.to_string(), 2)], "the bad aggregate's later row waits");
        let records = env.records().await;
        assert_eq!(records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), vec![good.to_string()]);
    })
    .await;
}
