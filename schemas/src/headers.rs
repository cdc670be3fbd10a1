//! Kafka header names. Every message carries a message id, a correlation id (the order/saga id
//! for saga traffic, else the aggregate id) and a causation id (the message that caused it).

/// Unique id of this message; consumers deduplicate on it.
pub const MESSAGE_ID: &str = "message-id";
/// Ties together all messages of one business flow (the order id for an order's saga).
pub const CORRELATION_ID: &str = "correlation-id";
/// The message id of the message that caused this one.
pub const CAUSATION_ID: &str = "causation-id";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// Aggregate stream sequence of an event (1-based), for idempotent projections.
pub const AGGREGATE_VERSION: &str = "aggregate-version";
/// When the event was recorded, milliseconds since the Unix epoch.
pub const OCCURRED_AT: &str = "occurred-at";
/// Avro full record name, for humans reading the topic (consumers use the schema id).
pub const RECORD: &str = "record";

/// DLQ headers: why and from where a message was parked.
pub const DLQ_ERROR: &str = "dlq-error";
pub const DLQ_ATTEMPTS: &str = "dlq-attempts";
pub const DLQ_TOPIC: &str = "dlq-original-topic";
pub const DLQ_PARTITION: &str = "dlq-original-partition";
pub const DLQ_OFFSET: &str = "dlq-original-offset";
