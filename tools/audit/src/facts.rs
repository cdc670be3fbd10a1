//! The auditor's own folds of the event streams: orders, payment accounts and products, with
//! signed arithmetic and every event counted, so that a duplicate or an impossible event shows
//! instead of being absorbed (the domain's `apply` trusts its events; the auditor does not).

use crate::model::{Event, Store, StoredEvent, StoredState};
use domain::order::{OrderEvent, OrderStatus};
use domain::payment::AccountEvent;
use domain::product::ProductEvent;
use std::collections::BTreeMap;

/// An order, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderFacts {
    pub customer_id: String,
    /// (product, quantity) per line.
    pub lines: Vec<(String, i64)>,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub cancellation_requested: bool,
    /// Whether the stream's first event is `OrderPlaced`.
    pub starts_placed: bool,
    pub placed: u32,
    pub confirmed: u32,
    pub rejected: u32,
    pub cancelled: u32,
    /// Events in the stream.
    pub events: u32,
}

impl OrderFacts {
    /// CONFIRMED (no cancellation under way), REJECTED or CANCELLED, as `Order::is_settled`.
    pub fn settled(&self) -> bool {
        match self.status {
            OrderStatus::Pending => false,
            OrderStatus::Confirmed => !self.cancellation_requested,
            OrderStatus::Rejected | OrderStatus::Cancelled => true,
        }
    }

    /// Confirmed and staying so: what is paid for and sold.
    pub fn kept(&self) -> bool {
        self.status == OrderStatus::Confirmed && !self.cancellation_requested
    }

    pub fn quantity_of(&self, product: &str) -> i64 {
        self.lines.iter().filter(|(p, _)| p == product).map(|(_, q)| q).sum()
    }
}

/// The payment events of one order in its customer's account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaymentFacts {
    pub authorized: Vec<i64>,
    pub declined: u32,
    pub confirmed: u32,
    pub refunded: Vec<i64>,
    /// The last payment event's type.
    pub last: Option<&'static str>,
}

impl PaymentFacts {
    /// Credit the order holds: authorized minus refunded.
    pub fn charged(&self) -> i64 {
        self.authorized.iter().sum::<i64>() - self.refunded.iter().sum::<i64>()
    }
}

/// A payment account, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountFacts {
    pub opened: u32,
    pub credit: i64,
    pub available: i64,
    /// The lowest credit ever available, and after which event: below 0 is an overdraft.
    pub lowest: (i64, i64),
    pub payments: BTreeMap<String, PaymentFacts>,
    /// (credit, available) after each event, by sequence - 1, for the snapshot comparison.
    pub states: Vec<(i64, i64)>,
}

/// One order's stock events on one product.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReservationFacts {
    pub reserved: Vec<i64>,
    pub failed: u32,
    pub released: Vec<i64>,
    pub committed: Vec<i64>,
    pub returned: Vec<i64>,
}

impl ReservationFacts {
    /// Items the order still holds reserved.
    pub fn held(&self) -> i64 {
        self.reserved.iter().sum::<i64>() - self.released.iter().sum::<i64>() - self.committed.iter().sum::<i64>()
    }

    /// Items sold to the order and not given back.
    pub fn sold(&self) -> i64 {
        self.committed.iter().sum::<i64>() - self.returned.iter().sum::<i64>()
    }
}

/// Stock of a product at one point of its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stock {
    pub received: i64,
    pub available: i64,
    pub reserved: i64,
    pub sold: i64,
}

/// A product, folded from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProductFacts {
    pub created: u32,
    pub initial: i64,
    pub added: i64,
    pub stock: Stock,
    /// Stock after each event, by sequence - 1.
    pub states: Vec<Stock>,
    pub by_order: BTreeMap<String, ReservationFacts>,
    /// Events the fold found impossible: a count below zero, a refusal that misstates the stock.
    pub anomalies: Vec<String>,
}

