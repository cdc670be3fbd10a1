//! Adapter from [`domain::Aggregate`] (pure decide/apply) to cqrs-es, persisted in postgres-es's
//! table layout by [`crate::pg_store`].
//! `handle` only writes `decide`'s events to the sink. Stored events reach Kafka through the
//! outbox trigger (see `migrations/event_store/`), never from here.

use crate::gather;
use crate::pg_store::{self, PgEventStore};
use cqrs_es::{AggregateError, CqrsFramework};
use domain::{Aggregate, DomainEvent};
use messaging::consumer::{Delivery, Envelope, Handler, HandlerError};
use messaging::outbox::Metadata;
use runtime::http::ApiError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashSet;
use std::marker::PhantomData;

/// A domain aggregate as cqrs-es sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Es<A>(pub A);

/// A domain event as cqrs-es sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EsEvent<E>(pub E);

impl<E: DomainEvent> cqrs_es::DomainEvent for EsEvent<E> {
    fn event_type(&self) -> String {
        self.0.event_type().to_owned()
    }
    fn event_version(&self) -> String {
        self.0.event_version().to_owned()
    }
}

/// Rejection carried through cqrs-es.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Rejected<E: std::error::Error>(pub E);

impl<A: Aggregate + 'static> cqrs_es::Aggregate for Es<A> {
    const TYPE: &'static str = A::TYPE;
    type Command = A::Command;
    type Event = EsEvent<A::Event>;
    type Error = Rejected<A::Error>;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &(),
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        // The sink applies each event to the aggregate it is given. Give it a scratch copy:
        // cqrs-es 0.5 applies the committed events to this aggregate once more when it writes a
        // snapshot, so mutating `self` here would store snapshots with every event twice.
        let mut scratch = self.clone();
        for event in self.0.decide(command).map_err(Rejected)? {
            sink.write(EsEvent(event), &mut scratch).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.0.apply(event.0);
    }
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The domain said no: a 4xx for the caller.
    #[error(transparent)]
    Rejected(E),
    /// Someone else wrote the same aggregate meanwhile: retry or 409.
    #[error("concurrent update of the same aggregate")]
    Conflict,
    /// The command's [`pg_store::Guard`] row was stored already: nothing was written.
    #[error("already done under the same guard")]
    Guarded,
    /// Database or serialization trouble.
    #[error("event store: {0}")]
    Infrastructure(String),
}

impl<E: std::error::Error> From<AggregateError<Rejected<E>>> for CommandError<E> {
    fn from(e: AggregateError<Rejected<E>>) -> Self {
        match e {
            AggregateError::UserError(Rejected(e)) => CommandError::Rejected(e),
            AggregateError::AggregateConflict => CommandError::Conflict,
            other => CommandError::Infrastructure(other.to_string()),
        }
    }
}

/// How a command's failure answers an HTTP request.
impl<E: std::error::Error> From<CommandError<E>> for ApiError {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected(e) => ApiError::unprocessable(e.to_string()),
            CommandError::Conflict => ApiError::conflict("concurrent update, please retry"),
            CommandError::Guarded => ApiError::conflict("this request was made before"),
            CommandError::Infrastructure(cause) => ApiError::internal(cause),
        }
    }
}

tokio::task_local! {
    /// The messages of the batch being handled ([`EventStoreOf::per_key`]) whose inbox rows
    /// were looked up together, and not found.
    static UNHANDLED: HashSet<String>;
}

pub struct EventStoreOf<A: Aggregate + 'static> {
    cqrs: CqrsFramework<Es<A>, PgEventStore<Es<A>>>,
    store: PgEventStore<Es<A>>,
    pool: PgPool,
    _a: PhantomData<A>,
}

