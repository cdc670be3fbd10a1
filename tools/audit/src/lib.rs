//! The auditor: checks the shop's invariants from its stores alone — every event store
//! (PostgreSQL), every event topic (Kafka, `read_committed`), the read models (MongoDB), the saga
//! table and Mailpit — never from a service's API or counters. A client's records enter only
//! as what it was promised (`--promised`), which the stores are then held to.
//!
//! - [`model`]: what is loaded, as plain data.
//! - [`facts`]: the auditor's own folds of the streams (orders, accounts, products).
//! - [`checks`]: the seven checks, pure functions of the loaded data:
//!   1. [`checks::orders`]: no accepted order lost or left unfinished; sagas terminal and agreeing;
//!   2. [`checks::duplicates`]: no duplicated effect (stock, payment, order, e-mail);
//!   3. [`checks::money`]: money conserved per customer;
//!   4. [`checks::stock`]: stock identity per product, nothing reserved at rest, sold = confirmed;
//!   5. [`checks::delivery`]: event stores and topics agree;
//!   6. [`checks::read_models`]: every read model equals a fresh replay of the topics;
//!   7. [`checks::promises`]: every order a client was told was accepted is in the order store,
//!      and ends as the client last saw it final (judged only with `--promised`).
//! - [`promised`]: what clients were promised, read from the load generator's `--orders-out`.
//! - [`load`]: the thin layer that reads the stores (and replays the topics into a scratch
//!   database with the projectors' own code).
//! - [`report`]: the verdict, its table and its JSON.

pub mod checks;
pub mod facts;
pub mod load;
pub mod model;
pub mod promised;
pub mod report;

pub use load::Sources;
pub use model::Promise;
pub use report::{Check, Offender, Report};

use std::time::Duration;

/// Load everything (after waiting up to `settle` for a quiet stack) and judge it, without
/// promises: [`checks::promises`] judges nothing.
pub async fn run(sources: &Sources, settle: Duration) -> anyhow::Result<Report> {
    run_with(sources, settle, Vec::new()).await
}

/// [`run`], holding the stores to what clients were `promised` (see [`promised::read`]).
pub async fn run_with(sources: &Sources, settle: Duration, promised: Vec<Promise>) -> anyhow::Result<Report> {
    let (mut loaded, conditions) = load::load(sources, settle).await?;
    loaded.promised = promised;
    Ok(Report::new(conditions, checks::all(&loaded)))
}
