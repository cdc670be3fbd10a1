//! The event topics, from the beginning to the high watermarks of the moment the read starts,
//! with `read_committed` (what every consumer sees), decoded through the schema registry.

use crate::model::TopicRecord;
use anyhow::Context;
use messaging::consumer::Envelope;
use messaging::topic::{self, Record};
use schemas::headers as h;
use schemas::{Codec, DecodeError, Topic};
use std::time::Duration;

/// The records read, the envelopes of the decodable ones (for the replay), and the partitions
/// the read could not finish.
pub struct TopicContents {
    pub records: Vec<TopicRecord>,
    pub envelopes: Vec<Envelope>,
    pub short: Vec<String>,
}

/// Give up on partitions that get no further for this long (an open transaction holds a
/// `read_committed` reader at its start until it ends or times out).
const STALL: Duration = Duration::from_secs(30);

pub async fn read(brokers: &str, registry: &str, topics: &[Topic]) -> anyhow::Result<TopicContents> {
    let codec = Codec::new(registry).context("schema registry client")?;
    let mut contents = TopicContents { records: Vec::new(), envelopes: Vec::new(), short: Vec::new() };
    for topic in topics {
        // Up to the high watermarks of now: later records belong to a later audit.
        let read = topic::read_until_stalled(brokers, topic.name(), &topic::Offsets::new(), true, STALL)
            .await
            .with_context(|| format!("reading {}", topic.name()))?;
        for record in &read.records {
            decode(&codec, *topic, record, &mut contents).await?;
        }
        contents.short.extend(read.unfinished.iter().map(|(p, (at, high))| {
            format!("{}/{p} read up to offset {at} of {high} (an open transaction?)", topic.name())
        }));
    }
    contents.records.sort_by_key(|r| (r.topic, r.partition, r.offset));
    contents.envelopes.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    Ok(contents)
}

async fn decode(codec: &Codec, topic: Topic, r: &Record, contents: &mut TopicContents) -> anyhow::Result<()> {
    let payload = r.payload.as_deref().unwrap_or_default();
    let mut waited = Duration::ZERO;
    let message = loop {
        match codec.decode(payload).await {
            Err(e @ DecodeError::Unavailable(_)) if waited < Duration::from_secs(60) => {
                eprintln!("audit: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                waited += Duration::from_secs(1);
            }
            Err(e @ DecodeError::Unavailable(_)) => anyhow::bail!("decoding {}/{}: {e}", topic.name(), r.offset),
            other => break other.map_err(|e| e.to_string()),
        }
    };
    if let Ok(message) = &message {
        contents.envelopes.push(Envelope::new(&r.to_message(topic.name()), message.clone()));
    }
    contents.records.push(TopicRecord {
        topic,
        partition: r.partition,
        offset: r.offset,
        key: r.key_text(),
        message_id: r.header(h::MESSAGE_ID),
        aggregate_version: r.header(h::AGGREGATE_VERSION).and_then(|v| v.parse().ok()),
        message,
    });
    Ok(())
}