/// Everything folded from the stores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub orders: BTreeMap<String, OrderFacts>,
    pub accounts: BTreeMap<String, AccountFacts>,
    pub products: BTreeMap<String, ProductFacts>,
}

impl Facts {
    /// The ids of each customer's orders.
    pub fn orders_by_customer(&self) -> BTreeMap<&str, Vec<&String>> {
        let mut by: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for (id, o) in &self.orders {
            by.entry(o.customer_id.as_str()).or_default().push(id);
        }
        by
    }

    /// The ids of the orders with a line on each product.
    pub fn orders_by_product(&self) -> BTreeMap<&str, Vec<&String>> {
        let mut by: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for (id, o) in &self.orders {
            for (product, _) in &o.lines {
                by.entry(product.as_str()).or_default().push(id);
            }
        }
        by
    }
}

/// Fold every parsed event (in store, aggregate and sequence order, as loaded). Events that
/// do not parse are left out here; the delivery check reports them.
pub fn derive(events: &[StoredEvent]) -> Facts {
    let mut facts = Facts::default();
    for e in events {
        let Ok(event) = &e.event else { continue };
        let id = e.aggregate_id.clone();
        match event {
            Event::Order(ev) => order(facts.orders.entry(id).or_default(), ev),
            Event::Account(ev) => account(facts.accounts.entry(id).or_default(), e.sequence, ev),
            Event::Product(ev) => product(facts.products.entry(id).or_default(), e.sequence, ev),
            Event::Customer(_) => {}
        }
    }
    facts
}

fn order(o: &mut OrderFacts, e: &OrderEvent) {
    let first = o.events == 0;
    o.events += 1;
    match e {
        OrderEvent::OrderPlaced { customer_id, lines, total, .. } => {
            o.starts_placed |= first;
            o.placed += 1;
            o.customer_id = customer_id.to_string();
            o.lines = lines.iter().map(|l| (l.product_id.to_string(), i64::from(l.quantity.get()))).collect();
            o.total_cents = total.cents;
            o.status = OrderStatus::Pending;
        }
        OrderEvent::OrderConfirmed => {
            o.confirmed += 1;
            o.status = OrderStatus::Confirmed;
        }
        OrderEvent::OrderRejected { .. } => {
            o.rejected += 1;
            o.status = OrderStatus::Rejected;
        }
        OrderEvent::OrderCancellationRequested { .. } => o.cancellation_requested = true,
        OrderEvent::OrderCancelled { .. } => {
            o.cancelled += 1;
            o.status = OrderStatus::Cancelled;
            // The cancellation is done: nothing is under way any more.
            o.cancellation_requested = false;
        }
    }
}

fn account(a: &mut AccountFacts, sequence: i64, e: &AccountEvent) {
    let (order, kind) = match e {
        AccountEvent::AccountOpened { credit, .. } => {
            a.opened += 1;
            a.credit = credit.cents;
            a.available = credit.cents;
            a.lowest = (credit.cents, sequence);
            (None, "AccountOpened")
        }
        AccountEvent::PaymentAuthorized { order_id, amount } => {
            a.available -= amount.cents;
            let p = a.payments.entry(order_id.to_string()).or_default();
            p.authorized.push(amount.cents);
            (Some(p), "PaymentAuthorized")
        }
        AccountEvent::PaymentDeclined { order_id, .. } => {
            let p = a.payments.entry(order_id.to_string()).or_default();
            p.declined += 1;
            (Some(p), "PaymentDeclined")
        }
        AccountEvent::PaymentConfirmed { order_id, .. } => {
            let p = a.payments.entry(order_id.to_string()).or_default();
            p.confirmed += 1;
            (Some(p), "PaymentConfirmed")
        }
        AccountEvent::PaymentRefunded { order_id, amount } => {
            a.available += amount.cents;
            let p = a.payments.entry(order_id.to_string()).or_default();
            p.refunded.push(amount.cents);
            (Some(p), "PaymentRefunded")
        }
    };
    if let Some(p) = order {
        p.last = Some(kind);
    }
    if a.available < a.lowest.0 {
        a.lowest = (a.available, sequence);
    }
    record(&mut a.states, sequence, (a.credit, a.available));
}

