//! Adapter from [`domain::Aggregate`] (pure decide/apply) to cqrs-es, persisted by postgres-es.
//! `handle` only writes `decide`'s events to the sink. Stored events reach Kafka through the
//! outbox trigger (see `sql/event_store.sql`), never from here.

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use domain::{Aggregate, DomainEvent};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
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
        for event in self.0.decide(command).map_err(Rejected)? {
            sink.write(EsEvent(event), self).await;
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

/// Metadata stored with the events and carried to Kafka headers by the relay.
pub type Metadata = HashMap<String, String>;

pub struct EventStoreOf<A: Aggregate + 'static> {
    cqrs: CqrsFramework<Es<A>, PersistedEventStore<PostgresEventRepository, Es<A>>>,
    store: PersistedEventStore<PostgresEventRepository, Es<A>>,
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
        let make = |pool: PgPool| {
            let repo = PostgresEventRepository::new(pool);
            if every > 0 {
                PersistedEventStore::new_snapshot_store(repo, every)
            } else {
                PersistedEventStore::new_event_store(repo)
            }
        };
        let cqrs = CqrsFramework::new(make(pool.clone()), vec![], ());
        Self { cqrs, store: make(pool), _a: PhantomData }
    }

    /// Execute a command; a conflicting concurrent write is retried a few times (the command
    /// is decided again on the fresh state), then reported.
    pub async fn execute(&self, id: &str, command: A::Command, metadata: Metadata) -> Result<(), CommandError<A::Error>>
    where
        A::Command: Clone,
    {
        let mut attempt = 0;
        loop {
            match self.cqrs.execute_with_metadata(id, command.clone(), metadata.clone()).await {
                Ok(()) => return Ok(()),
                Err(AggregateError::AggregateConflict) if attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The current state of an aggregate, or `None` if it has no events.
    pub async fn load(&self, id: &str) -> Result<Option<A>, CommandError<A::Error>> {
        let context = self.store.load_aggregate(id).await.map_err(CommandError::from)?;
        if context.current_sequence == 0 {
            return Ok(None);
        }
        Ok(Some(context.aggregate.0))
    }
}
