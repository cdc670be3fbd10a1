//! Rebuild benchmark: replays a synthetic shop history (real Avro through the schema registry,
//! the relay's headers, keyed by aggregate id) from topics of its own, first with a bare
//! consumer (same consumer settings and decoding as the rebuild, no writes), then with the
//! rebuild itself (`projectors rebuild --all`'s code path) into a MongoDB database of its own.
//! Writes `bench-results/rebuild.json`.
//!
//! `cargo run --release -p projectors --bin rebuild-bench -- [--events N] [--fresh] [--runs R]`
//!
//! Each of the R runs (default 3) measures the bare consumer and then the rebuild; the results
//! give every run and the medians (a 2-core machine shared with the whole stack is noisy).
//!
//! The topics (`bench.rebuild.<N>.<topic>`) are kept and reused by later runs with the same N
//! (`--fresh` writes them again); the database `bench_rebuild` is dropped before each rebuild.

/// A rebuild allocates and frees millions of small values (decoded events, BSON documents);
/// glibc's allocator spent nearly half of the process's time on them. Without transparent huge
/// pages (the workspace's `no_thp`): a 2 MiB page is resident as soon as one byte of it is
/// used, and the service held about 20 MB more with them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use indicatif::{ProgressBar, ProgressStyle};
use projectors::offsets;
use projectors::rebuild::{self, Options, Place};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message as _, Offset};
use readstore::readmodel::ReadModel;
use schemas::{Codec, Topic};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DATABASE: &str = "bench_rebuild";

/// One run's measurements.
struct Run {
    events: u64,
    bare_s: f64,
    rebuild_s: f64,
}

fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    let template = format!("{what:>9} {{elapsed_precise}} [{{wide_bar}}] {{pos}}/{{len}}, {{per_sec}}");
    b.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    b
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> anyhow::Result<T> + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// Records in the bench topics now.
async fn stored(brokers: &str, topics: &[String]) -> anyhow::Result<(Vec<offsets::Tp>, i64)> {
    let (b, t) = (brokers.to_owned(), topics.to_vec());
    blocking(move || {
        let names: Vec<&str> = t.iter().map(String::as_str).collect();
        let kafka = offsets::Offsets::connect(&b)?;
        let tps = kafka.partitions(&names)?;
        let marks = kafka.watermarks(&tps)?;
        Ok((tps, marks.values().map(|(low, high)| high - low).sum()))
    })
    .await
}

/// Write the synthetic history to the bench topics.
async fn fill(settings: &runtime::Settings, place: &Place, events: usize) -> anyhow::Result<usize> {
    let history = projectors::synthetic::Shop::new(2026).history(events);
    let codec = Codec::new(&settings.schema_registry_url)?;
    codec.register(&projectors::EVENT_TOPICS).await?;
    let config = messaging::connect::client_config(&settings.kafka_brokers)?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .clone();
    let producer = messaging::producer::Producer::create(&config)?;
    let progress = bar(history.len() as u64, "writing");
    let mut pending = futures::stream::FuturesOrdered::new();
    use futures::StreamExt;
    for (i, e) in history.iter().enumerate() {
        let payload = codec.encode(&e.message).await?;
        let topic = place.topic(e.message.topic());
        let id = uuid::Uuid::now_v7().to_string();
        let headers = messaging::kafka::to_headers(e.headers(&id));
        let record = FutureRecord::to(&topic).key(e.message.key()).payload(&payload).headers(headers);
        pending.push_back(producer.send_result(record).map_err(|(err, _)| anyhow::anyhow!("queueing: {err}"))?);
        if pending.len() >= 10_000 {
            while pending.len() > 5_000 {
                if let Some(r) = pending.next().await {
                    r?.map_err(|(err, _)| anyhow::anyhow!("producing: {err}"))?;
                }
            }
        }
        progress.set_position(i as u64);
    }
    while let Some(r) = pending.next().await {
        r?.map_err(|(err, _)| anyhow::anyhow!("producing: {err}"))?;
    }
    progress.finish_and_clear();
    Ok(history.len())
}