fn product(p: &mut ProductFacts, sequence: i64, e: &ProductEvent) {
    let s = &mut p.stock;
    match e {
        ProductEvent::ProductCreated { stock, .. } => {
            p.created += 1;
            p.initial = i64::from(*stock);
            *s = Stock { received: i64::from(*stock), available: i64::from(*stock), reserved: 0, sold: 0 };
        }
        ProductEvent::StockAdded { quantity } => {
            p.added += i64::from(*quantity);
            s.received += i64::from(*quantity);
            s.available += i64::from(*quantity);
        }
        ProductEvent::StockReserved { order_id, quantity } => {
            let q = i64::from(*quantity);
            s.available -= q;
            s.reserved += q;
            p.by_order.entry(order_id.to_string()).or_default().reserved.push(q);
        }
        ProductEvent::StockReservationFailed { order_id, requested, available } => {
            p.by_order.entry(order_id.to_string()).or_default().failed += 1;
            let said = i64::try_from(*available).unwrap_or(i64::MAX);
            if said != s.available {
                p.anomalies.push(format!(
                    "event {sequence} refused {requested} for order {order_id} saying {said} available; the stream \
                     holds {}",
                    s.available
                ));
            } else if i64::from(*requested) <= said {
                p.anomalies
                    .push(format!("event {sequence} refused {requested} for order {order_id} with {said} available"));
            }
        }
        ProductEvent::StockReleased { order_id, quantity } => {
            let q = i64::from(*quantity);
            s.reserved -= q;
            s.available += q;
            p.by_order.entry(order_id.to_string()).or_default().released.push(q);
        }
        ProductEvent::StockCommitted { order_id, quantity } => {
            let q = i64::from(*quantity);
            s.reserved -= q;
            s.sold += q;
            p.by_order.entry(order_id.to_string()).or_default().committed.push(q);
        }
        ProductEvent::StockReturned { order_id, quantity } => {
            let q = i64::from(*quantity);
            s.sold -= q;
            s.available += q;
            p.by_order.entry(order_id.to_string()).or_default().returned.push(q);
        }
    }
    let s = p.stock;
    if s.available < 0 || s.reserved < 0 || s.sold < 0 {
        p.anomalies.push(format!(
            "after event {sequence}: available {}, reserved {}, sold {} (below zero)",
            s.available, s.reserved, s.sold
        ));
    }
    record(&mut p.states, sequence, s);
}

/// Keep `state` as the state after event `sequence` (1-based; a gap repeats the last state).
fn record<T: Copy>(states: &mut Vec<T>, sequence: i64, state: T) {
    let index = usize::try_from(sequence.max(1) - 1).unwrap_or(0);
    while states.len() < index {
        let last = *states.last().unwrap_or(&state);
        states.push(last);
    }
    states.truncate(index);
    states.push(state);
}

/// A number from a snapshot's JSON state.
pub fn state_number(state: &serde_json::Value, path: &[&str]) -> Option<i64> {
    let mut v = state;
    for key in path {
        v = v.get(key)?;
    }
    v.as_i64().or_else(|| v.as_u64().and_then(|n| i64::try_from(n).ok()))
}

