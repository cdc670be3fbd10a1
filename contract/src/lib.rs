//! The public API's bodies, defined once. The services parse requests with these types and
//! read their answers out of the read models with them (a document's `_id` is the `id`; fields
//! a projector renames fail loudly instead of reading back empty), and the gateway documents
//! them as OpenAPI schemas (`/api/openapi.json`). Request types deny unknown fields.
//!
//! Ids in requests are strings that the services parse themselves (so a bad one gets the
//! service's own message); the schema still says `uuid`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Every error answer: a message for people and, where useful, structured detail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    #[schema(example = "not a valid id")]
    pub error: String,
    /// Any JSON (often an object naming the offending field or value, sometimes a message), or null.
    pub detail: serde_json::Value,
}

/// The id of a resource just created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    pub id: Uuid,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomer {
    #[schema(example = "Alice Doe")]
    pub name: String,
    #[schema(example = "alice@example.com")]
    pub email: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    #[serde(alias = "_id")]
    pub id: Uuid,
    pub name: String,
    pub email: String,
    /// Minor units of the account's currency.
    // 0 until the payment service opened the account: the read model learns it from another
    // stream. Always in the answer.
    #[serde(default)]
    #[schema(required = true)]
    pub credit_limit_cents: i64,
    #[serde(default)]
    #[schema(required = true)]
    pub credit_available_cents: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schema(example = "MUG-001")]
    pub sku: String,
    #[schema(example = "Coffee mug")]
    pub name: String,
    /// Minor units (cents), at least 0.
    #[schema(example = 1299, minimum = 0)]
    pub price_cents: i64,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    pub currency: String,
    /// Initial stock.
    #[schema(example = 10, minimum = 0)]
    pub stock: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Product {
    #[serde(alias = "_id")]
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub currency: String,
    pub available: i64,
    /// Admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<i64>,
    /// Admins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sold: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddStock {
    #[schema(example = 5, minimum = 1)]
    pub quantity: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StockAdded {
    pub id: Uuid,
    pub added: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    #[schema(value_type = Uuid)]
    pub customer_id: String,
    /// At least one line.
    pub items: Vec<OrderItem>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    #[schema(value_type = Uuid)]
    pub product_id: String,
    #[schema(example = 2, minimum = 1)]
    pub quantity: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    /// The name the API uses.
    pub const fn name(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

/// The answer to a placed order: the saga decides the rest, so the status is `PENDING`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderAccepted {
    pub order_id: Uuid,
    pub status: OrderStatus,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Order {
    #[serde(alias = "_id")]
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: OrderStatus,
    /// Why the order was rejected or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub items: Vec<OrderLine>,
    pub total_cents: i64,
    pub currency: String,
    /// Every status the order went through, oldest first.
    pub history: Vec<StatusChange>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i64,
    /// The price when the order was placed.
    pub unit_price_cents: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusChange {
    pub status: OrderStatus,
    #[schema(format = DateTime)]
    pub at: String,
}

/// What every answer about a saga says about it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaState {
    /// The order's id: one saga per order.
    #[serde(alias = "_id")]
    pub id: Uuid,
    pub customer_id: Uuid,
    /// RUNNING, COMPENSATING, CONFIRMED, REJECTED or CANCELLED.
    pub status: String,
    /// The step the saga is at.
    pub step: String,
    #[schema(nullable = true)]
    pub reason: Option<String>,
    /// NONE, AUTHORIZED, CONFIRMED, DECLINED or REFUNDED.
    pub payment: String,
    pub total_cents: i64,
    pub currency: String,
}

/// One saga in the list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaSummary {
    #[serde(flatten)]
    pub state: SagaState,
    /// When the order was placed and the saga started.
    #[schema(format = DateTime)]
    pub started_at: String,
    /// When the saga last reached CONFIRMED, REJECTED or CANCELLED; null while under way.
    #[schema(format = DateTime, nullable = true)]
    pub ended_at: Option<String>,
    /// From start to end, in milliseconds; null while under way.
    #[schema(nullable = true)]
    pub duration_ms: Option<i64>,
    /// The order's trace (W3C trace id), to open in Zipkin; null when unknown.
    #[schema(nullable = true)]
    pub trace_id: Option<String>,
}

/// A page of sagas, newest first, with the counts of everything the filter matches.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaPage {
    pub items: Vec<SagaSummary>,
    /// Pass as `after` for the next page; null on the last one.
    #[schema(nullable = true)]
    pub next: Option<String>,
    /// Sagas matching the filter, all pages.
    pub total: i64,
    /// Sagas matching the filter apart from its status, by status: what each status would show.
    pub counts: BTreeMap<String, i64>,
}

/// An operator's reason for an action on a saga or a dead letter: kept with who acted and when
/// (in the saga's history, or next to the dead letter).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorReason {
    #[schema(example = "the payment service was down; it is back")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SagaActionKind {
    /// Send again every command the saga waits on.
    Retry,
    /// Give up on the running step and compensate.
    Compensate,
}

