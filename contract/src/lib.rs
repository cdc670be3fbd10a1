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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
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

/// One saga in the list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SagaSummary {
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

/// One saga with its history: steps, compensations and errors.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Saga {
    #[serde(alias = "_id")]
    pub id: Uuid,
    pub customer_id: Uuid,
    pub status: String,
    pub step: String,
    #[schema(nullable = true)]
    pub reason: Option<String>,
    /// Each product's reservation state.
    #[schema(value_type = Vec<Object>)]
    pub lines: serde_json::Value,
    /// NONE, AUTHORIZED, CONFIRMED, DECLINED or REFUNDED.
    pub payment: String,
    pub total_cents: i64,
    pub currency: String,
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
