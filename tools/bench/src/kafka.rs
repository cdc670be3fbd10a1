//! What the run wrote to Kafka: every topic's high watermarks before the load and after the
//! drain. One client answers both snapshots (making one costs a connection to the cluster,
//! about 0.1 s); its calls block, so callers run them on a blocking thread.

use crate::stats::per_order;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Each relay transaction writes one checkpoint record to this topic (partition 0).
pub const CHECKPOINT_TOPIC: &str = "outbox.checkpoints";
const TIMEOUT: Duration = Duration::from_secs(10);

/// High watermark of each partition, by topic.
pub type Marks = BTreeMap<String, BTreeMap<i32, i64>>;

pub struct Watermarks {
    consumer: BaseConsumer,
}

impl Watermarks {
    pub fn connect(brokers: &str) -> anyhow::Result<Self> {
        let consumer = messaging::connect::client_config(brokers)?
            // Only metadata and watermark queries: no subscription, so no group is joined
            // and nothing is committed; librdkafka still wants a group id to build a consumer.
            .set("group.id", "orders-bench.watermarks")
            .set("enable.auto.commit", "false")
            .create()
            .context("creating the Kafka client")?;
        Ok(Watermarks { consumer })
    }

    /// Every topic but Kafka's internal ones (`__…`). Blocking.
    pub fn snapshot(&self) -> anyhow::Result<Marks> {
        let md = self.consumer.fetch_metadata(None, TIMEOUT).context("Kafka metadata")?;
        let mut marks = Marks::new();
        for t in md.topics().iter().filter(|t| !t.name().starts_with("__")) {
            let partitions = marks.entry(t.name().to_owned()).or_default();
            for p in t.partitions() {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(t.name(), p.id(), TIMEOUT)
                    .with_context(|| format!("watermarks of {}/{}", t.name(), p.id()))?;
                partitions.insert(p.id(), high);
            }
        }
        Ok(marks)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicDelta {
    pub partitions: usize,
    /// Sum of the partitions' high watermarks.
    pub before: i64,
    pub after: i64,
    pub delta: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KafkaReport {
    /// Topics that grew; a topic created during the run counts from 0.
    pub topics: BTreeMap<String, TopicDelta>,
    pub total_delta: i64,
    pub delta_per_order: Option<f64>,
    /// Committed relay transactions: each adds one checkpoint record and one commit marker
    /// to `outbox.checkpoints`, so half its offset delta.
    pub transactions: i64,
    pub transactions_per_order: Option<f64>,
    /// When the second snapshot was taken: "audit" (after it, the read models having caught
    /// up, so trailing events are in) or "drain".
    pub measured_after: &'static str,
    pub note: &'static str,
}

/// The difference between two snapshots, per topic; `orders` (accepted) divides the totals.
pub fn compare(before: &Marks, after: &Marks, orders: u64, measured_after: &'static str) -> KafkaReport {
    let sum = |m: Option<&BTreeMap<i32, i64>>| m.map_or(0, |ps| ps.values().sum::<i64>());
    let topics: BTreeMap<String, TopicDelta> = after
        .iter()
        .map(|(name, parts)| {
            let (b, a) = (sum(before.get(name)), sum(Some(parts)));
            (name.clone(), TopicDelta { partitions: parts.len(), before: b, after: a, delta: a - b })
        })
        .filter(|(_, d)| d.delta != 0)
        .collect();
    let total_delta = topics.values().map(|d| d.delta).sum();
    let transactions = topics.get(CHECKPOINT_TOPIC).map_or(0, |d| d.delta / 2);
    let each = |x: i64| per_order(x as f64, orders);
    KafkaReport {
        topics,
        total_delta,
        delta_per_order: each(total_delta),
        transactions,
        transactions_per_order: each(transactions),
        measured_after,
        note: "offset deltas count records (and transaction control markers, where a producer uses \
               transactions: today's relays do not); transactions = outbox.checkpoints delta / 2, the checkpoint \
               record and commit marker of each transaction of a relay from before the relay stopped using them",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(entries: &[(&str, &[(i32, i64)])]) -> Marks {
        entries.iter().map(|(t, ps)| ((*t).to_owned(), ps.iter().copied().collect())).collect()
    }

    #[test]
    fn deltas_sum_partitions_count_new_topics_from_zero_and_skip_quiet_ones() {
        let before = marks(&[("order.events", &[(0, 10), (1, 20)]), ("quiet", &[(0, 5)])]);
        let after = marks(&[
            ("order.events", &[(0, 14), (1, 26)]),
            ("quiet", &[(0, 5)]),
            ("order.events.dlq", &[(0, 1)]),
            (CHECKPOINT_TOPIC, &[(0, 8)]),
        ]);
        let r = compare(&before, &after, 4, "drain");
        assert_eq!(r.topics["order.events"], TopicDelta { partitions: 2, before: 30, after: 40, delta: 10 });
        assert_eq!(r.topics["order.events.dlq"].delta, 1);
        assert!(!r.topics.contains_key("quiet"));
        assert_eq!(r.total_delta, 19);
        assert_eq!(r.delta_per_order, Some(4.75));
        assert_eq!(r.transactions, 4);
        assert_eq!(r.transactions_per_order, Some(1.0));
    }

    #[test]
    fn no_orders_means_no_per_order_figures() {
        let r = compare(&Marks::new(), &marks(&[("t", &[(0, 3)])]), 0, "drain");
        assert_eq!(r.delta_per_order, None);
        assert_eq!(r.transactions, 0);
    }
}
