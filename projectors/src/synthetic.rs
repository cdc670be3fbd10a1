//! A synthetic shop history in the shape the services produce, for the rebuild benchmark and
//! the tests: customers register and open accounts, products are created, and orders run
//! through the saga (stock reserved, payment authorized, order confirmed, stock committed,
//! payment confirmed; some rejected for stock or credit, some cancelled and refunded). Many
//! orders are in flight at once, so streams interleave; every aggregate's events carry
//! consecutive versions, as the event stores and the saga number them. Deterministic per seed.

use schemas::Message;
use schemas::records::*;
use std::collections::{HashMap, VecDeque};

/// One event as the outbox relay would publish it.
#[derive(Debug, Clone)]
pub struct Event {
    pub message: Message,
    /// The `aggregate-version` header.
    pub version: i64,
    /// The `correlation-id` header: the order id for saga traffic, else the aggregate id.
    pub correlation_id: String,
    /// The `causation-id` header, when a message caused it.
    pub causation_id: Option<String>,
    /// The `occurred-at` header (ms since the epoch).
    pub occurred_at: i64,
}

/// splitmix64: small, deterministic, good enough to pick flows.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn uuid(&mut self) -> String {
        let bytes = (u128::from(self.next()) << 64) | u128::from(self.next());
        uuid::Builder::from_random_bytes(bytes.to_be_bytes()).into_uuid().to_string()
    }
}

/// One step of an order's flow: a message, and whether it is a saga update to fill in.
enum Step {
    Message(Message),
    Saga { status: &'static str, step: &'static str, payment: &'static str, line_state: &'static str, what: String },
}

struct Flow {
    order_id: String,
    customer_id: String,
    lines: Vec<(String, i32)>,
    total_cents: i64,
    steps: VecDeque<Step>,
    history: Vec<SagaEntry>,
    reason: Option<String>,
}

/// Generates the history; see the module docs.
pub struct Shop {
    rng: Rng,
    customers: Vec<String>,
    products: Vec<(String, i64)>,
    versions: HashMap<(schemas::Topic, String), i64>,
    clock: i64,
    in_flight: Vec<Flow>,
    out: Vec<Event>,
}