/// One action on every saga a filter matches (at most 1000 per call), or a preview of it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSagaAction {
    pub action: SagaActionKind,
    pub reason: String,
    /// Only count and list what the action would touch.
    #[serde(default)]
    pub preview: bool,
    #[serde(default)]
    pub filter: SagaFilter,
}

/// Which sagas: every field optional, all given fields must match.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SagaFilter {
    /// RUNNING, COMPENSATING, CONFIRMED, REJECTED or CANCELLED.
    pub status: Option<String>,
    /// The step the saga is at.
    pub step: Option<String>,
    #[schema(value_type = Option<Uuid>)]
    pub customer_id: Option<String>,
    /// An order id or its beginning (hex digits and dashes).
    pub order_id: Option<String>,
    /// Started at or after (RFC 3339).
    #[schema(format = DateTime)]
    pub from: Option<String>,
    /// Started before (RFC 3339).
    #[schema(format = DateTime)]
    pub to: Option<String>,
}

/// What a bulk action touched.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkSagaResult {
    /// Sagas the filter matches.
    pub matched: i64,
    /// Sagas acted on (0 for a preview).
    pub applied: i64,
    /// Sagas the action does not apply to, with why.
    pub refused: Vec<SagaRefusal>,
    /// The first matching ids (up to 20).
    pub sample: Vec<String>,
    /// The filter matches more than one call acts on: call again.
    pub more: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaRefusal {
    pub id: String,
    pub error: String,
}

/// The dead-letter topics and the messages parked on them (newest first).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetters {
    pub queues: Vec<DeadLetterQueue>,
}

/// One dead-letter topic, `<topic>.dlq`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterQueue {
    #[schema(example = "order.events.dlq")]
    pub dlq: String,
    /// The topic its messages came from.
    #[schema(example = "order.events")]
    pub topic: String,
    /// Messages ever parked here.
    pub parked: usize,
    /// Parked messages nobody redrove or discarded yet.
    pub open: usize,
    /// The newest parked messages (at most `limit`).
    pub messages: Vec<DeadLetter>,
}

/// One parked message, decoded where its schema is known.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetter {
    pub dlq: String,
    pub partition: i32,
    pub offset: i64,
    /// When it was parked.
    pub parked_at: Option<String>,
    /// Why the consumer gave up on it.
    pub error: String,
    /// How many times the consumer tried.
    pub attempts: Option<u32>,
    /// `topic/partition/offset` where it was first consumed.
    pub origin: String,
    pub key: Option<String>,
    pub message_id: Option<String>,
    /// The Avro record's full name, when the payload decodes.
    pub record: Option<String>,
    /// The payload as JSON, when it decodes with the schema registry.
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// Why the payload does not decode, when it does not.
    pub undecodable: Option<String>,
    pub size: usize,
    /// `open`, `redriven` or `discarded`.
    #[schema(example = "open")]
    pub state: String,
    /// What an operator did with it, if anything.
    pub handled: Option<DeadLetterHandled>,
}

/// An operator's redrive or discard of a dead letter: who, when, why, and where it went.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeadLetterHandled {
    /// `redrive` or `discard`.
    pub action: String,
    pub by: Option<String>,
    pub reason: Option<String>,
    pub at: Option<String>,
    /// Where a redriven message was republished: `topic/partition/offset`.
    pub to: Option<String>,
}

