//! The one consumer loop: decode -> handle -> store offset (committed after the effect).
//!
//! - Under load the loop takes what is already waiting (up to [`ConsumerConfig::max_batch`]
//!   messages; by default never waiting for more, or for up to [`ConsumerConfig::linger`] where
//!   a consumer trades that much latency for larger batches) and gives it to
//!   [`Handler::handle_batch`] at once, in the order received, so a handler can apply it in one
//!   transaction. If the batch fails as a whole, each of its messages is handled again on its own through [`Handler::handle`], with
//!   the retries and the DLQ below (handlers are idempotent, so what the batch did is not done
//!   twice).
//! - Transient handler errors are retried with exponential backoff; after `max_attempts` the
//!   message is parked on `<topic>.dlq` with the error, attempts and original coordinates.
//! - Undecodable payloads (not Avro, unknown schema id, unknown record, invalid content) go to
//!   the DLQ at once. The partition keeps moving either way.
//! - Handlers must be idempotent (the domain decides nothing on repeats, or an inbox row is
//!   written in the effect's transaction): Kafka delivers at least once.

use crate::kafka;
use crate::outbox::Metadata;
use crate::producer::Producer;
use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::statistics::Statistics;
use runtime::metrics::{self, Outcome};
use schemas::headers as h;
use schemas::{Codec, DecodeError, Message, Topic};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A decoded message with its headers and coordinates.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub message: Message,
    pub message_id: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub traceparent: Option<String>,
    pub aggregate_version: Option<i64>,
    /// Milliseconds since the epoch at which the event was recorded (or the Kafka timestamp).
    pub occurred_at: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Envelope {
    /// `message` with id `message_id` as if it had been read from its topic with no other
    /// headers, at offset 0: what a handler is given in a test that calls it directly.
    pub fn unsent(message: Message, message_id: impl Into<String>) -> Self {
        Envelope {
            topic: message.topic().name().to_owned(),
            message,
            message_id: message_id.into(),
            correlation_id: None,
            causation_id: None,
            traceparent: None,
            aggregate_version: None,
            occurred_at: 0,
            partition: 0,
            offset: 0,
        }
    }

    /// The decoded `message` of record `m`, with its headers and coordinates. Public so that
    /// other readers of the topics (the projectors' rebuild) build envelopes the same way.
    pub fn new<M: rdkafka::Message>(m: &M, message: Message) -> Self {
        Envelope {
            message,
            message_id: header(m, h::MESSAGE_ID)
                .unwrap_or_else(|| format!("{}/{}/{}", m.topic(), m.partition(), m.offset())),
            correlation_id: header(m, h::CORRELATION_ID),
            causation_id: header(m, h::CAUSATION_ID),
            traceparent: header(m, h::TRACEPARENT),
            aggregate_version: header(m, h::AGGREGATE_VERSION).and_then(|v| v.parse().ok()),
            occurred_at: header(m, h::OCCURRED_AT)
                .and_then(|v| v.parse().ok())
                .or_else(|| m.timestamp().to_millis())
                .unwrap_or_default(),
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
        }
    }

    /// Metadata for messages caused by this one. Their `traceparent` is the current span's (the
    /// handler runs in a consumer span that continues this message's trace), else this one's.
    pub fn caused_metadata(&self) -> Metadata {
        let mut m = Metadata::new();
        m.insert(h::CAUSATION_ID.into(), self.message_id.clone());
        if let Some(c) = &self.correlation_id {
            m.insert(h::CORRELATION_ID.into(), c.clone());
        }
        if let Some(t) = runtime::telemetry::current_traceparent().or_else(|| self.traceparent.clone()) {
            m.insert(h::TRACEPARENT.into(), t);
        }
        m
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying (database or network trouble, a concurrent write).
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// Will never succeed: park it.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<anyhow::Error> for HandlerError {
    fn from(e: anyhow::Error) -> Self {
        HandlerError::Transient(e)
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        HandlerError::Transient(e.into())
    }
}

/// A decoded message of a batch, with the span it is handled in (a child of its producer's).
pub struct Delivery {
    pub envelope: Envelope,
    pub span: tracing::Span,
}

#[async_trait]
pub trait Handler: Send + Sync {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError>;

    /// Handle what was waiting, in order (messages of one key keep their order). All or nothing
    /// as far as the caller can tell: on an error the loop hands every message of the batch to
    /// [`Handler::handle`] again, one by one. The default does just that in the first place.
    async fn handle_batch(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        in_order(self, batch).await
    }
}

/// Each delivery through [`Handler::handle`], in its span, one after the other.
pub async fn in_order<'a, H: Handler + ?Sized>(
    handler: &H,
    deliveries: impl IntoIterator<Item = &'a Delivery>,
) -> Result<(), HandlerError> {
    for d in deliveries {
        handler.handle(&d.envelope).instrument(d.span.clone()).await?;
    }
    Ok(())
}

