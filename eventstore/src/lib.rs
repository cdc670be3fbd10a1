//! The service's PostgreSQL database and the event store in it: connecting (the database is
//! created when missing), the migrations of the outbox and event tables, and cqrs-es over our own
//! postgres-es-layout store for [`domain::Aggregate`]s.
//!
//! Builds on `messaging` (an event store's handler runs for a consumed message; a commit wakes
//! the outbox relay) and `runtime`. Must not depend on MongoDB, on the service wiring, or on any
//! service: a command service uses this crate, never the other way round.
//!
//! - [`db`]: PostgreSQL pool for the service's own database (created if missing) and migrations.
//! - [`es`]: cqrs-es adapter for [`domain::Aggregate`]s: execute commands, load state.
//! - `gather`: a consumer batch's event writes, one statement for all its aggregates.
//! - [`notify`]: hearing what other instances committed (PostgreSQL `LISTEN`), with reconnects.
//! - [`pg_store`]: the event store's queries: one per load, one statement per write.

pub mod db;
pub mod es;
mod gather;
pub mod notify;
pub mod pg_store;
