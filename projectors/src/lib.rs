//! Projectors: event topics -> MongoDB read models, one database per context.
//!
//! Every document remembers the last applied version of each stream that feeds it
//! (`v_<stream>`); an update only matches when its event is newer, so replays and
//! redeliveries change nothing. Projections hold no business rules: they copy and count.
//!
//! - this file: the projections ([`Projections`], one match over the events) and the service.
//! - [`checkpoint`]: the live projector's position per topic-partition, kept in MongoDB.
//! - [`status`]: position, lag and time behind per projection (`projectors status`, `GET /status`).
//! - [`rebuild`]: replay into shadow collections, catch up, switch the active pointer; resumable.
//!
//! Which collection a read model is written to is not fixed: the live projector follows the
//! active pointer (`readstore::readmodel`), a rebuild writes its shadow collections.

pub mod checkpoint;
pub mod fold;
pub mod offsets;
pub mod rebuild;
pub mod status;
pub mod synthetic;

use async_trait::async_trait;
use messaging::consumer::{Delivery, Envelope, Handler, HandlerError};
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use readstore::readmodel::{self, ReadModel};
use runtime::Settings;
use schemas::{Message, Topic};
use service_kit::Wiring;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where the projections write.
pub enum Targets {
    /// The live projector: each read model's active collection, re-resolved as its pointer's
    /// cache expires, so writes follow a rebuild's switch.
    Active(readmodel::Active),
    /// A rebuild: fixed (shadow) collections; read models not listed are not written.
    Fixed(BTreeMap<ReadModel, Collection<Document>>),
}

pub struct Projections {
    targets: Targets,
}

impl Projections {
    pub fn new(client: &mongodb::Client) -> Self {
        Self { targets: Targets::Active(readmodel::Active::new(client)) }
    }

    pub fn into_collections(targets: BTreeMap<ReadModel, Collection<Document>>) -> Self {
        Self { targets: Targets::Fixed(targets) }
    }

    /// The fixed collections of a rebuild (`None` for the live projector).
    pub fn fixed(&self) -> Option<&BTreeMap<ReadModel, Collection<Document>>> {
        match &self.targets {
            Targets::Fixed(map) => Some(map),
            Targets::Active(_) => None,
        }
    }

    async fn target(&self, read_model: ReadModel) -> Result<Option<Collection<Document>>, HandlerError> {
        match &self.targets {
            Targets::Active(active) => {
                Ok(Some(active.collection(read_model).await.map_err(|e| HandlerError::Transient(e.into()))?))
            }
            Targets::Fixed(map) => Ok(map.get(&read_model).cloned()),
        }
    }

    /// One change, guarded by its version, to its target collection (if this writer has one).
    async fn apply(&self, c: Change) -> Result<(), HandlerError> {
        if let Some(coll) = self.target(c.read_model).await? {
            let order = c.order();
            guarded(&coll, &c.id, c.stream, c.version, c.update, order).await?;
        }
        Ok(())
    }

