//! Payment service: one credit account per customer (event-sourced). Accounts open on
//! `CustomerRegistered` (or on the first payment, whichever comes first) with the configured
//! initial credit; the saga's payment commands come from `payment.commands`.

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use domain::payment::{Account, AccountCommand};
use domain::values::{Currency, CustomerId, Money};
use eventstore::es::EventStoreOf;
use messaging::consumer::{Delivery, Envelope, Handler, HandlerError};
use messaging::outbox::Metadata;
use messaging::outbox::event_mapper;
use runtime::Settings;
use runtime::http::{ApiError, path_id};
use schemas::{Message, Topic, convert};
use service_kit::Wiring;
use std::sync::Arc;

pub struct Payments {
    pub store: Arc<EventStoreOf<Account>>,
    pub initial_credit: Money,
}

impl Payments {
    /// Execute with the message as causation: the inbox then records it with the events.
    async fn execute(&self, id: CustomerId, command: AccountCommand, envelope: &Envelope) -> Result<(), HandlerError> {
        self.execute_with(envelope, id, command, envelope.caused_metadata()).await
    }

    async fn execute_with(
        &self,
        envelope: &Envelope,
        id: CustomerId,
        command: AccountCommand,
        metadata: Metadata,
    ) -> Result<(), HandlerError> {
        self.store.execute_for(envelope, &id.to_string(), command, metadata).await
    }

    fn open(&self, customer_id: CustomerId) -> AccountCommand {
        AccountCommand::Open { customer_id, credit: self.initial_credit }
    }
}

#[async_trait]
impl Handler for Payments {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        let permanent = |e: schemas::DecodeError| HandlerError::Permanent(e.to_string());
        if let Message::CustomerRegistered(r) = &envelope.message {
            let id = convert::customer_id(&r.customer_id).map_err(permanent)?;
            return self.execute(id, self.open(id), envelope).await;
        }
        let Some((id, command)) = convert::account_command(&envelope.message).map_err(permanent)? else {
            return Ok(());
        };
        // An account, once open, stays open: one this instance knows open needs no opening.
        if matches!(command, AccountCommand::Authorize { .. })
            && self.store.peek(&id.to_string(), |account| account.customer_id.is_some()) != Some(true)
        {
            // The saga may be faster than the registration event: opening is idempotent. Not
            // recorded as this message's effect (no causation id), so a crash between the two
            // commands still authorizes on redelivery.
            let mut metadata = envelope.caused_metadata();
            metadata.remove(schemas::headers::CAUSATION_ID);
            self.execute_with(envelope, id, self.open(id), metadata).await?;
        }
        self.execute(id, command, envelope).await
    }

    async fn handle_batch(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        self.store.per_key(self, batch).await
    }
}

pub fn app(store: Arc<EventStoreOf<Account>>) -> Router {
    Router::new().route("/accounts/{id}", get(account)).with_state(store)
}

/// The current account, from the event store.
async fn account(
    State(store): State<Arc<EventStoreOf<Account>>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_id(&raw, CustomerId::parse)?;
    let account = store.load(&id.to_string()).await?;
    let a = account.ok_or_else(|| ApiError::not_found(format!("no payment account for customer {id}")))?;
    let payments: Vec<_> = a
        .payments
        .iter()
        .map(|(order, p)| serde_json::json!({ "order_id": order, "amount_cents": p.amount.cents, "state": format!("{:?}", p.state) }))
        .collect();
    Ok(axum::Json(serde_json::json!({
        "customer_id": id,
        "credit_limit_cents": a.credit_limit.cents,
        "available_cents": a.available.cents,
        "currency": a.available.currency.as_str(),
        "payments": payments,
    }))
    .into_response())
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut wiring =
        Wiring::connect(settings, &[Topic::PaymentEvents], &[Topic::PaymentCommands, Topic::CustomerEvents]).await?;
    // The credit a new account opens with: `initial_credit_cents` of the payment scope
    // (config/defaults.toml, etcd, SHOP_INITIAL_CREDIT_CENTS).
    let initial_credit = Money::non_negative(wiring.settings.required("initial_credit_cents")?, Currency::EUR)?;
    let pool = wiring.database(true).await?;
    wiring.spawn_relay(
        pool.clone(),
        event_mapper(|id: &str, e| Ok(convert::account_event(convert::customer_id(id)?, e))),
    );
    let store = Arc::new(EventStoreOf::with_snapshots(pool, wiring.settings.snapshot_every));
    let handler = Arc::new(Payments { store: store.clone(), initial_credit });
    wiring.spawn_consumer("payment", &[Topic::PaymentCommands, Topic::CustomerEvents], handler)?;
    wiring.serve(app(store)).await
}

/// The router alone: what is answered before the event store is asked.
#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use service_kit::testing::{call, lazy_pool};

    #[tokio::test]
    async fn an_account_is_asked_for_by_a_customer_id() {
        let router = || app(Arc::new(EventStoreOf::new(lazy_pool())));
        let (status, answer) = call(router(), "GET", "/accounts/nope", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains("not a valid id")), "{answer}");
        // A well-formed id goes to the store, which is not there: a server error, not a 404.
        let (status, answer) = call(router(), "GET", &format!("/accounts/{}", CustomerId::new()), None, None).await;
        assert!(status.is_server_error(), "{status} {answer}");
        let (status, _) = call(router(), "GET", "/accounts", None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
