//! Read models in MongoDB: one database per context. Projectors write them; services query them.

use anyhow::Context;
use mongodb::options::ClientOptions;

/// (database, collection) of each read model.
pub const CUSTOMERS: (&str, &str) = ("customers", "customers");
pub const CATALOG: (&str, &str) = ("catalog", "products");
pub const ORDERS: (&str, &str) = ("orders", "orders");
pub const PAYMENTS: (&str, &str) = ("payments", "payments");

pub async fn connect(url: &str) -> anyhow::Result<mongodb::Client> {
    let mut options = ClientOptions::parse(url).await.with_context(|| format!("bad MongoDB url {url:?}"))?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    options.app_name = Some("shop".into());
    mongodb::Client::with_options(options).context("creating MongoDB client")
}

pub fn collection(client: &mongodb::Client, which: (&str, &str)) -> mongodb::Collection<mongodb::bson::Document> {
    client.database(which.0).collection(which.1)
}
