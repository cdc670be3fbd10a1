//! Kafka producer (idempotent, acks=all) and topic creation.

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use schemas::Topic;
use std::time::Duration;

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

/// Create the given topics (and their DLQs) if missing. Event topics keep data forever so
/// read models can be rebuilt by replaying them.
pub async fn ensure_topics(brokers: &str, topics: &[Topic]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("creating Kafka admin client")?;
    let retention: Vec<String> = topics.iter().map(|t| t.retention_ms().to_string()).collect();
    let dlqs: Vec<String> = topics.iter().map(|t| t.dlq()).collect();
    let mut new = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        new.push(
            NewTopic::new(topic.name(), Topic::PARTITIONS, TopicReplication::Fixed(1))
                .set("retention.ms", &retention[i]),
        );
        new.push(NewTopic::new(&dlqs[i], 1, TopicReplication::Fixed(1)).set("retention.ms", "-1"));
    }
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

/// Send one record and wait for Kafka's acknowledgement.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: OwnedHeaders,
) -> anyhow::Result<()> {
    let record = FutureRecord::to(topic).key(key).payload(payload).headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("producing to {topic}: {e}"))?;
    Ok(())
}