impl Shop {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            customers: Vec::new(),
            products: Vec::new(),
            versions: HashMap::new(),
            clock: 1_767_225_600_000, // 2026-01-01
            in_flight: Vec::new(),
            out: Vec::new(),
        }
    }

    fn emit(&mut self, message: Message, correlation_id: String, causation: bool) {
        let key = (message.topic(), message.key().to_owned());
        let version = self.versions.entry(key).or_insert(0);
        *version += 1;
        let version = *version;
        self.clock += 1 + i64::try_from(self.rng.below(40)).unwrap_or(0);
        let causation_id = causation.then(|| self.rng.uuid());
        self.out.push(Event { message, version, correlation_id, causation_id, occurred_at: self.clock });
    }

    fn customer(&mut self) {
        let id = self.rng.uuid();
        let n = self.customers.len();
        let registered = CustomerRegistered {
            customer_id: id.clone(),
            name: format!("Customer {n}"),
            email: format!("c{n}@example.com"),
            owner: Some(owner_of(&id)),
        };
        self.emit(registered.into(), id.clone(), false);
        let opened = AccountOpened { customer_id: id.clone(), credit_cents: 50_000_000, currency: "EUR".into() };
        self.emit(opened.into(), id.clone(), true);
        self.customers.push(id);
    }

    fn product(&mut self) {
        let id = self.rng.uuid();
        let n = self.products.len();
        let price = 100 + i64::try_from(self.rng.below(9_900)).unwrap_or(0);
        let created = ProductCreated {
            product_id: id.clone(),
            sku: format!("SKU-{n:06}"),
            name: format!("Product {n}"),
            price_cents: price,
            currency: "EUR".into(),
            stock: 1_000_000,
        };
        self.emit(created.into(), id.clone(), false);
        self.products.push((id, price));
    }

    /// A new order's whole flow, decided up front.
    fn order(&mut self) -> Flow {
        let order_id = self.rng.uuid();
        let customer_id =
            self.customers[usize::try_from(self.rng.below(self.customers.len() as u64)).unwrap_or(0)].clone();
        let mut lines = Vec::new();
        for _ in 0..1 + self.rng.below(3) {
            let (p, price) =
                self.products[usize::try_from(self.rng.below(self.products.len() as u64)).unwrap_or(0)].clone();
            if !lines.iter().any(|(q, _, _): &(String, i32, i64)| *q == p) {
                lines.push((p, 1 + i32::try_from(self.rng.below(3)).unwrap_or(0), price));
            }
        }
        let total_cents: i64 = lines.iter().map(|(_, q, price)| i64::from(*q) * price).sum();
        let (o, c) = (order_id.clone(), customer_id.clone());
        let placed = OrderPlaced {
            order_id: o.clone(),
            customer_id: c.clone(),
            lines: lines
                .iter()
                .map(|(p, q, price)| OrderLine { product_id: p.clone(), quantity: *q, unit_price_cents: *price })
                .collect(),
            total_cents,
            currency: "EUR".into(),
            owner: Some(owner_of(&c)),
        };
        let saga = |status, step, payment, line_state, what: &str| Step::Saga {
            status,
            step,
            payment,
            line_state,
            what: what.to_owned(),
        };
        let mut steps = VecDeque::from([
            Step::Message(placed.into()),
            saga("RUNNING", "reserve_stock", "NONE", "PENDING", "order placed"),
        ]);
        let fate = self.rng.below(100);
        let stock = |steps: &mut VecDeque<Step>, f: &dyn Fn(&str, i32) -> Message| {
            for (p, q, _) in &lines {
                steps.push_back(Step::Message(f(p, *q)));
            }
        };
        if fate < 4 {
            // The last line cannot be reserved: the others are released, the order rejected.
            let (last, rest) = lines.split_last().unwrap_or_else(|| unreachable!("an order has lines"));
            for (p, q, _) in rest {
                steps.push_back(Step::Message(
                    StockReserved { product_id: p.clone(), order_id: o.clone(), quantity: *q }.into(),
                ));
            }
            steps.push_back(Step::Message(
                StockReservationFailed {
                    product_id: last.0.clone(),
                    order_id: o.clone(),
                    requested: last.1,
                    available: 0,
                }
                .into(),
            ));
            steps.push_back(saga("COMPENSATING", "reject_order", "NONE", "FAILED", "stock reservation failed"));
            for (p, q, _) in rest {
                steps.push_back(Step::Message(
                    StockReleased { product_id: p.clone(), order_id: o.clone(), quantity: *q }.into(),
                ));
            }
            let reason = "insufficient stock".to_owned();
            steps.push_back(Step::Message(
                OrderRejected { order_id: o.clone(), reason: reason.clone(), code: Some("OUT_OF_STOCK".into()) }.into(),
            ));
            steps.push_back(saga("REJECTED", "done", "NONE", "RELEASED", "order rejected"));
        } else {
            stock(&mut steps, &|p, q| StockReserved { product_id: p.into(), order_id: o.clone(), quantity: q }.into());
            steps.push_back(saga("RUNNING", "authorize_payment", "REQUESTED", "RESERVED", "stock reserved"));
            let amount = |f: &dyn Fn() -> Message| Step::Message(f());
            if fate < 9 {
                steps.push_back(amount(&|| {
                    PaymentDeclined {
                        customer_id: c.clone(),
                        order_id: o.clone(),
                        amount_cents: total_cents,
                        currency: "EUR".into(),
                        reason: "credit limit exceeded".into(),
                    }
                    .into()
                }));
                steps.push_back(saga(
                    "COMPENSATING",
                    "reject_order",
                    "DECLINED",
                    "RELEASE_REQUESTED",
                    "payment declined",
                ));
                stock(&mut steps, &|p, q| {
                    StockReleased { product_id: p.into(), order_id: o.clone(), quantity: q }.into()
                });
                steps.push_back(Step::Message(
                    OrderRejected { order_id: o.clone(), reason: "payment declined".into(), code: None }.into(),
                ));
                steps.push_back(saga("REJECTED", "done", "DECLINED", "RELEASED", "order rejected"));
            } else {
                steps.push_back(amount(&|| {
                    PaymentAuthorized {
                        customer_id: c.clone(),
                        order_id: o.clone(),
                        amount_cents: total_cents,
                        currency: "EUR".into(),
                    }
                    .into()
                }));
                steps.push_back(saga(
                    "RUNNING",
                    "confirm_order",
                    "AUTHORIZED",
                    "COMMIT_REQUESTED",
                    "payment authorized",
                ));
                steps.push_back(Step::Message(OrderConfirmed { order_id: o.clone() }.into()));
                stock(&mut steps, &|p, q| {
                    StockCommitted { product_id: p.into(), order_id: o.clone(), quantity: q }.into()
                });
                steps.push_back(amount(&|| {
                    PaymentConfirmed {
                        customer_id: c.clone(),
                        order_id: o.clone(),
                        amount_cents: total_cents,
                        currency: "EUR".into(),
                    }
                    .into()
                }));
                steps.push_back(saga("CONFIRMED", "done", "CONFIRMED", "COMMITTED", "order confirmed"));
                if fate < 13 {
                    let reason = "changed my mind".to_owned();
                    steps.push_back(Step::Message(
                        OrderCancellationRequested { order_id: o.clone(), reason: reason.clone() }.into(),
                    ));
                    steps.push_back(saga(
                        "COMPENSATING",
                        "cancel_order",
                        "REFUND_REQUESTED",
                        "RETURN_REQUESTED",
                        "cancel",
                    ));
                    stock(&mut steps, &|p, q| {
                        StockReturned { product_id: p.into(), order_id: o.clone(), quantity: q }.into()
                    });
                    steps.push_back(amount(&|| {
                        PaymentRefunded {
                            customer_id: c.clone(),
                            order_id: o.clone(),
                            amount_cents: total_cents,
                            currency: "EUR".into(),
                        }
                        .into()
                    }));
                    steps.push_back(Step::Message(OrderCancelled { order_id: o.clone(), reason }.into()));
                    steps.push_back(saga("CANCELLED", "done", "REFUNDED", "RETURNED", "order cancelled"));
                }
            }
        }
        let reason = match fate {
            0..4 => Some("insufficient stock".to_owned()),
            4..9 => Some("payment declined".to_owned()),
            9..13 => Some("changed my mind".to_owned()),
            _ => None,
        };
        Flow {
            order_id,
            customer_id,
            lines: lines.into_iter().map(|(p, q, _)| (p, q)).collect(),
            total_cents,
            steps,
            history: Vec::new(),
            reason,
        }
    }

    /// Advance flow `i` by one step; false when it is finished.
    fn step(&mut self, i: usize) -> bool {
        let Some(step) = self.in_flight[i].steps.pop_front() else { return false };
        let order_id = self.in_flight[i].order_id.clone();
        match step {
            Step::Message(m) => self.emit(m, order_id, true),
            Step::Saga { status, step, payment, line_state, what } => {
                let at_ms = self.clock;
                let f = &mut self.in_flight[i];
                f.history.push(SagaEntry { at_ms, step: step.to_owned(), what });
                let terminal = matches!(status, "REJECTED" | "CANCELLED");
                let version =
                    self.versions.get(&(schemas::Topic::SagaEvents, order_id.clone())).copied().unwrap_or(0) + 1;
                let view = SagaUpdated {
                    order_id: order_id.clone(),
                    customer_id: f.customer_id.clone(),
                    version,
                    status: status.to_owned(),
                    step: step.to_owned(),
                    reason: if terminal || status == "COMPENSATING" { f.reason.clone() } else { None },
                    payment: payment.to_owned(),
                    total_cents: f.total_cents,
                    currency: "EUR".into(),
                    lines: f
                        .lines
                        .iter()
                        .map(|(p, q)| SagaLine { product_id: p.clone(), quantity: *q, state: line_state.to_owned() })
                        .collect(),
                    history: f.history.clone(),
                };
                self.emit(view.into(), order_id, true);
            }
        }
        true
    }

    /// At least `events` events: a customer per 40 orders, a product per 100, 64 orders in
    /// flight.
    pub fn history(mut self, events: usize) -> Vec<Event> {
        for _ in 0..20 {
            self.customer();
        }
        for _ in 0..10 {
            self.product();
        }
        let mut orders = 0u64;
        while self.out.len() < events || !self.in_flight.is_empty() {
            while self.out.len() < events && self.in_flight.len() < 64 {
                orders += 1;
                if orders.is_multiple_of(40) {
                    self.customer();
                }
                if orders.is_multiple_of(100) {
                    self.product();
                }
                let flow = self.order();
                self.in_flight.push(flow);
            }
            let i = usize::try_from(self.rng.below(self.in_flight.len() as u64)).unwrap_or(0);
            if !self.step(i) {
                self.in_flight.swap_remove(i);
            }
        }
        self.out
    }
}