/// Where a stored snapshot disagrees with the fold at the same sequence, in words.
pub fn snapshot_disagreement(facts: &Facts, snapshot: &StoredState) -> Option<String> {
    let index = usize::try_from(snapshot.last_sequence - 1).ok()?;
    let s = &snapshot.state;
    let differences: Vec<String> = match snapshot.store {
        Store::Product => {
            let fold = facts.products.get(&snapshot.aggregate_id)?.states.get(index)?;
            [
                ("received", fold.received),
                ("available", fold.available),
                ("reserved", fold.reserved),
                ("sold", fold.sold),
            ]
            .into_iter()
            .filter_map(|(field, folded)| {
                let stored = state_number(s, &[field]);
                (stored != Some(folded)).then(|| format!("{field} {} (fold {folded})", show(stored)))
            })
            .collect()
        }
        Store::Payment => {
            let (credit, available) = *facts.accounts.get(&snapshot.aggregate_id)?.states.get(index)?;
            [(["credit_limit", "cents"], credit), (["available", "cents"], available)]
                .into_iter()
                .filter_map(|(path, folded)| {
                    let stored = state_number(s, &path);
                    (stored != Some(folded)).then(|| format!("{} {} (fold {folded})", path[0], show(stored)))
                })
                .collect()
        }
        Store::Customer | Store::Order => Vec::new(),
    };
    (!differences.is_empty())
        .then(|| format!("snapshot at event {} says {}", snapshot.last_sequence, differences.join(", ")))
}