/// Read every record of `tps` from the start with the rebuild's consumer settings, decoding
/// each in batches as the rebuild does; returns (records, seconds).
async fn bare(settings: &runtime::Settings, tps: &[offsets::Tp], total: i64) -> anyhow::Result<(u64, f64)> {
    let (b, t) = (settings.kafka_brokers.clone(), tps.to_vec());
    let marks = blocking(move || offsets::Offsets::connect(&b)?.watermarks(&t)).await?;
    let start: BTreeMap<offsets::Tp, i64> = marks.iter().map(|(tp, (low, _))| (tp.clone(), *low)).collect();
    let codec = Arc::new(Codec::new(&settings.schema_registry_url)?);
    let began = Instant::now();
    let consumer = rebuild::replay_consumer(&settings.kafka_brokers, &start)?;
    let progress = bar(u64::try_from(total).unwrap_or_default(), "consuming");
    let mut decoded = 0u64;
    let mut done: BTreeMap<offsets::Tp, bool> =
        marks.iter().map(|(tp, (low, high))| (tp.clone(), low >= high)).collect();
    while done.values().any(|d| !d) {
        let mut records = Vec::with_capacity(rebuild::BATCH);
        let mut wait = Duration::from_millis(500);
        while records.len() < rebuild::BATCH {
            let m = match tokio::time::timeout(wait, consumer.recv()).await {
                Err(_) => break,
                Ok(m) => m?,
            };
            wait = Duration::from_millis(20);
            let tp = (m.topic().to_owned(), m.partition());
            if m.offset() + 1 >= marks[&tp].1 {
                done.insert(tp, true);
            }
            records.push(m.detach());
        }
        if records.is_empty() {
            // Only transaction markers left?
            for e in consumer.position()?.elements() {
                let tp = (e.topic().to_owned(), e.partition());
                if let (Offset::Offset(p), Some((_, high))) = (e.offset(), marks.get(&tp))
                    && p >= *high
                {
                    done.insert(tp, true);
                }
            }
            anyhow::ensure!(began.elapsed() < Duration::from_secs(600), "bare consumer stalled");
        }
        decoded += rebuild::decode_all(&codec, records).await.len() as u64;
        progress.set_position(decoded);
    }
    progress.finish_and_clear();
    Ok((decoded, began.elapsed().as_secs_f64()))
}

/// Rebuild throughput of the read models from a synthetic history on Kafka (reused across
/// runs); writes bench-results/rebuild.json.
#[derive(Debug, clap::Parser)]
#[command(name = "rebuild-bench", version)]
struct Args {
    /// Events in the history.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Delete and produce the history again even if it is there.
    #[arg(long)]
    fresh: bool,
    /// Rebuilds to measure (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { events, fresh, runs } = clap::Parser::parse();
    let runs = usize::try_from(runs)?;
    runtime::telemetry::init("rebuild-bench");
    let settings = runtime::Settings::from_env("rebuild-bench")?;
    let place = Place { topic_prefix: format!("bench.rebuild.{events}."), database: Some(DATABASE.to_owned()) };
    let topics: Vec<String> = projectors::EVENT_TOPICS.iter().map(|t| place.topic(*t)).collect();

    // 1. The history.
    let (_, mut have) = stored(&settings.kafka_brokers, &topics).await.unwrap_or_default();
    if fresh || (have > 0 && have < events as i64) {
        println!("deleting the incomplete or stale bench topics ({have} records)");
        let admin: AdminClient<DefaultClientContext> =
            messaging::connect::client_config(&settings.kafka_brokers)?.create()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let _ = admin.delete_topics(&names, &AdminOptions::new()).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        have = 0;
    }
    let reused = have > 0;
    if reused {
        println!("reusing the {have} records already in {}*", place.topic_prefix);
    } else {
        let specs: Vec<_> = topics
            .iter()
            .map(|name| messaging::kafka::TopicSpec {
                name: name.clone(),
                partitions: Topic::PARTITIONS,
                config: vec![("retention.ms", "-1".to_owned())],
            })
            .collect();
        messaging::kafka::create_missing(&settings.kafka_brokers, &specs).await?;
        let began = Instant::now();
        let n = fill(&settings, &place, events).await?;
        println!("wrote {n} events to {}* in {:.1} s", place.topic_prefix, began.elapsed().as_secs_f64());
    }
    let (tps, total) = stored(&settings.kafka_brokers, &topics).await?;

