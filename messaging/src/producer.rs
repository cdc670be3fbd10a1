//! The Kafka producer every part of the shop sends with: each record's delivery reported as a
//! future, like rdkafka's `FutureProducer`, by a thread that waits for reports in long windows.
//!
//! rdkafka 0.39's `FutureProducer` serves its reports from a thread that polls in 100 ms windows,
//! and every window ends in a busy loop: the time left is handed to librdkafka in whole
//! milliseconds, so for the last fraction of a millisecond it waits 0 ms, again and again until
//! the window is over. That costs about 9 ms of CPU per second per producer, sending or not, and
//! the stack runs a dozen (two in each service with an outbox: the relay's and the one for dead
//! letters). A report ends a wait as soon as it arrives, so the window's length only says how
//! often that tail comes: here once per [`WINDOW`], a tenth of the cost. (Waiting without any
//! tail would take librdkafka's queue callback, which is FFI, and the workspace forbids `unsafe`.)

use futures::channel::oneshot;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message as _, OwnedMessage, ToBytes};
use rdkafka::producer::future_producer::{Delivery, OwnedDeliveryResult};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, FutureRecord, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Resolves to the delivery report of one record (an error if the producer went away first).
pub type DeliveryFuture = oneshot::Receiver<OwnedDeliveryResult>;

/// How long one wait of the reporting thread lasts when no report ends it. Also how long a
/// dropped producer lives on at most, finishing its window before it purges what it still holds.
pub const WINDOW: Duration = Duration::from_secs(1);

/// A producer with delivery futures. Cheap to clone. When the last clone is dropped, the reporting
/// thread ends after its current window, and the producer with it (whatever it still holds is
/// purged, its futures answered, as with rdkafka's).
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

struct Reports;

// librdkafka's logs and errors go where rdkafka's default context sends them.
impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<oneshot::Sender<OwnedDeliveryResult>>;

    fn delivery(&self, result: &DeliveryResult<'_>, report: Self::DeliveryOpaque) {
        let owned = match result {
            Ok(m) => Ok(Delivery { partition: m.partition(), offset: m.offset(), timestamp: m.timestamp() }),
            Err((e, m)) => Err((e.clone(), m.detach())),
        };
        let _ = report.send(owned); // nobody waits for it any more
    }
}

struct Shared {
    base: Arc<BaseProducer<Reports>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Not joined: a drop does not wait out the thread's window (the thread holds the
        // producer until then, and drops it last).
        self.stop.store(true, Ordering::Release);
    }
}

impl Producer {
    /// A producer configured by `config`.
    pub fn create(config: &ClientConfig) -> KafkaResult<Self> {
        let base: Arc<BaseProducer<Reports>> = Arc::new(config.create_with_context(Reports)?);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new()
            .name("kafka-reports".into())
            .spawn({
                let (base, stop) = (base.clone(), stop.clone());
                move || {
                    while !stop.load(Ordering::Acquire) {
                        base.poll(WINDOW);
                    }
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("starting the delivery thread: {e}")))?;
        Ok(Self { shared: Arc::new(Shared { base, stop }) })
    }

    /// Queue `record`; its delivery report arrives through the future. A record librdkafka does
    /// not take (its queue is full, the record is invalid) is given back with the error.
    #[allow(clippy::result_large_err)] // as rdkafka's `send_result`: the record is handed back
    pub fn send_result<'a, K, P>(
        &self,
        record: FutureRecord<'a, K, P>,
    ) -> Result<DeliveryFuture, (KafkaError, FutureRecord<'a, K, P>)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (tx, rx) = oneshot::channel();
        let FutureRecord { topic, partition, payload, key, timestamp, headers } = record;
        let base = BaseRecord { topic, partition, payload, key, timestamp, headers, delivery_opaque: Box::new(tx) };
        match self.shared.base.send(base) {
            Ok(()) => Ok(rx),
            Err((e, r)) => Err((
                e,
                FutureRecord {
                    topic: r.topic,
                    partition: r.partition,
                    payload: r.payload,
                    key: r.key,
                    timestamp: r.timestamp,
                    headers: r.headers,
                },
            )),
        }
    }

    /// [`Producer::send_result`], trying again every 10 ms while librdkafka's queue is full: for
    /// up to `patience`, or for as long as it takes (`None`).
    #[allow(clippy::result_large_err)] // as `send_result`: the record is handed back
    pub async fn queue<'a, K, P>(
        &self,
        record: FutureRecord<'a, K, P>,
        patience: Option<Duration>,
    ) -> Result<DeliveryFuture, (KafkaError, FutureRecord<'a, K, P>)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let start = Instant::now();
        let mut record = record;
        loop {
            match self.send_result(record) {
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if patience.is_none_or(|p| start.elapsed() < p) =>
                {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    }

    /// Send `record` and wait for its delivery report; while librdkafka's queue is full, keep
    /// trying for up to `queue_timeout`.
    pub async fn send<K, P>(&self, record: FutureRecord<'_, K, P>, queue_timeout: Duration) -> OwnedDeliveryResult
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let topic = record.topic.to_owned();
        match self.queue(record, Some(queue_timeout)).await {
            Ok(delivery) => match delivery.await {
                Ok(report) => report,
                Err(_) => Err((KafkaError::Canceled, OwnedMessage::new(None, None, topic, NO_TIME, -1, 0, None))),
            },
            Err((e, back)) => {
                let message = OwnedMessage::new(
                    back.payload.map(|p| p.to_bytes().to_vec()),
                    back.key.map(|k| k.to_bytes().to_vec()),
                    topic,
                    NO_TIME,
                    back.partition.unwrap_or(-1),
                    0,
                    back.headers,
                );
                Err((e, message))
            }
        }
    }
}

const NO_TIME: rdkafka::Timestamp = rdkafka::Timestamp::NotAvailable;

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a broker, a record is still taken into librdkafka's queue, and dropping the
    /// producer answers its future (purged) instead of leaving it waiting forever.
    #[tokio::test]
    async fn dropping_the_producer_answers_what_it_still_held() {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:1").set("message.timeout.ms", "60000");
        let producer = Producer::create(&config).expect("producer");
        let delivery = producer.send_result(FutureRecord::<str, str>::to("nowhere").payload("x")).expect("queued");
        drop(producer);
        let answer = tokio::time::timeout(Duration::from_secs(10), delivery).await.expect("answered in time");
        match answer {
            Ok(Err((e, m))) => assert_eq!((m.topic(), m.payload()), ("nowhere", Some(&b"x"[..])), "{e}"),
            Ok(Ok(d)) => panic!("delivered without a broker: {d:?}"),
            Err(_) => {} // the report was dropped with the producer: the waiter is told too
        }
    }
}
