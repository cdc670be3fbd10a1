//! Group commit of a consumer batch's event writes: the commands of a batch run per key at once
//! ([`crate::es::EventStoreOf::per_key`]), and instead of one `INSERT` per command, the commits
//! that meet are written by one statement for all their aggregates.
//!
//! Each run of the batch (one key's commands, in order) hands its commit's rows to the
//! [`Gather`] and waits. When every run still going waits, the rows are written together: one
//! statement, so one transaction, one call of the outbox trigger (one outbox insert, one inbox
//! insert) and one commit for all of them. A run never waits for one that is busy elsewhere
//! for long: that one either commits (and joins) or ends (and the others go).
//!
//! Nothing of a command's meaning changes. The statement is atomic: if it fails, nothing of it
//! is stored, and every commit in it is written again on its own, with the store's usual answer
//! for each (a conflict on one aggregate is that aggregate's alone). A commit that waits alone
//! is written on its own at once.

use serde_json::Value;
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// The `INSERT` of many aggregates' events into `table`: seven arrays, a row per index.
pub(crate) fn statement(table: &str) -> String {
    format!(
        "INSERT INTO {table} (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::json[], $7::json[])"
    )
}

tokio::task_local! {
    /// Where the commits of the batch being handled gather.
    static GATHER: Arc<Gather>;
}

/// Run a batch's `runs` with their commits gathered in `gather`, which must have been made for
/// as many runs: each run is counted out when it ends.
pub(crate) async fn scope<F: Future>(gather: Arc<Gather>, runs: Vec<F>) -> Vec<F::Output> {
    let counted = runs.into_iter().map(|run| {
        let gather = gather.clone();
        async move {
            let output = run.await;
            gather.finished().await;
            output
        }
    });
    GATHER.scope(gather.clone(), futures::future::join_all(counted)).await
}

/// The gather of the batch being handled, if any.
pub(crate) fn current() -> Option<Arc<Gather>> {
    GATHER.try_with(Arc::clone).ok()
}

/// One commit's rows: an aggregate's new events, in sequence order.
#[derive(Debug)]
pub(crate) struct Rows {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequences: Vec<i64>,
    pub types: Vec<String>,
    pub versions: Vec<String>,
    pub payloads: Vec<Value>,
    pub metadata: Vec<Value>,
}

/// What became of rows handed to [`Gather::write`].
#[derive(Debug)]
pub(crate) enum Written {
    /// Stored together with the other waiting commits.
    Together,
    /// Not written: the caller writes them on its own (they waited alone, or the statement
    /// for all of them failed and stored nothing).
    Alone(Rows),
    /// The batch was given up while they were being written: whether they are stored is not
    /// known (the caller reports a database error; the inbox settles a redelivery).
    Unknown,
}

struct Waiting {
    rows: Rows,
    done: oneshot::Sender<Written>,
}

struct State {
    /// Runs of the batch not finished yet.
    running: usize,
    waiting: Vec<Waiting>,
}

impl State {
    /// Whether every run still going waits for its commit.
    fn all_wait(&self) -> bool {
        !self.waiting.is_empty() && self.waiting.len() >= self.running
    }
}

/// The commits of one batch's runs, written together (see the module's documentation).
pub(crate) struct Gather {
    /// The store whose commits gather here (a service may have more than one).
    store: Arc<()>,
    pool: PgPool,
    statement: Arc<str>,
    state: Mutex<State>,
}

impl Gather {
    /// For `runs` runs of a batch, committing to the store known by `store`.
    pub fn new(store: Arc<()>, pool: PgPool, statement: Arc<str>, runs: usize) -> Self {
        Self { store, pool, statement, state: Mutex::new(State { running: runs, waiting: Vec::new() }) }
    }

    /// Whether commits of the store known by `store` gather here.
    pub fn serves(&self, store: &Arc<()>) -> bool {
        Arc::ptr_eq(&self.store, store)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hand over a commit's rows and wait until they are written with the others, or given
    /// back to be written alone.
    pub async fn write(&self, rows: Rows) -> Written {
        let (done, outcome) = oneshot::channel();
        let ready = {
            let mut state = self.state();
            state.waiting.push(Waiting { rows, done });
            state.all_wait()
        };
        if ready {
            self.flush().await;
        }
        outcome.await.unwrap_or(Written::Unknown)
    }

    /// A run of the batch has ended: the others need not wait for it.
    pub async fn finished(&self) {
        let ready = {
            let mut state = self.state();
            state.running = state.running.saturating_sub(1);
            state.all_wait()
        };
        if ready {
            self.flush().await;
        }
    }

    /// Write what waits, together, and tell each commit.
    async fn flush(&self) {
        let waiting = std::mem::take(&mut self.state().waiting);
        if waiting.len() == 1 {
            for w in waiting {
                let _ = w.done.send(Written::Alone(w.rows));
            }
            return;
        }
        let rows = waiting.iter().map(|w| &w.rows);
        let count: usize = rows.clone().map(|r| r.sequences.len()).sum();
        let (mut types, mut ids, mut sequences, mut events, mut versions, mut payloads, mut metadata) = (
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
        );
        for r in rows {
            for i in 0..r.sequences.len() {
                types.push(r.aggregate_type);
                ids.push(r.aggregate_id.as_str());
                sequences.push(r.sequences[i]);
                events.push(r.types[i].as_str());
                versions.push(r.versions[i].as_str());
                payloads.push(&r.payloads[i]);
                metadata.push(&r.metadata[i]);
            }
        }
        let written = sqlx::query(&self.statement)
            .bind(&types)
            .bind(&ids)
            .bind(&sequences)
            .bind(&events)
            .bind(&versions)
            .bind(&payloads)
            .bind(&metadata)
            .execute(&self.pool)
            .await;
        match written {
            Ok(_) => {
                tracing::debug!(commits = waiting.len(), events = count, "event writes gathered");
                for w in waiting {
                    let _ = w.done.send(Written::Together);
                }
            }
            Err(e) => {
                tracing::debug!(commits = waiting.len(), error = %e, "gathered event write failed; each is written alone");
                for w in waiting {
                    let _ = w.done.send(Written::Alone(w.rows));
                }
            }
        }
    }
}
