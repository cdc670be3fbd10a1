//! Order service: places orders (event-sourced) after checking the customer and every product
//! with their services over HTTP (what they told is remembered, see [`facts`]); confirms or
//! rejects them on the saga's commands from `order.commands`. Queries come from the `orders`
//! read model.

pub mod admission;
pub mod facts;
pub mod idempotency;
pub mod outcome;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use domain::order::{Order, OrderCommand, OrderError, OrderLine};
use domain::values::{Currency, CustomerId, Money, OrderId, ProductId, Quantity};
use eventstore::es::{CommandError, EventStoreOf};
use eventstore::pg_store::Guard;
use facts::CustomerFacts;
use messaging::consumer::{Delivery, Envelope, Handler, HandlerError};
use messaging::outbox::{Metadata, event_mapper};
use mongodb::bson::doc;
use readstore::query::{self, Owned};
use readstore::readmodel::{self, ReadModel};
use readstore::shown::{ShowDelay, Shown};
use runtime::Settings;
use runtime::client::{CallError, Downstream};
use runtime::consistency::{self, Freshness, Token};
use runtime::http::{ApiError, Json, path_id};
use runtime::identity::Caller;
use schemas::{Message, Topic, convert};
use serde::Deserialize;
use service_kit::Wiring;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<EventStoreOf<Order>>,
    /// The customer and product services, and what they told before (shared: axum clones the
    /// state for every request).
    pub facts: Arc<facts::Facts>,
    pub orders: readmodel::ActiveCollection,
    /// `Idempotency-Key`s of placed orders and their answers.
    pub idempotency: idempotency::Keys,
    /// Requests waiting for an order's outcome.
    pub outcomes: outcome::Outcomes,
    /// Whether the saga keeps up (see [`admission`]).
    pub admission: Arc<admission::Admission>,
    /// Whether the read model keeps up (see [`admission`]).
    pub visible: Arc<admission::Admission>,
    /// Long-polls waiting for a settled order to show in the read model, served together.
    pub shown: Arc<Shown>,
}

/// A placed order's body ([`contract::PlaceOrder`]) is `Serialize`: its canonical JSON is what
/// an `Idempotency-Key` is checked against.
pub use contract::PlaceOrder;

/// An order as the API shows it, read from the `orders` read model.
pub type OrderView = Owned<contract::Order>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    /// Seconds to wait for the order to settle (longer asks are cut to
    /// [`consistency::LONG_POLL_MAX`]).
    pub wait: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub customer_id: Option<String>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(place).get(list))
        .route("/orders/{id}", get(find))
        .route("/orders/{id}/cancel", post(cancel))
        .with_state(state)
}

/// A downstream that cannot answer (down, too slow, or its circuit breaker open) is a 503
/// naming it; the client may try again later.
fn downstream_error(e: CallError) -> ApiError {
    match e {
        CallError::Unavailable { service, reason } => {
            tracing::warn!(service, reason, "downstream unavailable");
            ApiError::unavailable(format!("{service} service is unavailable, try again later"))
                .with_detail(serde_json::json!({ "downstream": service, "circuit_breaker": "closed" }))
        }
        CallError::CircuitOpen { service } => {
            ApiError::unavailable(format!("{service} service is unavailable (circuit breaker open), try again later"))
                .with_detail(serde_json::json!({ "downstream": service, "circuit_breaker": "open" }))
        }
        CallError::Status { service, status } => ApiError::internal(format!("{service} answered {status}")),
    }
}

/// With an `Idempotency-Key`, a repeat of the same request gets the first answer again.
/// Keys are per user: one user's key never answers another's request. While the shop is behind
/// (see [`admission`]), a well-formed order is refused at once with 503 and `Retry-After` (a
/// key is not taken by a refusal).
async fn place(
    State(s): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
    Json(body): Json<PlaceOrder>,
) -> Result<Response, ApiError> {
    let order = Checked::parse(&body)?;
    if !(s.admission.admits() && s.visible.admits()) {
        return Err(ApiError::busy("the shop is busy: orders take too long to complete now, try again shortly", 1)
            .with_detail(serde_json::json!({ "admission": "closed" })));
    }
    let order_id = OrderId::new();
    match idempotency::Keys::from_headers(&headers)? {
        Some(key) => {
            let scoped = format!("{}:{key}", caller.user_id().unwrap_or_default());
            let id = order_id.to_string();
            let work = |guard| place_new(&s, order_id, order, &caller, Some(guard));
            s.idempotency.once(&scoped, &body, &id, work, |id| placed_answer(&s, id)).await
        }
        None => place_new(&s, order_id, order, &caller, None).await,
    }
}

