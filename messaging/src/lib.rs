//! Kafka: the producers and topic administration, the one consumer loop every service runs
//! (decode, handle, retry, DLQ), and the transactional outbox through which everything a
//! service writes reaches Kafka.
//!
//! Builds on `runtime` (telemetry, metrics) and `schemas` (the wire). Must not depend on the
//! event store (cqrs-es), MongoDB or the service wiring: `eventstore` and `service-kit` build on
//! this crate, not the other way round. PostgreSQL (sqlx) only for the outbox tables.
//!
//! - [`connect`]: how every client reaches Kafka (brokers, TLS, SASL login) from one string.
//! - [`kafka`]: the producers, topic creation, finding a batch's messages on a topic.
//! - [`producer`]: the producer every part sends with (delivery futures, no busy polling).
//! - [`consumer`]: the one consumer loop (decode, handle, retry, DLQ, commit after the effect).
//! - [`outbox`]: events reach Kafka only through the outbox, filled in the events' transaction,
//!   and its relay (once per row across relay crashes, in each aggregate's order).
//! - [`topic`]: a topic read between two points (to its end), detached from the client.
//! - [`dlq`]: the dead-letter topics read whole, and an operator's redrive or discard of a
//!   parked message, recorded in the DLQ with who and why.

pub mod connect;
pub mod consumer;
pub mod dlq;
pub mod kafka;
pub mod outbox;
pub mod producer;
pub mod topic;

#[cfg(test)]
mod tests {
    /// `runtime` names the trace header itself so as not to depend on the wire schemas.
    #[test]
    fn the_trace_header_is_the_wire_schemas_one() {
        assert_eq!(runtime::telemetry::TRACEPARENT, schemas::headers::TRACEPARENT);
    }
}
