//! Kafka clients: the idempotent producer (acks=all), the outbox relay's transactional producer,
//! topic creation, and reading back the last committed record of a key.

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::Topic;
use std::time::{Duration, Instant};

pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating Kafka producer")
}

/// A transactional producer (idempotent, acks=all). The caller still has to call
/// `init_transactions`, which fences any older producer with the same `transactional_id`.
pub fn transactional_producer(brokers: &str, transactional_id: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        // The transaction of a producer that died open holds back read_committed consumers of
        // its partitions until its successor fences it, or until this timeout aborts it.
        .set("transaction.timeout.ms", "20000")
        .set("message.timeout.ms", "15000")
        .create()
        .context("creating transactional Kafka producer")
}

/// A topic to create when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Topic-level configs, e.g. `("cleanup.policy", "compact")`.
    pub config: Vec<(&'static str, String)>,
}

/// Create the given topics (and their DLQs) if missing. Event topics keep data forever so
/// read models can be rebuilt by replaying them.
pub async fn ensure_topics(brokers: &str, topics: &[Topic]) -> anyhow::Result<()> {
    let mut specs = Vec::new();
    for topic in topics {
        specs.push(TopicSpec {
            name: topic.name().to_owned(),
            partitions: Topic::PARTITIONS,
            config: vec![("retention.ms", topic.retention_ms().to_string())],
        });
        specs.push(TopicSpec { name: topic.dlq(), partitions: 1, config: vec![("retention.ms", "-1".to_owned())] });
    }
    create_missing(brokers, &specs).await
}

/// Create each topic that does not exist yet; existing topics are left as they are.
pub async fn create_missing(brokers: &str, specs: &[TopicSpec]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("creating Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            s.config
                .iter()
                .fold(NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(1)), |t, (k, v)| t.set(k, v))
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    for result in admin.create_topics(new.iter(), &options).await.context("creating topics")? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Headers as (name, value) pairs, for producing.
pub fn to_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> OwnedHeaders {
    pairs
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: Some(value.as_bytes()) }))
}

/// `headers` with the current span's `traceparent` added, unless they carry one already.
pub fn with_traceparent(headers: OwnedHeaders) -> OwnedHeaders {
    use rdkafka::message::Headers as _;
    let traceparent = runtime::telemetry::TRACEPARENT;
    if headers.iter().any(|h| h.key == traceparent) {
        return headers;
    }
    match runtime::telemetry::current_traceparent() {
        Some(value) => headers.insert(Header { key: traceparent, value: Some(value.as_bytes()) }),
        None => headers,
    }
}

/// Send one record and wait for Kafka's acknowledgement. The record continues the current
/// trace (`traceparent` header) unless its headers name another.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: OwnedHeaders,
) -> anyhow::Result<()> {
    let record = FutureRecord::to(topic).key(key).payload(payload).headers(with_traceparent(headers));
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))?;
    Ok(())
}

/// How many offsets [`last_committed_value`] reads at a time, going backwards.
const SCAN_WINDOW: i64 = 1000;

/// The value of the last committed record with `key` in partition `partition` of `topic`
/// (`None` when there is none), read with `isolation.level=read_committed` backwards from the
/// end, window by window. "The end" is the high watermark when the call starts: an open
/// transaction before it makes the call wait until it ends (or fail after `timeout`), because
/// stopping at the last stable offset could miss the latest record.
///
/// Blocking: call it from `spawn_blocking`.
pub fn last_committed_value(
    brokers: &str,
    topic: &str,
    partition: i32,
    key: &str,
    timeout: Duration,
) -> anyhow::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Partitions are assigned, never subscribed: the group is not joined, nothing is committed.
        .set("group.id", format!("{key}.reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating Kafka consumer")?;
    let (low, high) =
        consumer.fetch_watermarks(topic, partition, timeout).with_context(|| format!("watermarks of {topic}"))?;
    let mut end = high;
    while end > low {
        let start = (end - SCAN_WINDOW).max(low);
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
        consumer.assign(&assignment)?;
        let mut found = None;
        // The position also moves over transaction markers and aborted records, so it reaches
        // `end` even though those are never returned.
        while position(&consumer, topic, partition)?.unwrap_or(start) < end {
            anyhow::ensure!(
                Instant::now() < deadline,
                "reading {topic} [{partition}] up to offset {end} took over {timeout:?} (an open transaction?)"
            );
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
                Some(Ok(m)) if m.offset() < end && m.key() == Some(key.as_bytes()) => {
                    found = Some(m.payload().unwrap_or_default().to_vec());
                }
                Some(Ok(_)) => {}
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        end = start;
    }
    Ok(None)
}

fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> anyhow::Result<Option<i64>> {
    let positions = consumer.position()?;
    Ok(positions.find_partition(topic, partition).and_then(|p| match p.offset() {
        Offset::Offset(n) => Some(n),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use rdkafka::message::Headers as _;
    use runtime::telemetry;
    use tracing_subscriber::layer::SubscriberExt;

    fn traceparent_of(headers: &OwnedHeaders) -> Vec<String> {
        headers
            .iter()
            .filter(|h| h.key == telemetry::TRACEPARENT)
            .filter_map(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    #[test]
    fn records_carry_the_current_span_and_consumers_read_it_back() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            assert!(traceparent_of(&with_traceparent(OwnedHeaders::new())).is_empty(), "no span, no header");
            let span = tracing::info_span!("send");
            let _entered = span.enter();
            let current = telemetry::current_traceparent().expect("a span");
            let headers = with_traceparent(to_headers([("message-id", "m1".to_owned())]));
            assert_eq!(traceparent_of(&headers), vec![current.clone()]);
            // What the consumer extracts is the sending span.
            let cx = telemetry::context_from_traceparent(Some(&traceparent_of(&headers)[0]));
            assert_eq!(telemetry::traceparent_of(&cx), Some(current));
            // A record that names its trace already (a parked message) keeps it.
            let parked = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
            let headers = with_traceparent(to_headers([(telemetry::TRACEPARENT, parked.to_owned())]));
            assert_eq!(traceparent_of(&headers), vec![parked.to_owned()]);
        });
    }
}
