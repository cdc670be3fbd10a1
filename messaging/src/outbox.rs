//! The outbox relay: publishes outbox rows to Kafka in id order, then deletes them. Each row
//! reaches Kafka once, in its aggregate's order, across crashes of the relay; the one exception
//! (below) is a duplicate, which consumers drop by message id like any redelivery.
//!
//! - One relay per database at a time: a session advisory lock, held by the connection that
//!   runs all of the relay's SQL, so losing the lock also stops the relay's work.
//! - A batch is read and, in the same statement, recorded as being sent
//!   (`outbox_relay.sending`, with the time). Its records go out through the idempotent producer
//!   ([`kafka::relay_producer`]: in order per partition, never timing out, gaps fatal). Once
//!   Kafka acknowledged them all, the rows are deleted by the statement that reads the next
//!   batch (one statement per pass, not two), or at shutdown. No Kafka
//!   transaction: a transaction per batch cost Kafka more CPU than everything else it does for an
//!   order, and doubled the time an order takes end to end.
//! - So a crash can leave at most the batch being sent (or just sent) in the table, some or all
//!   of it on Kafka. On
//!   (re)start the relay reads the topics back from the time that batch was sent, and deletes
//!   the rows whose message ids it finds there; the rest go out again. Every failure after a
//!   batch began takes this same path: the session is dropped and started again, exactly as
//!   after a crash.
//! - The exception: a relay cut off from PostgreSQL (its lock lost) while its last records
//!   were still on their way to Kafka, so that they land after its successor read the topics
//!   back. Those are sent twice; consumers deduplicate (inbox, versions, the sent log).
//! - Nothing tracks a high-water mark, so rows of transactions that commit late ("holes" in
//!   the id sequence) are never skipped: they are simply still in the table on a later pass.
//! - A row that cannot be mapped, encoded or sent is logged with its id at every attempt and,
//!   after [`DEAD_AFTER_ATTEMPTS`], moved to `outbox_dead`. Later rows of the same aggregate
//!   wait behind it, so no stream reaches Kafka with a gap (see `migrations/outbox/` in `eventstore`,
//!   which migrates the service's database).

use crate::kafka;
use crate::producer::Producer;
use anyhow::Context;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::types::RDKafkaErrorCode;
use schemas::headers as h;
use schemas::{Codec, EncodeError, Message};
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Metadata of a stored event or an outbox row (ids, trace), carried to Kafka headers by the relay.
pub type Metadata = HashMap<String, String>;

/// One row of the outbox.
#[derive(Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub record: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Turns an event row (domain event JSON) into its wire message. Direct rows (already a wire
/// record, written by [`enqueue`]) are mapped by the relay itself.
pub type EventMapper = Arc<dyn Fn(&OutboxRow) -> anyhow::Result<Message> + Send + Sync>;

/// Aggregate type used for rows that hold a wire record directly.
pub const DIRECT: &str = "$message";

/// Permanent failures (mapping, Avro, a record Kafka refuses) of one row before it is moved
/// to `outbox_dead`.
pub const DEAD_AFTER_ATTEMPTS: u32 = 3;

/// After a wake-up, how long the relay lets rows gather before it reads a batch: commits that
/// land together (a consumer batch, concurrent commands) then share one produce request
/// instead of taking one each. A full batch goes on at once.
const LINGER: Duration = Duration::from_millis(10);

/// Session advisory lock: one relay per database.
const LOCK_KEY: i64 = 7062;

/// For reading the topics back after a crash.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// Reading the topics back starts this long before the batch was recorded as being sent, in
/// case the relay's clock and PostgreSQL's differ (records carry the producer's time).
const CLOCK_SLACK: Duration = Duration::from_secs(60);

