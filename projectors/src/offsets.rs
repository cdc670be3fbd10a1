//! Kafka offsets the status and the rebuild need: partitions, watermarks, and how many records
//! really lie between two offsets.
//!
//! The outbox relay writes the event topics in transactions, and every commit marker takes an
//! offset that no consumer ever sees. So "high watermark − next offset" overstates the lag
//! (it is never 0 after a transaction); [`records_between`] counts what a read_committed
//! consumer would actually deliver.

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// (topic, partition).
pub type Tp = (String, i32);

const TIMEOUT: Duration = Duration::from_secs(10);
/// Ranges longer than this are not read to count them: the offset difference is close enough.
const MAX_SCAN: i64 = 5_000;

fn consumer(brokers: &str) -> anyhow::Result<BaseConsumer> {
    messaging::connect::client_config(brokers)?
        // Partitions are assigned, never subscribed: no group is joined, nothing is committed.
        .set("group.id", "projectors.offsets")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating Kafka consumer")
}

/// A client for partition and watermark queries. Making one costs a connection to the cluster
/// (about 0.1 s); once connected, a query takes a few milliseconds. So whoever asks often
/// (the rebuild) keeps one. Blocking.
pub struct Offsets {
    consumer: BaseConsumer,
}

impl Offsets {
    pub fn connect(brokers: &str) -> anyhow::Result<Self> {
        Ok(Self { consumer: consumer(brokers)? })
    }

    /// Every partition of `topics`.
    pub fn partitions(&self, topics: &[&str]) -> anyhow::Result<Vec<Tp>> {
        let mut out = Vec::new();
        for topic in topics {
            let md =
                self.consumer.fetch_metadata(Some(topic), TIMEOUT).with_context(|| format!("metadata of {topic}"))?;
            for t in md.topics() {
                anyhow::ensure!(t.error().is_none(), "topic {topic}: {:?}", t.error());
                out.extend(t.partitions().iter().map(|p| ((*topic).to_owned(), p.id())));
            }
        }
        out.sort();
        Ok(out)
    }

    /// (low, high) watermark of each partition.
    pub fn watermarks(&self, tps: &[Tp]) -> anyhow::Result<BTreeMap<Tp, (i64, i64)>> {
        tps.iter()
            .map(|(t, p)| {
                let w =
                    self.consumer.fetch_watermarks(t, *p, TIMEOUT).with_context(|| format!("watermarks of {t}/{p}"))?;
                Ok(((t.clone(), *p), w))
            })
            .collect()
    }
}

/// For each (partition, from, to): the committed records in `[from, to)`, read with a
/// throwaway consumer; ranges over [`MAX_SCAN`] (or not read within the time limit) count
/// their offsets instead. Blocking.
pub fn records_between(brokers: &str, ranges: &[(Tp, i64, i64)]) -> anyhow::Result<BTreeMap<Tp, i64>> {
    let mut out: BTreeMap<Tp, i64> = ranges.iter().map(|(tp, from, to)| (tp.clone(), (to - from).max(0))).collect();
    let scan: Vec<_> = ranges.iter().filter(|(_, from, to)| to > from && to - from <= MAX_SCAN).collect();
    if scan.is_empty() {
        return Ok(out);
    }
    let c = consumer(brokers)?;
    let mut assignment = TopicPartitionList::new();
    for ((t, p), from, _) in &scan {
        assignment.add_partition_offset(t, *p, Offset::Offset(*from))?;
    }
    c.assign(&assignment)?;
    let mut counts: BTreeMap<Tp, i64> = scan.iter().map(|(tp, _, _)| (tp.clone(), 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let positions = c.position()?;
        let done = scan.iter().all(|((t, p), _, to)| {
            matches!(positions.find_partition(t, *p).map(|e| e.offset()), Some(Offset::Offset(n)) if n >= *to)
        });
        if done {
            out.extend(counts);
            return Ok(out);
        }
        if Instant::now() > deadline {
            return Ok(out);
        }
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            use rdkafka::Message as _;
            let key = (m.topic().to_owned(), m.partition());
            if let Some((_, _, to)) = scan.iter().find(|(tp, _, _)| *tp == key)
                && m.offset() < *to
            {
                *counts.entry(key).or_default() += 1;
            }
        }
    }
}

/// The offsets consumer group `group` has committed (partitions without a commit are left
/// out). Reading them joins nothing. Blocking.
pub fn committed(brokers: &str, group: &str, tps: &[Tp]) -> anyhow::Result<BTreeMap<Tp, i64>> {
    let c: BaseConsumer = messaging::connect::client_config(brokers)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating Kafka consumer")?;
    let mut list = TopicPartitionList::new();
    for (t, p) in tps {
        list.add_partition(t, *p);
    }
    let list = c.committed_offsets(list, TIMEOUT).with_context(|| format!("committed offsets of {group}"))?;
    Ok(list
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(n) => Some(((e.topic().to_owned(), e.partition()), n)),
            _ => None,
        })
        .collect())
}
