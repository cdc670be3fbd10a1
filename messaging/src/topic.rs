//! Reading a topic between two points, detached from the client: from given offsets (the
//! beginning of partitions not named) up to the high watermarks of when the read starts. The one
//! way the DLQ tools, the auditor, the end-to-end tests and the relay's stress test read a topic
//! to its end.
//!
//! The end is found by the consumer's position, not by the last record seen, so a
//! `read_committed` read ends too where a partition closes with transaction markers or aborted
//! records that are never delivered.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Partition -> offset.
pub type Offsets = BTreeMap<i32, i64>;

/// How long one metadata request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One record as read, detached from the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn key_text(&self) -> Option<String> {
        self.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The record as the client's own type, e.g. for `consumer::Envelope::new`.
    pub fn to_message(&self, topic: &str) -> OwnedMessage {
        let headers = self
            .headers
            .iter()
            .fold(OwnedHeaders::new(), |hs, (key, value)| hs.insert(Header { key, value: value.as_deref() }));
        OwnedMessage::new(
            self.payload.clone(),
            self.key.clone(),
            topic.to_owned(),
            self.timestamp.map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
            self.partition,
            self.offset,
            Some(headers),
        )
    }

    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.timestamp.and_then(DateTime::<Utc>::from_timestamp_millis)
    }
}

/// A consumer that is only ever assigned partitions: it joins no group and commits nothing.
fn reader(brokers: &str, read_committed: bool) -> anyhow::Result<StreamConsumer> {
    crate::connect::client_config(brokers)?
        .set("group.id", "topic-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", if read_committed { "read_committed" } else { "read_uncommitted" })
        .create()
        .context("creating Kafka consumer")
}

/// Partition count of `topic`; an error if the topic does not exist.
pub async fn partitions(brokers: &str, topic: &str) -> anyhow::Result<i32> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let md = reader(&brokers, false)?
            .fetch_metadata(Some(&topic), TIMEOUT)
            .with_context(|| format!("metadata of {topic}"))?;
        let t = md.topics().first().with_context(|| format!("no metadata for {topic}"))?;
        match t.error() {
            None => Ok(i32::try_from(t.partitions().len())?),
            Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => {
                bail!("topic {topic} does not exist")
            }
            Some(e) => bail!("topic {topic}: {e:?}"),
        }
    })
    .await?
}

/// Every topic's name on the cluster, sorted.
pub async fn names(brokers: &str) -> anyhow::Result<Vec<String>> {
    Ok(partition_counts(brokers).await?.into_keys().collect())
}

/// Every topic of the cluster with its partition count, from one metadata request.
pub async fn partition_counts(brokers: &str) -> anyhow::Result<BTreeMap<String, i32>> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let md = reader(&brokers, false)?.fetch_metadata(None, TIMEOUT).context("listing topics")?;
        md.topics().iter().map(|t| Ok((t.name().to_owned(), i32::try_from(t.partitions().len())?))).collect()
    })
    .await?
}

/// The (low, high) watermarks of each partition of `topic`.
pub async fn watermarks(brokers: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let n = partitions(brokers, topic).await?;
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer = reader(&brokers, false)?;
        (0..n)
            .map(|p| {
                let marks = consumer
                    .fetch_watermarks(&topic, p, TIMEOUT)
                    .with_context(|| format!("watermarks of {topic}/{p}"))?;
                Ok((p, marks))
            })
            .collect()
    })
    .await?
}

/// Every record of `topic` from `from` (partitions not named: from the beginning) up to the high
/// watermarks of now, partition by partition in offset order; fails if that takes longer than
/// `patience`.
pub async fn read(
    brokers: &str,
    topic: &str,
    from: &Offsets,
    read_committed: bool,
    patience: Duration,
) -> anyhow::Result<Vec<Record>> {
    Ok(read_to(brokers, topic, from, read_committed, Limit::Total(patience)).await?.records)
}

/// What [`read_until_stalled`] got to.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    pub records: Vec<Record>,
    /// The partitions not read to their end: partition -> (the position reached, the end).
    pub unfinished: BTreeMap<i32, (i64, i64)>,
}

/// Like [`read`], but a read that gets no further for `stall` stops there and says which
/// partitions it did not finish instead of failing (an open transaction holds a `read_committed`
/// reader at its start until it ends or times out).
pub async fn read_until_stalled(
    brokers: &str,
    topic: &str,
    from: &Offsets,
    read_committed: bool,
    stall: Duration,
) -> anyhow::Result<Partial> {
    read_to(brokers, topic, from, read_committed, Limit::Stall(stall)).await
}

enum Limit {
    /// The whole read: an error past it.
    Total(Duration),
    /// Without progress: the read stops there.
    Stall(Duration),
}

