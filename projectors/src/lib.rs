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
//! active pointer (`platform::readmodel`), a rebuild writes its shadow collections.

pub mod checkpoint;
pub mod offsets;
pub mod rebuild;
pub mod status;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use platform::Settings;
use platform::consumer::{Envelope, Handler, HandlerError};
use platform::readmodel::{self, ReadModel};
use platform::service::Wiring;
use schemas::{Message, Topic};
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

    async fn target(&self, read_model: ReadModel) -> Result<Option<Collection<Document>>, HandlerError> {
        match &self.targets {
            Targets::Active(active) => {
                Ok(Some(active.collection(read_model).await.map_err(|e| HandlerError::Transient(e.into()))?))
            }
            Targets::Fixed(map) => Ok(map.get(&read_model).cloned()),
        }
    }

    /// [`guarded`] on the read model's current target, if it has one.
    async fn upsert(
        &self,
        read_model: ReadModel,
        id: &str,
        stream: &str,
        version: i64,
        update: Document,
    ) -> Result<(), HandlerError> {
        // Payment documents see only their order's events of the account stream.
        let order = if read_model == ReadModel::Payments { Order::Loose } else { Order::Strict };
        match self.target(read_model).await? {
            Some(coll) => guarded(&coll, id, stream, version, update, order).await,
            None => Ok(()),
        }
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
/// events of their stream (a payment document sees its account's events for one order).
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
    DateTime::<Utc>::from_timestamp_millis(envelope.occurred_at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[async_trait]
impl Handler for Projections {
    async fn handle(&self, e: &Envelope) -> Result<(), HandlerError> {
        let Some(v) = e.aggregate_version else {
            return Err(HandlerError::Permanent("event without aggregate-version header".into()));
        };
        match &e.message {
            Message::CustomerRegistered(m) => {
                let u = doc! { "$set": { "name": &m.name, "email": &m.email, "owner": &m.owner } };
                self.upsert(ReadModel::Customers, &m.customer_id, "customer", v, u).await
            }
            Message::AccountOpened(m) => {
                let u =
                    doc! { "$set": { "credit_limit_cents": m.credit_cents, "credit_available_cents": m.credit_cents } };
                self.upsert(ReadModel::Customers, &m.customer_id, "payment", v, u).await
            }
            Message::PaymentAuthorized(m) => {
                let u = doc! { "$inc": { "credit_available_cents": -m.amount_cents } };
                self.upsert(ReadModel::Customers, &m.customer_id, "payment", v, u).await?;
                self.payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "AUTHORIZED", v).await
            }
            Message::PaymentRefunded(m) => {
                let u = doc! { "$inc": { "credit_available_cents": m.amount_cents } };
                self.upsert(ReadModel::Customers, &m.customer_id, "payment", v, u).await?;
                self.payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "REFUNDED", v).await
            }
            // No change to the customer's credit, but the customer document follows every
            // event of the account stream, in order.
            Message::PaymentDeclined(m) => {
                self.upsert(ReadModel::Customers, &m.customer_id, "payment", v, doc! {}).await?;
                self.payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "DECLINED", v).await
            }
            Message::PaymentConfirmed(m) => {
                self.upsert(ReadModel::Customers, &m.customer_id, "payment", v, doc! {}).await?;
                self.payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "CONFIRMED", v).await
            }
            Message::ProductCreated(m) => {
                let u = doc! { "$set": {
                    "sku": &m.sku, "name": &m.name, "price_cents": m.price_cents, "currency": &m.currency,
                    "available": i64::from(m.stock), "reserved": 0_i64, "sold": 0_i64,
                } };
                self.upsert(ReadModel::Catalog, &m.product_id, "product", v, u).await
            }
            Message::StockAdded(m) => {
                let u = doc! { "$inc": { "available": i64::from(m.quantity) } };
                self.upsert(ReadModel::Catalog, &m.product_id, "product", v, u).await
            }
            Message::StockReserved(m) => {
                let q = i64::from(m.quantity);
                let u = doc! { "$inc": { "available": -q, "reserved": q } };
                self.upsert(ReadModel::Catalog, &m.product_id, "product", v, u).await
            }
            Message::StockReleased(m) => {
                let q = i64::from(m.quantity);
                let u = doc! { "$inc": { "available": q, "reserved": -q } };
                self.upsert(ReadModel::Catalog, &m.product_id, "product", v, u).await
            }
            Message::StockCommitted(m) => {
                let q = i64::from(m.quantity);
                let u = doc! { "$inc": { "reserved": -q, "sold": q } };
                self.upsert(ReadModel::Catalog, &m.product_id, "product", v, u).await
            }
            Message::StockReservationFailed(m) => {
                self.upsert(ReadModel::Catalog, &m.product_id, "product", v, doc! {}).await
            }
            Message::StockReturned(m) => {
                let q = i64::from(m.quantity);
                let u = doc! { "$inc": { "sold": -q, "available": q } };
                self.upsert(ReadModel::Catalog, &m.product_id, "product", v, u).await
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
                self.upsert(ReadModel::Orders, &m.order_id, "order", v, u).await
            }
            Message::OrderConfirmed(m) => {
                let u = doc! { "$set": { "status": "CONFIRMED" }, "$push": { "history": { "status": "CONFIRMED", "at": at(e) } } };
                self.upsert(ReadModel::Orders, &m.order_id, "order", v, u).await
            }
            Message::OrderRejected(m) => {
                let u = doc! {
                    "$set": { "status": "REJECTED", "reason": &m.reason },
                    "$push": { "history": { "status": "REJECTED", "at": at(e) } },
                };
                self.upsert(ReadModel::Orders, &m.order_id, "order", v, u).await
            }
            Message::OrderCancelled(m) => {
                let u = doc! {
                    "$set": { "status": "CANCELLED", "reason": &m.reason },
                    "$push": { "history": { "status": "CANCELLED", "at": at(e) } },
                };
                self.upsert(ReadModel::Orders, &m.order_id, "order", v, u).await
            }
            Message::SagaUpdated(m) => {
                // The whole state each time: the newest version wins.
                let lines: Vec<Document> = m
                    .lines
                    .iter()
                    .map(|l| doc! { "product_id": &l.product_id, "quantity": i64::from(l.quantity), "state": &l.state })
                    .collect();
                let history: Vec<Document> = m
                    .history
                    .iter()
                    .map(|h| {
                        let at = DateTime::<Utc>::from_timestamp_millis(h.at_ms).unwrap_or_default();
                        doc! { "at": at.to_rfc3339_opts(SecondsFormat::Millis, true), "step": &h.step, "what": &h.what }
                    })
                    .collect();
                let u = doc! { "$set": {
                    "customer_id": &m.customer_id, "status": &m.status, "step": &m.step, "reason": m.reason.as_deref(),
                    "payment": &m.payment, "total_cents": m.total_cents, "currency": &m.currency,
                    "lines": lines, "history": history,
                } };
                self.upsert(ReadModel::Sagas, &m.order_id, "saga", v, u).await
            }
            // Recorded for the version guard only: the order stays as it is until cancelled.
            Message::OrderCancellationRequested(m) => {
                self.upsert(ReadModel::Orders, &m.order_id, "order", v, doc! {}).await
            }
            _ => Ok(()),
        }
    }
}

