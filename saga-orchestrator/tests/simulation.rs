//! Seeded simulation of the CreateOrder saga against the real aggregates, over a model of Kafka.
//!
//! No infrastructure: every schedule runs in memory, from one seed, and replays exactly.
//!
//! # What is simulated
//!
//! - **Participants** are the real, pure aggregates (`domain::product::Product`,
//!   `domain::payment::Account`, `domain::order::Order`), driven as their services drive them
//!   (`command-services/*/src/lib.rs`): a command record is turned into a domain command with
//!   `schemas::convert`, decided and applied, and the events go back on the wire through
//!   `convert::*_event`. Each service's inbox is modelled as `EventStoreOf::execute_for` has it:
//!   a message id is remembered only when its command decided events (the inbox row is written by
//!   the event table's trigger), so a redelivered command that had an effect is skipped, and one
//!   that decided nothing is decided again. A command the aggregate refuses is *parked* (the DLQ).
//! - **The orchestrator** is `Orchestrator::handle_many` and `fire_timeout` (`src/lib.rs`) without
//!   PostgreSQL: a batch of replies is one transaction (inbox rows by message id, each saga loaded
//!   from its stored JSON, the replies applied in order, each touched saga stored back as JSON, the
//!   commands queued); a deadline fires in its own transaction, only once it has passed.
//! - **The network** is Kafka as the services use it: a record travels on its topic under its key
//!   (`Message::key`), so the records of one key are delivered in the order they were produced
//!   and the keys interleave freely. Every record carries a message id (the outbox row's id).
//! - **The clock** is virtual; the timer fires a deadline when the schedule chooses, never before it.
//!
//! # Faults
//!
//! - *Redelivery*: a consumer restarts from an older offset and reads the last few records of a
//!   key again, same message ids (Kafka's at-least-once; also a relay that resends after a crash).
//! - *Fresh copies*: a reply delivered again under a new message id, which the inbox cannot catch:
//!   checks the state machine itself is idempotent (not something Kafka does on its own).
//! - *Delays and reordering across keys*: the scheduler's free choice of the next key.
//! - *Late replies*: a key held back until the saga's deadline has fired, then delivered.
//! - *Orchestrator crashes*: a transaction is lost: the saga stays at its last stored JSON, the
//!   commands it would have sent are not sent, no inbox row is written, and the records are
//!   delivered again (the consumer did not commit their offsets).
//! - *Customer cancellations* (`OrderCancellationRequested`, as the order service's `cancel`
//!   handler produces it from `OrderCommand::RequestCancellation`) before, while or after the
//!   order is confirmed.
//!
//! # Invariants
//!
//! Checked once a schedule has quiesced (nothing in flight or held back, no deadline pending),
//! from the participants' own state and the commands the orchestrator committed; never from the
//! saga's internal fields (see `Sim::check`). Each violation is labelled with its invariant:
//!
//! 1. `finished`, `agrees`, `settled`: every saga ended CONFIRMED, REJECTED or CANCELLED; the
//!    order aggregate ended the same; and an order whose cancellation the order service accepted
//!    did not stay CONFIRMED (`Order::is_settled`: a client waiting on it would wait forever).
//! 2. `stock identity`, `stock released`: per product `received = available + reserved + sold`
//!    (the domain's identity; nothing is delivered here, so `received` is the initial stock),
//!    nothing reserved and no reservation held at the end, stock sold only to orders that ended
//!    CONFIRMED (returned only for CANCELLED ones), and `sold` = what the confirmed orders bought.
//! 3. `charged`: the credit the customer spent equals the totals of the orders that ended
//!    CONFIRMED (a cancelled confirmed order is refunded); no payment is left authorized, and none
//!    is confirmed for an order that did not end CONFIRMED.
//! 4. `once`: no command twice. Each command the orchestrator committed (not those lost with a
//!    crashed transaction) names its (order, product) once, RejectOrder and CancelOrder together
//!    once per order: ReleaseStock, RefundPayment, RejectOrder/CancelOrder, and every forward step.
//! 5. `confirmed complete`: a CONFIRMED order has every line committed and its payment confirmed.
//! 6. `not refused`: no participant refused a command of the saga (it would be parked in a DLQ).
//!
//! Besides: `liveness`, quiescence within `MAX_STEPS` steps (a saga that never finishes), and
//! `panic`, nothing panics.
//!
//! # Delivery assumptions
//!
//! - One key, one order. Kafka keeps order per partition and a key always maps to one partition;
//!   each key has a single producer (the outbox relay of the service owning the aggregate, or the
//!   orchestrator's), which publishes its rows in order with an idempotent producer; and the consumers hand each key's records over in order
//!   (`messaging::consumer::per_key`, `handle_many`). Keys that share a partition are ordered
//!   more strictly in reality than here: the model allows more interleavings, not fewer.
//! - A redelivery comes from an older offset, so it repeats a run of the key's latest records, in
//!   order, ahead of what is still queued. A fresh-id copy is queued behind everything on its key.
//! - One saga is moved by one transaction at a time (`FOR UPDATE` in both `handle_many` and
//!   `fire_timeout`), so each transaction is one atomic step here.
//! - The commands of one saga reach its outbox in commit order, so they keep their order per key.
//!   Commands of two sagas on one key also keep their commit order here (the relay may publish a
//!   late-committing transaction's rows after later ones); no invariant depends on that order.

//! # Running
//!
//! - `SAGA_SIM_SCHEDULES=N`: how many schedules (seeds `0..N`, default [`DEFAULT_SCHEDULES`]).
//! - `SAGA_SIM_SEED=1234`: replay that seed alone and print its trace (`-- --nocapture`).
//!
//! A failure names every violated invariant with the smallest seed that shows it, and prints the
//! trace of the first failing seed: every delivery, timeout, crash and fault, in order.

use domain::Aggregate;
use domain::order::{Order, OrderCommand, OrderLine, OrderStatus};
use domain::payment::{Account, AccountCommand, PaymentState};
use domain::product::{Product, ProductCommand, ReservationState};
use domain::values::{Currency, CustomerId, Money, Name, OrderId, ProductId, Quantity, Sku};
use schemas::{Message, Topic, convert};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Adapter: the only place that knows the saga's API. The engine behind it may be rewritten; the
// simulation needs just this surface (start, reply, timeout, deadline, outcome, JSON state).
// ---------------------------------------------------------------------------------------------
mod saga_api {
    use saga_orchestrator::saga::{Saga, Status, Timeouts};
    use schemas::Message;
    use schemas::records as r;

    /// The configured step timeout (`SHOP_SAGA_STEP_TIMEOUT_MS`) of the simulated orchestrator.
    pub const STEP_TIMEOUT_MS: i64 = 5_000;
    const TIMEOUTS: Timeouts = Timeouts { step_ms: STEP_TIMEOUT_MS };

    pub type State = Saga;

