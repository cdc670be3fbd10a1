//! The event store's PostgreSQL access, in as few round trips as the work allows: cqrs-es's
//! [`EventStore`] over the postgres-es table layout (`events`, `snapshots_v2`).
//!
//! postgres-es 0.5 loads a snapshot and the events after it in two queries, and writes a
//! command's events one `INSERT` at a time inside `BEGIN`/`COMMIT`, even when there are none.
//! Here a load is one query; a write is one `INSERT … SELECT FROM UNNEST` of all the command's
//! events, a statement of its own (atomic by itself, the outbox trigger included), or, when a
//! snapshot is due, that insert and the snapshot in one transaction that is rolled back as a
//! whole when another writer got there first. A command that decided nothing writes nothing.
//! In a consumer's batch, the commits of its keys that meet are written by one statement for all
//! their aggregates (see `gather`), which, if it fails, leaves each to its own write.
//!
//! A write can carry a [`Guard`]: a row inserted by the same statement as the events, which are
//! written only if that row is (an `Idempotency-Key`'s claim, for instance).
//!
//! Optimistic concurrency: the primary key `(aggregate_type, aggregate_id, sequence)` refuses a
//! second writer of the same sequence ([`AggregateError::AggregateConflict`]); the snapshot row
//! is updated only from the `current_snapshot` it was loaded at.
//!
//! Aggregate cache: after a commit the store keeps the aggregate's new state and sequence, so the
//! next command on it is decided without a load, and a command costs one round trip. The cache
//! is only ever a guess that the database checks:
//! - a command decided on a stale state (another process wrote the aggregate since) that writes
//!   events meets the primary key: conflict, the entry is dropped, the command runs again on a
//!   fresh load;
//! - one that decided nothing costs a version check instead of a load, and conflicts the same way
//!   when stale;
//! - a rejection decided on a cached state is decided again on a fresh load before it is
//!   believed ([`PgEventStore::forget`], used by `EventStoreOf::execute` in `es`).

use crate::gather::{self, Rows, Written};
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgPool, Postgres, Row};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// The event table (postgres-es layout, with the outbox trigger).
pub const EVENTS_TABLE: &str = "events";
/// Snapshots. `_v2`: snapshots written before the double-apply fix (see `EventStoreOf`'s
/// `handle`) were wrong, so they are left behind in the old table and never read.
pub const SNAPSHOTS_TABLE: &str = "snapshots_v2";

/// The latest version of an event-sourced aggregate (0 when it has no events).
pub async fn latest_version(pool: &PgPool, aggregate_type: &str, aggregate_id: &str) -> sqlx::Result<i64> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2")
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_one(pool)
            .await?;
    Ok(v.unwrap_or(0))
}

/// PostgreSQL's unique-violation code: another writer stored this sequence first.
const UNIQUE_VIOLATION: &str = "23505";

/// Aggregates kept per store (each service has one store per aggregate type).
pub const CACHED_AGGREGATES: u64 = 10_000;

/// A row stored by the same statement as a command's events, and the events only if it is: an
/// `INSERT … ON CONFLICT DO NOTHING RETURNING 1` over its own parameters `$1..$n` (text). When
/// the row is there already, nothing is written and the command fails with
/// [`crate::es::CommandError::Guarded`]. For an `Idempotency-Key`: the write that places the
/// order claims the key, so neither is ever stored without the other, in one round trip.
/// Guards come from a [`GuardedWrite`], which composes the statement once.
#[derive(Debug)]
pub struct Guard {
    statement: Arc<str>,
    params: Vec<String>,
    state: AtomicU8,
}

/// The events' `INSERT` under a guard's row: composed once (at start-up), then a [`Guard`] per
/// write with its parameters.
#[derive(Debug, Clone)]
pub struct GuardedWrite {
    statement: Arc<str>,
    params: usize,
}

impl GuardedWrite {
    /// `insert` (see [`Guard`]) takes `params` parameters.
    pub fn new(insert: &str, params: usize) -> Self {
        let events = insert_events_sql(params);
        let statement = format!("WITH guard AS ({insert}) {events} WHERE EXISTS (SELECT 1 FROM guard)");
        Self { statement: statement.into(), params }
    }

