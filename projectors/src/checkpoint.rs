//! The live projector's checkpoint: per topic-partition, the next offset to apply and when the
//! last applied event occurred. One document per partition in `readmodels.checkpoints`
//! (`_id: "<topic>/<partition>"`; topic names hold dots, which FerretDB refuses in keys).
//!
//! The consumer loop still commits Kafka offsets after the effect; the checkpoint is what
//! status and lag read. It is written from memory every [`FLUSH_EVERY`], not per event: a
//! checkpoint that trails the read model by a moment costs nothing (replays are idempotent),
//! a second write per event would halve the projector's throughput.
//! Every projection is fed by the same consumer, so a projection's position is the checkpoint
//! of the partitions of its topics ([`crate::topics_of`]).

use async_trait::async_trait;
use messaging::consumer::{Delivery, Envelope, Handler, HandlerError};
use mongodb::bson::{Document, doc};
use mongodb::{Client, Collection};
use readstore::readmodel::META_DB;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Collection of the live checkpoints in [`META_DB`].
pub const CHECKPOINTS: &str = "checkpoints";
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Where one partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The next offset to apply (last applied + 1).
    pub next: i64,
    /// Milliseconds since the epoch at which the last applied event occurred.
    pub occurred_at: i64,
}

#[derive(Clone)]
pub struct Checkpoints {
    coll: Collection<Document>,
}

impl Checkpoints {
    pub fn new(client: &Client) -> Self {
        Self { coll: client.database(META_DB).collection(CHECKPOINTS) }
    }

    pub async fn save(&self, topic: &str, partition: i32, at: Position) -> mongodb::error::Result<()> {
        let id = format!("{topic}/{partition}");
        let set = doc! {
            "topic": topic, "partition": partition, "next": at.next, "occurred_at": at.occurred_at,
            "updated_at": mongodb::bson::DateTime::now(),
        };
        // Never move backwards: a restarted projector may replay from an older Kafka commit.
        let filter = doc! { "_id": &id, "$or": [ { "next": { "$exists": false } }, { "next": { "$lt": at.next } } ] };
        match self.coll.update_one(filter, doc! { "$set": set }).upsert(true).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("E11000") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every stored partition position, by (topic, partition).
    pub async fn load(&self) -> mongodb::error::Result<HashMap<(String, i32), Position>> {
        use futures::TryStreamExt;
        let docs: Vec<Document> = self.coll.find(doc! {}).await?.try_collect().await?;
        Ok(docs
            .into_iter()
            .filter_map(|d| {
                let key = (d.get_str("topic").ok()?.to_owned(), d.get_i32("partition").ok()?);
                Some((key, Position { next: d.get_i64("next").ok()?, occurred_at: d.get_i64("occurred_at").ok()? }))
            })
            .collect())
    }
}

type Pending = Arc<Mutex<HashMap<(String, i32), Position>>>;

/// A handler that notes the position of every message its inner handler applied.
pub struct Checkpointed<H> {
    inner: H,
    pending: Pending,
}

/// Writes the noted positions every [`FLUSH_EVERY`], and once more on shutdown.
pub struct Flusher {
    store: Checkpoints,
    pending: Pending,
}

impl<H: Handler> Checkpointed<H> {
    pub fn new(inner: H, store: Checkpoints) -> (Self, Flusher) {
        let pending = Pending::default();
        (Self { inner, pending: pending.clone() }, Flusher { store, pending })
    }

    /// Note the positions after `applied` events (in the order received: the last of each
    /// partition is its position).
    fn applied<'a>(&self, applied: impl IntoIterator<Item = &'a Envelope>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for e in applied {
            pending.insert((e.topic.clone(), e.partition), Position { next: e.offset + 1, occurred_at: e.occurred_at });
        }
    }
}

#[async_trait]
impl<H: Handler> Handler for Checkpointed<H> {
    async fn handle(&self, e: &Envelope) -> Result<(), HandlerError> {
        self.inner.handle(e).await?;
        self.applied([e]);
        Ok(())
    }

    async fn handle_batch(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        self.inner.handle_batch(batch).await?;
        self.applied(batch.iter().map(|d| &d.envelope));
        Ok(())
    }
}

impl Flusher {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let stop = tokio::select! {
                () = shutdown.cancelled() => true,
                () = tokio::time::sleep(FLUSH_EVERY) => false,
            };
            self.flush().await;
            if stop {
                return;
            }
        }
    }

    async fn flush(&self) {
        let batch: Vec<_> = self.pending.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        for ((topic, partition), at) in batch {
            if let Err(e) = self.store.save(&topic, partition, at).await {
                tracing::warn!(error = %e, topic, partition, "saving checkpoint failed; next flush retries");
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).entry((topic, partition)).or_insert(at);
            }
        }
    }
}
