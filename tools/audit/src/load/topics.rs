//! The event topics, from the beginning to the high watermarks of the moment the read starts,
//! with `read_committed` (what every consumer sees), decoded through the schema registry.

use crate::model::TopicRecord;
use anyhow::Context;
use messaging::consumer::Envelope;
use projectors::offsets::{Offsets, Tp, records_between};
use rdkafka::Message as _;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, OwnedMessage};
use schemas::headers as h;
use schemas::{Codec, DecodeError, Topic};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The records read, the envelopes of the decodable ones (for the replay), and the partitions
/// the read could not finish.
pub struct TopicContents {
    pub records: Vec<TopicRecord>,
    pub envelopes: Vec<Envelope>,
    pub short: Vec<String>,
}

/// Give up on partitions that deliver nothing for this long (an open transaction holds a
/// `read_committed` reader at its start until it ends or times out).
const STALL: Duration = Duration::from_secs(30);

pub async fn read(brokers: &str, registry: &str, topics: &[Topic]) -> anyhow::Result<TopicContents> {
    let codec = Codec::new(registry).context("schema registry client")?;
    let names: Vec<String> = topics.iter().map(|t| t.name().to_owned()).collect();
    let marks = {
        let brokers = brokers.to_owned();
        tokio::task::spawn_blocking(move || {
            let offsets = Offsets::connect(&brokers)?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let tps = offsets.partitions(&names)?;
            offsets.watermarks(&tps)
        })
        .await??
    };
    // Up to the high watermark of now: later records belong to a later audit.
    let mut goal: BTreeMap<Tp, i64> =
        marks.iter().filter(|(_, (low, high))| high > low).map(|(tp, (_, high))| (tp.clone(), *high)).collect();
    let start: BTreeMap<Tp, i64> =
        marks.iter().filter(|(tp, _)| goal.contains_key(*tp)).map(|(tp, (low, _))| (tp.clone(), *low)).collect();
    let mut contents = TopicContents { records: Vec::new(), envelopes: Vec::new(), short: Vec::new() };
    if goal.is_empty() {
        return Ok(contents);
    }
    let consumer = projectors::rebuild::replay_consumer(brokers, &start)?;
    let mut last_progress = Instant::now();
    let mut idle_since = Instant::now();
    while !goal.is_empty() {
        match tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await {
            Ok(Ok(m)) => {
                let m = m.detach();
                let (tp, offset) = ((m.topic().to_owned(), m.partition()), m.offset());
                if let Some(high) = goal.get(&tp).copied() {
                    if offset < high {
                        decode(&codec, m, &mut contents).await?;
                        last_progress = Instant::now();
                        idle_since = Instant::now();
                    }
                    if offset + 1 >= high {
                        goal.remove(&tp);
                    }
                }
            }
            Ok(Err(e)) => anyhow::bail!("reading the event topics: {e}"),
            Err(_) => {}
        }
        // Positions step over transaction markers, which are never delivered.
        if let Ok(positions) = consumer.position() {
            for e in positions.elements() {
                let tp = (e.topic().to_owned(), e.partition());
                if let (rdkafka::Offset::Offset(n), Some(high)) = (e.offset(), goal.get(&tp))
                    && n >= *high
                {
                    goal.remove(&tp);
                }
            }
        }
        if !goal.is_empty() && idle_since.elapsed() > Duration::from_secs(1) {
            // What is left may be markers only: count the records really there.
            let open: Vec<(Tp, i64, i64)> = goal
                .iter()
                .map(|(tp, high)| (tp.clone(), position_of(&consumer, tp).unwrap_or(start[tp]), *high))
                .collect();
            let brokers = brokers.to_owned();
            let counts = tokio::task::spawn_blocking(move || records_between(&brokers, &open)).await??;
            goal.retain(|tp, _| counts.get(tp).is_none_or(|n| *n > 0));
            idle_since = Instant::now();
        }
        if last_progress.elapsed() > STALL {
            contents.short = goal
                .iter()
                .map(|((t, p), high)| {
                    let at = position_of(&consumer, &(t.clone(), *p)).unwrap_or(start[&(t.clone(), *p)]);
                    format!("{t}/{p} read up to offset {at} of {high} (an open transaction?)")
                })
                .collect();
            break;
        }
    }
    contents.records.sort_by_key(|r| (r.topic, r.partition, r.offset));
    contents.envelopes.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    Ok(contents)
}

fn position_of(consumer: &impl Consumer, tp: &Tp) -> Option<i64> {
    let positions = consumer.position().ok()?;
    match positions.find_partition(&tp.0, tp.1)?.offset() {
        rdkafka::Offset::Offset(n) => Some(n),
        _ => None,
    }
}

fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    let headers = m.headers()?;
    headers.iter().find(|x| x.key == name).and_then(|x| x.value).map(|v| String::from_utf8_lossy(v).into_owned())
}

async fn decode(codec: &Codec, m: OwnedMessage, contents: &mut TopicContents) -> anyhow::Result<()> {
    let topic = Topic::parse(m.topic()).with_context(|| format!("unexpected topic {}", m.topic()))?;
    let payload = m.payload().unwrap_or_default();
    let mut waited = Duration::ZERO;
    let message = loop {
        match codec.decode(payload).await {
            Err(e @ DecodeError::Unavailable(_)) if waited < Duration::from_secs(60) => {
                eprintln!("audit: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                waited += Duration::from_secs(1);
            }
            Err(e @ DecodeError::Unavailable(_)) => anyhow::bail!("decoding {}/{}: {e}", m.topic(), m.offset()),
            other => break other.map_err(|e| e.to_string()),
        }
    };
    if let Ok(message) = &message {
        contents.envelopes.push(Envelope::new(&m, message.clone()));
    }
    contents.records.push(TopicRecord {
        topic,
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        message_id: header(&m, h::MESSAGE_ID),
        aggregate_version: header(&m, h::AGGREGATE_VERSION).and_then(|v| v.parse().ok()),
        message,
    });
    Ok(())
}