    /// One document's changes (same read model and id, in event order) as folded updates;
    /// whether all of them applied. `false` leaves the rest to the per-event path.
    async fn apply_folded(&self, list: &[Change]) -> Result<bool, HandlerError> {
        let Some(first) = list.first() else { return Ok(true) };
        let Some(coll) = self.target(first.read_model).await? else { return Ok(true) };
        let Some(updates) = fold::fold_live(&first.id, list.to_vec()) else { return Ok(false) };
        for u in updates {
            let applied = match coll.update_one(u.filter, u.update).upsert(u.upsert).await {
                Ok(r) => r.matched_count > 0 || r.upserted_id.is_some(),
                Err(e) if is_duplicate_key(&e) => false,
                Err(e) => return Err(HandlerError::Transient(e.into())),
            };
            if !applied {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Indexes for every query the services make, on each target collection.
    pub async fn create_indexes(&self) -> anyhow::Result<()> {
        let index = |keys: Document| IndexModel::builder().keys(keys).options(IndexOptions::default()).build();
        for read_model in ReadModel::ALL {
            let Some(coll) = self.target(read_model).await.map_err(|e| anyhow::anyhow!("{e}"))? else {
                continue;
            };
            // Users' queries are scoped to their own documents by `owner`.
            let keys = match read_model {
                ReadModel::Orders => vec![doc! { "customer_id": 1 }, doc! { "owner": 1, "customer_id": 1 }],
                ReadModel::Catalog => vec![doc! { "sku": 1 }],
                ReadModel::Customers => vec![doc! { "email": 1 }, doc! { "owner": 1 }],
                ReadModel::Payments => vec![doc! { "customer_id": 1 }],
                ReadModel::Sagas => vec![doc! { "status": 1 }],
            };
            for keys in keys {
                coll.create_index(index(keys)).await?;
            }
        }
        Ok(())
    }
}

/// The topics each read model is projected from.
pub fn topics_of(read_model: ReadModel) -> &'static [Topic] {
    match read_model {
        ReadModel::Customers => &[Topic::CustomerEvents, Topic::PaymentEvents],
        ReadModel::Catalog => &[Topic::ProductEvents],
        ReadModel::Orders => &[Topic::OrderEvents],
        ReadModel::Payments => &[Topic::PaymentEvents],
        ReadModel::Sagas => &[Topic::SagaEvents],
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000
    ) || e.to_string().contains("E11000")
}

/// Apply `update` to document `id` only if it is the next event of `stream` there: version 1
/// on a document without that stream, else exactly one past the version it holds. A repeat
/// (the document holds `version` or newer) is a no-op. A gap (an earlier event not applied yet,
/// e.g. while a rebuild and the live projector both write around a switch) is a transient
/// error, so the event is retried once its predecessor landed — never applied out of order.
///
/// `Order::Loose` keeps the older rule (apply when newer) for documents that see only some
/// events of their stream (a payment document sees its account's events for one order, a saga
/// document the versions of its saga that were published).
async fn guarded(
    coll: &Collection<Document>,
    id: &str,
    stream: &str,
    version: i64,
    mut update: Document,
    order: Order,
) -> Result<(), HandlerError> {
    let field = format!("v_{stream}");
    let mut set = update.get_document("$set").cloned().unwrap_or_default();
    set.insert(field.clone(), version);
    update.insert("$set", set);
    let (filter, upsert) = match order {
        Order::Loose => {
            (doc! { "_id": id, "$or": [ { &field: { "$exists": false } }, { &field: { "$lt": version } } ] }, true)
        }
        Order::Strict if version <= 1 => (doc! { "_id": id, &field: { "$exists": false } }, true),
        Order::Strict => (doc! { "_id": id, &field: version - 1 }, false),
    };
    let matched = match coll.update_one(filter, update).upsert(upsert).await {
        Ok(r) => r.matched_count > 0 || r.upserted_id.is_some(),
        // Upsert of a document that exists with this version or newer.
        Err(e) if is_duplicate_key(&e) => false,
        Err(e) => return Err(HandlerError::Transient(e.into())),
    };
    if matched || order == Order::Loose {
        return Ok(());
    }
    let current = coll
        .find_one(doc! { "_id": id })
        .projection(doc! { &field: 1 })
        .await
        .map_err(|e| HandlerError::Transient(e.into()))?
        .and_then(|d| d.get(&field).and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from))))
        .unwrap_or(0);
    if current >= version {
        Ok(()) // already applied
    } else {
        Err(HandlerError::Transient(anyhow::anyhow!(
            "{id}: {stream} event {version} waits for event {} (document holds {current})",
            version - 1
        )))
    }
}

/// How strictly a document follows its stream's versions (see [`guarded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Strict,
    Loose,
}

fn at(envelope: &Envelope) -> String {
    schemas::api::rfc3339_ms(envelope.occurred_at)
}

/// One document update an event causes: `update` applied to document `id` of `read_model` as
/// the `version`-th event of `stream` (see [`guarded`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub read_model: ReadModel,
    pub id: String,
    pub stream: &'static str,
    pub version: i64,
    pub update: Document,
    /// The event that creates its document: the first one a document sees (orders, products,
    /// payments, sagas). A live batch inserts such documents instead of upserting them
    /// ([`fold::created`]); it is only a hint, an insert that finds the document falls back to
    /// the guarded update.
    pub creates: bool,
}

impl Change {
    fn new(read_model: ReadModel, id: &str, stream: &'static str, version: i64, update: Document) -> Self {
        Self { read_model, id: id.to_owned(), stream, version, update, creates: false }
    }

    fn creating(self) -> Self {
        Self { creates: true, ..self }
    }