async fn read_to(
    brokers: &str,
    topic: &str,
    from: &Offsets,
    read_committed: bool,
    limit: Limit,
) -> anyhow::Result<Partial> {
    let mut tpl = TopicPartitionList::new();
    let mut ends = Offsets::new();
    let mut starts = Offsets::new();
    for (p, (low, high)) in watermarks(brokers, topic).await? {
        let start = from.get(&p).copied().unwrap_or(low).max(low);
        if high > start {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            ends.insert(p, high);
            starts.insert(p, start);
        }
    }
    let mut out = Partial { records: Vec::new(), unfinished: BTreeMap::new() };
    if ends.is_empty() {
        return Ok(out);
    }
    let consumer = reader(brokers, read_committed)?;
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut progress = Instant::now();
    let mut reached = starts;
    while !ends.is_empty() {
        match limit {
            Limit::Total(patience) if started.elapsed() > patience => {
                bail!("reading {topic} did not reach the end within {patience:?} (partitions left: {ends:?})")
            }
            Limit::Stall(stall) if progress.elapsed() > stall => {
                out.unfinished = ends.iter().map(|(p, high)| (*p, (reached[p], *high))).collect();
                break;
            }
            _ => {}
        }
        match tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            Err(_) | Ok(Err(KafkaError::PartitionEOF(_))) => {}
            Ok(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            Ok(Ok(m)) => {
                if ends.get(&m.partition()).is_some_and(|high| m.offset() < *high) {
                    out.records.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers: m
                            .headers()
                            .map(|hs| hs.iter().map(|hd| (hd.key.to_owned(), hd.value.map(<[u8]>::to_vec))).collect())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        // The position moves over transaction markers and aborted records too.
        for e in consumer.position()?.elements_for_topic(topic) {
            let Offset::Offset(at) = e.offset() else { continue };
            if reached.get(&e.partition()).is_some_and(|r| at > *r) {
                reached.insert(e.partition(), at);
                progress = Instant::now();
            }
            if ends.get(&e.partition()).is_some_and(|high| at >= *high) {
                ends.remove(&e.partition());
            }
        }
    }
    out.records.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// One partition a consumer group has committed on.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPartition {
    pub topic: String,
    pub partition: i32,
    pub committed: i64,
    pub high_watermark: i64,
}

/// A consumer group as the brokers know it: its state, members and commits.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub state: String,
    pub members: usize,
    /// Partitions of the non-DLQ topics the group has committed on, by topic and partition.
    pub partitions: Vec<GroupPartition>,
}

/// Every consumer group with what it has committed on each partition of the topics it reads
/// (those not ending in `.dlq`) and the high watermarks. Asking joins no group.
pub async fn groups(brokers: &str) -> anyhow::Result<Vec<Group>> {
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let client = reader(&brokers, false)?;
        let list = client.fetch_group_list(None, TIMEOUT).context("listing consumer groups")?;
        let md = client.fetch_metadata(None, TIMEOUT).context("listing topics")?;
        let mut tpl = TopicPartitionList::new();
        for t in md.topics().iter().filter(|t| !t.name().ends_with(".dlq") && !t.name().starts_with("__")) {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
        let mut highs = BTreeMap::new();
        let mut out = Vec::new();
        for g in list.groups() {
            let asking: StreamConsumer = crate::connect::client_config(&brokers)?
                .set("group.id", g.name())
                .set("enable.auto.commit", "false")
                .create()
                .context("creating Kafka consumer")?;
            let committed = asking
                .committed_offsets(tpl.clone(), TIMEOUT)
                .with_context(|| format!("committed offsets of {}", g.name()))?;
            let mut partitions = Vec::new();
            for e in committed.elements() {
                let Offset::Offset(at) = e.offset() else { continue };
                let key = (e.topic().to_owned(), e.partition());
                let high = match highs.get(&key) {
                    Some(h) => *h,
                    None => {
                        let (_, h) = client
                            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
                            .with_context(|| format!("watermarks of {}/{}", e.topic(), e.partition()))?;
                        highs.insert(key, h);
                        h
                    }
                };
                partitions.push(GroupPartition {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                    committed: at,
                    high_watermark: high,
                });
            }
            partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            out.push(Group {
                name: g.name().to_owned(),
                state: g.state().to_owned(),
                members: g.members().len(),
                partitions,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_becomes_the_clients_message_whole() {
        let record = Record {
            partition: 2,
            offset: 41,
            timestamp: Some(1_765_000_000_000),
            key: Some(b"order-1".to_vec()),
            payload: Some(vec![0, 0, 0, 0, 7, 1]),
            headers: vec![("message-id".into(), Some(b"m-1".to_vec())), ("empty".into(), None)],
        };
        let m = record.to_message("order.events");
        assert_eq!((m.topic(), m.partition(), m.offset()), ("order.events", 2, 41));
        assert_eq!(m.key(), Some(&b"order-1"[..]));
        assert_eq!(m.payload(), Some(&[0, 0, 0, 0, 7, 1][..]));
        assert_eq!(m.timestamp().to_millis(), Some(1_765_000_000_000));
        let headers: Vec<(String, Option<Vec<u8>>)> = m
            .headers()
            .map(|hs| hs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default();
        assert_eq!(headers, record.headers);
    }
}