    /// How a finished saga ended.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Outcome {
        Confirmed,
        Rejected,
        Cancelled,
    }

    pub fn start(placed: &r::OrderPlaced, now_ms: i64) -> (State, Vec<Message>) {
        Saga::start(placed, now_ms, TIMEOUTS)
    }

    pub fn reply(saga: &mut State, reply: &Message, now_ms: i64) -> Vec<Message> {
        saga.on_reply(reply, now_ms, TIMEOUTS)
    }

    pub fn timeout(saga: &mut State, now_ms: i64) -> Vec<Message> {
        saga.on_timeout(now_ms)
    }

    pub fn deadline(saga: &State) -> Option<i64> {
        saga.deadline_ms
    }

    /// `None` while the saga is under way.
    pub fn outcome(saga: &State) -> Option<Outcome> {
        match saga.status {
            Status::Confirmed => Some(Outcome::Confirmed),
            Status::Rejected => Some(Outcome::Rejected),
            Status::Cancelled => Some(Outcome::Cancelled),
            other => {
                debug_assert!(!other.is_terminal(), "a terminal status without an outcome: {other:?}");
                None
            }
        }
    }

    /// The status as the API names it, for messages.
    pub fn status_name(saga: &State) -> &'static str {
        saga.status.as_str()
    }

    /// The saga as the orchestrator stores it (`sagas.state`, a `jsonb` column).
    pub fn store(saga: &State) -> serde_json::Value {
        serde_json::to_value(saga).expect("a saga serializes to JSON")
    }

    /// The saga as the orchestrator loads it (`Saga::from_stored` of the stored JSON).
    pub fn load(json: &serde_json::Value) -> State {
        Saga::from_stored(json.clone()).expect("a stored saga deserializes from its JSON")
    }
}

use saga_api::Outcome;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// Schedules run by a plain `cargo test` (overridden by `SAGA_SIM_SCHEDULES`).
const DEFAULT_SCHEDULES: u64 = 10_000;

/// A schedule that has not quiesced after this many steps never finishes: a violation.
const MAX_STEPS: usize = 5_000;

/// The scheduler's weight of delivering the next record of a ready key; every other action's
/// weight is relative to it (a timer with weight 1 fires about once per 20 deliveries).
const DELIVERY: u32 = 20;

/// Delivered records remembered per key, for redeliveries.
const HISTORY: usize = 4;

// ---------------------------------------------------------------------------------------------
// Ids and trace formatting
// ---------------------------------------------------------------------------------------------

/// Ids are small numbers inside UUIDs, so the trace can name them `p1`, `o2`, `c1`.
const PRODUCT: u128 = 0x100;
const ORDER: u128 = 0x200;
const CUSTOMER: u128 = 0x300;

fn product_id(i: usize) -> ProductId {
    ProductId(Uuid::from_u128(PRODUCT + i as u128))
}
fn order_id(i: usize) -> OrderId {
    OrderId(Uuid::from_u128(ORDER + i as u128))
}
fn customer_id() -> CustomerId {
    CustomerId(Uuid::from_u128(CUSTOMER + 1))
}

/// `p1` for the first product's UUID, and so on; anything else as it is.
fn short(id: &str) -> String {
    let Ok(uuid) = Uuid::parse_str(id) else { return id.to_owned() };
    let n = uuid.as_u128();
    let prefix = match n & !0xff {
        PRODUCT => "p",
        ORDER => "o",
        CUSTOMER => "c",
        _ => return id.to_owned(),
    };
    format!("{prefix}{}", n & 0xff)
}

/// `text` with the simulation's UUIDs shortened (reasons quote product ids).
fn shorten_ids(text: &str) -> String {
    const PREFIX: &str = "00000000-0000-0000-0000-";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        out.push_str(&rest[..at]);
        let candidate = rest.get(at..at + 36).unwrap_or(&rest[at..]);
        let shortened = short(candidate);
        out.push_str(&shortened);
        rest = &rest[at + candidate.len()..];
    }
    out.push_str(rest);
    out
}

/// A record in one line: `StockReserved{p1 o2 quantity=3}`.
fn describe(message: &Message) -> String {
    let name = message.full_name().rsplit('.').next().unwrap_or_default();
    let mut fields = Vec::new();
    if let serde_json::Value::Object(map) = message.to_json() {
        for (k, v) in map {
            match (k.as_str(), v) {
                (k, serde_json::Value::String(s)) if k.ends_with("_id") => fields.push(short(&s)),
                ("currency" | "owner" | "code", _) => {}
                ("lines", serde_json::Value::Array(lines)) => fields.push(format!("{} lines", lines.len())),
                ("reason", serde_json::Value::String(s)) => fields.push(format!("{:?}", shorten_ids(&s))),
                (k, v) => fields.push(format!("{k}={v}")),
            }
        }
    }
    format!("{name}{{{}}}", fields.join(" "))
}

/// The order a record is about, if any (every saga command and reply names one).
fn order_of(message: &Message) -> Option<&str> {
    use Message as M;
    Some(match message {
        M::OrderPlaced(m) => &m.order_id,
        M::OrderConfirmed(m) => &m.order_id,
        M::OrderRejected(m) => &m.order_id,
        M::OrderCancellationRequested(m) => &m.order_id,
        M::OrderCancelled(m) => &m.order_id,
        M::ConfirmOrder(m) => &m.order_id,
        M::RejectOrder(m) => &m.order_id,
        M::CancelOrder(m) => &m.order_id,
        M::StockReserved(m) => &m.order_id,
        M::StockReservationFailed(m) => &m.order_id,
        M::StockReleased(m) => &m.order_id,
        M::StockCommitted(m) => &m.order_id,
        M::StockReturned(m) => &m.order_id,
        M::ReserveStock(m) => &m.order_id,
        M::ReleaseStock(m) => &m.order_id,
        M::CommitStock(m) => &m.order_id,
        M::ReturnStock(m) => &m.order_id,
        M::PaymentAuthorized(m) => &m.order_id,
        M::PaymentDeclined(m) => &m.order_id,
        M::PaymentConfirmed(m) => &m.order_id,
        M::PaymentRefunded(m) => &m.order_id,
        M::AuthorizePayment(m) => &m.order_id,
        M::RefundPayment(m) => &m.order_id,
        M::ConfirmPayment(m) => &m.order_id,
        _ => return None,
    })
}

/// The replies the orchestrator listens to: a mirror of `order_of` in `src/lib.rs`.
fn saga_listens(message: &Message) -> bool {
    use Message as M;
    matches!(
        message,
        M::OrderPlaced(_)
            | M::OrderConfirmed(_)
            | M::OrderRejected(_)
            | M::OrderCancellationRequested(_)
            | M::OrderCancelled(_)
            | M::StockReturned(_)
            | M::StockReserved(_)
            | M::StockReservationFailed(_)
            | M::StockReleased(_)
            | M::StockCommitted(_)
            | M::PaymentAuthorized(_)
            | M::PaymentDeclined(_)
            | M::PaymentRefunded(_)
            | M::PaymentConfirmed(_)
    )
}

// ---------------------------------------------------------------------------------------------
// The world of one schedule
// ---------------------------------------------------------------------------------------------

/// A record on the wire.
#[derive(Debug, Clone)]
struct Envelope {
    /// The `message-id` header: the outbox row's id, the same on every redelivery.
    id: u64,
    message: Message,
}

