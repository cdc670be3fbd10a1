//! Read models in MongoDB: one database per context. Projectors write them; services query them.
//!
//! A read model is served from its *active* collection. A rebuild fills a shadow collection
//! (`orders__rebuild_3`) and then switches by rewriting one pointer document in
//! [`META_DB`]`.`[`ACTIVE`] — `{_id: "orders", db: "orders", collection: "orders__rebuild_3"}` — a
//! single-document write, atomic on MongoDB and FerretDB alike (renameCollection with
//! dropTarget is not guaranteed on FerretDB v1). Readers and the live projector resolve the
//! pointer through [`Active`], which caches it for [`POINTER_TTL`]; without a pointer document
//! the read model's original collection is active.

use anyhow::Context;
use mongodb::bson::{Document, doc};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use runtime::http::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// (database, collection) of each read model.
pub const CUSTOMERS: (&str, &str) = ("customers", "customers");
pub const CATALOG: (&str, &str) = ("catalog", "products");
pub const ORDERS: (&str, &str) = ("orders", "orders");
pub const PAYMENTS: (&str, &str) = ("payments", "payments");
pub const SAGAS: (&str, &str) = ("sagas", "sagas");

/// Database of the projectors' own bookkeeping: active pointers, checkpoints, rebuild progress.
pub const META_DB: &str = "readmodels";
/// Collection of the active-collection pointers, one document per read model.
pub const ACTIVE: &str = "active";
/// How long a resolved pointer is trusted. A rebuild keeps applying events for a few times
/// this long after its switch, so writes that still went to the old collection are not lost.
pub const POINTER_TTL: Duration = Duration::from_secs(1);

/// The read models the projectors maintain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReadModel {
    Customers,
    Catalog,
    Orders,
    Payments,
    Sagas,
}

impl ReadModel {
    pub const ALL: [ReadModel; 5] =
        [ReadModel::Customers, ReadModel::Catalog, ReadModel::Orders, ReadModel::Payments, ReadModel::Sagas];