/// The next batch, recorded as being sent in the same statement, which also deletes the rows
/// of the previous batch that Kafka acknowledged ($2; the statement does not see its own
/// deletes, hence the filter). Rows of an aggregate that has a dead row wait behind it.
const SELECT_BATCH: &str = "WITH acked AS (DELETE FROM outbox WHERE id = ANY($2)), \
     batch AS ( \
         SELECT o.* FROM outbox o \
          WHERE o.id <> ALL($2) AND NOT EXISTS (SELECT 1 FROM outbox_dead d \
                            WHERE d.aggregate_type = o.aggregate_type AND d.aggregate_id = o.aggregate_id) \
          ORDER BY o.id LIMIT $1), \
     mark AS ( \
         UPDATE outbox_relay SET sending = (SELECT array_agg(id) FROM batch), sending_since = now() \
          WHERE singleton AND EXISTS (SELECT 1 FROM batch)) \
     SELECT * FROM batch ORDER BY id";

/// Rows that are on Kafka, by id.
const DELETE_ROWS: &str = "DELETE FROM outbox WHERE id = ANY($1)";

const BURY: &str = "WITH dead AS (DELETE FROM outbox WHERE id = $1 RETURNING *) \
     INSERT INTO outbox_dead (id, message_id, aggregate_type, aggregate_id, sequence, record, payload, \
                              metadata, created_at, error, attempts) \
     SELECT id, message_id, aggregate_type, aggregate_id, sequence, record, payload, metadata, created_at, $2, $3 \
     FROM dead";

/// Take this database's relay lock away from its relay, on `conn`, for whoever must stop
/// publishing for a while (fault tests, the auditor's tests): end the holder's session (its next
/// statement fails, it drops the session and asks for the lock again 500 ms later) and take
/// the lock first. While `conn` holds it, events still commit and none is published. Gives up
/// after `timeout`.
pub async fn take_relay_lock(conn: &mut PgConnection, database: &str, timeout: Duration) -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let holders: Vec<(i32,)> = sqlx::query_as(
            "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1 \
               AND l.classid = 0 AND l.objid::bigint = $2 AND l.objsubid = 1",
        )
        .bind(database)
        .bind(LOCK_KEY)
        .fetch_all(&mut *conn)
        .await?;
        for (pid,) in holders {
            sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut *conn).await?;
        }
        // Ask often: the relay waits 500 ms after the failure before it asks again.
        let until = std::time::Instant::now() + Duration::from_millis(300);
        while std::time::Instant::now() < until {
            let locked: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut *conn).await?;
            if locked {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::ensure!(start.elapsed() < timeout, "could not take the outbox relay lock of {database}");
    }
}

/// Queue one wire message in the caller's transaction (see [`enqueue_many`]); its message id.
pub async fn enqueue(
    tx: &mut Transaction<'_, Postgres>,
    message: &Message,
    metadata: &HashMap<String, String>,
) -> anyhow::Result<Uuid> {
    let queued = Queued { message: message.clone(), metadata: metadata.clone(), version: 0 };
    let ids = enqueue_many(tx, std::slice::from_ref(&queued)).await?;
    Ok(ids[0])
}

/// Commits of this process that put rows in the outbox (see [`written`]).
static WRITTEN: std::sync::LazyLock<tokio::sync::Notify> = std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Tell this process's relay that rows were committed to the outbox, so it publishes them now
/// instead of at its next poll. The event store calls it after every commit with events: the
/// outbox trigger does not `NOTIFY`, because PostgreSQL serializes the commits of notifying
/// transactions on one lock, which capped appends at a fraction of what they reach without.
/// Rows committed by another process are found by that process's relay, or by the poll.
pub fn written() {
    WRITTEN.notify_one();
}

/// A wire message for [`enqueue_many`].
pub struct Queued {
    pub message: Message,
    pub metadata: HashMap<String, String>,
    /// Above 0: the message is the `version`-th state of its key; it travels with an
    /// `aggregate-version` header, so projections can apply it idempotently. 0: no version.
    pub version: i64,
}