/// [`Handler::handle_batch`] for handlers whose keys are independent (one aggregate per key,
/// as on the command topics): each key's messages in order, the keys at once. The event store
/// settles any race between keys; the database commits them together.
pub async fn per_key<'a, H: Handler + ?Sized>(
    handler: &H,
    batch: impl IntoIterator<Item = &'a Delivery>,
) -> Result<(), HandlerError> {
    let runs = by_key(batch).into_iter().map(|list| in_order(handler, list));
    futures::future::join_all(runs).await.into_iter().collect()
}

/// A batch's deliveries grouped by key, each group in the batch's order, the groups in the order
/// of their first delivery.
pub fn by_key<'a>(batch: impl IntoIterator<Item = &'a Delivery>) -> Vec<Vec<&'a Delivery>> {
    let mut keys: Vec<(&str, Vec<&Delivery>)> = Vec::new();
    for d in batch {
        let key = d.envelope.message.key();
        match keys.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(d),
            None => keys.push((key, vec![d])),
        }
    }
    keys.into_iter().map(|(_, list)| list).collect()
}

pub struct ConsumerConfig {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<Topic>,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// Put before every topic name, so tests can consume topics of their own.
    pub topic_prefix: String,
    /// The most messages handed to [`Handler::handle_batch`] at once.
    pub max_batch: usize,
    /// How long a batch may wait for more messages after its first. Zero (the default): only
    /// what has already been fetched is taken, a batch never waits to fill up.
    pub linger: Duration,
    /// How long the broker may hold a fetch to gather records (`fetch.wait.max.ms`, with a
    /// `fetch.min.bytes` of [`GATHER_MIN_BYTES`]): a consumer then sends about one fetch per
    /// window however many records arrive in it, and a window's records come as one batch, where
    /// a fetch answered at once brings each record or burst on its own. It costs each record up to
    /// the window in latency, and an idle consumer one fetch per window. Zero (the default): the
    /// broker answers as soon as a record is there.
    pub fetch_wait: Duration,
}

/// The `fetch.min.bytes` of a consumer with a [`ConsumerConfig::fetch_wait`]: more than a window
/// holds at the loads the stack is built for, so the window, not the size, ends a fetch, except
/// for a backlog, which is fetched at once.
pub const GATHER_MIN_BYTES: &str = "1048576";

impl ConsumerConfig {
    pub fn new(brokers: &str, group_id: impl Into<String>, topics: &[Topic]) -> Self {
        Self {
            brokers: brokers.to_owned(),
            group_id: group_id.into(),
            topics: topics.to_vec(),
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            topic_prefix: String::new(),
            max_batch: 256,
            linger: Duration::ZERO,
            fetch_wait: Duration::ZERO,
        }
    }
}

/// How often librdkafka reports its statistics, consumer lag among them.
const LAG_SAMPLE_MS: &str = "5000";

