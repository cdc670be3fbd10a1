//! The read models in MongoDB: where each lives, the active-collection pointers a rebuild
//! switches, and the queries that honour a request's consistency token.
//!
//! Builds on `runtime` (the token, `ApiError`, the caller). Must not depend on Kafka, PostgreSQL
//! or the event store: projectors and services use this crate to reach MongoDB, nothing more.
//!
//! - [`readmodel`]: MongoDB read models and their active-collection pointers.
//! - [`query`]: read-your-writes reads: wait (bounded) for the version a token names.
//! - [`shown`]: long waits for writes that take a while to show, one lookup for all waiting.

pub mod query;
pub mod readmodel;
pub mod shown;