/// A row of the orchestrator's `sagas` table: the saga as JSON, and the deadline column the
/// timer scans (`deadline <= now()`).
struct Row {
    state: serde_json::Value,
    deadline: Option<i64>,
}

/// A Kafka key of a topic: the unit of ordering.
type Partition = (Topic, String);

/// `product.commands/p1`.
fn key_name(partition: &Partition) -> String {
    format!("{}/{}", partition.0, short(&partition.1))
}

fn keys<'a>(partitions: impl IntoIterator<Item = &'a Partition>) -> String {
    partitions.into_iter().map(key_name).collect::<Vec<_>>().join(", ")
}

/// A command service: its aggregates and its inbox (ids of messages that decided events).
struct Service<A> {
    aggregates: BTreeMap<String, A>,
    inbox: HashSet<u64>,
}

impl<A: Aggregate> Service<A> {
    fn new() -> Self {
        Service { aggregates: BTreeMap::new(), inbox: HashSet::new() }
    }

    fn get(&self, id: &str) -> &A {
        self.aggregates.get(id).unwrap_or_else(|| panic!("{} {} exists in the simulation", A::TYPE, short(id)))
    }

    /// `EventStoreOf::execute`: decide, then store (apply) the events.
    fn execute(&mut self, id: &str, command: A::Command) -> Result<Vec<A::Event>, A::Error> {
        let aggregate = self.aggregates.entry(id.to_owned()).or_default();
        let events = aggregate.decide(command)?;
        for event in &events {
            aggregate.apply(event.clone());
        }
        Ok(events)
    }

    /// `EventStoreOf::execute_for`: skip a message that already had its effect, park a refusal.
    fn execute_for(&mut self, message_id: u64, id: &str, command: A::Command) -> Handled<A::Event> {
        if self.inbox.contains(&message_id) {
            return Handled::Skipped;
        }
        match self.execute(id, command) {
            Ok(events) => {
                if !events.is_empty() {
                    self.inbox.insert(message_id);
                }
                Handled::Decided(events)
            }
            Err(e) => Handled::Parked(format!("{} {}: {e}", A::TYPE, short(id))),
        }
    }
}

/// What a command service did with a command record.
enum Handled<E> {
    /// Its message id is in the inbox: it already had its effect.
    Skipped,
    /// The aggregate decided these events (none for a repeated command).
    Decided(Vec<E>),
    /// The aggregate refused it: the consumer parks the record in the topic's DLQ.
    Parked(String),
}

/// When the customer asks to cancel an order, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelPlan {
    /// At any moment once the order is placed.
    Anytime,
    /// While `ConfirmOrder` is on its way to the order service.
    WhileConfirming,
    /// Once the order is confirmed.
    AfterConfirmation,
}

/// How hostile a schedule's environment is; drawn from its seed.
#[derive(Debug, Clone, Copy)]
struct Faults {
    /// Chance that an orchestrator transaction is lost.
    crash: f64,
    /// Weights of the fault actions (0: never).
    redeliver: u32,
    fresh_copy: u32,
    hold: u32,
    /// Weight of firing a passed deadline while replies are still in flight (0: only once
    /// nothing else can happen).
    timer: u32,
    /// Largest batch the orchestrator's consumer hands over.
    max_batch: usize,
    /// Fault actions left.
    budget: u32,
}

impl Faults {
    fn draw(rng: &mut fastrand::Rng) -> Faults {
        if rng.u8(0..4) == 0 {
            // A calm schedule: only the interleaving of keys and the customer vary.
            return Faults { crash: 0.0, redeliver: 0, fresh_copy: 0, hold: 0, timer: 0, max_batch: 1, budget: 0 };
        }
        Faults {
            crash: [0.0, 0.1, 0.3][rng.usize(0..3)],
            redeliver: [0, 2, 8][rng.usize(0..3)],
            fresh_copy: [0, 2, 8][rng.usize(0..3)],
            hold: [0, 4, 12][rng.usize(0..3)],
            timer: [0, 1, 3][rng.usize(0..3)],
            max_batch: rng.usize(1..=4),
            budget: rng.u32(0..=16),
        }
    }
}

/// What happened, counted over all schedules: shows the simulation reaches every path.
#[derive(Debug, Default, Clone, Copy)]
struct Coverage {
    schedules: u64,
    orders: u64,
    confirmed: u64,
    rejected: u64,
    cancelled_before_confirmation: u64,
    cancelled_after_confirmation: u64,
    cancellations_while_confirming: u64,
    compensating_timeouts: u64,
    crashes: u64,
    redelivered: u64,
    inbox_dedups: u64,
    fresh_copies: u64,
    held_until_deadline: u64,
    cancellations_refused: u64,
    /// The most steps one schedule took (against `MAX_STEPS`).
    longest_schedule: usize,
}

impl Coverage {
    fn add(&mut self, o: &Coverage) {
        self.schedules += o.schedules;
        self.orders += o.orders;
        self.confirmed += o.confirmed;
        self.rejected += o.rejected;
        self.cancelled_before_confirmation += o.cancelled_before_confirmation;
        self.cancelled_after_confirmation += o.cancelled_after_confirmation;
        self.cancellations_while_confirming += o.cancellations_while_confirming;
        self.compensating_timeouts += o.compensating_timeouts;
        self.crashes += o.crashes;
        self.redelivered += o.redelivered;
        self.inbox_dedups += o.inbox_dedups;
        self.fresh_copies += o.fresh_copies;
        self.held_until_deadline += o.held_until_deadline;
        self.cancellations_refused += o.cancellations_refused;
        self.longest_schedule = self.longest_schedule.max(o.longest_schedule);
    }
}

/// One step the scheduler may take.
#[derive(Debug, Clone)]
enum Action {
    /// The customer places order `i` (the order service's HTTP handler).
    Place(usize),
    /// The customer asks to cancel order `i` (the order service's `cancel` handler).
    Cancel(usize),
    /// The orchestrator's consumer hands over a batch of replies.
    Orchestrate,
    /// A command service consumes the next record of a command key.
    Deliver(Partition),
    /// The orchestrator's timer fires the passed deadline of a saga.
    Timer(String),
    /// Fault: a consumer reads the last few records of a key again.
    Redeliver,
    /// Fault: a reply is delivered again under a new message id.
    FreshCopy,
    /// Fault: a key is held back until the deadline of the saga its next record is about fires.
    Hold,
    /// Nothing else can happen: deliver what was held back.
    ReleaseHeld,
}

/// A placed order, as the simulation planned it.
struct Planned {
    id: String,
    placed: bool,
    cancel: Option<CancelPlan>,
    cancel_tried: bool,
}

/// One schedule's world: the participants, the network, the orchestrator's tables, the clock
/// and the trace.
struct Sim {
    rng: fastrand::Rng,
    faults: Faults,
    tracing: bool,
    trace: Vec<String>,
    now: i64,
    step: usize,
    next_message_id: u64,

    products: Service<Product>,
    accounts: Service<Account>,
    orders: Service<Order>,
    /// Stock each product was created with (no deliveries happen).
    initial_stock: BTreeMap<String, u64>,
    customer: String,
    /// The products and their prices, which orders draw their lines from.
    prices: Vec<(ProductId, Money)>,
    planned: Vec<Planned>,