    /// How strictly the document follows the stream's versions.
    pub fn order(&self) -> Order {
        match self.read_model {
            // Payment documents see only their order's events of the account stream; a saga's
            // `SagaUpdated` is its whole state, published for some of its versions only (when it
            // ends, or rests at one): the newest wins.
            ReadModel::Payments | ReadModel::Sagas => Order::Loose,
            _ => Order::Strict,
        }
    }
}

/// The document updates of one event, in the order they are applied: one by one
/// ([`Projections::handle`]), or a batch of them folded per document, by the live projector
/// ([`Projections::handle_batch`]) and by a rebuild ([`rebuild`]). Every way the documents come
/// out the same.
pub fn changes(e: &Envelope) -> Result<Vec<Change>, HandlerError> {
    let Some(v) = e.aggregate_version else {
        return Err(HandlerError::Permanent("event without aggregate-version header".into()));
    };
    let one = |r, id: &str, stream, u| Ok(vec![Change::new(r, id, stream, v, u)]);
    let first = |r, id: &str, stream, u| Ok(vec![Change::new(r, id, stream, v, u).creating()]);
    let payment = |order: &str, customer: &str, amount: i64, currency: &str, status: &str, u: Document| {
        let p = doc! { "$set": { "customer_id": customer, "amount_cents": amount, "currency": currency, "status": status } };
        // An order's payment document starts with its authorization or its decline.
        let p = Change::new(ReadModel::Payments, order, "account", v, p);
        let p = if matches!(status, "AUTHORIZED" | "DECLINED") { p.creating() } else { p };
        Ok(vec![Change::new(ReadModel::Customers, customer, "payment", v, u), p])
    };
    match &e.message {
        Message::CustomerRegistered(m) => {
            let u = doc! { "$set": { "name": &m.name, "email": &m.email, "owner": &m.owner } };
            one(ReadModel::Customers, &m.customer_id, "customer", u)
        }
        Message::AccountOpened(m) => {
            let u = doc! { "$set": { "credit_limit_cents": m.credit_cents, "credit_available_cents": m.credit_cents } };
            one(ReadModel::Customers, &m.customer_id, "payment", u)
        }
        Message::PaymentAuthorized(m) => {
            let u = doc! { "$inc": { "credit_available_cents": -m.amount_cents } };
            payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "AUTHORIZED", u)
        }
        Message::PaymentRefunded(m) => {
            let u = doc! { "$inc": { "credit_available_cents": m.amount_cents } };
            payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "REFUNDED", u)
        }
        // No change to the customer's credit, but the customer document follows every
        // event of the account stream, in order.
        Message::PaymentDeclined(m) => {
            payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "DECLINED", doc! {})
        }
        Message::PaymentConfirmed(m) => {
            payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "CONFIRMED", doc! {})
        }
        Message::ProductCreated(m) => {
            let u = doc! { "$set": {
                "sku": &m.sku, "name": &m.name, "price_cents": m.price_cents, "currency": &m.currency,
                "available": i64::from(m.stock), "reserved": 0_i64, "sold": 0_i64,
            } };
            first(ReadModel::Catalog, &m.product_id, "product", u)
        }
        Message::StockAdded(m) => {
            let u = doc! { "$inc": { "available": i64::from(m.quantity) } };
            one(ReadModel::Catalog, &m.product_id, "product", u)
        }
        Message::StockReserved(m) => {
            let q = i64::from(m.quantity);
            let u = doc! { "$inc": { "available": -q, "reserved": q } };
            one(ReadModel::Catalog, &m.product_id, "product", u)
        }
        Message::StockReleased(m) => {
            let q = i64::from(m.quantity);
            let u = doc! { "$inc": { "available": q, "reserved": -q } };
            one(ReadModel::Catalog, &m.product_id, "product", u)
        }
        Message::StockCommitted(m) => {
            let q = i64::from(m.quantity);
            let u = doc! { "$inc": { "reserved": -q, "sold": q } };
            one(ReadModel::Catalog, &m.product_id, "product", u)
        }
        Message::StockReservationFailed(m) => one(ReadModel::Catalog, &m.product_id, "product", doc! {}),
        Message::StockReturned(m) => {
            let q = i64::from(m.quantity);
            let u = doc! { "$inc": { "sold": -q, "available": q } };
            one(ReadModel::Catalog, &m.product_id, "product", u)
        }
        Message::OrderPlaced(m) => {
            let items: Vec<Document> = m
                    .lines
                    .iter()
                    .map(|l| doc! { "product_id": &l.product_id, "quantity": i64::from(l.quantity), "unit_price_cents": l.unit_price_cents })
                    .collect();
            let u = doc! {
                "$set": { "customer_id": &m.customer_id, "items": items, "total_cents": m.total_cents,
                          "currency": &m.currency, "status": "PENDING", "owner": &m.owner },
                "$push": { "history": { "status": "PENDING", "at": at(e) } },
            };
            first(ReadModel::Orders, &m.order_id, "order", u)
        }
        Message::OrderConfirmed(m) => {
            let u = doc! { "$set": { "status": "CONFIRMED" }, "$push": { "history": { "status": "CONFIRMED", "at": at(e) } } };
            one(ReadModel::Orders, &m.order_id, "order", u)
        }
        Message::OrderRejected(m) => {
            let u = doc! {
                "$set": { "status": "REJECTED", "reason": &m.reason },
                "$push": { "history": { "status": "REJECTED", "at": at(e) } },
            };
            one(ReadModel::Orders, &m.order_id, "order", u)
        }
        Message::OrderCancelled(m) => {
            let u = doc! {
                "$set": { "status": "CANCELLED", "reason": &m.reason },
                "$push": { "history": { "status": "CANCELLED", "at": at(e) } },
            };
            one(ReadModel::Orders, &m.order_id, "order", u)
        }
        Message::SagaUpdated(m) => {
            // The whole saga each time, as the API shows it: the newest version wins.
            let saga = m.to_api().map_err(|e| HandlerError::Permanent(format!("saga {}: {e}", m.order_id)))?;
            let mut set = mongodb::bson::to_document(&saga).map_err(|e| HandlerError::Permanent(e.to_string()))?;
            set.remove("id"); // the document's `_id`
            // Usually the saga's only write: published when it ends (or rests at a step).
            first(ReadModel::Sagas, &m.order_id, "saga", doc! { "$set": set })
        }
        // Recorded for the version guard only: the order stays as it is until cancelled.
        Message::OrderCancellationRequested(m) => one(ReadModel::Orders, &m.order_id, "order", doc! {}),
        _ => Ok(vec![]),
    }
}