    let mongo = readstore::readmodel::connect(&settings.mongodb_url).await?;
    let build_info = mongo.database("admin").run_command(mongodb::bson::doc! { "buildInfo": 1 }).await?;
    let server = match build_info.get("ferretdbVersion") {
        Some(v) => format!(
            "FerretDB {} (reports MongoDB {})",
            v.as_str().unwrap_or("?"),
            build_info.get_str("version").unwrap_or("?")
        ),
        None => format!("MongoDB {}", build_info.get_str("version").unwrap_or("?")),
    };
    let mongo_host =
        settings.mongodb_url.split('@').next_back().unwrap_or_default().split('/').nth(2).unwrap_or_default();
    let mut measured = Vec::new();
    for run in 1..=runs {
        println!("run {run} of {runs}");
        // 2. A bare consumer.
        let (consumed, bare_s) = bare(&settings, &tps, total).await?;
        let bare_rate = consumed as f64 / bare_s;
        println!("bare consumer: {consumed} events in {bare_s:.2} s = {bare_rate:.0} events/s");

        // 3. The rebuild, from nothing.
        mongo.database(DATABASE).drop().await?;
        let options = Options {
            place: place.clone(),
            // Nothing else writes the bench database: no handover to wait for.
            grace: Duration::ZERO,
            ..Options::new(ReadModel::ALL.to_vec())
        };
        let began = Instant::now();
        let report = rebuild::run(&settings, options).await?.ok_or_else(|| anyhow::anyhow!("no report"))?;
        let total_s = began.elapsed().as_secs_f64();
        let rebuild_rate = report.applied as f64 / total_s;
        println!(
            "rebuild: {} events in {total_s:.2} s = {rebuild_rate:.0} events/s ({:.2} s to the switch)",
            report.applied,
            report.until_switch.as_secs_f64()
        );
        anyhow::ensure!(report.applied == consumed, "the rebuild applied {} of {consumed} events", report.applied);
        measured.push(Run { events: consumed, bare_s, rebuild_s: total_s });
    }

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rebuild_rate = median(measured.iter().map(|r| r.events as f64 / r.rebuild_s).collect());
    let bare_rate = median(measured.iter().map(|r| r.events as f64 / r.bare_s).collect());
    let ratio = rebuild_rate / bare_rate;
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let results = serde_json::json!({
        "benchmark": "projectors rebuild --all vs a bare consumer, same topics, same runs",
        "when": chrono::Utc::now().to_rfc3339(),
        "events": measured[0].events,
        "topics_reused": reused,
        "runs": measured.iter().map(|r| serde_json::json!({
            "bare_consumer_seconds": round2(r.bare_s),
            "rebuild_seconds": round2(r.rebuild_s),
            "rebuild_events_per_s": (r.events as f64 / r.rebuild_s).round(),
        })).collect::<Vec<_>>(),
        "rebuild_events_per_s": rebuild_rate.round(),
        "rebuild_note": "median over the runs; wall time of rebuild::run: replay, catch-up, switch, bookkeeping; no handover grace",
        "bare_consumer_events_per_s": bare_rate.round(),
        "bare_consumer_note": "median over the runs; same consumer settings and parallel Avro decoding as the rebuild; no writes",
        "ratio_rebuild_to_bare": (ratio * 1000.0).round() / 1000.0,
        "goal_rebuild_events_per_s": 30000,
        "mongo_server": server,
        "mongo_host": mongo_host,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("rebuild.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    println!(
        "median of {runs}: rebuild {rebuild_rate:.0} events/s, bare consumer {bare_rate:.0} events/s, ratio {ratio:.3}; \
         results written to {}",
        path.display()
    );
    Ok(())
}