/// Queue wire messages in the caller's transaction (used where state is not event-sourced, e.g.
/// the saga's commands and states), in the given order, with one statement. Call [`written`]
/// after the commit, so this process's relay sends them at once (without that, or from another
/// process, the relay finds them at its next poll: a `NOTIFY` here would serialize the commits).
/// A message's metadata without a `traceparent` gets the current span's, so the message continues
/// the trace that queued it. Returns the messages' ids, in order.
pub async fn enqueue_many(tx: &mut Transaction<'_, Postgres>, queued: &[Queued]) -> anyhow::Result<Vec<Uuid>> {
    if queued.is_empty() {
        return Ok(Vec::new());
    }
    let n = queued.len();
    let (mut ids, mut keys, mut versions) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut records, mut payloads, mut metadata) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for q in queued {
        let mut m = q.metadata.clone();
        runtime::telemetry::stamp(&mut m);
        ids.push(Uuid::now_v7());
        keys.push(q.message.key().to_owned());
        versions.push(q.version);
        records.push(q.message.full_name().to_owned());
        payloads.push(q.message.to_json().to_string());
        metadata.push(serde_json::to_string(&m)?);
    }
    sqlx::query(
        "INSERT INTO outbox (message_id, aggregate_type, aggregate_id, sequence, record, payload, metadata) \
         SELECT m, $2, k, s, r, p::json, md::json \
           FROM UNNEST($1::uuid[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[]) \
                WITH ORDINALITY AS u (m, k, s, r, p, md, n) \
          ORDER BY n",
    )
    .bind(&ids)
    .bind(DIRECT)
    .bind(&keys)
    .bind(&versions)
    .bind(&records)
    .bind(&payloads)
    .bind(&metadata)
    .execute(&mut **tx)
    .await?;
    Ok(ids)
}

/// Sample the outbox backlog every `every` until `shutdown`. A failed sample is logged and the
/// gauges keep their last value: the relay's own errors say more.
pub async fn sample_backlog(pool: PgPool, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {},
        }
        let counts: Result<(i64, i64), sqlx::Error> =
            sqlx::query_as("SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM outbox_dead)")
                .fetch_one(&pool)
                .await;
        match counts {
            Ok((backlog, dead)) => {
                metrics::gauge!(runtime::metrics::OUTBOX_BACKLOG).set(backlog as f64);
                metrics::gauge!(runtime::metrics::OUTBOX_DEAD).set(dead as f64);
            }
            Err(e) => tracing::warn!(error = %e, "sampling the outbox backlog failed"),
        }
    }
}

pub struct Relay {
    pool: PgPool,
    brokers: String,
    relay_id: String,
    codec: Arc<Codec>,
    map_event: EventMapper,
    batch: i64,
    topic_prefix: String,
    state: tokio::sync::Mutex<State>,
    /// Permanent failures per row id, counted towards [`DEAD_AFTER_ATTEMPTS`].
    failures: Mutex<HashMap<i64, Failure>>,
}

#[derive(Default)]
struct State {
    /// The lock and the producer; `None` until the
    /// next pass starts one (after a failure, or while another relay holds the lock).
    session: Option<Session>,
    /// While another relay holds the lock: the connection that keeps asking for it.
    waiting: Option<PgConnection>,
}

struct Session {
    /// Holds the advisory lock; not from the pool, so dropping it releases the lock.
    conn: PgConnection,
    producer: Producer,
    /// Rows of the last batch, all acknowledged by Kafka: deleted by the statement that reads
    /// the next batch (or at shutdown). Until then they are what a crash between a batch's
    /// acknowledgement and its delete leaves, which the successor's recovery deletes.
    acked: Vec<i64>,
}

#[derive(Debug, Clone)]
struct Failure {
    attempts: u32,
    error: String,
}

/// Why a batch stopped before a row.
enum Blocked {
    /// Worth retrying as it is (the schema registry is unreachable?).
    Transient(anyhow::Error),
    /// Failed permanently, for the given time.
    Failing(Failure),
}