#[async_trait]
impl Handler for Projections {
    async fn handle(&self, e: &Envelope) -> Result<(), HandlerError> {
        for c in changes(e)? {
            self.apply(c).await?;
        }
        Ok(())
    }

    /// A batch's changes per document, in event order. Documents the batch starts are inserted,
    /// one `insert` per read model ([`fold::created`]); the others take as few guarded updates
    /// as their changes fold into (usually one: see [`fold::fold_live`]), up to
    /// [`PARALLEL_DOCUMENTS`] at once, since no guard of one depends on another. A new document
    /// whose insert fails (it exists: a redelivery, a replay) takes the guarded way too, which
    /// skips what it holds.
    async fn handle_batch(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        let mut documents: Vec<Vec<Change>> = Vec::new();
        let mut index: std::collections::HashMap<(ReadModel, String), usize> = std::collections::HashMap::new();
        for d in batch {
            for c in changes(&d.envelope)? {
                let slot = *index.entry((c.read_model, c.id.clone())).or_insert_with(|| {
                    documents.push(Vec::new());
                    documents.len() - 1
                });
                documents[slot].push(c);
            }
        }
        let mut new: BTreeMap<ReadModel, Vec<(Document, Vec<Change>)>> = BTreeMap::new();
        let mut existing = Vec::new();
        for list in documents {
            match list.first().and_then(|c| fold::created(&c.id, &list)) {
                Some(d) => new.entry(list[0].read_model).or_default().push((d, list)),
                None => existing.push(list),
            }
        }
        let (missed, updated) = futures::join!(self.insert_new(new), self.update_each(existing));
        updated?;
        self.update_each(missed?).await
    }
}