impl<A: Aggregate + 'static> EventStoreOf<A> {
    /// An event store without snapshots: every load replays the whole stream.
    pub fn new(pool: PgPool) -> Self {
        Self::with_snapshots(pool, 0)
    }

    /// With `every > 0`, a snapshot of the aggregate is written (in the events' transaction)
    /// every `every` events, and loads start from the latest snapshot.
    pub fn with_snapshots(pool: PgPool, every: usize) -> Self {
        let store = PgEventStore::new(pool.clone(), every);
        let cqrs = CqrsFramework::new(store.clone(), vec![], ());
        Self { cqrs, store, pool, _a: PhantomData }
    }

    /// Execute a command; a conflicting concurrent write is retried a few times (the command
    /// is decided again on the fresh state), then reported. A conflict wrote nothing (the
    /// store's write is one statement, or one transaction with the snapshot), so a retry
    /// cannot apply the command twice.
    pub async fn execute(&self, id: &str, command: A::Command, metadata: Metadata) -> Result<(), CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut metadata = metadata;
        // The events carry the trace of the span that caused them to Kafka (see the outbox).
        runtime::telemetry::stamp(&mut metadata);
        if let Some(correlation) = metadata.get(schemas::headers::CORRELATION_ID) {
            runtime::telemetry::record_correlation(correlation);
        }
        let mut attempt = 0;
        loop {
            let cached = self.store.is_cached(id);
            match self.cqrs.execute_with_metadata(id, command.clone(), metadata.clone()).await {
                Ok(()) => return Ok(()),
                // Decided on the cached state, which another process may have moved on from:
                // a rejection counts only when a fresh load decides it too.
                Err(AggregateError::UserError(_)) if cached => self.store.forget(id),
                Err(AggregateError::AggregateConflict) if pg_store::current_guard().is_some_and(|g| g.taken()) => {
                    return Err(CommandError::Guarded);
                }
                Err(AggregateError::AggregateConflict) => {
                    if attempt >= 5 {
                        return Err(CommandError::Conflict);
                    }
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`EventStoreOf::execute`] on an aggregate whose id this process just made up (a fresh
    /// UUID): its empty state is not read from the database first.
    pub async fn execute_new(
        &self,
        id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<(), CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        self.store.assume_new(id);
        self.execute(id, command, metadata).await
    }

    /// [`EventStoreOf::execute_new`] with its events written under `guard` (see
    /// [`pg_store::Guard`]): if the guard's row is stored already, nothing is written and the
    /// answer is [`CommandError::Guarded`].
    pub async fn execute_new_guarded(
        &self,
        id: &str,
        command: A::Command,
        metadata: Metadata,
        guard: std::sync::Arc<pg_store::Guard>,
    ) -> Result<(), CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        pg_store::guarded(guard, self.execute_new(id, command, metadata)).await
    }

    /// Whether a message already had its effect: its id is in the inbox, written by the event
    /// table's trigger in the same transaction as the events it caused (metadata
    /// `causation-id`). A command that decided nothing leaves no trace, and needs none: its
    /// redelivery decides nothing again.
    pub async fn handled(&self, message_id: &str) -> Result<bool, CommandError<A::Error>> {
        self.handled_among(&[message_id])
            .await
            .map(|handled| !handled.is_empty())
            .map_err(|e| CommandError::Infrastructure(e.to_string()))
    }

    /// Which of these messages already had their effect (see [`EventStoreOf::handled`]).
    async fn handled_among(&self, message_ids: &[&str]) -> sqlx::Result<HashSet<String>> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT message_id FROM inbox WHERE message_id = ANY($1)")
            .bind(message_ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// The version (latest sequence) an aggregate's stream has reached; 0 without events.
    pub async fn version(&self, id: &str) -> Result<i64, CommandError<A::Error>> {
        // Right after this process's own command, the cache holds the version it wrote.
        if let Some(v) = self.store.peek(id, |_, version| version) {
            return Ok(i64::try_from(v).unwrap_or(i64::MAX));
        }
        pg_store::latest_version(&self.pool, A::TYPE, id).await.map_err(|e| CommandError::Infrastructure(e.to_string()))
    }

    /// Execute a command on behalf of a Kafka message, for a consumer's handler: a message that
    /// already had its effect is skipped (inbox), a rejection is permanent (the message is
    /// parked), anything else is transient (retried).
    pub async fn execute_for(
        &self,
        envelope: &Envelope,
        id: &str,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<(), HandlerError>
    where
        A::Command: Clone,
    {
        let transient = |e: CommandError<A::Error>| HandlerError::Transient(anyhow::anyhow!("{e}"));
        let looked_up = UNHANDLED.try_with(|ids| ids.contains(&envelope.message_id)).unwrap_or(false);
        if !looked_up && self.handled(&envelope.message_id).await.map_err(transient)? {
            return Ok(()); // redelivered after its effect
        }
        match self.execute(id, command, metadata).await {
            Ok(()) => Ok(()),
            Err(CommandError::Rejected(e)) => Err(HandlerError::Permanent(format!("{} {id}: {e}", A::TYPE))),
            Err(e) => Err(transient(e)),
        }
    }

    /// What `f` says of the cached state of `id`, if cached. That state may be behind the
    /// stored one (another instance may have written since): only for facts that stay true once
    /// true, such as an account being open.
    pub fn peek<R>(&self, id: &str, f: impl FnOnce(&A) -> R) -> Option<R> {
        self.store.peek(id, |aggregate, _| f(&aggregate.0))
    }

    /// [`EventStoreOf::peek`] with the cached version (latest sequence).
    pub fn peek_versioned<R>(&self, id: &str, f: impl FnOnce(&A, i64) -> R) -> Option<R> {
        self.store.peek(id, |aggregate, version| f(&aggregate.0, i64::try_from(version).unwrap_or(i64::MAX)))
    }

    /// [`messaging::consumer::per_key`] for a handler of this store's commands, with the inbox
    /// read once for the whole batch: messages that already had their effect are left out, and
    /// [`EventStoreOf::execute_for`] does not look again for the others (a message delivered
    /// twice in one batch is then decided twice, which the aggregates' repeats decide nothing
    /// for; a repeat they refuse fails the batch, whose messages are then handled one by one).
    pub async fn per_key<H: Handler + ?Sized>(&self, handler: &H, batch: &[Delivery]) -> Result<(), HandlerError> {
        let ids: Vec<&str> = batch.iter().map(|d| d.envelope.message_id.as_str()).collect();
        let handled = self.handled_among(&ids).await?;
        let fresh: Vec<&Delivery> = batch.iter().filter(|d| !handled.contains(&d.envelope.message_id)).collect();
        let unhandled = fresh.iter().map(|d| d.envelope.message_id.clone()).collect();
        let runs: Vec<_> = messaging::consumer::by_key(fresh)
            .into_iter()
            .map(|list| messaging::consumer::in_order(handler, list))
            .collect();
        let gather = self.store.gather(runs.len());
        UNHANDLED.scope(unhandled, gather::scope(gather, runs)).await.into_iter().collect()
    }

    /// The current state of an aggregate, or `None` if it has no events.
    pub async fn load(&self, id: &str) -> Result<Option<A>, CommandError<A::Error>> {
        Ok(self.load_versioned(id).await?.map(|(aggregate, _)| aggregate))
    }

    /// The current state of an aggregate and the version (latest sequence) it is at, or `None`
    /// if it has no events.
    pub async fn load_versioned(&self, id: &str) -> Result<Option<(A, i64)>, CommandError<A::Error>> {
        // As stored: another instance of the service may have moved it on since this one's
        // cache. The cached state answers when the stream's version says it is still current
        // (an index lookup, where the load reads the snapshot and the events after it).
        if let Some((aggregate, version)) = self.store.peek(id, |a, version| (a.clone(), version)) {
            let stored = pg_store::latest_version(&self.pool, A::TYPE, id)
                .await
                .map_err(|e| CommandError::Infrastructure(e.to_string()))?;
            if usize::try_from(stored).ok() == Some(version) {
                return Ok(Some((aggregate.0, stored)));
            }
        }
        let context = self.store.load_stored(id).await.map_err(CommandError::from)?;
        if context.current_sequence == 0 {
            return Ok(None);
        }
        Ok(Some((context.aggregate.0, i64::try_from(context.current_sequence).unwrap_or(i64::MAX))))
    }
}