    /// Records in flight, per key, in order.
    queues: BTreeMap<Partition, VecDeque<Envelope>>,
    /// The last records delivered per key (committed), for redeliveries.
    delivered: BTreeMap<Partition, VecDeque<Envelope>>,
    /// Keys held back, and the saga whose timer releases each.
    held: BTreeMap<Partition, String>,

    /// The orchestrator's `sagas` table: order id -> row.
    sagas: BTreeMap<String, Row>,
    /// The orchestrator's inbox: message ids handled in a committed transaction.
    inbox: HashSet<u64>,
    /// Every command the orchestrator committed to its outbox, in order.
    committed_commands: Vec<Message>,
    /// Commands a participant refused (parked in its DLQ).
    parked: Vec<String>,

    coverage: Coverage,
}

impl Sim {
    /// A world drawn from `seed`: products, one customer's account, the orders to place.
    fn new(seed: u64, tracing: bool) -> Sim {
        let mut rng = fastrand::Rng::with_seed(seed);
        let faults = Faults::draw(&mut rng);
        let mut sim = Sim {
            rng,
            faults,
            tracing,
            trace: Vec::new(),
            now: 1_000_000,
            step: 0,
            next_message_id: 1,
            products: Service::new(),
            accounts: Service::new(),
            orders: Service::new(),
            initial_stock: BTreeMap::new(),
            customer: customer_id().to_string(),
            prices: Vec::new(),
            planned: Vec::new(),
            queues: BTreeMap::new(),
            delivered: BTreeMap::new(),
            held: BTreeMap::new(),
            sagas: BTreeMap::new(),
            inbox: HashSet::new(),
            committed_commands: Vec::new(),
            parked: Vec::new(),
            coverage: Coverage { schedules: 1, ..Coverage::default() },
        };
        sim.log(|| format!("seed {seed}, faults {faults:?}"));

        let n_products = sim.rng.usize(1..=3);
        let mut prices = Vec::new();
        for i in 1..=n_products {
            let id = product_id(i);
            // Scarce or plentiful, so some orders are over stock and some are not.
            let stock = if sim.rng.u8(0..3) == 0 { sim.rng.u32(0..=4) } else { sim.rng.u32(5..=20) };
            let price = Money::new(100 * sim.rng.i64(1..=9), Currency::EUR);
            let create = ProductCommand::Create {
                product_id: id,
                sku: Sku::parse(&format!("SKU-{i}")).expect("a valid SKU"),
                name: Name::parse("name", &format!("Product {i}")).expect("a valid name"),
                price,
                stock,
            };
            sim.products.execute(&id.to_string(), create).expect("a new product is created");
            sim.initial_stock.insert(id.to_string(), u64::from(stock));
            prices.push((id, price));
            sim.log(|| format!("product p{i}: stock {stock}, price {}c", price.cents));
        }

        // Tight or ample (an order totals at most 3 lines x 3 x 900c), so some are over credit.
        let credit = Money::new(
            100 * if sim.rng.u8(0..3) == 0 { sim.rng.i64(0..=30) } else { sim.rng.i64(30..=400) },
            Currency::EUR,
        );
        let open = AccountCommand::Open { customer_id: customer_id(), credit };
        sim.accounts.execute(&sim.customer.clone(), open).expect("a new account opens");
        sim.log(|| format!("customer c1: credit {}c", credit.cents));

        for i in 1..=sim.rng.usize(1..=3) {
            let cancel = match sim.rng.u8(0..10) {
                0..=4 => None,
                5 | 6 => Some(CancelPlan::Anytime),
                7 => Some(CancelPlan::WhileConfirming),
                _ => Some(CancelPlan::AfterConfirmation),
            };
            sim.planned.push(Planned { id: order_id(i).to_string(), placed: false, cancel, cancel_tried: false });
            sim.log(|| format!("order o{i}: customer cancels {cancel:?}"));
        }
        // Order lines are drawn when each order is placed (see `place`), from these products.
        sim.prices = prices;
        sim
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.tracing {
            let line = line();
            self.trace.push(format!("#{:<4} t={:<8} {line}", self.step, self.now));
        }
    }

    fn message_id(&mut self) -> u64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    /// Produce a record: onto its topic, under its key, behind the key's earlier records.
    fn publish(&mut self, message: Message) -> u64 {
        let id = self.message_id();
        let partition = (message.topic(), message.key().to_owned());
        self.queues.entry(partition).or_default().push_back(Envelope { id, message });
        id
    }

