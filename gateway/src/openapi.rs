//! The public contract as OpenAPI 3.1, generated from the route annotations and the
//! [`contract`] schemas: `GET /api/openapi.json`, and Swagger UI at `/docs`. The Swagger
//! UI assets are compiled into the binary (`utoipa-swagger-ui`'s `vendored` feature), so the
//! page loads nothing from elsewhere.

use crate::routes;
use axum::Router;
use contract::{
    AddStock, BulkSagaAction, BulkSagaResult, ConsumerGroup, ConsumerGroups, ConsumerPartition, CreateProduct, Created,
    Customer, DeadLetter, DeadLetterHandled, DeadLetterQueue, DeadLetters, ErrorBody, FinishedRebuild, Health,
    OperatorReason, Order, OrderAccepted, OrderItem, OrderLine, OrderStatus, PartitionStatus, PlaceOrder, Product,
    ProjectionStatus, ProjectionsStatus, RebuildProgress, RegisterCustomer, Saga, SagaActionKind, SagaDefinition,
    SagaEvent, SagaFilter, SagaPage, SagaRefusal, SagaState, SagaStepSpec, SagaSummary, StartRebuild, StatusChange,
    StockAdded,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Spec, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

pub const SPEC_PATH: &str = "/api/openapi.json";
pub const DOCS_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Shop API",
        description = "The shop's public API, served by the gateway. Errors are always \
                       `{\"error\": ..., \"detail\": ...}` with a fitting status.",
    ),
    paths(
        routes::customers::register,
        routes::customers::list,
        routes::customers::find,
        routes::products::create,
        routes::products::list,
        routes::products::find,
        routes::products::add_stock,
        routes::orders::place,
        routes::orders::list,
        routes::orders::find,
        routes::orders::cancel,
        routes::sagas::list,
        routes::sagas::retry,
        routes::sagas::compensate,
        routes::sagas::bulk,
        routes::sagas::definition,
        routes::sagas::live,
        routes::sagas::find,
        routes::dead_letters::list,
        routes::dead_letters::redrive,
        routes::dead_letters::discard,
        routes::projections::status,
        routes::projections::live,
        routes::projections::rebuild,
        routes::projections::consumers,
        routes::health::health,
    ),
    components(schemas(
        ErrorBody, Created, RegisterCustomer, Customer, CreateProduct, Product, AddStock, StockAdded, PlaceOrder,
        OrderItem, OrderStatus, OrderAccepted, Order, OrderLine, StatusChange, SagaSummary, Saga, SagaEvent,
        SagaDefinition, SagaStepSpec, Health, SagaPage, OperatorReason, SagaActionKind, BulkSagaAction, SagaFilter,
        BulkSagaResult, SagaRefusal, SagaState, DeadLetters, DeadLetterQueue, DeadLetter, DeadLetterHandled,
        ProjectionsStatus, ProjectionStatus, PartitionStatus, RebuildProgress, StartRebuild, FinishedRebuild,
        ConsumerGroups, ConsumerGroup, ConsumerPartition,
    )),
    modifiers(&ApiWideErrors),
    tags(
        (name = "customers"), (name = "products"), (name = "orders"),
        (name = "sagas", description = "The CreateOrder saga, read-only"),
        (name = "operations", description = "Probes; the dead-letter topics and the projections (admin)"),
    ),
)]
pub struct ApiDoc;

/// Answers any `/api` operation can give, added once instead of on every route, and the
/// bearer-token security scheme the guarded routes name.
struct ApiWideErrors;

impl Modify for ApiWideErrors {
    fn modify(&self, spec: &mut Spec) {
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("An access token of the Keycloak realm `shop` (client `shop-web`)"))
            .build();
        spec.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        let wide = [
            ("401", "The `Authorization` header holds no valid bearer token (public routes work without one)"),
            ("429", "Too many requests from this client; `Retry-After` says when to try again"),
            ("502", "The owning service failed (the cause is logged, not shown)"),
            (
                "503",
                "The owning service is unavailable or too slow, or the gateway is at its bound of requests \
                     in flight (then with `Retry-After`); try again later",
            ),
        ];
        for (_, item) in spec.paths.paths.iter_mut().filter(|(path, _)| path.starts_with("/api/")) {
            let operations =
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten();
            for operation in operations {
                for (status, description) in wide {
                    operation.responses.responses.entry(status.to_owned()).or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

/// `GET /api/openapi.json` and Swagger UI under `/docs` (`/docs` redirects to `/docs/`).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SwaggerUi::new(DOCS_PATH).url(SPEC_PATH, ApiDoc::openapi()).into()
}