/// How a pass failed: `Reset` drops the session (the crash path), `Keep` does not.
enum PassError {
    Keep(anyhow::Error),
    Reset(anyhow::Error),
}

fn reset(e: impl Into<anyhow::Error>) -> PassError {
    PassError::Reset(e.into())
}

impl Relay {
    /// A relay for the outbox in `pool`'s database, with the relay id `outbox-relay-<database>`
    /// (stable per database), batches of 500 and the live topics.
    pub fn new(pool: PgPool, brokers: &str, codec: Arc<Codec>, map_event: EventMapper) -> Self {
        let options = pool.connect_options();
        let database = options.get_database().unwrap_or(options.get_username());
        let relay_id = format!("outbox-relay-{database}");
        Self {
            pool,
            brokers: brokers.to_owned(),
            relay_id,
            codec,
            map_event,
            batch: 500,
            topic_prefix: String::new(),
            state: tokio::sync::Mutex::new(State::default()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Names the relay in logs. The same for every relay of one database.
    pub fn with_relay_id(mut self, relay_id: impl Into<String>) -> Self {
        self.relay_id = relay_id.into();
        self
    }

    pub fn with_batch(mut self, batch: i64) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Prefix every topic the relay writes, so tests can relay into
    /// topics of their own.
    pub fn with_topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    pub fn relay_id(&self) -> &str {
        &self.relay_id
    }

    /// The topic a record for `name` goes to.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topic_prefix)
    }

    /// Run until `shutdown` resolves. Errors are logged and retried after a pause. Stopping
    /// may cut a pass short (while Kafka is unreachable a pass waits for it): what it was
    /// sending is read back from Kafka at the next start.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let passed = tokio::select! {
                biased;
                () = &mut shutdown => return self.finish().await,
                passed = self.pass() => passed,
            };
            let pause = match passed {
                Ok(sent) if sent as i64 >= self.batch => Duration::ZERO,
                Ok(_) => Duration::from_millis(250),
                Err(e) => {
                    tracing::warn!(relay = %self.relay_id, error = format!("{e:#}"), "outbox relay pass failed; retrying");
                    Duration::from_millis(500)
                }
            };
            // Wake on a commit of this process (see [`written`]), or poll anyway after a while:
            // rows committed by other processes are found by the poll.
            let lingered = async {
                if !pause.is_zero() {
                    let _ = tokio::time::timeout(pause, WRITTEN.notified()).await;
                    tokio::time::sleep(LINGER).await;
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => return self.finish().await,
                () = lingered => {}
            }
        }
    }

    /// At shutdown: delete the rows of the last batch Kafka acknowledged, so that a successor
    /// has nothing to read back. If this fails, the successor does just that.
    async fn finish(&self) {
        let mut state = self.state.lock().await;
        let Some(session) = state.session.as_mut().filter(|s| !s.acked.is_empty()) else { return };
        let deleted = sqlx::query(DELETE_ROWS).bind(&session.acked).execute(&mut session.conn).await;
        if let Err(e) = deleted {
            tracing::warn!(relay = %self.relay_id, error = %e, "deleting the last batch at shutdown; the next relay will");
        }
        session.acked.clear();
    }

    /// Publish one batch; returns how many rows went out (0 while another relay holds the
    /// lock of this database).
    pub async fn pass(&self) -> anyhow::Result<usize> {
        let mut state = self.state.lock().await;
        let session = match state.session.take() {
            Some(session) => session,
            None => {
                let conn = match state.waiting.take() {
                    Some(conn) => conn,
                    None => self.pool.connect_options().connect().await.context("connecting the relay's session")?,
                };
                match self.start(conn).await? {
                    Ok(session) => session,
                    Err(conn) => {
                        tracing::debug!(relay = %self.relay_id, "another relay holds the outbox lock; standing by");
                        state.waiting = Some(conn);
                        return Ok(0);
                    }
                }
            }
        };
        let session = state.session.insert(session);
        match self.relay_batch(session).await {
            Ok(sent) => Ok(sent),
            Err(PassError::Keep(e)) => Err(e),
            Err(PassError::Reset(e)) => {
                // The session's lock goes now; its producer purges what it still holds once its
                // reporting thread's window ends (see `producer`): records already on their way
                // may land after the successor read the topics back, the duplicates the module's
                // documentation allows.
                state.session = None;
                Err(e)
            }
        }
    }

