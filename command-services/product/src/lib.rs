//! Product service: catalog and stock (event-sourced). Admin commands over HTTP; the saga's
//! stock commands (reserve, release, commit) from `product.commands`. Queries come from the
//! `catalog` read model; `/internal/products/{id}` answers from the event store.

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use domain::product::{Product, ProductCommand, ProductError};
use domain::values::{Currency, Money, Name, ProductId, Quantity, Sku};
use eventstore::db;
use eventstore::es::{CommandError, EventStoreOf};
use messaging::consumer::{Delivery, Envelope, Handler, HandlerError};
use messaging::outbox::{Metadata, event_mapper};
use mongodb::bson::doc;
use readstore::query::{self, View};
use readstore::readmodel::{self, ReadModel};
use runtime::Settings;
use runtime::consistency::Token;
use runtime::http::{ApiError, Json, json_response, path_id};
use runtime::identity::Caller;
use schemas::{Topic, convert};
use serde::{Deserialize, Serialize};
use service_kit::Wiring;
use sqlx::PgPool;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<EventStoreOf<Product>>,
    pub pool: PgPool,
    pub catalog: readmodel::ActiveCollection,
}

pub use contract::{AddStock, CreateProduct};

/// A product as the catalog shows it ([`contract::Product`]); stock detail for admins only.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductView(pub contract::Product);

impl View for ProductView {
    fn redact(&mut self, caller: &Caller) {
        if !caller.is_privileged() {
            self.0.reserved = None;
            self.0.sold = None;
        }
    }
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/products", post(create).get(list))
        .route("/products/{id}", get(find))
        .route("/products/{id}/stock", post(add_stock))
        .route("/internal/products/{id}", get(find_current))
        .with_state(state)
}

fn command_error(e: CommandError<ProductError>) -> ApiError {
    match e {
        CommandError::Rejected(ProductError::NotFound) => ApiError::not_found("product not found"),
        CommandError::Rejected(e @ ProductError::AlreadyExists(_)) => ApiError::conflict(e.to_string()),
        other => other.into(),
    }
}

async fn create(State(s): State<AppState>, Json(body): Json<CreateProduct>) -> Result<Response, ApiError> {
    let sku = Sku::parse(&body.sku)?;
    let name = Name::parse("name", &body.name)?;
    let price = Money::non_negative(body.price_cents, Currency::parse(&body.currency)?)?;
    let stock = match body.stock {
        0 => 0,
        n => Quantity::new(n).map_err(|e| ApiError::unprocessable(format!("stock: {}", e.message)))?.get(),
    };
    let id = ProductId::new();
    let claimed = sqlx::query("INSERT INTO skus (sku, product_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(sku.as_str())
        .bind(id.0)
        .execute(&s.pool)
        .await
        .map_err(ApiError::internal)?;
    if claimed.rows_affected() == 0 {
        return Err(ApiError::conflict(format!("a product with sku {} already exists", sku.as_str())));
    }
    let metadata = Metadata::from([(schemas::headers::CORRELATION_ID.to_owned(), id.to_string())]);
    let command = ProductCommand::Create { product_id: id, sku: sku.clone(), name, price, stock };
    if let Err(e) = s.store.execute(&id.to_string(), command, metadata).await {
        // Give the SKU back: the product was not created.
        let _ = sqlx::query("DELETE FROM skus WHERE sku = $1").bind(sku.as_str()).execute(&s.pool).await;
        return Err(command_error(e));
    }
    let mut response = json_response(StatusCode::CREATED, &serde_json::json!({ "id": id }));
    response.headers_mut().extend([token(&s, id).await?.header()]);
    Ok(response)
}

async fn add_stock(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<AddStock>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, ProductId::parse)?;
    let quantity = Quantity::new(body.quantity)?;
    let metadata = Metadata::from([(schemas::headers::CORRELATION_ID.to_owned(), id.to_string())]);
    s.store.execute(&id.to_string(), ProductCommand::AddStock { quantity }, metadata).await.map_err(command_error)?;
    let mut response = json_response(StatusCode::ACCEPTED, &serde_json::json!({ "id": id, "added": quantity.get() }));
    response.headers_mut().extend([token(&s, id).await?.header()]);
    Ok(response)
}

/// The consistency token of the product's latest write.
async fn token(s: &AppState, id: ProductId) -> Result<Token, ApiError> {
    let version = s.store.version(&id.to_string()).await?;
    Ok(Token::new("product", id, version))
}

