//! What the auditor loaded, as plain data: the checks read nothing else, so they run (and are
//! tested) without any infrastructure.

use domain::customer::CustomerEvent;
use domain::order::{OrderEvent, OrderStatus};
use domain::payment::AccountEvent;
use domain::product::ProductEvent;
use mongodb::bson::Document;
use readstore::readmodel::ReadModel;
use schemas::{Message, Topic};
use std::collections::{BTreeMap, BTreeSet};

/// One event store: a service's own database, whose `events` table holds one aggregate type,
/// published on one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Store {
    Customer,
    Product,
    Order,
    Payment,
}

impl Store {
    pub const ALL: [Store; 4] = [Store::Customer, Store::Product, Store::Order, Store::Payment];

    pub const fn name(self) -> &'static str {
        match self {
            Store::Customer => "customer",
            Store::Product => "product",
            Store::Order => "order",
            Store::Payment => "payment",
        }
    }

    /// The `aggregate_type` column of its events (`domain::Aggregate::TYPE`).
    pub const fn aggregate_type(self) -> &'static str {
        match self {
            Store::Customer => "Customer",
            Store::Product => "Product",
            Store::Order => "Order",
            Store::Payment => "Account",
        }
    }

    /// The service's database in the local stack (`tools/stack/ports.toml`, `SERVICE_DATABASES`).
    pub const fn database(self) -> &'static str {
        match self {
            Store::Customer => "shop_customer",
            Store::Product => "shop_product",
            Store::Order => "shop_order",
            Store::Payment => "shop_payment",
        }
    }

    /// Where its relay publishes its events.
    pub const fn topic(self) -> Topic {
        match self {
            Store::Customer => Topic::CustomerEvents,
            Store::Product => Topic::ProductEvents,
            Store::Order => Topic::OrderEvents,
            Store::Payment => Topic::PaymentEvents,
        }
    }

    pub fn of_topic(topic: Topic) -> Option<Store> {
        Store::ALL.into_iter().find(|s| s.topic() == topic)
    }
}

/// The saga orchestrator's database (`sagas` table and an outbox of direct rows).
pub const SAGA_DATABASE: &str = "shop_saga";

/// A stored event as the domain reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Customer(CustomerEvent),
    Product(ProductEvent),
    Order(OrderEvent),
    Account(AccountEvent),
}

/// One row of an `events` table.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub store: Store,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// The Kafka message id the outbox trigger gives the event: `md5(type/id/sequence)` as a
    /// UUID, computed by PostgreSQL with the trigger's own expression.
    pub message_id: String,
    /// The payload read as the aggregate's event; `Err` when it does not read.
    pub event: Result<Event, String>,
}

/// An outbox row: queued for Kafka, or parked in `outbox_dead` after failing.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// The database whose outbox holds it.
    pub database: String,
    pub message_id: String,
    /// Event rows: the aggregate; direct rows (the saga's): the Kafka key.
    pub aggregate_id: String,
    /// Event rows: the stream position; the saga's `SagaUpdated`: the saga's version.
    pub sequence: i64,
    /// Event type, or the Avro record name of a direct row.
    pub record: String,
    /// Set when the row is parked in `outbox_dead`: the relay's last error.
    pub dead: Option<String>,
}

/// A snapshot a service stored (`snapshots_v2`): its aggregate's state after `last_sequence`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredState {
    pub store: Store,
    pub aggregate_id: String,
    pub last_sequence: i64,
    pub state: serde_json::Value,
}

/// One record of an event topic, read with `read_committed`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicRecord {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub message_id: Option<String>,
    pub aggregate_version: Option<i64>,
    /// `Err`: not decodable (a poison message, which the consumers park on their DLQ).
    pub message: Result<Message, String>,
}

/// One row of the saga orchestrator's `sagas` table.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaRow {
    pub order_id: String,
    /// RUNNING, COMPENSATING, CONFIRMED, REJECTED or CANCELLED.
    pub status: String,
    pub step: String,
    /// How many times the orchestrator stored it; its `SagaUpdated` events carry the same.
    pub version: i64,
}

/// One e-mail Mailpit holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub id: String,
    pub subject: String,
    pub to: Vec<String>,
}

/// An order a client was told was accepted (202), and what the client saw of it: a line of the
/// load generator's `--orders-out` (see [`crate::promised`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Promise {
    /// The file's line, from 1, so an id promised twice points back to both records.
    pub line: usize,
    pub order_id: String,
    /// The final status the client saw; `None` when it saw none before its deadline.
    pub final_seen: Option<OrderStatus>,
    /// The client asked to cancel and cannot know whether that took: no answer, or a 5xx. Then
    /// the CONFIRMED it saw may still turn CANCELLED without breaking a promise.
    pub cancel_unknown: bool,
}

/// Every document of a read model, by `_id`.
pub type Documents = BTreeMap<String, Document>;

/// The read models as the services serve them, and as a fresh replay of the topics built them.
#[derive(Debug, Clone, Default)]
pub struct ReadModels {
    /// Each read model's active collection (the pointer a rebuild switches).
    pub live: BTreeMap<ReadModel, Documents>,
    pub replayed: BTreeMap<ReadModel, Documents>,
}

/// Everything the checks judge.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Every event of every store, ordered by store, aggregate and sequence; read in one
    /// snapshot per database together with [`Loaded::queued`] and [`Loaded::snapshots`],
    /// before the topics.
    pub events: Vec<StoredEvent>,
    /// The stores' outbox rows (and the saga's) at that snapshot: in flight or parked.
    pub queued: Vec<Queued>,
    pub snapshots: Vec<StoredState>,
    /// The message ids the stores hold when read again after the topics: a record published
    /// after the first read is found here, so only what no store holds is called foreign.
    pub stored_later: BTreeSet<String>,
    /// The records of the five event topics, in offset order per partition.
    pub records: Vec<TopicRecord>,
    pub sagas: Vec<SagaRow>,
    pub mails: Vec<Mail>,
    pub read_models: ReadModels,
    /// What clients were told was accepted (`audit --promised`); empty when not given.
    pub promised: Vec<Promise>,
}
