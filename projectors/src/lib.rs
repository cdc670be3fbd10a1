//! Projectors: event topics -> MongoDB read models, one database per context.
//!
//! Every document remembers the last applied version of each stream that feeds it
//! (`v_<stream>`); an update only matches when its event is newer, so replays and
//! redeliveries change nothing. Projections hold no business rules: they copy and count.

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use platform::consumer::{Envelope, Handler, HandlerError};
use platform::service::Wiring;
use platform::{Settings, readmodel};
use schemas::{Message, Topic};
use std::sync::Arc;

pub struct Projections {
    pub customers: Collection<Document>,
    pub catalog: Collection<Document>,
    pub orders: Collection<Document>,
    pub payments: Collection<Document>,
}

impl Projections {
    pub fn new(client: &mongodb::Client) -> Self {
        Self {
            customers: readmodel::collection(client, readmodel::CUSTOMERS),
            catalog: readmodel::collection(client, readmodel::CATALOG),
            orders: readmodel::collection(client, readmodel::ORDERS),
            payments: readmodel::collection(client, readmodel::PAYMENTS),
        }
    }

    /// Indexes for every query the services make.
    pub async fn create_indexes(&self) -> anyhow::Result<()> {
        let index = |keys: Document| IndexModel::builder().keys(keys).options(IndexOptions::default()).build();
        self.orders.create_index(index(doc! { "customer_id": 1 })).await?;
        self.catalog.create_index(index(doc! { "sku": 1 })).await?;
        self.customers.create_index(index(doc! { "email": 1 })).await?;
        self.payments.create_index(index(doc! { "customer_id": 1 })).await?;
        Ok(())
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == 11000
    ) || e.to_string().contains("E11000")
}

/// Apply `update` to document `id` only if `stream`'s version there is older than `version`.
/// Upserts: the first event of a stream creates the document.
async fn guarded(
    coll: &Collection<Document>,
    id: &str,
    stream: &str,
    version: i64,
    mut update: Document,
) -> Result<(), HandlerError> {
    let field = format!("v_{stream}");
    let filter = doc! { "_id": id, "$or": [ { &field: { "$exists": false } }, { &field: { "$lt": version } } ] };
    let mut set = update.get_document("$set").cloned().unwrap_or_default();
    set.insert(field, version);
    update.insert("$set", set);
    match coll.update_one(filter, update).upsert(true).await {
        Ok(_) => Ok(()),
        // The document exists with this version or newer: already applied.
        Err(e) if is_duplicate_key(&e) => Ok(()),
        Err(e) => Err(HandlerError::Transient(e.into())),
    }
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
                let u = doc! { "$set": { "name": &m.name, "email": &m.email } };
                guarded(&self.customers, &m.customer_id, "customer", v, u).await
            }
            Message::AccountOpened(m) => {
                let u =
                    doc! { "$set": { "credit_limit_cents": m.credit_cents, "credit_available_cents": m.credit_cents } };
                guarded(&self.customers, &m.customer_id, "payment", v, u).await
            }
            Message::PaymentAuthorized(m) => {
                let u = doc! { "$inc": { "credit_available_cents": -m.amount_cents } };
                guarded(&self.customers, &m.customer_id, "payment", v, u).await?;
                self.payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "AUTHORIZED", v).await
            }
            Message::PaymentRefunded(m) => {
                let u = doc! { "$inc": { "credit_available_cents": m.amount_cents } };
                guarded(&self.customers, &m.customer_id, "payment", v, u).await?;
                self.payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "REFUNDED", v).await
            }
            Message::PaymentDeclined(m) => {
                self.payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "DECLINED", v).await
            }
            Message::PaymentConfirmed(m) => {
                self.payment(&m.order_id, &m.customer_id, m.amount_cents, &m.currency, "CONFIRMED", v).await
            }
            Message::ProductCreated(m) => {
                let u = doc! { "$set": {
                    "sku": &m.sku, "name": &m.name, "price_cents": m.price_cents, "currency": &m.currency,
                    "available": i64::from(m.stock), "reserved": 0_i64, "sold": 0_i64,
                } };
                guarded(&self.catalog, &m.product_id, "product", v, u).await
            }
            Message::StockAdded(m) => {
                let u = doc! { "$inc": { "available": i64::from(m.quantity) } };
                guarded(&self.catalog, &m.product_id, "product", v, u).await
            }
            Message::StockReserved(m) => {
                let q = i64::from(m.quantity);
                let u = doc! { "$inc": { "available": -q, "reserved": q } };
                guarded(&self.catalog, &m.product_id, "product", v, u).await
            }
            Message::StockReleased(m) => {
                let q = i64::from(m.quantity);
                let u = doc! { "$inc": { "available": q, "reserved": -q } };
                guarded(&self.catalog, &m.product_id, "product", v, u).await
            }
            Message::StockCommitted(m) => {
                let q = i64::from(m.quantity);
                let u = doc! { "$inc": { "reserved": -q, "sold": q } };
                guarded(&self.catalog, &m.product_id, "product", v, u).await
            }
            Message::StockReservationFailed(m) => guarded(&self.catalog, &m.product_id, "product", v, doc! {}).await,
            Message::OrderPlaced(m) => {
                let items: Vec<Document> = m
                    .lines
                    .iter()
                    .map(|l| doc! { "product_id": &l.product_id, "quantity": i64::from(l.quantity), "unit_price_cents": l.unit_price_cents })
                    .collect();
                let u = doc! {
                    "$set": { "customer_id": &m.customer_id, "items": items, "total_cents": m.total_cents,
                              "currency": &m.currency, "status": "PENDING" },
                    "$push": { "history": { "status": "PENDING", "at": at(e) } },
                };
                guarded(&self.orders, &m.order_id, "order", v, u).await
            }
            Message::OrderConfirmed(m) => {
                let u = doc! { "$set": { "status": "CONFIRMED" }, "$push": { "history": { "status": "CONFIRMED", "at": at(e) } } };
                guarded(&self.orders, &m.order_id, "order", v, u).await
            }
            Message::OrderRejected(m) => {
                let u = doc! {
                    "$set": { "status": "REJECTED", "reason": &m.reason },
                    "$push": { "history": { "status": "REJECTED", "at": at(e) } },
                };
                guarded(&self.orders, &m.order_id, "order", v, u).await
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
        guarded(&self.payments, order_id, "account", version, u).await
    }
}

pub const EVENT_TOPICS: [Topic; 4] =
    [Topic::CustomerEvents, Topic::ProductEvents, Topic::OrderEvents, Topic::PaymentEvents];

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut wiring = Wiring::connect(settings, &[], &EVENT_TOPICS).await?;
    let mongo = readmodel::connect(&wiring.settings.mongodb_url).await?;
    let projections = Arc::new(Projections::new(&mongo));
    platform::service::retry_until("mongodb", std::time::Duration::from_secs(60), || projections.create_indexes())
        .await?;
    wiring.spawn_consumer("projectors", &EVENT_TOPICS, projections);
    wiring.serve(axum::Router::new()).await
}