async fn find(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, ProductId::parse)?;
    query::find_view::<ProductView>(&s.catalog, &id.to_string(), &headers, &caller, "product").await
}

async fn list(State(s): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let mut views: Vec<ProductView> =
        readmodel::list_views(&s.catalog.get().await.map_err(readmodel::api_error)?, doc! {}, doc! { "sku": 1 })
            .await?;
    views.iter_mut().for_each(|v| v.redact(&caller));
    Ok(json_response(StatusCode::OK, &views))
}

async fn find_current(State(s): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = path_id(&raw, ProductId::parse)?;
    let p = s.store.load(&id.to_string()).await?;
    let p = p.ok_or_else(|| ApiError::not_found(format!("product {id} not found")))?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "id": id, "sku": p.sku.as_str(), "name": p.name.as_str(),
            "price_cents": p.price.cents, "currency": p.price.currency.as_str(),
            "available": p.available, "reserved": p.reserved, "sold": p.sold,
        }),
    ))
}

/// The saga's stock commands. Repeats decide nothing (the aggregate remembers each order's
/// reservation), so redelivery is harmless.
pub struct StockCommands {
    pub store: Arc<EventStoreOf<Product>>,
}

#[async_trait]
impl Handler for StockCommands {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        let Some((id, command)) =
            convert::product_command(&envelope.message).map_err(|e| HandlerError::Permanent(e.to_string()))?
        else {
            return Ok(());
        };
        self.store.execute_for(envelope, &id.to_string(), command, envelope.caused_metadata()).await
    }

    async fn handle_batch(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        self.store.per_key(self, batch).await
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut wiring = Wiring::connect(settings, &[Topic::ProductEvents], &[Topic::ProductCommands]).await?;
    let pool = wiring.database(true).await?;
    // The SKU table: `migrations/`, versions 4_000_001.. (see eventstore::db).
    db::migrate(&pool, sqlx::migrate!()).await?;
    wiring
        .spawn_relay(pool.clone(), event_mapper(|id: &str, e| Ok(convert::product_event(convert::product_id(id)?, e))));
    let store = Arc::new(EventStoreOf::with_snapshots(pool.clone(), wiring.settings.snapshot_every));
    wiring.spawn_consumer("product", &[Topic::ProductCommands], Arc::new(StockCommands { store: store.clone() }))?;
    let mongo = readmodel::connect(&wiring.settings.mongodb_url).await?;
    let state = AppState { store, pool, catalog: readmodel::ActiveCollection::new(&mongo, ReadModel::Catalog) };
    wiring.serve(app(state)).await
}

/// The router alone: what is answered before the event store or the catalog is asked.
#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;
    use service_kit::testing::{call, lazy_pool};

    async fn router() -> Router {
        let mongo = mongodb::Client::with_uri_str("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200").await.unwrap();
        let pool = lazy_pool();
        app(AppState {
            store: Arc::new(EventStoreOf::new(pool.clone())),
            pool,
            catalog: readmodel::ActiveCollection::new(&mongo, ReadModel::Catalog),
        })
    }

    #[tokio::test]
    async fn bad_products_are_refused_with_a_message() {
        let good = json!({ "sku": "MUG-1", "name": "Mug", "price_cents": 1250, "currency": "EUR", "stock": 5 });
        for (field, value, says) in [
            ("sku", json!(""), "sku"),
            ("name", json!(""), "name"),
            ("price_cents", json!(-1), "negative"),
            ("currency", json!("euros"), "currency"),
            ("stock", json!(-3), "stock"),
        ] {
            let mut body = good.clone();
            body[field] = value;
            let (status, answer) = call(router().await, "POST", "/products", Some(body), Some(Caller::Internal)).await;
            assert!(status.is_client_error(), "{field}: {status} {answer}");
            assert!(answer["error"].as_str().is_some_and(|e| e.to_lowercase().contains(says)), "{field}: {answer}");
        }
    }

    #[tokio::test]
    async fn stock_is_added_in_positive_amounts_to_a_well_formed_id() {
        let id = ProductId::new();
        let (status, answer) = call(
            router().await,
            "POST",
            &format!("/products/{id}/stock"),
            Some(json!({ "quantity": 0 })),
            Some(Caller::Internal),
        )
        .await;
        assert!(status.is_client_error(), "{status} {answer}");
        let (status, answer) = call(
            router().await,
            "POST",
            "/products/nope/stock",
            Some(json!({ "quantity": 1 })),
            Some(Caller::Internal),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    }
}
