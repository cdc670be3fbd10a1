//! The run's own customers and products, made before the clock starts. Everything carries the
//! run id, so the audit can judge stock and credit exactly: nothing else touches them.

use crate::api::Api;
use crate::auth::User;
use crate::mix::Rng;
use crate::plan::{Catalog, ORDINARY_PRICES};
use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Creations in flight at once: quick (a big run needs over a thousand customers), far below
/// the gateway's per-user rate limit even while each waits for its account.
const CONCURRENCY: usize = 16;
/// How long a new customer may take to show its payment account (the payment service opens
/// it from `customer.events`; the customers read model then shows the credit).
const ACCOUNT_WAIT: Duration = Duration::from_secs(60);
/// Stock of the ordinary and the expensive products: more than any run can reserve at once
/// (the order service's largest quantity per delivery is 1 000 000).
pub const LARGE_STOCK: i64 = 1_000_000;
const SCARCE_STOCK: i64 = 1;
const SCARCE_PRICE: i64 = 100;

#[derive(Debug, Clone, Serialize)]
pub struct Customer {
    pub id: Uuid,
    pub owner: User,
    pub credit_limit_cents: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Ordinary,
    /// Priced above every customer's credit limit: over_credit orders.
    Expensive,
    /// Stock 1: over_stock orders.
    Scarce,
}

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub role: Role,
    pub price_cents: i64,
    /// Kept for the audit: initial = available + reserved + sold.
    pub initial_stock: i64,
}

#[derive(Debug, Clone)]
pub struct Setup {
    pub run_id: String,
    pub customers: Vec<Customer>,
    pub products: Vec<Product>,
    pub catalog: Catalog,
}

/// A short id that makes SKUs and e-mail addresses of this run new.
pub fn new_run_id() -> String {
    Uuid::new_v4().simple().to_string()[..10].to_uppercase()
}

pub async fn prepare(api: &Api, run_id: &str, customers: usize, ordinary: usize, seed: u64) -> anyhow::Result<Setup> {
    let customers = create_customers(api, run_id, customers).await?;
    let credit_max = customers.iter().map(|c| c.credit_limit_cents).max().unwrap_or(0);
    let products = create_products(api, run_id, ordinary, credit_max, seed).await?;
    let index_of = |role: Role| products.iter().position(|p| p.role == role);
    let catalog = Catalog {
        prices: products.iter().map(|p| p.price_cents).collect(),
        ordinary: products.iter().enumerate().filter(|(_, p)| p.role == Role::Ordinary).map(|(i, _)| i).collect(),
        expensive: index_of(Role::Expensive).context("no expensive product")?,
        scarce: index_of(Role::Scarce).context("no scarce product")?,
    };
    Ok(Setup { run_id: run_id.to_owned(), customers, products, catalog })
}

/// Customers alternate between alice and bob; each is ready once its credit shows.
async fn create_customers(api: &Api, run_id: &str, n: usize) -> anyhow::Result<Vec<Customer>> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let owner = User::CUSTOMERS[i % User::CUSTOMERS.len()];
            let email = format!("bench-{}-{i}@example.com", run_id.to_lowercase());
            let (id, token) = api
                .create_customer(owner, &format!("Bench Buyer {i}"), &email)
                .await
                .with_context(|| format!("registering customer {i}"))?;
            let credit_limit_cents = wait_for_account(api, owner, id, token.as_deref()).await?;
            Ok::<_, anyhow::Error>(Customer { id, owner, credit_limit_cents })
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

/// The customer's credit limit once the read model shows the payment account (a limit of 0
/// means the account's opening has not reached the customers read model yet).
async fn wait_for_account(api: &Api, owner: User, id: Uuid, token: Option<&str>) -> anyhow::Result<i64> {
    let deadline = Instant::now() + ACCOUNT_WAIT;
    let mut token = token;
    loop {
        let seen = api.customer(owner, id, token).await.with_context(|| format!("reading customer {id}"))?;
        if let Some(c) = seen.filter(|c| c.credit_limit_cents > 0) {
            return Ok(c.credit_limit_cents);
        }
        // The token only makes the first read wait for the registration itself.
        token = None;
        if Instant::now() > deadline {
            bail!("customer {id}: no payment account (credit limit) after {ACCOUNT_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `ordinary` products at random prices in [`ORDINARY_PRICES`], one priced above the highest
/// credit limit, one with stock 1.
async fn create_products(
    api: &Api,
    run_id: &str,
    ordinary: usize,
    credit_max: i64,
    seed: u64,
) -> anyhow::Result<Vec<Product>> {
    let mut rng = Rng::new(seed ^ 0x0050_524F_4455_4354);
    let mut specs: Vec<(Role, i64, i64)> = (0..ordinary)
        .map(|_| (Role::Ordinary, rng.between(ORDINARY_PRICES.0, ORDINARY_PRICES.1), LARGE_STOCK))
        .collect();
    specs.push((Role::Expensive, credit_max + 1, LARGE_STOCK));
    specs.push((Role::Scarce, SCARCE_PRICE, SCARCE_STOCK));
    futures::stream::iter(specs.into_iter().enumerate())
        .map(|(i, (role, price_cents, stock))| async move {
            let sku = format!("BENCH-{run_id}-{i}");
            let name = format!("Bench {} product {i}", role_name(role));
            let id =
                api.create_product(&sku, &name, price_cents, stock).await.with_context(|| format!("creating {sku}"))?;
            Ok::<_, anyhow::Error>(Product { id, sku, role, price_cents, initial_stock: stock })
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Ordinary => "ordinary",
        Role::Expensive => "expensive",
        Role::Scarce => "scarce",
    }
}
