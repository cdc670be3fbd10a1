//! Kafka at first hand, for tests that go around the gateway: produce raw records, read a
//! topic between two points, and see how far the services' consumer groups have come.

use crate::harness::brokers;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Partition -> offset; one record as read back, detached from the client.
pub use messaging::topic::{Offsets, Record as Rec};

pub fn producer() -> FutureProducer {
    messaging::connect::client_config(&brokers())
        .expect("Kafka address")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("Kafka producer")
}

/// Produce one record (to `partition`, or by key) and answer where it landed.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: &[(String, Option<Vec<u8>>)],
) -> (i32, i64) {
    let headers =
        headers.iter().fold(OwnedHeaders::new(), |hs, (key, value)| hs.insert(Header { key, value: value.as_deref() }));
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload).headers(headers);
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(k) = key {
        record = record.key(k);
    }
    let delivery = producer.send(record, TIMEOUT).await.map_err(|(e, _)| e).unwrap_or_else(|e| panic!("{topic}: {e}"));
    (delivery.partition, delivery.offset)
}

/// A consumer that joins no group: it is only ever assigned partitions or asked about one.
fn client(group: &str) -> StreamConsumer {
    messaging::connect::client_config(&brokers())
        .expect("Kafka address")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("Kafka consumer")
}

pub fn partitions(topic: &str) -> i32 {
    let md = client("e2e-reader").fetch_metadata(Some(topic), TIMEOUT).expect("metadata");
    let t = &md.topics()[0];
    assert!(t.error().is_none() && !t.partitions().is_empty(), "topic {topic} does not exist");
    i32::try_from(t.partitions().len()).expect("partition count")
}

/// The high watermark (next offset) of every partition.
pub fn ends(topic: &str) -> Offsets {
    let c = client("e2e-reader");
    (0..partitions(topic)).map(|p| (p, c.fetch_watermarks(topic, p, TIMEOUT).expect("watermarks").1)).collect()
}

/// Every record of `topic` from `from` (partitions not named: from the beginning) up to the
/// high watermarks of now.
pub async fn read(topic: &str, from: &Offsets) -> Vec<Rec> {
    messaging::topic::read(&brokers(), topic, from, false, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// What `group` has committed on `topic` (partitions without a commit are left out). Asking
/// does not join the group, so the services' consumers are not disturbed.
pub fn committed(group: &str, topic: &str) -> Offsets {
    let c = client(group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions(topic) {
        tpl.add_partition(topic, p);
    }
    let tpl = c.committed_offsets(tpl, TIMEOUT).expect("committed offsets");
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// The stack's consumer groups and the topics each reads: the auditor's table
/// (`audit::load::settle::groups`), which waits for the same groups.
pub fn groups() -> impl Iterator<Item = (&'static str, &'static [schemas::Topic])> {
    audit::load::settle::groups()
}

/// Wait until every group reading `topic` has committed beyond `offsets` (the next offset to
/// read is at least the given one on each partition).
pub async fn wait_consumed(topic: &str, offsets: &Offsets, limit: Duration) {
    let start = Instant::now();
    for (group, _) in groups().filter(|(_, topics)| topics.iter().any(|t| t.name() == topic)) {
        loop {
            let done = committed(group, topic);
            let behind: Vec<_> = offsets.iter().filter(|(p, o)| done.get(p).is_none_or(|d| d < o)).collect();
            if behind.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "group {group} did not consume {topic} up to {behind:?} within {limit:?} (committed {done:?})"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