/// Turns librdkafka's periodic statistics into the consumer lag gauge: the lag is computed by
/// librdkafka from the fetched high watermark, so it costs no broker round trip.
struct LagReporter {
    group: String,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        let mut sent: BTreeMap<&str, i64> = BTreeMap::new();
        for broker in statistics.brokers.values() {
            for (request, n) in &broker.req {
                *sent.entry(request).or_default() += n;
            }
        }
        for (request, n) in sent.into_iter().filter(|(_, n)| *n > 0) {
            metrics::consumer_kafka_requests(&self.group, &statistics.name, request, n as u64);
        }
        for (topic, t) in &statistics.topics {
            // Partition -1 is librdkafka's internal one; a lag of -1 means not known yet.
            for p in t.partitions.values().filter(|p| p.partition >= 0 && p.consumer_lag >= 0) {
                metrics::consumer_lag(&self.group, topic, p.partition, p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for LagReporter {}

fn header<M: rdkafka::Message>(m: &M, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|hd| hd.key == name)
        .and_then(|hd| hd.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// See `queued.max.messages.kbytes` in [`run`].
const PREFETCH_KIB: &str = "8192";

/// Run the loop until `shutdown` resolves; commits the stored offsets on the way out.
pub async fn run(
    config: ConsumerConfig,
    codec: Arc<Codec>,
    producer: Producer,
    handler: Arc<dyn Handler>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut client = crate::connect::client_config(&config.brokers)?;
    if !config.fetch_wait.is_zero() {
        client
            .set("fetch.wait.max.ms", config.fetch_wait.as_millis().to_string())
            .set("fetch.min.bytes", GATHER_MIN_BYTES);
    }
    let consumer: StreamConsumer<LagReporter> = client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("statistics.interval.ms", LAG_SAMPLE_MS)
        // Prefetched records held per consumer (librdkafka's default is 64 MiB): a consumer far
        // behind keeps this much in memory, not more; a batch is at most `max_batch` records anyway.
        .set("queued.max.messages.kbytes", PREFETCH_KIB)
        .create_with_context(LagReporter { group: config.group_id.clone() })?;
    let names: Vec<String> = config.topics.iter().map(|t| format!("{}{}", config.topic_prefix, t.name())).collect();
    consumer.subscribe(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
    tracing::info!(group = %config.group_id, topics = ?names, "consumer started");
    tokio::pin!(shutdown);
    loop {
        let first = tokio::select! {
            () = &mut shutdown => break,
            m = consumer.recv() => m,
        };
        let mut batch = match first {
            Ok(m) => vec![m],
            Err(e) => {
                tracing::warn!(error = %e, "kafka receive error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Whatever librdkafka has already fetched joins the batch, and what arrives while the
        // batch lingers.
        let until = tokio::time::Instant::now() + config.linger;
        while batch.len() < config.max_batch {
            let next = match consumer.recv().now_or_never() {
                Some(m) => Some(m),
                None if config.linger.is_zero() => None,
                None => tokio::time::timeout_at(until, consumer.recv()).await.ok(),
            };
            match next {
                Some(Ok(m)) => batch.push(m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    break;
                }
                None => break,
            }
        }
        metrics::consumer_batch(&config.group_id);
        process_batch(&config, &codec, &producer, handler.as_ref(), &batch).await;
        for m in &batch {
            if let Err(e) = consumer.store_offset_from_message(m) {
                tracing::warn!(error = %e, "storing offset failed");
            }
        }
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    tracing::info!(group = %config.group_id, "consumer stopped");
    Ok(())
}

/// The span a message is handled in (all its attempts): a child of the span that produced it,
/// as named by its `traceparent` header.
fn consumer_span(group: &str, m: &BorrowedMessage<'_>) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "consume",
        otel.name = %format_args!("consume {}", m.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = m.topic(),
        messaging.consumer.group.name = group,
        messaging.kafka.offset = m.offset(),
        record = Empty,
        trace_id = Empty,
        span_id = Empty,
        correlation_id = Empty,
    );
    for (field, name) in [("record", h::RECORD), ("correlation_id", h::CORRELATION_ID)] {
        if let Some(value) = header(m, name) {
            span.record(field, value);
        }
    }
    let parent = runtime::telemetry::context_from_traceparent(header(m, h::TRACEPARENT).as_deref());
    runtime::telemetry::adopt(&span, parent);
    span
}

/// A batch of more than one is decoded and given to the handler at once; a batch of one, or
/// one whose decoding or handling fails, goes message by message through [`process`].
async fn process_batch(
    config: &ConsumerConfig,
    codec: &Codec,
    producer: &Producer,
    handler: &dyn Handler,
    batch: &[BorrowedMessage<'_>],
) {
    if batch.len() > 1 && handled_at_once(config, codec, handler, batch).await {
        return;
    }
    for m in batch {
        let span = consumer_span(&config.group_id, m);
        process(config, codec, producer, handler, m).instrument(span).await;
    }
}

/// Whether [`Handler::handle_batch`] took the whole batch. An undecodable message (or an
/// unreachable registry) leaves it to the per-message path, which parks or retries it.
async fn handled_at_once(
    config: &ConsumerConfig,
    codec: &Codec,
    handler: &dyn Handler,
    batch: &[BorrowedMessage<'_>],
) -> bool {
    let mut deliveries = Vec::with_capacity(batch.len());
    for m in batch {
        let Ok(message) = codec.decode(m.payload().unwrap_or_default()).await else {
            return false;
        };
        deliveries.push(Delivery { envelope: Envelope::new(m, message), span: consumer_span(&config.group_id, m) });
    }
    if let Err(e) = handler.handle_batch(&deliveries).await {
        tracing::warn!(group = %config.group_id, messages = batch.len(), error = %e, "batch failed; handling its messages one by one");
        return false;
    }
    for m in batch {
        metrics::consumed(&config.group_id, m.topic(), Outcome::Handled);
    }
    true
}

async fn process(
    config: &ConsumerConfig,
    codec: &Codec,
    producer: &Producer,
    handler: &dyn Handler,
    m: &BorrowedMessage<'_>,
) {
    let payload = m.payload().unwrap_or_default();
    let mut attempt: u32 = 0;
    let mut backoff = config.initial_backoff;
    loop {
        attempt += 1;
        let outcome = match codec.decode(payload).await {
            Ok(message) => {
                let envelope = Envelope::new(m, message);
                handler.handle(&envelope).await
            }
            Err(e @ DecodeError::Unavailable(_)) => Err(HandlerError::Transient(e.into())),
            Err(e) => Err(HandlerError::Permanent(e.to_string())),
        };
        let counted = |outcome| metrics::consumed(&config.group_id, m.topic(), outcome);
        match outcome {
            Ok(()) => {
                counted(Outcome::Handled);
                return;
            }
            Err(HandlerError::Permanent(reason)) => {
                park(producer, m, &reason, attempt).await;
                counted(Outcome::Parked);
                return;
            }
            Err(HandlerError::Transient(e)) if attempt >= config.max_attempts => {
                park(producer, m, &format!("{e:#}"), attempt).await;
                counted(Outcome::Parked);
                return;
            }
            Err(HandlerError::Transient(e)) => {
                counted(Outcome::Retried);
                tracing::warn!(topic = m.topic(), offset = m.offset(), attempt, error = format!("{e:#}"), "retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Put a message on `<topic>.dlq` with why and where it came from. Retries until Kafka takes
/// it: a message is never dropped.
async fn park(producer: &Producer, m: &BorrowedMessage<'_>, reason: &str, attempts: u32) {
    let dlq = format!("{}.dlq", m.topic());
    tracing::error!(
        topic = m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        reason,
        "parking message on {dlq}"
    );
    loop {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(headers) = m.headers() {
            for hd in headers.iter() {
                if let Some(v) = hd.value {
                    pairs.push((hd.key, String::from_utf8_lossy(v).into_owned()));
                }
            }
        }
        pairs.extend([
            (h::DLQ_ERROR, reason.to_owned()),
            (h::DLQ_ATTEMPTS, attempts.to_string()),
            (h::DLQ_TOPIC, m.topic().to_owned()),
            (h::DLQ_PARTITION, m.partition().to_string()),
            (h::DLQ_OFFSET, m.offset().to_string()),
        ]);
        let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        let payload = m.payload().unwrap_or_default();
        match kafka::send(producer, &dlq, &key, payload, kafka::to_headers(pairs)).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "DLQ produce failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