    /// A guard with these parameters, one per parameter of the insert.
    pub fn guard(&self, params: Vec<String>) -> Guard {
        assert_eq!(params.len(), self.params, "a guard takes one value per parameter of its insert");
        Guard { statement: self.statement.clone(), params, state: AtomicU8::new(GUARD_UNUSED) }
    }
}

const GUARD_UNUSED: u8 = 0;
const GUARD_STORED: u8 = 1;
const GUARD_TAKEN: u8 = 2;

impl Guard {
    /// Whether a write stored the guard's row (with its events).
    pub fn stored(&self) -> bool {
        self.state.load(Ordering::Acquire) == GUARD_STORED
    }

    /// Whether a write found the guard's row there already, and wrote nothing.
    pub fn taken(&self) -> bool {
        self.state.load(Ordering::Acquire) == GUARD_TAKEN
    }

    fn settle(&self, stored: bool) {
        self.state.store(if stored { GUARD_STORED } else { GUARD_TAKEN }, Ordering::Release);
    }
}

tokio::task_local! {
    /// The guard of the command being executed ([`guarded`]).
    static GUARD: Arc<Guard>;
}

/// Run `work` with its event writes under `guard` (see [`Guard`]).
pub async fn guarded<F: Future>(guard: Arc<Guard>, work: F) -> F::Output {
    GUARD.scope(guard, work).await
}

/// The guard of the command being executed, if any.
pub fn current_guard() -> Option<Arc<Guard>> {
    GUARD.try_with(Arc::clone).ok()
}

/// The events' `INSERT` with its parameters from `$after+1` on.
fn insert_events_sql(after: usize) -> String {
    let [t, id, seq, ty, ver, payload, meta] = std::array::from_fn(|i| format!("${}", after + i + 1));
    format!(
        "INSERT INTO {EVENTS_TABLE} (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT {t}, {id}, e.sequence, e.event_type, e.event_version, e.payload, e.metadata \
           FROM UNNEST({seq}::bigint[], {ty}::text[], {ver}::text[], {payload}::json[], {meta}::json[]) \
                AS e(sequence, event_type, event_version, payload, metadata)"
    )
}

/// An aggregate's state as of `sequence`, as the last commit of this process left it.
struct Cached<A> {
    aggregate: A,
    sequence: usize,
    snapshot: Option<usize>,
}

/// Clones share the pool and the cache (cqrs-es owns one handle; the service's reads use another).
#[derive(Clone)]
pub struct PgEventStore<A> {
    pool: PgPool,
    cache: moka::sync::Cache<String, Arc<Cached<A>>>,
    /// Write a snapshot whenever a commit crosses a multiple of this many events (0: never).
    snapshot_every: usize,
    load_sql: String,
    events_sql: String,
    insert_sql: String,
    first_snapshot_sql: String,
    next_snapshot_sql: String,
    version_sql: String,
    /// Known to the batch's [`gather::Gather`] (clones are the same store).
    identity: Arc<()>,
    gathered_sql: Arc<str>,
    _a: PhantomData<fn() -> A>,
}