/// Where each projection stands, the rebuilds under way and those the service ran lately.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectionsStatus {
    pub projections: Vec<ProjectionStatus>,
    /// Rebuilds started and not finished (running, or interrupted and resumable).
    pub rebuilds: Vec<RebuildProgress>,
    /// Rebuilds the projectors service ran since it started, newest first (not kept across
    /// restarts; a rebuild run with the CLI is not listed).
    #[serde(default)]
    pub finished: Vec<FinishedRebuild>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectionStatus {
    pub name: String,
    /// The collection the services read.
    pub active_collection: String,
    /// Sum over the projection's partitions of the next offset to apply.
    pub position: i64,
    /// Sum of the high watermarks.
    pub high_watermark: i64,
    /// Committed events not applied yet (transaction markers excluded).
    pub lag: i64,
    /// Now − occurrence time of the last applied event; 0 when nothing is waiting.
    pub behind_ms: i64,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub position: i64,
    pub high_watermark: i64,
    pub lag: i64,
}

/// A rebuild in progress.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RebuildProgress {
    /// `all`, or the read models' names joined by `+`.
    pub id: String,
    /// `replay` (into the shadow collections) or `switched` (serving, handing over).
    pub phase: String,
    /// (read model, the collection it is rebuilt into).
    #[schema(value_type = Vec<Vec<String>>)]
    pub targets: Vec<(String, String)>,
    /// Events applied so far.
    pub applied: i64,
    /// Records read so far, of `total` (the topics' records when it last looked).
    #[serde(default)]
    pub position: i64,
    #[serde(default)]
    pub total: i64,
}

/// Rebuild read models from the event topics: name them, or all.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRebuild {
    /// customers, catalog, orders, payments or sagas.
    #[serde(default)]
    pub read_models: Vec<String>,
    #[serde(default)]
    pub all: bool,
}

/// A rebuild the projectors service ran.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FinishedRebuild {
    pub id: String,
    pub started_by: String,
    pub started_at: String,
    pub finished_at: String,
    /// Events applied.
    pub applied: u64,
    /// Why it failed; none when it switched and handed over.
    pub error: Option<String>,
}

/// The Kafka consumer groups and how far behind each is, per partition.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsumerGroups {
    pub groups: Vec<ConsumerGroup>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsumerGroup {
    #[schema(example = "saga-orchestrator")]
    pub group: String,
    /// As the group coordinator says: Stable, Empty, PreparingRebalance, …
    pub state: String,
    pub members: usize,
    /// Records committed on nowhere yet, over every partition.
    pub lag: i64,
    pub partitions: Vec<ConsumerPartition>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsumerPartition {
    pub topic: String,
    pub partition: i32,
    /// The next offset the group will read.
    pub committed: i64,
    pub high_watermark: i64,
    /// high watermark − committed (transaction markers, if any, count too).
    pub lag: i64,
}

/// One saga with its history: steps, compensations and errors.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Saga {
    #[serde(flatten)]
    pub state: SagaState,
    /// Each product's reservation state.
    #[schema(value_type = Vec<Object>)]
    pub lines: serde_json::Value,
    pub history: Vec<SagaEvent>,
}

/// The CreateOrder saga as declared in the orchestrator: what the dashboard draws.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaDefinition {
    #[schema(example = "CreateOrder")]
    pub name: String,
    /// The steps, in order.
    pub steps: Vec<SagaStepSpec>,
    /// Commands sent once the last step has succeeded (Avro full names).
    pub on_success: Vec<String>,
    /// The command that ends a failed saga, after the compensations.
    pub on_failure: String,
    /// The commands of a cancellation after confirmation, in order.
    pub cancel_after_confirmation: Vec<String>,
    /// The same saga as a Mermaid flowchart.
    pub mermaid: String,
}

/// One step: its command, the replies that end it, how it is undone, whether it times out.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaStepSpec {
    #[schema(example = "reserve_stock")]
    pub name: String,
    #[schema(example = "shop.product.ReserveStock")]
    pub command: String,
    /// Success first.
    pub replies: Vec<String>,
    /// The compensating command, or null when the step needs none.
    #[schema(nullable = true)]
    pub compensation: Option<String>,
    /// `configured` (the step timeout applies) or `none`.
    pub timeout: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaEvent {
    #[schema(format = DateTime)]
    pub at: String,
    pub step: String,
    /// What happened: a command sent, a reply, a timeout, a compensation.
    pub what: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `up` when every service is.
    #[schema(example = "up")]
    pub status: String,
    /// Each service's state, `up` or `down`, by name.
    pub downstream: BTreeMap<String, String>,
}
