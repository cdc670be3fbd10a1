//! Kafka clients: the idempotent producer (acks=all), the outbox relay's producer, topic
//! creation, and finding which messages of a batch already reached a topic.

use crate::producer::Producer;
use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use schemas::Topic;
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub fn producer(brokers: &str) -> anyhow::Result<Producer> {
    let config = crate::connect::client_config(brokers)?
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000")
        .clone();
    Producer::create(&config).context("creating Kafka producer")
}

/// The outbox relay's producer: idempotent (acks=all; its own retries neither duplicate nor
/// reorder a partition's records) and never giving up on a record (`message.timeout.ms=0`): a
/// record that timed out while later ones of its partition went through would leave a gap that
/// a resend could only fill out of order. Any other error that could leave a gap is fatal
/// (`enable.gapless.guarantee`): the relay then drops the producer and starts over.
pub fn relay_producer(brokers: &str) -> anyhow::Result<Producer> {
    let config = crate::connect::client_config(brokers)?
        .set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "0")
        .clone();
    Producer::create(&config).context("creating the relay's Kafka producer")
}

/// A topic to create when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Topic-level configs, e.g. `("cleanup.policy", "compact")`.
    pub config: Vec<(&'static str, String)>,
}

/// Create the given topics (and their DLQs) if missing, with `partitions` each (a DLQ has one).
/// Event topics keep data forever so read models can be rebuilt by replaying them. A topic that
/// exists keeps its partitions, also when they are fewer: adding partitions would send an
/// aggregate's next events to another partition than its earlier ones, and consumers could
/// then apply them out of order. Fewer than asked for is logged.
pub async fn ensure_topics(brokers: &str, topics: &[Topic], partitions: i32) -> anyhow::Result<()> {
    let mut specs = Vec::new();
    for topic in topics {
        specs.push(TopicSpec {
            name: topic.name().to_owned(),
            partitions,
            config: vec![("retention.ms", topic.retention_ms().to_string())],
        });
        specs.push(TopicSpec { name: topic.dlq(), partitions: 1, config: vec![("retention.ms", "-1".to_owned())] });
    }
    create_missing(brokers, &specs).await?;
    let counts = crate::topic::partition_counts(brokers).await?;
    for topic in topics {
        let has = counts.get(topic.name()).copied().unwrap_or(partitions);
        if has < partitions {
            tracing::warn!(
                topic = topic.name(),
                has,
                configured = partitions,
                "topic has fewer partitions than configured (kept: more would reorder its keys)"
            );
        }
    }
    Ok(())
}

/// Create each topic that does not exist yet; existing topics are left as they are.
pub async fn create_missing(brokers: &str, specs: &[TopicSpec]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        crate::connect::client_config(brokers)?.create().context("creating Kafka admin client")?;
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
    producer: &Producer,
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

/// Which of `wanted` (message ids) are on `topics`, among the records written at or after
/// `since_ms` (milliseconds since the epoch, by the records' timestamps), read with
/// `isolation.level=read_committed` up to each partition's end when the call starts. Stops early
/// once all are found; fails after `timeout`.
///
/// Blocking: call it from `spawn_blocking`.
pub fn find_message_ids(
    brokers: &str,
    topics: &[String],
    since_ms: i64,
    wanted: &HashSet<String>,
    timeout: Duration,
) -> anyhow::Result<HashSet<String>> {
    let deadline = Instant::now() + timeout;
    let mut found = HashSet::new();
    if wanted.is_empty() || topics.is_empty() {
        return Ok(found);
    }
    let consumer: BaseConsumer = crate::connect::client_config(brokers)?
        // Partitions are assigned, never subscribed: the group is not joined, nothing is committed.
        .set("group.id", "outbox-relay.recovery")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating Kafka consumer")?;
    let mut from_time = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout).with_context(|| format!("metadata of {topic}"))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                from_time.add_partition_offset(topic, p.id(), Offset::Offset(since_ms))?;
            }
        }
    }
    let starts = consumer.offsets_for_times(from_time, timeout).context("offsets for the time the batch was sent")?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in starts.elements() {
        // No record at or after the time: nothing of the batch reached this partition.
        let Offset::Offset(start) = p.offset() else { continue };
        let (_, high) = consumer
            .fetch_watermarks(p.topic(), p.partition(), timeout)
            .with_context(|| format!("watermarks of {}", p.topic()))?;
        if start < high {
            assignment.add_partition_offset(p.topic(), p.partition(), Offset::Offset(start))?;
            ends.push((p.topic().to_owned(), p.partition(), high));
        }
    }
    if ends.is_empty() {
        return Ok(found);
    }
    consumer.assign(&assignment)?;
    loop {
        let mut done = true;
        for (topic, partition, end) in &ends {
            // The position also moves over transaction markers and aborted records.
            if position(&consumer, topic, *partition)?.unwrap_or(0) < *end {
                done = false;
                break;
            }
        }
        if done || found.len() == wanted.len() {
            return Ok(found);
        }
        anyhow::ensure!(Instant::now() < deadline, "reading {topics:?} back took over {timeout:?}");
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => return Err(e).context("reading the relay's topics back"),
            Some(Ok(m)) => {
                let id = m
                    .headers()
                    .and_then(|hs| hs.iter().find(|h| h.key == schemas::headers::MESSAGE_ID).and_then(|h| h.value));
                if let Some(id) = id.map(String::from_utf8_lossy)
                    && wanted.contains(id.as_ref())
                {
                    found.insert(id.into_owned());
                }
            }
        }
    }
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