impl<A: Aggregate + Clone + 'static> PgEventStore<A> {
    pub fn new(pool: PgPool, snapshot_every: usize) -> Self {
        let (events, snapshots) = (EVENTS_TABLE, SNAPSHOTS_TABLE);
        // The snapshot row (kind 0), if any, then the events after it (kind 1), in order.
        let load_sql = format!(
            "WITH snap AS (SELECT last_sequence, current_snapshot, payload FROM {snapshots} \
                            WHERE aggregate_type = $1 AND aggregate_id = $2 \
                            ORDER BY last_sequence DESC LIMIT 1) \
             SELECT 0 AS kind, last_sequence AS sequence, current_snapshot, ''::text AS event_type, \
                    payload, NULL::json AS metadata FROM snap \
             UNION ALL \
             SELECT 1, sequence, NULL, event_type, payload, metadata FROM {events} \
              WHERE aggregate_type = $1 AND aggregate_id = $2 \
                AND sequence > COALESCE((SELECT last_sequence FROM snap), 0) \
             ORDER BY kind, sequence"
        );
        let events_sql = format!(
            "SELECT sequence, payload, metadata FROM {events} \
              WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
        );
        let insert_sql = insert_events_sql(0);
        let first_snapshot_sql = format!(
            "INSERT INTO {snapshots} (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
             VALUES ($1, $2, $3, $4, $5)"
        );
        let next_snapshot_sql = format!(
            "UPDATE {snapshots} SET last_sequence = $3, current_snapshot = $4, payload = $5 \
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND current_snapshot = $6"
        );
        let version_sql =
            format!("SELECT COALESCE(MAX(sequence), 0) FROM {events} WHERE aggregate_type = $1 AND aggregate_id = $2");
        Self {
            pool,
            cache: moka::sync::Cache::new(CACHED_AGGREGATES),
            version_sql,
            snapshot_every,
            load_sql,
            events_sql,
            insert_sql,
            first_snapshot_sql,
            next_snapshot_sql,
            identity: Arc::new(()),
            gathered_sql: gather::statement(EVENTS_TABLE).into(),
            _a: PhantomData,
        }
    }

    /// Where the commits of a batch's `runs` runs gather (see [`gather::scope`]).
    pub(crate) fn gather(&self, runs: usize) -> Arc<gather::Gather> {
        Arc::new(gather::Gather::new(self.identity.clone(), self.pool.clone(), self.gathered_sql.clone(), runs))
    }

    /// Whether the next load of `aggregate_id` would come from the cache.
    pub fn is_cached(&self, aggregate_id: &str) -> bool {
        self.cache.contains_key(aggregate_id)
    }

    /// Drop the cached state: the next load reads the database.
    pub fn forget(&self, aggregate_id: &str) {
        self.cache.invalidate(aggregate_id);
    }

    /// Cache the empty state of an aggregate nothing can be stored under yet (its id was just
    /// made up by this process): its first command then reads nothing. Were something stored
    /// under it after all, that command's write conflicts, the cache is dropped, and the
    /// command is decided again on what is stored.
    pub fn assume_new(&self, aggregate_id: &str) {
        let empty = Cached { aggregate: A::default(), sequence: 0, snapshot: None };
        self.cache.insert(aggregate_id.to_owned(), Arc::new(empty));
    }

    /// What `f` says of the cached state of an aggregate and its version (latest sequence), if
    /// cached; no copy of the state is made.
    pub fn peek<R>(&self, aggregate_id: &str, f: impl FnOnce(&A, usize) -> R) -> Option<R> {
        self.cache.get(aggregate_id).map(|c| f(&c.aggregate, c.sequence))
    }

    /// The aggregate as stored, never from the cache: for reads that must be current.
    pub async fn load_stored(
        &self,
        aggregate_id: &str,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        let rows = sqlx::query(&self.load_sql)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        let mut context = EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        };
        for row in rows {
            let payload: Value = row.get("payload");
            if row.get::<i32, _>("kind") == 0 {
                context.aggregate = serde_json::from_value(payload).map_err(deserialization)?;
                context.current_snapshot = Some(sequence(row.get("current_snapshot")));
            } else {
                context.aggregate.apply(serde_json::from_value(payload).map_err(deserialization)?);
            }
            context.current_sequence = sequence(row.get("sequence"));
        }
        Ok(context)
    }

    /// The stream's latest sequence in the database.
    async fn stored_version(&self, aggregate_id: &str) -> Result<usize, sqlx::Error> {
        let v: i64 =
            sqlx::query_scalar(&self.version_sql).bind(A::TYPE).bind(aggregate_id).fetch_one(&self.pool).await?;
        Ok(sequence(v))
    }

    /// Write a commit's rows on their own, or gathered with the batch's other commits (see
    /// [`crate::gather`]) when they have no guard. Whether they were stored: `false` when a
    /// guard's row was there already.
    async fn write(&self, rows: Rows, guard: Option<&Guard>) -> Result<bool, AggregateError<A::Error>> {
        let rows = match gather::current().filter(|g| guard.is_none() && g.serves(&self.identity)) {
            None => rows,
            Some(gather) => match gather.write(rows).await {
                Written::Together => return Ok(true),
                Written::Alone(rows) => rows,
                Written::Unknown => {
                    return Err(AggregateError::UnexpectedError("the batch's gathered write was given up".into()));
                }
            },
        };
        let done = self.insert(&rows, guard).execute(&self.pool).await.map_err(database)?;
        Ok(done.rows_affected() > 0)
    }

    /// The `INSERT` of one commit's rows, under its guard if any.
    fn insert<'q>(&'q self, rows: &'q Rows, guard: Option<&'q Guard>) -> Query<'q, Postgres, PgArguments> {
        let mut insert = sqlx::query(guard.map_or(self.insert_sql.as_str(), |g| &g.statement));
        for param in guard.iter().flat_map(|g| &g.params) {
            insert = insert.bind(param);
        }
        insert
            .bind(rows.aggregate_type)
            .bind(&rows.aggregate_id)
            .bind(&rows.sequences)
            .bind(&rows.types)
            .bind(&rows.versions)
            .bind(&rows.payloads)
            .bind(&rows.metadata)
    }

    fn envelopes(
        aggregate_id: &str,
        after: usize,
        events: Vec<A::Event>,
        metadata: &HashMap<String, String>,
    ) -> Vec<EventEnvelope<A>> {
        (after + 1..)
            .zip(events)
            .map(|(sequence, payload)| EventEnvelope {
                aggregate_id: aggregate_id.to_owned(),
                sequence,
                payload,
                metadata: metadata.clone(),
            })
            .collect()
    }
}