fn show(n: Option<i64>) -> String {
    n.map_or_else(|| "missing".to_owned(), |n| n.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::StoredEvent;
    use domain::order::OrderLine;
    use domain::values::{Currency, CustomerId, Money, Name, OrderId, ProductId, Quantity, Sku};
    use uuid::Uuid;

    pub fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }
    pub fn customer(n: u128) -> CustomerId {
        CustomerId(uuid(0xC000 + n))
    }
    pub fn product_id(n: u128) -> ProductId {
        ProductId(uuid(0xB000 + n))
    }
    pub fn order_id(n: u128) -> OrderId {
        OrderId(uuid(0xA000 + n))
    }
    pub fn eur(cents: i64) -> Money {
        Money::new(cents, Currency::EUR)
    }

    /// A stream builder for tests: events of one aggregate, numbered from 1.
    pub struct Stream {
        pub store: Store,
        pub id: String,
        pub events: Vec<StoredEvent>,
    }

    impl Stream {
        pub fn new(store: Store, id: impl ToString) -> Self {
            Self { store, id: id.to_string(), events: Vec::new() }
        }

        pub fn then(mut self, event: Event) -> Self {
            let sequence = i64::try_from(self.events.len()).unwrap() + 1;
            let event_type = match &event {
                Event::Customer(e) => domain::DomainEvent::event_type(e),
                Event::Product(e) => domain::DomainEvent::event_type(e),
                Event::Order(e) => domain::DomainEvent::event_type(e),
                Event::Account(e) => domain::DomainEvent::event_type(e),
            };
            self.events.push(StoredEvent {
                store: self.store,
                aggregate_id: self.id.clone(),
                sequence,
                event_type: event_type.to_owned(),
                message_id: format!("{}/{}/{sequence}", self.store.aggregate_type(), self.id),
                event: Ok(event),
            });
            self
        }
    }

    pub fn placed(order: OrderId, by: CustomerId, lines: &[(ProductId, i64, i64)]) -> Event {
        let lines: Vec<OrderLine> = lines
            .iter()
            .map(|(p, q, price)| OrderLine {
                product_id: *p,
                quantity: Quantity::new(*q).unwrap(),
                unit_price: eur(*price),
            })
            .collect();
        let total = domain::order::total_of(&lines).unwrap();
        Event::Order(OrderEvent::OrderPlaced { order_id: order, customer_id: by, lines, total, owner: None })
    }

    pub fn created(p: ProductId, stock: u32) -> Event {
        Event::Product(ProductEvent::ProductCreated {
            product_id: p,
            sku: Sku::parse("SKU-1").unwrap(),
            name: Name::parse("name", "Mug").unwrap(),
            price: eur(100),
            stock,
        })
    }

    #[test]
    fn a_kept_order_holds_its_lines_and_a_cancelled_one_is_settled() {
        let (o, c, p) = (order_id(1), customer(1), product_id(1));
        let s = Stream::new(Store::Order, o)
            .then(placed(o, c, &[(p, 2, 150)]))
            .then(Event::Order(OrderEvent::OrderConfirmed));
        let facts = derive(&s.events);
        let f = &facts.orders[&o.to_string()];
        assert!(f.kept() && f.settled() && f.starts_placed);
        assert_eq!((f.total_cents, f.quantity_of(&p.to_string())), (300, 2));
        let s = Stream::new(Store::Order, o)
            .then(placed(o, c, &[(p, 2, 150)]))
            .then(Event::Order(OrderEvent::OrderConfirmed))
            .then(Event::Order(OrderEvent::OrderCancellationRequested { reason: "x".into() }));
        let f = derive(&s.events).orders[&o.to_string()].clone();
        assert!(!f.settled() && !f.kept(), "a cancellation under way");
        let s = s.then(Event::Order(OrderEvent::OrderCancelled { reason: "x".into() }));
        let f = derive(&s.events).orders[&o.to_string()].clone();
        assert!(f.settled() && !f.kept());
    }

    #[test]
    fn a_stream_that_does_not_start_with_the_placement_is_told_apart() {
        let o = order_id(2);
        let s = Stream::new(Store::Order, o).then(Event::Order(OrderEvent::OrderConfirmed)).then(placed(
            o,
            customer(1),
            &[(product_id(1), 1, 1)],
        ));
        assert!(!derive(&s.events).orders[&o.to_string()].starts_placed);
    }

    #[test]
    fn stock_is_folded_with_signs_and_impossible_events_are_noted() {
        let (p, o) = (product_id(1), order_id(1));
        let s = Stream::new(Store::Product, p)
            .then(created(p, 2))
            .then(Event::Product(ProductEvent::StockCommitted { order_id: o, quantity: 3 }));
        let f = &derive(&s.events).products[&p.to_string()];
        assert_eq!(f.stock, Stock { received: 2, available: 2, reserved: -3, sold: 3 });
        assert_eq!(f.anomalies.len(), 1, "{:?}", f.anomalies);
        assert_eq!(f.states.len(), 2);
    }

    #[test]
    fn a_refusal_must_state_the_stock_the_stream_holds() {
        let (p, o) = (product_id(1), order_id(1));
        let refuse = |available| {
            Stream::new(Store::Product, p)
                .then(created(p, 5))
                .then(Event::Product(ProductEvent::StockReservationFailed { order_id: o, requested: 6, available }))
        };
        assert!(derive(&refuse(5).events).products[&p.to_string()].anomalies.is_empty());
        assert_eq!(derive(&refuse(4).events).products[&p.to_string()].anomalies.len(), 1);
    }

    #[test]
    fn snapshots_are_compared_with_the_fold_at_their_own_sequence() {
        let (p, o) = (product_id(1), order_id(1));
        let s = Stream::new(Store::Product, p)
            .then(created(p, 10))
            .then(Event::Product(ProductEvent::StockReserved { order_id: o, quantity: 4 }))
            .then(Event::Product(ProductEvent::StockCommitted { order_id: o, quantity: 4 }));
        let facts = derive(&s.events);
        let snap = |state| StoredState { store: Store::Product, aggregate_id: p.to_string(), last_sequence: 2, state };
        let right = serde_json::json!({ "received": 10, "available": 6, "reserved": 4, "sold": 0 });
        assert_eq!(snapshot_disagreement(&facts, &snap(right)), None);
        let wrong = serde_json::json!({ "received": 10, "available": 6, "reserved": 0, "sold": 4 });
        let said = snapshot_disagreement(&facts, &snap(wrong)).unwrap();
        assert!(said.contains("reserved 0 (fold 4)") && said.contains("sold 4 (fold 0)"), "{said}");
    }
}