    /// Stable name: CLI argument, pointer `_id`, checkpoint key.
    pub const fn name(self) -> &'static str {
        match self {
            ReadModel::Customers => "customers",
            ReadModel::Catalog => "catalog",
            ReadModel::Orders => "orders",
            ReadModel::Payments => "payments",
            ReadModel::Sagas => "sagas",
        }
    }

    /// (database, original collection).
    pub const fn location(self) -> (&'static str, &'static str) {
        match self {
            ReadModel::Customers => CUSTOMERS,
            ReadModel::Catalog => CATALOG,
            ReadModel::Orders => ORDERS,
            ReadModel::Payments => PAYMENTS,
            ReadModel::Sagas => SAGAS,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub async fn connect(url: &str) -> anyhow::Result<mongodb::Client> {
    let mut options = ClientOptions::parse(url).await.with_context(|| format!("bad MongoDB url {url:?}"))?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    options.app_name = Some("shop".into());
    mongodb::Client::with_options(options).context("creating MongoDB client")
}

/// A read-model failure as the API answers it: an opaque 500, the cause logged. (Not an
/// `impl From<mongodb::error::Error> for ApiError`: neither type is this crate's, and `runtime`,
/// which defines `ApiError`, does not depend on MongoDB.)
pub fn api_error(e: mongodb::error::Error) -> ApiError {
    ApiError::internal(format!("read model: {e}"))
}

/// The read model's original collection, whatever the pointer says. Prefer [`Active`].
/// Up to 1000 documents of `coll` matching `filter`, in `sort` order, as `V`.
pub async fn list_views<V: serde::de::DeserializeOwned>(
    coll: &Collection<Document>,
    filter: Document,
    sort: Document,
) -> Result<Vec<V>, ApiError> {
    use futures::TryStreamExt;
    let docs: Vec<Document> =
        coll.find(filter).sort(sort).limit(1000).await.map_err(api_error)?.try_collect().await.map_err(api_error)?;
    docs.into_iter().map(mongodb::bson::from_document::<V>).collect::<Result<Vec<_>, _>>().map_err(ApiError::internal)
}

pub fn collection(client: &mongodb::Client, which: (&str, &str)) -> mongodb::Collection<mongodb::bson::Document> {
    client.database(which.0).collection(which.1)
}

/// The pointer documents.
pub fn pointers(client: &Client) -> Collection<Document> {
    client.database(META_DB).collection(ACTIVE)
}

/// Name of the collection `read_model` is served from, read from the pointer (uncached).
pub async fn active_name(client: &Client, read_model: ReadModel) -> mongodb::error::Result<String> {
    let pointer = pointers(client).find_one(doc! { "_id": read_model.name() }).await?;
    Ok(pointer
        .and_then(|p| p.get_str("collection").ok().map(str::to_owned))
        .unwrap_or_else(|| read_model.location().1.to_owned()))
}

/// Make `collection` (in the read model's database) the active one: one atomic upsert.
pub async fn switch(client: &Client, read_model: ReadModel, collection: &str) -> mongodb::error::Result<()> {
    switch_in(&client.database(META_DB), read_model, read_model.location().0, collection).await
}

/// [`switch`] with the pointers in `meta` and the collection in database `db` (a benchmark
/// rebuilds into a database of its own and must not touch the live pointers).
pub async fn switch_in(
    meta: &mongodb::Database,
    read_model: ReadModel,
    db: &str,
    collection: &str,
) -> mongodb::error::Result<()> {
    let set = doc! { "db": db, "collection": collection, "switched_at": mongodb::bson::DateTime::now() };
    meta.collection::<Document>(ACTIVE)
        .update_one(doc! { "_id": read_model.name() }, doc! { "$set": set })
        .upsert(true)
        .await?;
    Ok(())
}

/// Resolves read models to their active collections, caching each pointer for [`POINTER_TTL`].
/// Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Active {
    client: Client,
    cache: Arc<Mutex<HashMap<ReadModel, (Instant, String)>>>,
}

impl Active {
    pub fn new(client: &Client) -> Self {
        Self { client: client.clone(), cache: Arc::default() }
    }

    /// One read model, for a service's state.
    pub fn of(&self, read_model: ReadModel) -> ActiveCollection {
        ActiveCollection(Source::Pointer { active: self.clone(), read_model })
    }

    pub async fn name(&self, read_model: ReadModel) -> mongodb::error::Result<String> {
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&read_model).cloned();
        if let Some((at, name)) = &cached
            && at.elapsed() < POINTER_TTL
        {
            return Ok(name.clone());
        }
        match active_name(&self.client, read_model).await {
            Ok(name) => {
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(read_model, (Instant::now(), name.clone()));
                Ok(name)
            }
            // A pointer that cannot be read right now is most likely unchanged: keep serving.
            Err(e) => match cached {
                Some((_, name)) => {
                    tracing::warn!(error = %e, %read_model, "active pointer unreadable; using the last one");
                    Ok(name)
                }
                None => Err(e),
            },
        }
    }

    pub async fn collection(&self, read_model: ReadModel) -> mongodb::error::Result<Collection<Document>> {
        let name = self.name(read_model).await?;
        Ok(self.client.database(read_model.location().0).collection(&name))
    }
}

/// A read model's active collection, resolved on each use.
#[derive(Clone)]
pub struct ActiveCollection(Source);

#[derive(Clone)]
enum Source {
    Pointer { active: Active, read_model: ReadModel },
    Fixed(Collection<Document>),
}

impl ActiveCollection {
    pub fn new(client: &Client, read_model: ReadModel) -> Self {
        Active::new(client).of(read_model)
    }

    /// Always `collection`, whatever the pointers say: for a test or a benchmark with a
    /// collection of its own.
    pub fn fixed(collection: Collection<Document>) -> Self {
        Self(Source::Fixed(collection))
    }

    pub async fn get(&self) -> mongodb::error::Result<Collection<Document>> {
        match &self.0 {
            Source::Pointer { active, read_model } => active.collection(*read_model).await,
            Source::Fixed(collection) => Ok(collection.clone()),
        }
    }
}