fn database<E: std::error::Error>(e: sqlx::Error) -> AggregateError<E> {
    let conflict = e.as_database_error().and_then(|d| d.code()).is_some_and(|code| code == UNIQUE_VIOLATION);
    if conflict { AggregateError::AggregateConflict } else { AggregateError::DatabaseConnectionError(Box::new(e)) }
}

fn deserialization<E: std::error::Error>(e: serde_json::Error) -> AggregateError<E> {
    AggregateError::DeserializationError(Box::new(e))
}

fn sequence(raw: i64) -> usize {
    usize::try_from(raw).unwrap_or(0)
}

impl<A: Aggregate + Clone + 'static> EventStore<A> for PgEventStore<A> {
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(&self, aggregate_id: &str) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let rows = sqlx::query(&self.events_sql)
            .bind(A::TYPE)
            .bind(aggregate_id)
            .fetch_all(&self.pool)
            .await
            .map_err(database)?;
        rows.iter()
            .map(|row| {
                let metadata: Value = row.get("metadata");
                Ok(EventEnvelope {
                    aggregate_id: aggregate_id.to_owned(),
                    sequence: sequence(row.get("sequence")),
                    payload: serde_json::from_value(row.get("payload")).map_err(deserialization)?,
                    metadata: serde_json::from_value(metadata).map_err(deserialization)?,
                })
            })
            .collect()
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> Result<Self::AC, AggregateError<A::Error>> {
        if let Some(c) = self.cache.get(aggregate_id) {
            return Ok(EventStoreAggregateContext {
                aggregate_id: aggregate_id.to_owned(),
                aggregate: c.aggregate.clone(),
                current_sequence: c.sequence,
                current_snapshot: c.snapshot,
            });
        }
        self.load_stored(aggregate_id).await
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        if events.is_empty() {
            // Nothing to write, but a decision taken on a cached state is only as good as that
            // state: check that nobody wrote the aggregate since, else decide again.
            if self.cache.get(&context.aggregate_id).is_some_and(|c| c.sequence == context.current_sequence) {
                let stored = self.stored_version(&context.aggregate_id).await.map_err(database)?;
                if stored != context.current_sequence {
                    self.forget(&context.aggregate_id);
                    return Err(AggregateError::AggregateConflict);
                }
            }
            return Ok(Vec::new());
        }
        let EventStoreAggregateContext { aggregate_id, mut aggregate, current_sequence, current_snapshot } = context;
        let envelopes = Self::envelopes(&aggregate_id, current_sequence, events, &metadata);
        let last = current_sequence + envelopes.len();
        let metadata_json = serde_json::to_value(&metadata).map_err(deserialization)?;
        let mut rows = Rows {
            aggregate_type: A::TYPE,
            aggregate_id: aggregate_id.clone(),
            sequences: Vec::with_capacity(envelopes.len()),
            types: Vec::with_capacity(envelopes.len()),
            versions: Vec::with_capacity(envelopes.len()),
            payloads: Vec::with_capacity(envelopes.len()),
            metadata: vec![metadata_json; envelopes.len()],
        };
        for e in &envelopes {
            rows.sequences.push(i64::try_from(e.sequence).unwrap_or(i64::MAX));
            rows.types.push(cqrs_es::DomainEvent::event_type(&e.payload));
            rows.versions.push(cqrs_es::DomainEvent::event_version(&e.payload));
            rows.payloads.push(serde_json::to_value(&e.payload).map_err(deserialization)?);
        }
        let guard = current_guard();

        // The state after this commit, for the cache.
        for e in &envelopes {
            aggregate.apply(e.payload.clone());
        }
        let snapshot_due =
            self.snapshot_every > 0 && last / self.snapshot_every > current_sequence / self.snapshot_every;
        if !snapshot_due {
            let stored = match self.write(rows, guard.as_deref()).await {
                Ok(stored) => stored,
                Err(e) => {
                    self.forget(&aggregate_id);
                    return Err(e);
                }
            };
            if let Some(guard) = &guard {
                guard.settle(stored);
            }
            if !stored {
                // The guard's row was there: nothing was written.
                self.forget(&aggregate_id);
                return Err(AggregateError::AggregateConflict);
            }
            self.cache.insert(aggregate_id, Arc::new(Cached { aggregate, sequence: last, snapshot: current_snapshot }));
            messaging::outbox::written();
            return Ok(envelopes);
        }
        // Written straight into the statement's buffer, without a `serde_json::Value` of it
        // first: an aggregate with a long memory (a product's reservations) is one large object.
        let state = sqlx::types::Json(&aggregate);
        let next_snapshot = current_snapshot.map_or(1, |n| n + 1);
        let written = async {
            let mut tx = self.pool.begin().await.map_err(database)?;
            let insert = self.insert(&rows, guard.as_deref());
            if insert.execute(&mut *tx).await.map_err(database)?.rows_affected() == 0 {
                // The guard's row was there: nothing is written.
                if let Some(guard) = &guard {
                    guard.settle(false);
                }
                return Err(AggregateError::AggregateConflict);
            }
            let written = match current_snapshot {
                None => sqlx::query(&self.first_snapshot_sql)
                    .bind(A::TYPE)
                    .bind(&aggregate_id)
                    .bind(i64::try_from(last).unwrap_or(i64::MAX))
                    .bind(i64::try_from(next_snapshot).unwrap_or(i64::MAX))
                    .bind(state)
                    .execute(&mut *tx)
                    .await
                    .map_err(database)?,
                Some(previous) => sqlx::query(&self.next_snapshot_sql)
                    .bind(A::TYPE)
                    .bind(&aggregate_id)
                    .bind(i64::try_from(last).unwrap_or(i64::MAX))
                    .bind(i64::try_from(next_snapshot).unwrap_or(i64::MAX))
                    .bind(state)
                    .bind(i64::try_from(previous).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await
                    .map_err(database)?,
            };
            if written.rows_affected() != 1 {
                // Dropping `tx` rolls the events back too: nothing of this commit is stored.
                return Err(AggregateError::AggregateConflict);
            }
            tx.commit().await.map_err(database)?;
            if let Some(guard) = &guard {
                guard.settle(true);
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            self.forget(&aggregate_id);
            return Err(e);
        }
        self.cache.insert(aggregate_id, Arc::new(Cached { aggregate, sequence: last, snapshot: Some(next_snapshot) }));
        messaging::outbox::written();
        Ok(envelopes)
    }
}