/// The answer to the `POST` that placed order `id`, if it is placed: what a repeat of that
/// request gets.
async fn placed_answer(s: &AppState, id: String) -> Result<Option<Response>, ApiError> {
    let order_id = OrderId::parse(&id).map_err(ApiError::internal)?;
    match s.store.version(&id).await? {
        0 => Ok(None),
        version => accepted(order_id, version).map(Some),
    }
}

/// 202 for a placed order: where to follow it, and the consistency token of its `version`.
fn accepted(order_id: OrderId, version: i64) -> Result<Response, ApiError> {
    let location = format!("/orders/{order_id}");
    let (token_name, token) = Token::new("order", order_id, version).header();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location.parse().map_err(ApiError::internal)?), (token_name, token)],
        axum::Json(serde_json::json!({ "order_id": order_id, "status": "PENDING" })),
    )
        .into_response())
}

/// A [`PlaceOrder`] whose ids and quantities are valid (what can be checked without asking).
struct Checked {
    customer_id: CustomerId,
    lines: Vec<(ProductId, Quantity)>,
}

impl Checked {
    fn parse(body: &PlaceOrder) -> Result<Self, ApiError> {
        let customer_id = CustomerId::parse(&body.customer_id)?;
        if body.items.is_empty() {
            return Err(ApiError::unprocessable(OrderError::NoLines.to_string()));
        }
        let mut lines = Vec::with_capacity(body.items.len());
        for (i, item) in body.items.iter().enumerate() {
            let product_id = ProductId::parse(&item.product_id)
                .map_err(|e| ApiError::unprocessable(format!("items[{i}].product_id: {}", e.message)))?;
            let quantity = Quantity::new(item.quantity)
                .map_err(|e| ApiError::unprocessable(format!("items[{i}].quantity: {}", e.message)))?;
            lines.push((product_id, quantity));
        }
        Ok(Self { customer_id, lines })
    }
}

/// Place `order` as `order_id` (new), its events written under `guard` (an `Idempotency-Key`'s
/// claim) if given. A customer profile the caller may not use is reported like a missing one.
async fn place_new(
    s: &AppState,
    order_id: OrderId,
    order: Checked,
    caller: &Caller,
    guard: Option<Arc<Guard>>,
) -> Result<Response, ApiError> {
    let Checked { customer_id, lines: parsed } = order;
    let customer = s.facts.customer(customer_id).await.map_err(downstream_error)?;
    let Some(CustomerFacts { owner }) = customer.filter(|c| caller.may_access(c.owner.as_deref())) else {
        return Err(ApiError::unprocessable(format!("unknown customer {customer_id}")));
    };
    let mut lines = Vec::with_capacity(parsed.len());
    for (product_id, quantity) in parsed {
        let facts = s.facts.product(product_id).await.map_err(downstream_error)?;
        let facts = facts.ok_or_else(|| ApiError::unprocessable(format!("unknown product {product_id}")))?;
        let currency = Currency::parse(&facts.currency).map_err(ApiError::internal)?;
        lines.push(OrderLine { product_id, quantity, unit_price: Money::new(facts.price_cents, currency) });
    }
    let metadata = Metadata::from([(schemas::headers::CORRELATION_ID.to_owned(), order_id.to_string())]);
    let (id, place) = (order_id.to_string(), OrderCommand::Place { order_id, customer_id, lines, owner });
    match guard {
        Some(guard) => s.store.execute_new_guarded(&id, place, metadata, guard).await?,
        None => s.store.execute_new(&id, place, metadata).await?,
    }
    accepted(order_id, s.store.version(&id).await?)
}