    /// Take the lock, fence the predecessor, and finish its last batch if the crash came
    /// between its commit and its delete. Gives the connection back if another relay holds
    /// the lock.
    async fn start(&self, mut conn: PgConnection) -> anyhow::Result<Result<Session, PgConnection>> {
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LOCK_KEY).fetch_one(&mut conn).await?;
        if !locked {
            return Ok(Err(conn));
        }
        // The outbox is a queue: its statistics, taken whenever it happened to be empty, make
        // the planner scan and sort the whole table (dead rows included) for every batch and
        // every delete. Its rows are always wanted by id, so this session always uses the
        // primary key.
        // No JIT either: these statements are small, and a plan costed high by the setting
        // above would be compiled for every batch (100 ms each).
        sqlx::query("SET enable_seqscan = off").execute(&mut conn).await?;
        sqlx::query("SET jit = off").execute(&mut conn).await?;
        let producer = kafka::relay_producer(&self.brokers)?;
        self.recover(&mut conn).await?;
        let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_dead").fetch_one(&mut conn).await?;
        if dead > 0 {
            tracing::error!(relay = %self.relay_id, dead, "outbox_dead holds rows; later rows of their aggregates wait");
        }
        tracing::info!(relay = %self.relay_id, "outbox relay active");
        Ok(Ok(Session { conn, producer, acked: Vec::new() }))
    }

    /// Delete the rows of the batch a predecessor was sending that are on Kafka already.
    async fn recover(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        let (sending, since): (Vec<i64>, Option<chrono::DateTime<chrono::Utc>>) =
            sqlx::query_as("SELECT sending, sending_since FROM outbox_relay")
                .fetch_one(&mut *conn)
                .await
                .context("reading outbox_relay (is the outbox migrated?)")?;
        let rows: Vec<OutboxRow> = match since {
            Some(_) => sqlx::query_as("SELECT * FROM outbox WHERE id = ANY($1) ORDER BY id").bind(&sending),
            // Never recorded: the outbox of a relay that sent in Kafka transactions, whose last
            // committed batch may still be here (it is always the first rows).
            None => sqlx::query_as("SELECT * FROM outbox ORDER BY id LIMIT $1").bind(self.batch),
        }
        .fetch_all(&mut *conn)
        .await?;
        let Some(oldest) = since.or_else(|| rows.iter().map(|r| r.created_at).min()) else { return Ok(()) };
        if rows.is_empty() {
            return Ok(());
        }
        let mut topics = std::collections::BTreeSet::new();
        let mut ids = HashMap::new();
        for row in &rows {
            // A row that cannot be mapped was never sent.
            if let Ok(message) = self.message(row) {
                topics.insert(self.topic(message.topic().name()));
                ids.insert(row.message_id.to_string(), row.id);
            }
        }
        let wanted: std::collections::HashSet<String> = ids.keys().cloned().collect();
        let since_ms = oldest.timestamp_millis() - i64::try_from(CLOCK_SLACK.as_millis()).unwrap_or(i64::MAX);
        let (brokers, topics) = (self.brokers.clone(), topics.into_iter().collect::<Vec<_>>());
        let found = tokio::task::spawn_blocking(move || {
            kafka::find_message_ids(&brokers, &topics, since_ms, &wanted, KAFKA_TIMEOUT)
        })
        .await?
        .context("reading the last batch back from Kafka")?;
        let done: Vec<i64> = found.iter().filter_map(|m| ids.get(m).copied()).collect();
        if !done.is_empty() {
            let deleted = sqlx::query(DELETE_ROWS).bind(&done).execute(&mut *conn).await?.rows_affected();
            tracing::info!(relay = %self.relay_id, rows = deleted, of = rows.len(), "deleted the rows of the last batch found on Kafka");
        }
        Ok(())
    }

    /// The wire message of a row.
    fn message(&self, row: &OutboxRow) -> anyhow::Result<Message> {
        if row.aggregate_type == DIRECT {
            Message::from_json(&row.record, row.payload.clone()).map_err(anyhow::Error::from)
        } else {
            (self.map_event)(row)
        }
    }

    async fn relay_batch(&self, session: &mut Session) -> Result<usize, PassError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(SELECT_BATCH)
            .bind(self.batch)
            .bind(&session.acked)
            .fetch_all(&mut session.conn)
            .await
            .map_err(reset)?;
        session.acked.clear();
        if rows.is_empty() {
            return Ok(0);
        }
        let (encoded, blocked) = self.encode(&rows).await;
        let sent = &rows[..encoded.len()];
        if !sent.is_empty() {
            self.publish(session, sent, &encoded).await.map_err(reset)?;
            let ids: Vec<i64> = sent.iter().map(|r| r.id).collect();
            session.acked.clone_from(&ids);
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            if !failures.is_empty() {
                for id in &ids {
                    failures.remove(id);
                }
            }
            drop(failures);
            tracing::debug!(count = ids.len(), "relayed outbox rows");
        }
        match blocked {
            None => Ok(sent.len()),
            Some(Blocked::Failing(failure)) if failure.attempts >= DEAD_AFTER_ATTEMPTS => {
                let row = &rows[sent.len()];
                sqlx::query(BURY)
                    .bind(row.id)
                    .bind(&failure.error)
                    .bind(i32::try_from(failure.attempts).unwrap_or(i32::MAX))
                    .execute(&mut session.conn)
                    .await
                    .map_err(reset)?;
                self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&row.id);
                tracing::error!(
                    relay = %self.relay_id,
                    row = row.id,
                    aggregate_type = %row.aggregate_type,
                    aggregate_id = %row.aggregate_id,
                    error = %failure.error,
                    "outbox row moved to outbox_dead; later rows of its aggregate wait until it is dealt with"
                );
                Ok(sent.len())
            }
            Some(Blocked::Failing(_)) => Ok(sent.len()),
            Some(Blocked::Transient(e)) if sent.is_empty() => Err(PassError::Keep(e)),
            Some(Blocked::Transient(e)) => {
                tracing::warn!(relay = %self.relay_id, error = format!("{e:#}"), "outbox batch cut short");
                Ok(sent.len())
            }
        }
    }

    /// Map and encode rows in order, up to the first that fails.
    async fn encode(&self, rows: &[OutboxRow]) -> (Vec<(Message, Vec<u8>)>, Option<Blocked>) {
        let mut encoded = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(failure) = self.failure(row.id)
                && failure.attempts >= DEAD_AFTER_ATTEMPTS
            {
                return (encoded, Some(Blocked::Failing(failure)));
            }
            let message = match self.message(row) {
                Ok(m) => m,
                Err(e) => return (encoded, Some(self.failed(row, format!("mapping: {e:#}")))),
            };
            match self.codec.encode(&message).await {
                Ok(bytes) => encoded.push((message, bytes)),
                Err(e @ EncodeError::Avro(_)) => return (encoded, Some(self.failed(row, format!("encoding: {e}")))),
                Err(e) => {
                    let e = anyhow::Error::from(e).context(format!("encoding outbox row {}", row.id));
                    return (encoded, Some(Blocked::Transient(e)));
                }
            }
        }
        (encoded, None)
    }

    fn failure(&self, id: i64) -> Option<Failure> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    /// Count a permanent failure of `row`, loudly.
    fn failed(&self, row: &OutboxRow, error: String) -> Blocked {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failures.entry(row.id).or_insert(Failure { attempts: 0, error: String::new() });
        entry.attempts += 1;
        entry.error = error;
        tracing::error!(
            relay = %self.relay_id,
            row = row.id,
            aggregate_type = %row.aggregate_type,
            aggregate_id = %row.aggregate_id,
            record = %row.record,
            attempt = entry.attempts,
            of = DEAD_AFTER_ATTEMPTS,
            error = %entry.error,
            "outbox row cannot be relayed"
        );
        Blocked::Failing(entry.clone())
    }

    /// Send the rows and wait until Kafka acknowledged every one.
    async fn publish(
        &self,
        session: &Session,
        rows: &[OutboxRow],
        encoded: &[(Message, Vec<u8>)],
    ) -> anyhow::Result<()> {
        let producer = &session.producer;
        // Enqueued one by one, in order: the idempotent producer keeps per-partition order.
        let mut deliveries = Vec::with_capacity(rows.len());
        for (row, (message, bytes)) in rows.iter().zip(encoded) {
            let topic = self.topic(message.topic().name());
            let record =
                FutureRecord::to(&topic).key(message.key()).payload(bytes.as_slice()).headers(headers(row, message));
            // Kafka's queue full is waited out: the relay has nothing else to do meanwhile.
            let delivery = producer
                .queue(record, None)
                .await
                .map_err(|(e, back)| anyhow::anyhow!("producing to {}: {e}", back.topic))?;
            deliveries.push((row, delivery));
        }
        for (row, delivery) in deliveries {
            if let Err((e, m)) = delivery.await.context("producer dropped a delivery")? {
                if refused(&e) {
                    self.failed(row, format!("Kafka refused the record: {e}"));
                }
                anyhow::bail!("producing to {}: {e}", rdkafka::Message::topic(&m));
            }
        }
        Ok(())
    }
}