impl Projections {
    /// Insert each read model's new documents with one unordered `insert`; the change lists of
    /// those it did not insert (all of them when the command failed as a whole).
    async fn insert_new(
        &self,
        new: BTreeMap<ReadModel, Vec<(Document, Vec<Change>)>>,
    ) -> Result<Vec<Vec<Change>>, HandlerError> {
        let inserts = new.into_iter().map(|(read_model, docs)| async move {
            let Some(coll) = self.target(read_model).await? else { return Ok(Vec::new()) };
            let (docs, lists): (Vec<Document>, Vec<Vec<Change>>) = docs.into_iter().unzip();
            let failed: Option<std::collections::HashSet<usize>> = match coll.insert_many(docs).ordered(false).await {
                Ok(_) => return Ok(Vec::new()),
                Err(e) => match e.kind.as_ref() {
                    mongodb::error::ErrorKind::InsertMany(mongodb::error::InsertManyError {
                        write_errors: Some(errors),
                        write_concern_error: None,
                        ..
                    }) => Some(errors.iter().map(|w| w.index).collect()),
                    _ => None,
                },
            };
            Ok::<_, HandlerError>(
                lists
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| failed.as_ref().is_none_or(|f| f.contains(i)))
                    .map(|(_, list)| list)
                    .collect(),
            )
        });
        Ok(futures::future::try_join_all(inserts).await?.into_iter().flatten().collect())
    }

    /// Each document's changes as guarded updates (folded where they allow), documents side
    /// by side.
    async fn update_each(&self, documents: Vec<Vec<Change>>) -> Result<(), HandlerError> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(documents)
            .map(|list| async move {
                if list.len() > 1 && self.apply_folded(&list).await? {
                    return Ok(());
                }
                for c in list {
                    self.apply(c).await?;
                }
                Ok::<(), HandlerError>(())
            })
            .buffer_unordered(PARALLEL_DOCUMENTS)
            .try_collect::<()>()
            .await
    }
}

/// One consumer of the live projector: its Kafka consumer group, the topics it reads and the
/// window its batches gather events in (a document changed several times meanwhile — a
/// product's stock, a customer's credit, a saga's steps — is written once).
///
/// By default the batch lingers for the window after its first event. With the setting
/// `projectors.gather_at_broker = true` the window is the broker's instead (`fetch_wait`, see
/// [`messaging::consumer::ConsumerConfig`]): a fetch is answered with what the window gathered,
/// one fetch per window, and the batch takes it without lingering. At 30 orders/s on a 2-core
/// machine the two sent as many fetches (`bench-results/broker-gathering/`); it stays a setting
/// to measure where loads are higher.
#[derive(Debug, Clone, Copy)]
pub struct LiveConsumer {
    pub group: &'static str,
    pub topics: &'static [Topic],
    pub gather: std::time::Duration,
    pub max_batch: usize,
}

impl LiveConsumer {
    /// The consumer's settings, its window gathered at the broker or by lingering.
    pub fn config(&self, brokers: &str, at_broker: bool) -> messaging::consumer::ConsumerConfig {
        let mut config = messaging::consumer::ConsumerConfig::new(brokers, self.group, self.topics);
        // A gap (see `guarded`) is waited out for about a minute before the event is parked.
        config.max_attempts = 14;
        config.max_batch = self.max_batch;
        if at_broker {
            config.fetch_wait = self.gather;
        } else {
            config.linger = self.gather;
        }
        config
    }
}

/// The live projector's consumers. An order's outcome is what callers wait for (a long-poll
/// answers once the `orders` read model shows it), so order events gather for 50 ms at most, in
/// a group of their own. The catalog, customers and payments read models take most of the
/// writes (a product's stock and a customer's credit change with every order, a payment
/// twice) and no answer waits for them but a read-your-writes token after an admin's or a
/// customer's own change: their batches gather for 250 ms, so a busy document is written
/// once per batch instead of once per event. No answer waits for the saga read model (the
/// dashboard reads the orchestrator's own table), and it takes the most writes: a saga's whole
/// state after each of its five or so steps, all within a few hundred milliseconds. Read by
/// its own group with a longer window, most sagas are written once or twice instead of once
/// per step.
pub const LIVE_CONSUMERS: [LiveConsumer; 3] = [
    LiveConsumer {
        group: "projectors.orders",
        topics: &[Topic::OrderEvents],
        gather: std::time::Duration::from_millis(50),
        max_batch: 256,
    },
    LiveConsumer {
        group: "projectors",
        topics: &[Topic::CustomerEvents, Topic::ProductEvents, Topic::PaymentEvents],
        gather: std::time::Duration::from_millis(250),
        max_batch: 512,
    },
    LiveConsumer {
        group: "projectors.sagas",
        topics: &[Topic::SagaEvents],
        gather: std::time::Duration::from_millis(500),
        max_batch: 1024,
    },
];

