//! `/api/products` → product service `/products`.

use crate::auth::Admin;
use crate::downstream::Service;
use crate::extract::{Incoming, JsonObject, ResourceId};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use contract::{AddStock, CreateProduct, Created, ErrorBody, Product, StockAdded};
use runtime::http::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/products", post(create).get(list))
        .route("/api/products/{id}", get(find))
        .route("/api/products/{id}/stock", post(add_stock))
}

/// Create a product with its initial stock (admin).
#[utoipa::path(security(("bearer" = [])), post, path = "/api/products", tag = "products", request_body = CreateProduct, responses(
    (status = 201, description = "Created", body = Created),
    (status = 400, description = "Malformed JSON, or not an object", body = ErrorBody),
    (status = 409, description = "The SKU is taken", body = ErrorBody),
    (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
    (status = 415, description = "Body is not JSON", body = ErrorBody),
    (status = 422, description = "Unknown field, or an invalid value", body = ErrorBody),
    (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
    (status = 403, description = "The token lacks the admin role", body = ErrorBody),
))]
pub(crate) async fn create(
    State(s): State<AppState>,
    _: Admin,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    s.forward(Service::Product, "/products", incoming, Some(body)).await
}

/// The catalog (public).
#[utoipa::path(get, path = "/api/products", tag = "products", responses(
    (status = 200, description = "Products", body = Vec<Product>),
))]
pub(crate) async fn list(State(s): State<AppState>, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Product, "/products", incoming, None).await
}

/// One product (public; `reserved` and `sold` for admins).
#[utoipa::path(get, path = "/api/products/{id}", tag = "products",
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
    ))]
pub(crate) async fn find(State(s): State<AppState>, id: ResourceId, incoming: Incoming) -> Result<Response, ApiError> {
    s.forward(Service::Product, &format!("/products/{id}"), incoming, None).await
}

/// Receive stock (admin).
#[utoipa::path(security(("bearer" = [])), post, path = "/api/products/{id}/stock", tag = "products", request_body = AddStock,
    params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 202, description = "Stock added", body = StockAdded),
        (status = 400, description = "The id is not a UUID, malformed JSON, or not an object", body = ErrorBody),
        (status = 404, description = "No such product", body = ErrorBody),
        (status = 413, description = "Body larger than 64 KiB", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Unknown field, or a quantity below 1", body = ErrorBody),
        (status = 401, description = "No bearer token, or not a valid one", body = ErrorBody),
        (status = 403, description = "The token lacks the admin role", body = ErrorBody),
    ))]
pub(crate) async fn add_stock(
    State(s): State<AppState>,
    _: Admin,
    id: ResourceId,
    incoming: Incoming,
    body: JsonObject,
) -> Result<Response, ApiError> {
    s.forward(Service::Product, &format!("/products/{id}/stock"), incoming, Some(body)).await
}