impl Projections {
    async fn payment(
        &self,
        order_id: &str,
        customer_id: &str,
        amount_cents: i64,
        currency: &str,
        status: &str,
        version: i64,
    ) -> Result<(), HandlerError> {
        let u = doc! { "$set": { "customer_id": customer_id, "amount_cents": amount_cents, "currency": currency, "status": status } };
        self.upsert(ReadModel::Payments, order_id, "account", version, u).await
    }
}

pub const EVENT_TOPICS: [Topic; 5] =
    [Topic::CustomerEvents, Topic::ProductEvents, Topic::OrderEvents, Topic::PaymentEvents, Topic::SagaEvents];

/// The live projector's Kafka consumer group.
pub const CONSUMER_GROUP: &str = "projectors";

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut wiring = Wiring::connect(settings, &[], &EVENT_TOPICS).await?;
    let mongo = readmodel::connect(&wiring.settings.mongodb_url).await?;
    let projections = Projections::new(&mongo);
    platform::service::retry_until("mongodb", std::time::Duration::from_secs(60), || projections.create_indexes())
        .await?;
    let (handler, flusher) = checkpoint::Checkpointed::new(projections, checkpoint::Checkpoints::new(&mongo));
    wiring.spawn(flusher.run(wiring.shutdown.clone()));
    // A gap (see `guarded`) is waited out for about a minute before the event is parked.
    let mut config =
        platform::consumer::ConsumerConfig::new(&wiring.settings.kafka_brokers, CONSUMER_GROUP, &EVENT_TOPICS);
    config.max_attempts = 14;
    wiring.spawn_consumer_with(config, Arc::new(handler));
    let router = status::router(status::StatusSource { mongo, brokers: wiring.settings.kafka_brokers.clone() });
    wiring.serve(router).await
}