    fn publish_all(&mut self, messages: Vec<Message>) -> String {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            let text = if self.tracing { describe(&m) } else { String::new() };
            let id = self.publish(m);
            out.push(format!("{text}#m{id}"));
        }
        out.join(", ")
    }

    fn remember_delivered(&mut self, partition: &Partition, envelope: Envelope) {
        let history = self.delivered.entry(partition.clone()).or_default();
        history.push_back(envelope);
        if history.len() > HISTORY {
            history.pop_front();
        }
    }

    fn stored(&self, order: &str) -> Option<saga_api::State> {
        self.sagas.get(order).map(|row| saga_api::load(&row.state))
    }

    /// Store a saga as `store_all` does: its JSON and its deadline column.
    fn store(&mut self, order: &str, saga: &saga_api::State) {
        let row = Row { state: saga_api::store(saga), deadline: saga_api::deadline(saga) };
        self.sagas.insert(order.to_owned(), row);
    }

    fn deadline_of(&self, order: &str) -> Option<i64> {
        self.sagas.get(order).and_then(|row| row.deadline)
    }

    /// `ConfirmOrder` for the order is on its way to the order service.
    fn confirming(&self, order: &str) -> bool {
        self.queues
            .get(&(Topic::OrderCommands, order.to_owned()))
            .is_some_and(|q| q.iter().any(|e| matches!(e.message, Message::ConfirmOrder(_))))
    }

    fn ready(&self, partition: &Partition) -> bool {
        !self.held.contains_key(partition) && self.queues.get(partition).is_some_and(|q| !q.is_empty())
    }

    fn is_reply_topic(topic: Topic) -> bool {
        matches!(topic, Topic::OrderEvents | Topic::ProductEvents | Topic::PaymentEvents)
    }

    // -- the scheduler ------------------------------------------------------------------------

    /// Run until quiescence; `Err` if the step bound is exceeded.
    fn run(&mut self) -> Result<(), String> {
        loop {
            self.step += 1;
            if self.step > MAX_STEPS {
                return Err(format!(
                    "[liveness] no quiescence after {MAX_STEPS} steps ({} records in flight)",
                    self.queues.values().map(VecDeque::len).sum::<usize>()
                ));
            }
            self.coverage.longest_schedule = self.step;
            let Some(action) = self.choose() else { return Ok(()) };
            self.now += self.rng.i64(0..=20);
            self.perform(action);
        }
    }

    fn choose(&mut self) -> Option<Action> {
        let mut progress: Vec<(Action, u32)> = Vec::new();
        for (i, p) in self.planned.iter().enumerate() {
            if !p.placed {
                progress.push((Action::Place(i), DELIVERY / 2));
            } else if let Some(plan) = p.cancel.filter(|_| !p.cancel_tried) {
                let order = self.orders.get(&p.id);
                let weight = match plan {
                    CancelPlan::Anytime => DELIVERY / 5,
                    CancelPlan::WhileConfirming => {
                        if order.status == OrderStatus::Pending && self.confirming(&p.id) {
                            4 * DELIVERY
                        } else {
                            0
                        }
                    }
                    CancelPlan::AfterConfirmation => {
                        if order.status == OrderStatus::Confirmed {
                            DELIVERY / 4
                        } else {
                            0
                        }
                    }
                };
                if weight > 0 {
                    progress.push((Action::Cancel(i), weight));
                }
            }
        }
        let ready_replies = self.queues.keys().filter(|k| Self::is_reply_topic(k.0) && self.ready(k)).count() as u32;
        if ready_replies > 0 {
            progress.push((Action::Orchestrate, DELIVERY * ready_replies));
        }
        for k in self.queues.keys().filter(|k| !Self::is_reply_topic(k.0) && self.ready(k)) {
            progress.push((Action::Deliver(k.clone()), DELIVERY));
        }
        let timers: Vec<String> =
            self.sagas.iter().filter(|(_, row)| row.deadline.is_some()).map(|(order, _)| order.clone()).collect();
        if progress.is_empty() {
            // Nothing else can happen: the timer fires, or what was held back arrives.
            progress.extend(timers.into_iter().map(|t| (Action::Timer(t), 1)));
            if !self.held.is_empty() {
                progress.push((Action::ReleaseHeld, 1));
            }
            return self.pick(progress);
        }
        if self.faults.timer > 0 {
            progress.extend(timers.into_iter().map(|t| (Action::Timer(t), self.faults.timer)));
        }
        if self.faults.budget > 0 {
            if self.faults.redeliver > 0 && !self.delivered.is_empty() {
                progress.push((Action::Redeliver, self.faults.redeliver));
            }
            if self.faults.fresh_copy > 0 && self.delivered.keys().any(|k| Self::is_reply_topic(k.0)) {
                progress.push((Action::FreshCopy, self.faults.fresh_copy));
            }
            if self.faults.hold > 0 && !self.hold_candidates().is_empty() {
                progress.push((Action::Hold, self.faults.hold));
            }
        }
        self.pick(progress)
    }

    fn pick(&mut self, actions: Vec<(Action, u32)>) -> Option<Action> {
        let total: u32 = actions.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut n = self.rng.u32(0..total);
        for (action, w) in actions {
            if n < w {
                return Some(action);
            }
            n -= w;
        }
        unreachable!("the draw is below the total weight")
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Place(i) => self.place(i),
            Action::Cancel(i) => self.cancel(i),
            Action::Orchestrate => self.orchestrate(),
            Action::Deliver(partition) => self.deliver_command(&partition),
            Action::Timer(order) => self.fire_timer(&order),
            Action::Redeliver => self.redeliver(),
            Action::FreshCopy => self.fresh_copy(),
            Action::Hold => self.hold(),
            Action::ReleaseHeld => {
                let held = std::mem::take(&mut self.held);
                self.log(|| format!("nothing else can happen: held keys delivered again: {}", keys(held.keys())));
            }
        }
    }

    // -- the customer -------------------------------------------------------------------------

    /// The order service's `place`: the aggregate decides `OrderPlaced`, its relay publishes it.
    fn place(&mut self, i: usize) {
        let id = self.planned[i].id.clone();
        let n_lines = self.rng.usize(1..=self.prices.len().min(3));
        let mut products = self.prices.clone();
        self.rng.shuffle(&mut products);
        let lines = products
            .into_iter()
            .take(n_lines)
            .map(|(product_id, unit_price)| OrderLine {
                product_id,
                quantity: Quantity::new(self.rng.i64(1..=3)).expect("a positive quantity"),
                unit_price,
            })
            .collect();
        let place = OrderCommand::Place {
            order_id: OrderId::parse(&id).expect("a planned order id"),
            customer_id: customer_id(),
            lines,
            owner: None,
        };
        let events = self.orders.execute(&id, place).expect("a new order with distinct products is placed");
        let oid = OrderId::parse(&id).expect("a planned order id");
        let messages = events.iter().map(|e| convert::order_event(oid, e)).collect();
        let sent = self.publish_all(messages);
        self.planned[i].placed = true;
        self.coverage.orders += 1;
        self.log(|| format!("customer places {} => {sent}", short(&id)));
    }

    /// The order service's `cancel`: `RequestCancellation` on the order; refused (409) once the
    /// order is rejected.
    fn cancel(&mut self, i: usize) {
        self.planned[i].cancel_tried = true;
        let id = self.planned[i].id.clone();
        if self.orders.get(&id).status == OrderStatus::Pending && self.confirming(&id) {
            self.coverage.cancellations_while_confirming += 1;
        }
        let command = OrderCommand::RequestCancellation { reason: "cancelled by the customer".into() };
        match self.orders.execute(&id, command) {
            Ok(events) => {
                let oid = OrderId::parse(&id).expect("a planned order id");
                let messages = events.iter().map(|e| convert::order_event(oid, e)).collect();
                let sent = self.publish_all(messages);
                self.log(|| format!("customer cancels {} => {sent}", short(&id)));
            }
            Err(e) => {
                self.coverage.cancellations_refused += 1;
                self.log(|| format!("customer cancels {} => 409 {e}", short(&id)));
            }
        }
    }

    // -- the command services -----------------------------------------------------------------

    /// A command service consumes the next record of a key (`StockCommands`, `Payments`,
    /// `OrderCommands` handlers).
    fn deliver_command(&mut self, partition: &Partition) {
        let envelope = self.queues.get_mut(partition).and_then(VecDeque::pop_front).expect("a ready key has a record");
        let Envelope { id, message } = envelope.clone();
        let (service, handled) = match partition.0 {
            Topic::ProductCommands => {
                let (pid, command) = convert::product_command(&message)
                    .expect("the saga sends valid product commands")
                    .expect("only product commands travel on product.commands");
                let handled = self.products.execute_for(id, &pid.to_string(), command);
                ("product", self.emit(handled, |e| convert::product_event(pid, e)))
            }
            Topic::PaymentCommands => {
                let (cid, command) = convert::account_command(&message)
                    .expect("the saga sends valid payment commands")
                    .expect("only payment commands travel on payment.commands");
                if matches!(command, AccountCommand::Authorize { .. }) {
                    // As the payment service: open first (idempotent; the account is open here).
                    let open = AccountCommand::Open { customer_id: cid, credit: Money::new(0, Currency::EUR) };
                    let opened = self.accounts.execute(&cid.to_string(), open).expect("opening is idempotent");
                    assert!(opened.is_empty(), "the simulated account is open before any payment");
                }
                let handled = self.accounts.execute_for(id, &cid.to_string(), command);
                ("payment", self.emit(handled, |e| convert::account_event(cid, e)))
            }
            Topic::OrderCommands => {
                let (order, command) = match &message {
                    Message::ConfirmOrder(c) => (&c.order_id, OrderCommand::Confirm),
                    Message::RejectOrder(c) => (&c.order_id, OrderCommand::Reject { reason: c.reason.clone() }),
                    Message::CancelOrder(c) => (&c.order_id, OrderCommand::Cancel { reason: c.reason.clone() }),
                    other => panic!("unexpected record on order.commands: {}", other.full_name()),
                };
                let oid = convert::order_id(order).expect("the saga sends valid order ids");
                let handled = self.orders.execute_for(id, order, command);
                ("order", self.emit(handled, |e| convert::order_event(oid, e)))
            }
            other => panic!("no command service consumes {other}"),
        };
        self.remember_delivered(partition, envelope);
        self.log(|| format!("{service} service <- {}#m{id} => {handled}", describe(&message)));
    }

    /// Publish what a command decided; the trace's account of it.
    fn emit<E>(&mut self, handled: Handled<E>, to_message: impl Fn(&E) -> Message) -> String {
        match handled {
            Handled::Skipped => {
                self.coverage.inbox_dedups += 1;
                "skipped (inbox: already handled)".into()
            }
            Handled::Decided(events) if events.is_empty() => "no events (idempotent)".into(),
            Handled::Decided(events) => {
                let messages = events.iter().map(to_message).collect();
                self.publish_all(messages)
            }
            Handled::Parked(why) => {
                let text = format!("PARKED (refused): {why}");
                self.parked.push(why);
                text
            }
        }
    }

    // -- the orchestrator ---------------------------------------------------------------------

    /// `Orchestrator::handle_many`: one transaction for a batch of replies taken from the heads of
    /// ready keys (several from one key keep their order).
    fn orchestrate(&mut self) {
        let size = self.rng.usize(1..=self.faults.max_batch);
        let mut taken: BTreeMap<Partition, usize> = BTreeMap::new();
        let mut batch: Vec<Envelope> = Vec::new();
        for _ in 0..size {
            let open: Vec<&Partition> = self
                .queues
                .iter()
                .filter(|(k, q)| {
                    Self::is_reply_topic(k.0)
                        && !self.held.contains_key(*k)
                        && taken.get(*k).copied().unwrap_or(0) < q.len()
                })
                .map(|(k, _)| k)
                .collect();
            if open.is_empty() {
                break;
            }
            let partition = open[self.rng.usize(0..open.len())].clone();
            let n = taken.entry(partition.clone()).or_insert(0);
            batch.push(self.queues[&partition][*n].clone());
            *n += 1;
        }

        // The transaction.
        let now = self.now;
        let mut fresh: HashSet<u64> = batch
            .iter()
            .filter(|e| saga_listens(&e.message))
            .map(|e| e.id)
            .filter(|id| !self.inbox.contains(id))
            .collect();
        let inbox_rows = fresh.clone();
        let mut sagas: BTreeMap<String, (saga_api::State, bool)> = BTreeMap::new();
        for e in &batch {
            if let Some(order) = order_of(&e.message).filter(|_| saga_listens(&e.message))
                && let Some(saga) = self.stored(order)
            {
                sagas.entry(order.to_owned()).or_insert((saga, false));
            }
        }
        let mut commands: Vec<Message> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        for e in &batch {
            let Some(order) = order_of(&e.message).filter(|_| saga_listens(&e.message)) else { continue };
            if !fresh.remove(&e.id) {
                self.coverage.inbox_dedups += 1;
                if self.tracing {
                    notes.push(format!("{}#m{} (inbox: duplicate)", describe(&e.message), e.id));
                }
                continue;
            }
            let sent = match (sagas.get_mut(order), &e.message) {
                (None, Message::OrderPlaced(placed)) => {
                    let (saga, sent) = saga_api::start(placed, now);
                    sagas.insert(order.to_owned(), (saga, true));
                    sent
                }
                (None, _) | (Some(_), Message::OrderPlaced(_)) => {
                    if self.tracing {
                        notes.push(format!("{}#m{} (ignored)", describe(&e.message), e.id));
                    }
                    continue;
                }
                (Some((saga, moved)), reply) => {
                    *moved = true;
                    saga_api::reply(saga, reply, now)
                }
            };
            if self.tracing {
                let out: Vec<String> = sent.iter().map(describe).collect();
                notes.push(format!("{}#m{} -> [{}]", describe(&e.message), e.id, out.join(", ")));
            }
            commands.extend(sent);
        }

        if self.rng.f64() < self.faults.crash {
            self.coverage.crashes += 1;
            self.log(|| format!("orchestrator CRASH, transaction lost: {}", notes.join("; ")));
            return;
        }
        // Commit: the inbox rows, the sagas, the outbox; then the consumer moves past the batch.
        self.inbox.extend(inbox_rows);
        for (order, (saga, moved)) in &sagas {
            if *moved {
                self.store(order, saga);
            }
        }
        for (partition, n) in taken {
            for _ in 0..n {
                let e =
                    self.queues.get_mut(&partition).and_then(VecDeque::pop_front).expect("taken records are queued");
                self.remember_delivered(&partition, e);
            }
        }
        self.committed_commands.extend(commands.iter().cloned());
        let sent = self.publish_all(commands);
        self.log(|| format!("orchestrator <- {} => sent [{sent}]", notes.join("; ")));
    }

    /// `Orchestrator::fire_timeout`: the saga's deadline has passed (the clock moves there if
    /// it has not yet); one transaction.
    fn fire_timer(&mut self, order: &str) {
        let Some(deadline) = self.deadline_of(order) else { return };
        self.now = self.now.max(deadline + self.rng.i64(0..=50));
        let mut saga = self.stored(order).expect("a timer belongs to a stored saga");
        let commands = saga_api::timeout(&mut saga, self.now);
        if self.rng.f64() < self.faults.crash {
            self.coverage.crashes += 1;
            self.log(|| format!("timer {} CRASH, transaction lost", short(order)));
            return;
        }
        if !commands.is_empty() {
            self.coverage.compensating_timeouts += 1;
        }
        self.store(order, &saga);
        self.committed_commands.extend(commands.iter().cloned());
        let sent = self.publish_all(commands);
        let released: Vec<Partition> = self.held.iter().filter(|(_, o)| *o == order).map(|(k, _)| k.clone()).collect();
        for k in &released {
            self.held.remove(k);
            self.coverage.held_until_deadline += 1;
        }
        self.log(|| {
            let late =
                if released.is_empty() { String::new() } else { format!("; held keys released: {}", keys(&released)) };
            format!("timer fires {} (deadline {deadline}) => sent [{sent}]{late}", short(order))
        });
    }

    // -- faults -------------------------------------------------------------------------------

    /// A consumer restarts from an older offset: the last 1-3 delivered records of a key come
    /// again, in order, ahead of what is queued, with their message ids.
    fn redeliver(&mut self) {
        self.faults.budget -= 1;
        let partitions: Vec<Partition> = self.delivered.keys().cloned().collect();
        let partition = partitions[self.rng.usize(0..partitions.len())].clone();
        let history = &self.delivered[&partition];
        let k = self.rng.usize(1..=history.len().min(3));
        let again: Vec<Envelope> = history.iter().skip(history.len() - k).cloned().collect();
        self.coverage.redelivered += k as u64;
        let ids: Vec<String> = again.iter().map(|e| format!("#m{}", e.id)).collect();
        let queue = self.queues.entry(partition.clone()).or_default();
        for e in again.into_iter().rev() {
            queue.push_front(e);
        }
        self.log(|| format!("fault: {} redelivers {} (same message ids)", key_name(&partition), ids.join(", ")));
    }

    /// A reply already delivered (or still queued) comes again under a new message id, behind
    /// everything queued on its key.
    fn fresh_copy(&mut self) {
        self.faults.budget -= 1;
        let candidates: Vec<(Partition, Envelope)> = self
            .delivered
            .iter()
            .chain(self.queues.iter())
            .filter(|(k, _)| Self::is_reply_topic(k.0))
            .flat_map(|(k, q)| q.iter().map(|e| (k.clone(), e.clone())))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let (partition, original) = candidates[self.rng.usize(0..candidates.len())].clone();
        let id = self.message_id();
        self.queues.entry(partition).or_default().push_back(Envelope { id, message: original.message.clone() });
        self.coverage.fresh_copies += 1;
        self.log(|| format!("fault: copy of #m{} as #m{id}: {}", original.id, describe(&original.message)));
    }

    /// Keys whose next record belongs to a saga with a pending deadline.
    fn hold_candidates(&self) -> Vec<(Partition, String)> {
        self.queues
            .iter()
            .filter(|(k, _)| !self.held.contains_key(*k))
            .filter_map(|(k, q)| {
                let order = q.front().and_then(|e| order_of(&e.message))?;
                self.deadline_of(order).map(|_| (k.clone(), order.to_owned()))
            })
            .collect()
    }

    fn hold(&mut self) {
        let candidates = self.hold_candidates();
        if candidates.is_empty() {
            return;
        }
        self.faults.budget -= 1;
        let (partition, order) = candidates[self.rng.usize(0..candidates.len())].clone();
        self.log(|| format!("fault: hold {} until {}'s deadline fires", key_name(&partition), short(&order)));
        self.held.insert(partition, order);
    }

    // -- invariants ---------------------------------------------------------------------------

    /// Every invariant, from the participants' state and the committed commands. Each violation
    /// starts with its invariant's label in brackets.
    fn check(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        let orders: Vec<(String, Order)> =
            self.planned.iter().map(|p| (p.id.clone(), self.orders.get(&p.id).clone())).collect();

        // 1. Every saga finished, and the order aggregate agrees.
        for (id, order) in &orders {
            let o = short(id);
            let Some(saga) = self.stored(id) else {
                v.push(format!("[1 finished] saga {o} never started"));
                continue;
            };
            let expected = match saga_api::outcome(&saga) {
                None => {
                    v.push(format!("[1 finished] saga {o} ended {}, not finished", saga_api::status_name(&saga)));
                    continue;
                }
                Some(Outcome::Confirmed) => OrderStatus::Confirmed,
                Some(Outcome::Rejected) => OrderStatus::Rejected,
                Some(Outcome::Cancelled) => OrderStatus::Cancelled,
            };
            if order.status != expected {
                v.push(format!(
                    "[1 agrees] saga {o} ended {} but the order is {}",
                    saga_api::status_name(&saga),
                    order.status.as_str()
                ));
            }
            // A cancellation the order accepted is carried out: the order settles (a confirmed
            // order with a cancellation requested is one a client still waits on).
            if !order.is_settled() {
                v.push(format!(
                    "[1 settled] order {o} is {} with an accepted cancellation never carried out",
                    order.status.as_str()
                ));
            }
        }

        let confirmed = |order: &Order| order.status == OrderStatus::Confirmed;

        // 2. Stock: nothing left reserved, the identity holds, sold = what confirmed orders bought.
        for (pid, product) in &self.products.aggregates {
            let p = short(pid);
            let initial = self.initial_stock[pid];
            if product.received != initial || initial != product.available + product.reserved + product.sold {
                v.push(format!(
                    "[2 stock identity] {p}: initial {initial} != available {} + reserved {} + sold {}",
                    product.available, product.reserved, product.sold
                ));
            }
            if product.reserved != 0 {
                v.push(format!("[2 stock released] {p}: {} still reserved at the end", product.reserved));
            }
            let mut bought = 0;
            for (id, order) in &orders {
                let Some(line) = order.lines.iter().find(|l| l.product_id.to_string() == *pid) else { continue };
                let oid = OrderId::parse(id).expect("a planned order id");
                let state = product.reservations.get(&oid).map(|r| r.state);
                if confirmed(order) {
                    bought += u64::from(line.quantity.get());
                }
                match (order.status, state) {
                    (_, Some(ReservationState::Held)) => {
                        v.push(format!("[2 stock released] {p} still holds a reservation for {}", short(id)));
                    }
                    (OrderStatus::Confirmed, Some(ReservationState::Committed)) => {}
                    (OrderStatus::Confirmed, other) => {
                        v.push(format!("[5 confirmed complete] confirmed {} has its {p} line {other:?}", short(id)));
                    }
                    (status, Some(ReservationState::Committed)) => {
                        v.push(format!("[2 stock released] {p} sold to {} which ended {}", short(id), status.as_str()))
                    }
                    (OrderStatus::Cancelled, Some(ReservationState::Returned))
                    | (_, Some(ReservationState::Released | ReservationState::Failed) | None) => {}
                    (status, Some(ReservationState::Returned)) => v.push(format!(
                        "[2 stock released] {p} returned for {} which ended {}",
                        short(id),
                        status.as_str()
                    )),
                }
            }
            if product.sold != bought {
                v.push(format!("[2 stock identity] {p}: sold {} but confirmed orders bought {bought}", product.sold));
            }
        }

        // 3. Money: spent = totals of the confirmed orders; no authorization left open.
        let account = self.accounts.get(&self.customer);
        let spent = account.credit_limit.cents - account.available.cents;
        let owed: i64 = orders.iter().filter(|(_, o)| confirmed(o)).map(|(_, o)| o.total.cents).sum();
        if spent != owed {
            v.push(format!("[3 charged] the customer spent {spent}c but the confirmed orders total {owed}c"));
        }
        for (id, order) in &orders {
            let oid = OrderId::parse(id).expect("a planned order id");
            let state = account.payments.get(&oid).map(|p| p.state);
            match (order.status, state) {
                (_, Some(PaymentState::Authorized)) => {
                    v.push(format!("[3 charged] the payment of {} is left authorized", short(id)));
                }
                (OrderStatus::Confirmed, Some(PaymentState::Confirmed)) => {}
                (OrderStatus::Confirmed, other) => {
                    v.push(format!("[5 confirmed complete] confirmed {} has its payment {other:?}", short(id)));
                }
                (status, Some(PaymentState::Confirmed)) => {
                    v.push(format!("[3 charged] {} was charged but ended {}", short(id), status.as_str()));
                }
                (_, Some(PaymentState::Declined | PaymentState::Refunded) | None) => {}
            }
        }

        // 4. No step and no compensation twice: each command the orchestrator committed names its
        //    (order, target) once; RejectOrder and CancelOrder count together.
        let mut counts: BTreeMap<(&'static str, String, String), usize> = BTreeMap::new();
        for m in &self.committed_commands {
            let kind = match m {
                Message::RejectOrder(_) | Message::CancelOrder(_) => "RejectOrder/CancelOrder",
                other => other.full_name().rsplit('.').next().unwrap_or_default(),
            };
            let target = match m.topic() {
                Topic::ProductCommands => format!(" {}", short(m.key())),
                _ => String::new(),
            };
            let order = order_of(m).map(short).unwrap_or_default();
            *counts.entry((kind, order, target)).or_default() += 1;
        }
        for ((kind, order, target), n) in counts.into_iter().filter(|(_, n)| *n > 1) {
            v.push(format!("[4 once] {kind} sent {n} times for {order}{target}"));
        }

        // 6. No participant refused a saga command (it would sit in a DLQ).
        for why in &self.parked {
            v.push(format!("[6 not refused] a participant refused a saga command: {why}"));
        }

        // Coverage, from the participants.
        for (id, order) in &orders {
            let oid = OrderId::parse(id).expect("a planned order id");
            match order.status {
                OrderStatus::Confirmed => self.coverage.confirmed += 1,
                OrderStatus::Rejected => self.coverage.rejected += 1,
                OrderStatus::Cancelled => {
                    let was_sold = self
                        .products
                        .aggregates
                        .values()
                        .any(|p| p.reservations.get(&oid).is_some_and(|r| r.state == ReservationState::Returned));
                    if was_sold {
                        self.coverage.cancelled_after_confirmation += 1;
                    } else {
                        self.coverage.cancelled_before_confirmation += 1;
                    }
                }
                OrderStatus::Pending => {}
            }
        }
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Running schedules
// ---------------------------------------------------------------------------------------------

/// What one schedule left behind.
struct Run {
    violations: Vec<String>,
    coverage: Coverage,
    trace: Vec<String>,
    /// Where the schedule ended (steps, message ids used, clock): equal on every replay.
    fingerprint: (usize, u64, i64),
}

/// One schedule: the world from `seed`, run to quiescence, checked. A panic (in the saga or in
/// an aggregate) is a violation of its own, reported with the seed and the trace so far.
fn simulate(seed: u64, tracing: bool) -> Run {
    let mut sim = Sim::new(seed, tracing);
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match sim.run() {
        Ok(()) => sim.check(),
        Err(liveness) => vec![liveness],
    }));
    let violations = checked.unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "(no message)".to_owned());
        vec![format!("[panic] {text}")]
    });
    Run { violations, coverage: sim.coverage, fingerprint: (sim.step, sim.next_message_id, sim.now), trace: sim.trace }
}