/// Documents a live batch writes at once.
const PARALLEL_DOCUMENTS: usize = 16;

pub const EVENT_TOPICS: [Topic; 5] =
    [Topic::CustomerEvents, Topic::ProductEvents, Topic::OrderEvents, Topic::PaymentEvents, Topic::SagaEvents];

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut wiring = Wiring::connect(settings, &[], &EVENT_TOPICS).await?;
    let mongo = readmodel::connect(&wiring.settings.mongodb_url).await?;
    let projections = Projections::new(&mongo);
    service_kit::retry_until("mongodb", std::time::Duration::from_secs(60), || projections.create_indexes()).await?;
    let (handler, flusher) = checkpoint::Checkpointed::new(projections, checkpoint::Checkpoints::new(&mongo));
    wiring.spawn(flusher.run(wiring.shutdown.clone()));
    let handler = Arc::new(handler);
    let at_broker = wiring.settings.value("projectors.gather_at_broker", false)?;
    for live in LIVE_CONSUMERS {
        wiring.spawn_consumer_with(live.config(&wiring.settings.kafka_brokers, at_broker), handler.clone());
    }
    let source =
        status::StatusSource { mongo, brokers: wiring.settings.kafka_brokers.clone(), finished: Default::default() };
    let router = status::router(source, wiring.settings.clone());
    wiring.serve(router).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saga document holds what the API shows, in the types the API shows: ids and times as
    /// strings (BSON would store a UUID as binary if asked to), not as the record's numbers.
    #[test]
    fn a_saga_document_is_the_apis_saga_with_strings_for_ids_and_times() {
        use mongodb::bson::Bson;
        use schemas::records::{SagaEntry, SagaLine, SagaUpdated};
        let order = "6f1c1d7e-0d3c-4a39-9a53-1f3f0c4b7a10";
        let saga = SagaUpdated {
            order_id: order.into(),
            customer_id: "1b2c3d4e-5f60-4172-8394-a5b6c7d8e9f0".into(),
            version: 2,
            status: "RUNNING".into(),
            step: "authorize_payment".into(),
            reason: None,
            payment: "NONE".into(),
            total_cents: 2500,
            currency: "EUR".into(),
            lines: vec![SagaLine { product_id: "p".into(), quantity: 2, state: "RESERVED".into() }],
            history: vec![SagaEntry { at_ms: 1_700_000_000_123, step: "reserve_stock".into(), what: "sent".into() }],
        };
        let envelope = Envelope { aggregate_version: Some(2), ..Envelope::unsent(saga.into(), "m1") };
        let change = changes(&envelope).unwrap().pop().unwrap();
        assert_eq!((change.read_model, change.id.as_str()), (ReadModel::Sagas, order));
        let set = change.update.get_document("$set").unwrap();
        assert!(!set.contains_key("id"), "the id is the document's _id: {set}");
        assert_eq!(set.get("customer_id"), Some(&Bson::String("1b2c3d4e-5f60-4172-8394-a5b6c7d8e9f0".into())));
        assert_eq!(set.get("reason"), Some(&Bson::Null));
        let history = set.get_array("history").unwrap();
        let first = history[0].as_document().unwrap();
        assert_eq!(first.get_str("at").unwrap(), "2023-11-14T22:13:20.123Z");
        let line = set.get_array("lines").unwrap()[0].as_document().unwrap();
        assert_eq!(line.get("quantity").and_then(Bson::as_i64), Some(2), "{line}");
    }

    #[test]
    fn every_event_topic_is_read_by_exactly_one_live_consumer() {
        for topic in EVENT_TOPICS {
            let readers = LIVE_CONSUMERS.iter().filter(|c| c.topics.contains(&topic)).count();
            assert_eq!(readers, 1, "{} is read by {readers} live consumers", topic.name());
        }
        let read: usize = LIVE_CONSUMERS.iter().map(|c| c.topics.len()).sum();
        assert_eq!(read, EVENT_TOPICS.len(), "a live consumer reads a topic that is not an event topic");
    }
}