/// The customer asks to cancel: allowed while PENDING or CONFIRMED. The saga undoes what was
/// done (release or return stock, refund) and then cancels the order.
async fn cancel(State(s): State<AppState>, Path(raw): Path<String>, caller: Caller) -> Result<Response, ApiError> {
    let id = path_id(&raw, OrderId::parse)?;
    let order = s.store.load(&id.to_string()).await?;
    if !order.is_some_and(|o| caller.may_access(o.owner.as_deref())) {
        return Err(ApiError::not_found(format!("order {id} not found")));
    }
    let metadata = Metadata::from([(schemas::headers::CORRELATION_ID.to_owned(), id.to_string())]);
    let command = OrderCommand::RequestCancellation { reason: "cancelled by the customer".into() };
    match s.store.execute(&id.to_string(), command, metadata).await {
        Ok(()) => {}
        Err(CommandError::Rejected(OrderError::NotFound)) => {
            return Err(ApiError::not_found(format!("order {id} not found")));
        }
        Err(CommandError::Rejected(e @ OrderError::InvalidTransition { .. })) => {
            return Err(ApiError::conflict(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    }
    Ok((StatusCode::ACCEPTED, axum::Json(serde_json::json!({ "order_id": id, "cancellation": "requested" })))
        .into_response())
}

/// One order. With `?wait=<seconds>`, the answer waits until the order is settled and the read
/// model shows it (see [`outcome`]), at most that long.
async fn find(
    State(s): State<AppState>,
    Path(raw): Path<String>,
    Query(q): Query<FindQuery>,
    mut headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let order_id = path_id(&raw, OrderId::parse)?;
    let id = order_id.to_string();
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(consistency::LONG_POLL_MAX);
    let until = tokio::time::Instant::now() + wait;
    let settled = if wait.is_zero() { None } else { until_settled(&s, &id, &caller, wait).await? };
    let mut shown = None;
    if let Some(token) = &settled {
        // The read model shows it a moment later (see [`Shown`]). What the look finds is the answer.
        let left = until.saturating_duration_since(tokio::time::Instant::now()).max(SHOWN_AT_LEAST);
        shown = s.shown.until_shown(token, left).await;
        let (name, value) = token.header();
        headers.insert(name, value);
    }
    let answer = match shown {
        Some(doc) => query::view_answer::<OrderView>(Some(doc), Some(Freshness::Fresh), &id, &caller, "order")?,
        None => query::find_view::<OrderView>(&s.orders, &id, &headers, &caller, "order").await?,
    };
    // How long the settled order took to be shown: the read side's pace. One the read model
    // does not show yet counts too, with the time so far: when the read side is far behind,
    // long-polls end before it shows anything, and that must not look like an idle read side.
    if let Some(placed) = admission::placed_ms(&order_id.0).filter(|_| settled.is_some()) {
        s.visible.passed(placed);
    }
    Ok(answer)
}

/// After an order settled, a long-poll waits this long for the read model to show it even when
/// the wait asked for is over (the read itself then waits no longer).
const SHOWN_AT_LEAST: Duration = Duration::from_secs(1);

/// When a long-poll first looks whether the read model shows an order that just settled, until
/// it has seen how long that takes (about what the relay and the projector take), never sooner
/// than the floor; how long it waits after a look that found nothing; and how far apart the
/// lookups (each for every order due) are at least.
const SHOWN_FIRST_LOOK: Duration = Duration::from_millis(60);
const SHOWN_FLOOR: Duration = Duration::from_millis(10);
const SHOWN_PACE: Duration = Duration::from_millis(40);
const SHOWN_TICK: Duration = Duration::from_millis(20);

/// Wait at most `wait` for order `id` to settle; the version that settled it, if it did. An
/// order the caller may not see (or none at all) is not waited for: the read answers 404.
async fn until_settled(s: &AppState, id: &str, caller: &Caller, wait: Duration) -> Result<Option<Token>, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let Some(mut watch) = s.outcomes.watch(id) else { return Ok(None) };
    loop {
        let seen = match s.store.load_versioned(id).await? {
            None => return Ok(None),
            Some((order, _)) if !caller.may_access(order.owner.as_deref()) => return Ok(None),
            Some((order, version)) if order.is_settled() => return Ok(Some(Token::new("order", id, version))),
            Some((_, version)) => version,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // Settled after what this look saw, says the instance that settled it: no need to look.
        if let Some(version) = watch.woken(left.min(outcome::RECHECK)).await.filter(|v| *v > seen) {
            return Ok(Some(Token::new("order", id, version)));
        }
    }
}

/// Admins see every order; a user only theirs.
async fn list(State(s): State<AppState>, Query(q): Query<ListQuery>, caller: Caller) -> Result<Response, ApiError> {
    let mut filter = match q.customer_id {
        Some(raw) => doc! { "customer_id": CustomerId::parse(&raw)?.to_string() },
        None => doc! {},
    };
    if let Some(owner) = caller.owner_scope() {
        filter.insert("owner", owner);
    }
    let views: Vec<OrderView> =
        readmodel::list_views(&s.orders.get().await.map_err(readmodel::api_error)?, filter, doc! { "_id": -1 }).await?;
    Ok(axum::Json(views).into_response())
}

/// The saga's order commands. Repeats decide nothing; a transition out of a terminal state is
/// refused by the aggregate and parked. The orders they settle are announced to every
/// instance's waiters ([`outcome::announce`]): once per message, or once per batch.
pub struct OrderCommands {
    pub store: Arc<EventStoreOf<Order>>,
    pub pool: sqlx::PgPool,
    pub outcomes: outcome::Outcomes,
    pub admission: Arc<admission::Admission>,
}

impl OrderCommands {
    /// Apply one command; the order it may have settled, with the version that settled it if it
    /// did (this instance's waiters are woken).
    async fn apply(&self, envelope: &Envelope) -> Result<Option<(String, Option<i64>)>, HandlerError> {
        let permanent = |e: schemas::DecodeError| HandlerError::Permanent(e.to_string());
        let (id, command, outcome) = match &envelope.message {
            Message::ConfirmOrder(c) => {
                (convert::order_id(&c.order_id).map_err(permanent)?, OrderCommand::Confirm, true)
            }
            Message::RejectOrder(c) => {
                let reject = OrderCommand::Reject { reason: c.reason.clone() };
                (convert::order_id(&c.order_id).map_err(permanent)?, reject, true)
            }
            // A cancellation's time is the customer's, not the pipeline's.
            Message::CancelOrder(c) => {
                let cancel = OrderCommand::Cancel { reason: c.reason.clone() };
                (convert::order_id(&c.order_id).map_err(permanent)?, cancel, false)
            }
            _ => return Ok(None),
        };
        if let Some(placed) = admission::placed_ms(&id.0).filter(|_| outcome) {
            self.admission.passed(placed);
        }
        let id = id.to_string();
        self.store.execute_for(envelope, &id, command, envelope.caused_metadata()).await?;
        // Each of these commands may settle the order. The cache holds what this command wrote
        // (or, for a repeat that wrote nothing, what it last knew: waiters take a version only
        // if it is newer than the one they saw unsettled).
        let version = self.store.peek_versioned(&id, |order, version| order.is_settled().then_some(version)).flatten();
        self.outcomes.settled(&id, version);
        Ok(Some((id, version)))
    }
}

#[async_trait]
impl Handler for OrderCommands {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        if let Some(settled) = self.apply(envelope).await? {
            outcome::announce(&self.pool, &[settled]).await;
        }
        Ok(())
    }

    async fn handle_batch(&self, batch: &[Delivery]) -> Result<(), HandlerError> {
        let batched = Batched { commands: self, settled: std::sync::Mutex::default() };
        let result = self.store.per_key(&batched, batch).await;
        // What was applied is announced even if the rest failed (the batch is then handled
        // again message by message, which announces again: waiters only look once more).
        let settled = std::mem::take(&mut *batched.settled.lock().unwrap_or_else(|e| e.into_inner()));
        outcome::announce(&self.pool, &settled).await;
        result
    }
}

/// A batch's commands, with one announcement for all the orders they settle.
struct Batched<'a> {
    commands: &'a OrderCommands,
    settled: std::sync::Mutex<Vec<(String, Option<i64>)>>,
}

#[async_trait]
impl Handler for Batched<'_> {
    async fn handle(&self, envelope: &Envelope) -> Result<(), HandlerError> {
        if let Some(settled) = self.commands.apply(envelope).await? {
            self.settled.lock().unwrap_or_else(|e| e.into_inner()).push(settled);
        }
        Ok(())
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let mut wiring = Wiring::connect(settings, &[Topic::OrderEvents], &[Topic::OrderCommands]).await?;
    let pool = wiring.database(true).await?;
    wiring.spawn_relay(pool.clone(), event_mapper(|id: &str, e| Ok(convert::order_event(convert::order_id(id)?, e))));
    let store = Arc::new(EventStoreOf::with_snapshots(pool.clone(), wiring.settings.snapshot_every));
    let outcomes = outcome::Outcomes::default();
    let admission = Arc::new(admission::Admission::from_env()?);
    let commands = OrderCommands {
        store: store.clone(),
        pool: pool.clone(),
        outcomes: outcomes.clone(),
        admission: admission.clone(),
    };
    wiring.spawn_consumer("order", &[Topic::OrderCommands], Arc::new(commands))?;
    // Its own session on the database, to hear the orders other instances settle.
    let token = wiring.shutdown.clone();
    wiring.spawn(eventstore::notify::listen(
        wiring.settings.database_url.clone(),
        outcome::CHANNEL,
        outcomes.clone(),
        token,
    ));
    let mongo = readmodel::connect(&wiring.settings.mongodb_url).await?;
    let idempotency = idempotency::Keys::migrate(pool.clone()).await?;
    let downstream = |name: &'static str, url: &str| {
        let timeout = wiring.cluster.config.current().http_timeout;
        Downstream::new(name, url, timeout)
            .with_resolver(wiring.cluster.resolver.clone())
            .with_live_timeout(wiring.cluster.config.subscribe())
            .calling_as("order", wiring.caller_key.clone())
    };
    let orders = readmodel::ActiveCollection::new(&mongo, ReadModel::Orders);
    let state = AppState {
        store,
        facts: Arc::new(facts::Facts::new(
            downstream("customer", &wiring.settings.customer_url),
            downstream("product", &wiring.settings.product_url),
        )),
        orders: orders.clone(),
        idempotency,
        outcomes,
        admission,
        visible: Arc::new(admission::Admission::from_env()?),
        shown: Arc::new(Shown::new(orders, ShowDelay::new(SHOWN_FIRST_LOOK, SHOWN_FLOOR), SHOWN_TICK, SHOWN_PACE)),
    };
    wiring.serve(app(state)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime::client::BreakerConfig;

    async fn answer(e: CallError) -> (StatusCode, serde_json::Value) {
        let response = downstream_error(e).into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// The customer check against a port nothing listens on: 503 naming the customer service,
    /// then, once the breaker opens, 503 saying so, without calling.
    #[tokio::test]
    async fn an_unreachable_downstream_is_a_503_with_a_message_then_the_breaker_answers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let customers = Downstream::new("customer", &url, std::time::Duration::from_secs(1))
            .with_breaker(BreakerConfig { failures: 1, cool_down: std::time::Duration::from_secs(60) });
        let e = customers.get_json::<serde_json::Value>("/internal/customers/x").await.unwrap_err();
        let (status, body) = answer(e).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "customer service is unavailable, try again later");
        assert_eq!(body["detail"]["downstream"], "customer");

        let e = customers.get_json::<serde_json::Value>("/internal/customers/x").await.unwrap_err();
        let (status, body) = answer(e).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["error"].as_str().unwrap().contains("circuit breaker open"), "{body}");
        assert_eq!(body["detail"]["circuit_breaker"], "open");
    }
}