fn report(seed: u64, run: &Run) -> String {
    let mut out = format!("seed {seed} (replay: SAGA_SIM_SEED={seed})\nviolations:\n");
    for v in &run.violations {
        let _ = writeln!(out, "  {v}");
    }
    out.push_str("trace:\n");
    for line in &run.trace {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|e| panic!("{name}={v:?}: {e}")))
}

/// A failing seed and its violations.
type Failure = (u64, Vec<String>);

/// The label of a violation: `[2 stock released] ...` -> `2 stock released`.
fn label(violation: &str) -> &str {
    violation.strip_prefix('[').and_then(|s| s.split(']').next()).unwrap_or(violation)
}

#[test]
fn create_order_saga_keeps_its_invariants_under_random_schedules() {
    if let Some(seed) = env_u64("SAGA_SIM_SEED") {
        let run = simulate(seed, true);
        println!("{}", report(seed, &run));
        assert!(run.violations.is_empty(), "{}", report(seed, &run));
        return;
    }
    let schedules = env_u64("SAGA_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
    let threads = std::thread::available_parallelism().map_or(1, usize::from) as u64;
    let started = std::time::Instant::now();
    let results: Vec<(Coverage, Vec<Failure>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut coverage = Coverage::default();
                    let mut failures = Vec::new();
                    for seed in (t..schedules).step_by(threads as usize) {
                        let run = simulate(seed, false);
                        coverage.add(&run.coverage);
                        if !run.violations.is_empty() {
                            failures.push((seed, run.violations));
                        }
                    }
                    (coverage, failures)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a simulation thread panicked")).collect()
    });
    let mut coverage = Coverage::default();
    let mut failures: Vec<Failure> = Vec::new();
    for (c, f) in results {
        coverage.add(&c);
        failures.extend(f);
    }
    failures.sort_by_key(|(seed, _)| *seed);
    println!("{schedules} schedules in {:.1?}: {coverage:#?}", started.elapsed());

    if let Some((first, _)) = failures.first() {
        // Every violated invariant, how often, and the smallest seed showing it.
        let mut by_label: BTreeMap<String, (usize, u64, String)> = BTreeMap::new();
        for (seed, violations) in &failures {
            for v in violations {
                let entry = by_label.entry(label(v).to_owned()).or_insert((0, *seed, v.clone()));
                entry.0 += 1;
            }
        }
        let mut summary = format!("{} of {schedules} schedules violate the saga's invariants:\n", failures.len());
        for (label, (n, seed, example)) in &by_label {
            let _ = writeln!(summary, "  [{label}] {n}x, first SAGA_SIM_SEED={seed}: {example}");
        }
        // The trace of the first failing seed, replayed with tracing on.
        let replay = simulate(*first, true);
        let expected = &failures[0].1;
        if replay.violations != *expected {
            let _ =
                writeln!(summary, "  (the replay did not reproduce {expected:?}: nondeterminism in the simulation)");
        }
        panic!("{summary}\n{}", report(*first, &replay));
    }

    // The schedules reached every path they claim to exercise.
    for (what, n) in [
        ("confirmed orders", coverage.confirmed),
        ("rejected orders", coverage.rejected),
        ("orders cancelled before confirmation", coverage.cancelled_before_confirmation),
        ("orders cancelled after confirmation", coverage.cancelled_after_confirmation),
        ("cancellations while confirming", coverage.cancellations_while_confirming),
        ("timeouts that compensated", coverage.compensating_timeouts),
        ("orchestrator crashes", coverage.crashes),
        ("redelivered records", coverage.redelivered),
        ("duplicates caught by an inbox", coverage.inbox_dedups),
        ("fresh-id copies", coverage.fresh_copies),
        ("keys held back until a deadline fired", coverage.held_until_deadline),
    ] {
        assert!(schedules < 1_000 || n > 0, "{schedules} schedules produced no {what}: {coverage:#?}");
    }
}

/// The simulation is deterministic: a seed replays the same schedule, traced or not.
#[test]
fn a_seed_replays_exactly() {
    for seed in 0..200 {
        let quiet = simulate(seed, false);
        let traced = simulate(seed, true);
        let again = simulate(seed, true);
        assert_eq!(traced.trace, again.trace, "seed {seed} traced twice");
        assert_eq!(quiet.fingerprint, traced.fingerprint, "seed {seed} with and without its trace");
        assert_eq!(quiet.violations, traced.violations, "seed {seed} with and without its trace");
    }
}
