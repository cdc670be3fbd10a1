//! Runs the outbox relay of one database on its own: the stress test kills and restarts it,
//! and it can relay an outbox by hand. Configured by the environment:
//! - `SHOP_DATABASE_URL` (required): the database whose outbox is relayed (migrated if needed);
//! - `SHOP_KAFKA_BROKERS`, `SHOP_SCHEMA_REGISTRY_URL`: as for every service;
//! - `SHOP_OUTBOX_RELAY_ID`: the relay id (default `outbox-relay-<database>`);
//! - `SHOP_OUTBOX_TOPIC_PREFIX`: prefix of every topic written (default none: the live topics);
//! - `SHOP_OUTBOX_BATCH`: rows per batch (default 500).
//!
//! Event rows of every aggregate in `domain` are mapped; direct rows need no mapping.

use anyhow::Context;
use domain::Aggregate;
use domain::customer::Customer;
use domain::order::Order;
use domain::payment::Account;
use domain::product::Product;
use eventstore::db;
use messaging::outbox::{EventMapper, Relay, event_mapper};
use runtime::Settings;
use schemas::{Codec, convert};
use std::sync::Arc;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Maps event rows by aggregate type, as each service's own relay does for its aggregate.
fn any_aggregate() -> EventMapper {
    let product = event_mapper(|id: &str, e| Ok(convert::product_event(convert::product_id(id)?, e)));
    let customer = event_mapper(|id: &str, e| Ok(convert::customer_event(convert::customer_id(id)?, e)));
    let order = event_mapper(|id: &str, e| Ok(convert::order_event(convert::order_id(id)?, e)));
    let account = event_mapper(|id: &str, e| Ok(convert::account_event(convert::customer_id(id)?, e)));
    Arc::new(move |row| match row.aggregate_type.as_str() {
        Product::TYPE => product(row),
        Customer::TYPE => customer(row),
        Order::TYPE => order(row),
        Account::TYPE => account(row),
        other => anyhow::bail!("no mapping for aggregate type {other:?}"),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    runtime::cli::service(
        "outbox-relay-probe",
        "Probe of the outbox relay: runs or inspects a relay by hand (configured by the environment, see the source).",
    );
    runtime::telemetry::init("outbox-relay-probe");
    let settings = Settings::from_env("outbox-relay-probe")?;
    let url = var("SHOP_DATABASE_URL").context("SHOP_DATABASE_URL is required")?;
    let pool = db::connect(&url, 4).await?;
    db::migrate_outbox(&pool).await?;
    let codec = Arc::new(Codec::new(&settings.schema_registry_url)?);
    let mut relay = Relay::new(pool, &settings.kafka_brokers, codec, any_aggregate());
    if let Some(id) = var("SHOP_OUTBOX_RELAY_ID") {
        relay = relay.with_relay_id(id);
    }
    if let Some(prefix) = var("SHOP_OUTBOX_TOPIC_PREFIX") {
        relay = relay.with_topic_prefix(prefix);
    }
    if let Some(batch) = var("SHOP_OUTBOX_BATCH") {
        relay = relay.with_batch(batch.parse().context("SHOP_OUTBOX_BATCH")?);
    }
    tracing::info!(relay = relay.relay_id(), "relaying");
    relay.run(runtime::shutdown_signal()).await;
    Ok(())
}
