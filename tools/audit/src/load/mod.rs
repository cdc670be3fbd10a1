//! The thin loading layer: read every store into [`Loaded`], in an order that keeps them
//! comparable while the stack runs.
//!
//! 1. [`settle`]: wait (bounded) until outboxes are empty and consumer groups caught up.
//! 2. [`stores`]: each event store in one snapshot (events, snapshots, outbox, outbox_dead), and
//!    the saga table with its outbox.
//! 3. [`topics`]: the event topics up to the high watermarks of now. Every event stored in step
//!    2 is on its topic by now or still in the outbox read with it.
//! 4. [`stores::message_ids`] again: a record published after step 2 is found there.
//! 5. [`mailpit`]: every e-mail.
//! 6. [`read_models`]: the live read models, then a replay of step 3's records into a scratch
//!    database.

pub mod mailpit;
pub mod read_models;
pub mod settle;
pub mod stores;
pub mod topics;

use crate::model::{Loaded, ReadModels, SAGA_DATABASE, Store};
use crate::report::Conditions;
use anyhow::Context;
use schemas::Topic;
use sqlx::PgPool;
use std::time::Duration;

/// Where the stores are.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The PostgreSQL server holding the services' databases, without a database name.
    pub postgres: String,
    pub kafka: String,
    /// The schema registry's Confluent API base.
    pub registry: String,
    pub mongodb: String,
    /// Mailpit's web API base.
    pub mailpit: String,
}

impl Sources {
    /// The local stack's addresses (`tools/stack/ports.toml`), as the services default to them.
    pub fn local() -> Self {
        use runtime::config::{local, local_postgres};
        Self {
            postgres: local_postgres(),
            kafka: local("kafka"),
            registry: format!("http://{}/apis/ccompat/v7", local("registry")),
            mongodb: format!("mongodb://{}/?directConnection=true&retryWrites=false", local("mongo")),
            mailpit: format!("http://{}", local("mailpit")),
        }
    }
}

/// One pool per database the audit reads.
pub struct Pools {
    stores: Vec<(Store, PgPool)>,
    saga: PgPool,
}

impl Pools {
    pub async fn connect(postgres: &str) -> anyhow::Result<Self> {
        let mut stores = Vec::new();
        for store in Store::ALL {
            stores.push((store, stores::connect(postgres, store.database()).await?));
        }
        Ok(Self { stores, saga: stores::connect(postgres, SAGA_DATABASE).await? })
    }

    pub fn all(&self) -> impl Iterator<Item = (&'static str, &PgPool)> {
        self.stores.iter().map(|(s, p)| (s.database(), p)).chain([(SAGA_DATABASE, &self.saga)])
    }
}

/// The topics read: every event topic.
pub const TOPICS: [Topic; 5] = projectors::EVENT_TOPICS;

/// Read everything, waiting up to `settle` for a quiet stack first.
pub async fn load(sources: &Sources, settle: Duration) -> anyhow::Result<(Loaded, Conditions)> {
    let pools = Pools::connect(&sources.postgres).await?;
    let mongo = readstore::readmodel::connect(&sources.mongodb).await?;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build()?;
    let mut conditions = Conditions::default();
    if !settle.is_zero() {
        conditions.unsettled = settle::wait(&pools, &sources.kafka, settle).await;
    }

    let mut loaded = Loaded::default();
    for (store, pool) in &pools.stores {
        let contents = stores::read_store(pool, *store).await?;
        if contents.foreign > 0 {
            conditions.notes.push(format!(
                "{}: {} events of other aggregate types than {} (not audited)",
                store.database(),
                contents.foreign,
                store.aggregate_type()
            ));
        }
        loaded.events.extend(contents.events);
        loaded.queued.extend(contents.queued);
        loaded.snapshots.extend(contents.snapshots);
    }
    let (sagas, queued) = stores::read_sagas(&pools.saga).await?;
    loaded.sagas = sagas;
    loaded.queued.extend(queued);

    let topics = topics::read(&sources.kafka, &sources.registry, &TOPICS).await?;
    conditions.unsettled.extend(topics.short.iter().cloned());
    loaded.records = topics.records;

    for (store, pool) in &pools.stores {
        loaded.stored_later.extend(stores::message_ids(pool, *store).await?);
    }
    loaded.mails = mailpit::read(&http, &sources.mailpit).await.context("reading Mailpit")?;

    let live = read_models::live(&mongo).await.context("reading the live read models")?;
    let replayed = read_models::replay(&mongo, &topics.envelopes).await.context("replaying the topics")?;
    conditions.notes.extend(replayed.notes);
    loaded.read_models = ReadModels { live, replayed: replayed.documents };

    let docs = |m: &std::collections::BTreeMap<_, crate::model::Documents>| m.values().map(|d| d.len()).sum();
    conditions.read = [
        ("stored events", loaded.events.len()),
        ("outbox rows", loaded.queued.len()),
        ("snapshots", loaded.snapshots.len()),
        ("topic records", loaded.records.len()),
        ("saga rows", loaded.sagas.len()),
        ("e-mails", loaded.mails.len()),
        ("live documents", docs(&loaded.read_models.live)),
        ("replayed documents", docs(&loaded.read_models.replayed)),
    ]
    .into();
    conditions.settled = conditions.unsettled.is_empty();
    Ok((loaded, conditions))
}