impl Event {
    /// The headers the outbox relay sets, with `message_id`.
    pub fn headers(&self, message_id: &str) -> Vec<(&'static str, String)> {
        use schemas::headers as h;
        let mut pairs = vec![
            (h::MESSAGE_ID, message_id.to_owned()),
            (h::CORRELATION_ID, self.correlation_id.clone()),
            (h::OCCURRED_AT, self.occurred_at.to_string()),
            (h::RECORD, self.message.full_name().to_owned()),
            (h::AGGREGATE_VERSION, self.version.to_string()),
        ];
        if let Some(c) = &self.causation_id {
            pairs.push((h::CAUSATION_ID, c.clone()));
        }
        pairs
    }

    /// The envelope a consumer would make of it at `offset` (the partition does not matter
    /// to the projections).
    pub fn envelope(&self, offset: i64) -> messaging::consumer::Envelope {
        messaging::consumer::Envelope {
            message: self.message.clone(),
            message_id: format!("synthetic-{offset}"),
            correlation_id: Some(self.correlation_id.clone()),
            causation_id: self.causation_id.clone(),
            traceparent: None,
            aggregate_version: Some(self.version),
            occurred_at: self.occurred_at,
            topic: self.message.topic().name().to_owned(),
            partition: 0,
            offset,
        }
    }
}

/// The signed-in user a synthetic customer (and so each of its orders) belongs to.
fn owner_of(customer_id: &str) -> String {
    format!("user-{customer_id}")
}
