//! Customer service: registers customers (event-sourced) and answers queries from the
//! `customers` read model. `/internal/customers/{id}` answers from the event store, for
//! other services that need the current truth (the order service's checks).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Router, routing::post};
use domain::customer::{Customer, CustomerCommand};
use domain::values::{CustomerId, Email, Name};
use eventstore::es::EventStoreOf;
use messaging::outbox::{Metadata, event_mapper};
use mongodb::bson::doc;
use readstore::query::{self, Owned};
use readstore::readmodel::{self, ReadModel};
use runtime::Settings;
use runtime::consistency::Token;
use runtime::http::{ApiError, Json, json_response, path_id};
use runtime::identity::Caller;
use schemas::{Topic, convert};
use service_kit::Wiring;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<EventStoreOf<Customer>>,
    pub customers: readmodel::ActiveCollection,
}

pub use contract::RegisterCustomer;

/// A customer as the API shows it, read from the `customers` read model.
pub type CustomerView = Owned<contract::Customer>;

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/customers", post(register).get(list))
        .route("/customers/{id}", get(find))
        .route("/internal/customers/{id}", get(find_current))
        .with_state(state)
}

/// The profile belongs to the calling user (none for an internal caller).
async fn register(
    State(s): State<AppState>,
    caller: Caller,
    Json(body): Json<RegisterCustomer>,
) -> Result<Response, ApiError> {
    let name = Name::parse("name", &body.name)?;
    let email = Email::parse(&body.email)?;
    let id = CustomerId::new();
    let metadata = Metadata::from([(schemas::headers::CORRELATION_ID.to_owned(), id.to_string())]);
    let owner = caller.user_id().map(str::to_owned);
    s.store
        .execute(&id.to_string(), CustomerCommand::Register { customer_id: id, name, email, owner }, metadata)
        .await?;
    let version = s.store.version(&id.to_string()).await?;
    let mut response = json_response(StatusCode::CREATED, &serde_json::json!({ "id": id }));
    response.headers_mut().extend([Token::new("customer", id, version).header()]);
    Ok(response)
}

async fn find(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, CustomerId::parse)?;
    query::find_view::<CustomerView>(&s.customers, &id.to_string(), &headers, &caller, "customer").await
}

/// Everyone's for admins; a user's own otherwise.
async fn list(State(s): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let filter = caller.owner_scope().map_or_else(|| doc! {}, |owner| doc! { "owner": owner });
    let views: Vec<CustomerView> =
        readmodel::list_views(&s.customers.get().await.map_err(readmodel::api_error)?, filter, doc! { "_id": 1 })
            .await?;
    Ok(json_response(StatusCode::OK, &views))
}

async fn find_current(State(s): State<AppState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = path_id(&raw, CustomerId::parse)?;
    let customer = s.store.load(&id.to_string()).await?;
    let customer = customer.ok_or_else(|| ApiError::not_found(format!("customer {id} not found")))?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "id": id, "name": customer.name.as_str(), "email": customer.email.as_str(), "owner": customer.owner,
        }),
    ))
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut wiring = Wiring::connect(settings, &[Topic::CustomerEvents], &[]).await?;
    let pool = wiring.database(true).await?;
    wiring.spawn_relay(
        pool.clone(),
        event_mapper(|id: &str, e| Ok(convert::customer_event(convert::customer_id(id)?, e))),
    );
    let mongo = readmodel::connect(&wiring.settings.mongodb_url).await?;
    let state = AppState {
        store: Arc::new(EventStoreOf::with_snapshots(pool, wiring.settings.snapshot_every)),
        customers: readmodel::ActiveCollection::new(&mongo, ReadModel::Customers),
    };
    wiring.serve(app(state)).await
}

/// The router alone: what is answered before the event store or the read model is asked.
#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use runtime::identity::Caller;
    use serde_json::json;
    use service_kit::testing::{call, lazy_pool};

    async fn router() -> Router {
        let mongo = mongodb::Client::with_uri_str("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200").await.unwrap();
        app(AppState {
            store: Arc::new(EventStoreOf::new(lazy_pool())),
            customers: readmodel::ActiveCollection::new(&mongo, ReadModel::Customers),
        })
    }

    #[tokio::test]
    async fn nothing_without_a_verified_caller() {
        let (status, body) =
            call(router().await, "POST", "/customers", Some(json!({ "name": "A", "email": "a@example.com" })), None)
                .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    #[tokio::test]
    async fn bad_registrations_are_refused_with_a_message() {
        for (body, says) in [
            (json!({ "name": "Alice", "email": "not an address" }), "email"),
            (json!({ "name": "", "email": "alice@example.com" }), "name"),
        ] {
            let (status, answer) =
                call(router().await, "POST", "/customers", Some(body.clone()), Some(Caller::Internal)).await;
            assert!(status.is_client_error(), "{body}: {status} {answer}");
            assert!(answer["error"].as_str().is_some_and(|e| e.contains(says)), "{body}: {answer}");
        }
        let (status, answer) =
            call(router().await, "POST", "/customers", Some(json!({ "name": "A" })), Some(Caller::Internal)).await;
        assert!(status.is_client_error(), "{status} {answer}");
    }

    #[tokio::test]
    async fn a_malformed_id_names_no_resource() {
        for uri in ["/customers/not-an-id", "/internal/customers/not-an-id"] {
            let (status, answer) = call(router().await, "GET", uri, None, Some(Caller::Internal)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {answer}");
            assert!(answer["error"].as_str().is_some_and(|e| e.contains("not a valid id")), "{uri}: {answer}");
        }
    }
}
