//! The wire format of every Kafka message, owned in one place.
//!
//! - `avro/<context>/<Record>.avsc`: the source of truth. [`records`] holds the Rust types, and a
//!   test fails if a type drifts from its schema.
//! - [`topics`]: the topic catalog (names, retention, DLQ names).
//! - [`headers`]: the header names every message carries.
//! - [`convert`]: domain events/commands to and from wire records. The domain never sees Avro.
//! - [`api`]: records that carry a whole read-model document, as the public API's shape.
//! - [`codec`]: Confluent wire format (magic byte + schema id + Avro body) through a schema
//!   registry with the Confluent API; schemas are registered under topic + record name. Bodies are
//!   read with the writer's schema resolved to ours, so compatible evolutions load both ways.
//! - [`compat`]: the evolution rule (a new schema must read all data of its earlier versions),
//!   enforced over git history by the `schemas check` binary (`src/bin/schemas.rs`).

pub mod api;
pub mod codec;
pub mod compat;
pub mod convert;
pub mod headers;
pub mod records;
pub mod topics;

pub use codec::{Codec, DecodeError, EncodeError};
pub use records::{Message, Record};
pub use topics::Topic;
