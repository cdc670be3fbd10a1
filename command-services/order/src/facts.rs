//! What the order service asks the customer and product services before it records an order,
//! remembered so that most orders ask nothing:
//! - a customer's facts never change (customers only register): remembered as long as room
//!   allows;
//! - a product's price is set when it is created (the product service has no command that
//!   changes it); remembered for [`PRODUCT_FACTS_TTL`], so a price change, should one come,
//!   reaches new orders within that.
//!
//! An id the service does not know is never remembered: it may be created the next moment.

use domain::values::{CustomerId, ProductId};
use runtime::client::{CallError, Downstream};
use serde::Deserialize;
use std::time::Duration;

/// How long a product's price is taken from memory.
pub const PRODUCT_FACTS_TTL: Duration = Duration::from_secs(5);
/// The most customers and products remembered (each a few dozen bytes).
const REMEMBERED: u64 = 10_000;

/// What the customer service tells about a customer.
#[derive(Debug, Clone, Deserialize)]
pub struct CustomerFacts {
    pub owner: Option<String>,
}

/// What the product service tells about a product.
#[derive(Debug, Clone, Deserialize)]
pub struct ProductFacts {
    pub price_cents: i64,
    pub currency: String,
}

#[derive(Clone)]
pub struct Facts {
    customers: Downstream,
    products: Downstream,
    known_customers: moka::sync::Cache<CustomerId, CustomerFacts>,
    known_products: moka::sync::Cache<ProductId, ProductFacts>,
}

impl Facts {
    pub fn new(customers: Downstream, products: Downstream) -> Self {
        Self {
            customers,
            products,
            known_customers: moka::sync::Cache::new(REMEMBERED),
            known_products: moka::sync::Cache::builder()
                .max_capacity(REMEMBERED)
                .time_to_live(PRODUCT_FACTS_TTL)
                .build(),
        }
    }

    /// The customer's facts, `None` if the customer service does not know it.
    pub async fn customer(&self, id: CustomerId) -> Result<Option<CustomerFacts>, CallError> {
        remembered(&self.known_customers, &self.customers, id, format!("/internal/customers/{id}")).await
    }

    /// The product's facts, `None` if the product service does not know it.
    pub async fn product(&self, id: ProductId) -> Result<Option<ProductFacts>, CallError> {
        remembered(&self.known_products, &self.products, id, format!("/internal/products/{id}")).await
    }
}

/// What `known` remembers of `id`, else what `service` answers at `path` (remembered if found).
async fn remembered<K, V>(
    known: &moka::sync::Cache<K, V>,
    service: &Downstream,
    id: K,
    path: String,
) -> Result<Option<V>, CallError>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    if let Some(facts) = known.get(&id) {
        return Ok(Some(facts));
    }
    let facts: Option<V> = service.get_json(&path).await?;
    if let Some(f) = &facts {
        known.insert(id, f.clone());
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A stand-in for both services that knows one customer and one product and counts requests.
    async fn services(customer: CustomerId, product: ProductId) -> (String, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let answer = move |known: String, id: String, body: serde_json::Value| {
            if id == known { Ok(axum::Json(body)) } else { Err(StatusCode::NOT_FOUND) }
        };
        let app = Router::new()
            .route(
                "/internal/customers/{id}",
                get(move |State(n): State<Arc<AtomicUsize>>, Path(id): Path<String>| async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    answer(customer.to_string(), id, serde_json::json!({ "owner": "alice" }))
                }),
            )
            .route(
                "/internal/products/{id}",
                get(move |State(n): State<Arc<AtomicUsize>>, Path(id): Path<String>| async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    answer(product.to_string(), id, serde_json::json!({ "price_cents": 250, "currency": "EUR" }))
                }),
            )
            .with_state(asked.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, asked)
    }

    #[tokio::test]
    async fn known_facts_are_asked_once_and_unknown_ids_every_time() {
        let (customer, product) = (CustomerId::new(), ProductId::new());
        let (url, asked) = services(customer, product).await;
        let timeout = Duration::from_secs(2);
        let facts = Facts::new(Downstream::new("customer", &url, timeout), Downstream::new("product", &url, timeout));
        for _ in 0..3 {
            let c = facts.customer(customer).await.unwrap().expect("known customer");
            assert_eq!(c.owner.as_deref(), Some("alice"));
            let p = facts.product(product).await.unwrap().expect("known product");
            assert_eq!((p.price_cents, p.currency.as_str()), (250, "EUR"));
        }
        assert_eq!(asked.load(Ordering::SeqCst), 2, "each asked once");
        for _ in 0..2 {
            assert!(facts.customer(CustomerId::new()).await.unwrap().is_none());
            assert!(facts.product(ProductId::new()).await.unwrap().is_none());
        }
        assert_eq!(asked.load(Ordering::SeqCst), 6, "an unknown id is asked again");
    }
}