/// Kafka will never take this record, however often it is sent.
fn refused(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e,
        KafkaError::MessageProduction(
            C::MessageSizeTooLarge | C::InvalidMessageSize | C::InvalidMessage | C::InvalidRecord
        )
    )
}

fn meta<'a>(row: &'a OutboxRow, key: &str) -> Option<&'a str> {
    row.metadata.get(key).and_then(|v| v.as_str())
}

fn headers(row: &OutboxRow, message: &Message) -> rdkafka::message::OwnedHeaders {
    let mut pairs = vec![
        (h::MESSAGE_ID, row.message_id.to_string()),
        (h::CORRELATION_ID, meta(row, h::CORRELATION_ID).unwrap_or(&row.aggregate_id).to_owned()),
        (h::OCCURRED_AT, row.created_at.timestamp_millis().to_string()),
        (h::RECORD, message.full_name().to_owned()),
    ];
    if row.aggregate_type != DIRECT || row.sequence > 0 {
        pairs.push((h::AGGREGATE_VERSION, row.sequence.to_string()));
    }
    for key in [h::CAUSATION_ID, h::TRACEPARENT] {
        if let Some(v) = meta(row, key) {
            pairs.push((key, v.to_owned()));
        }
    }
    kafka::to_headers(pairs)
}

/// A mapper for an event-sourced aggregate: parse the stored event and convert it.
pub fn event_mapper<E, F>(convert: F) -> EventMapper
where
    E: serde::de::DeserializeOwned,
    F: Fn(&str, &E) -> anyhow::Result<Message> + Send + Sync + 'static,
{
    Arc::new(move |row: &OutboxRow| {
        let event: E = serde_json::from_value(row.payload.clone())
            .with_context(|| format!("stored {} event {} does not parse", row.aggregate_type, row.record))?;
        convert(&row.aggregate_id, &event)
    })
}
