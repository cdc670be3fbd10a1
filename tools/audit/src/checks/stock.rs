//! Check 4: Stock identity per product, from the auditor's fold of its stream: initial + added =
//! available + reserved + sold, none of them ever below zero (no overselling), a refusal states
//! the stock the stream holds, and the snapshots the service stored agree with the fold; no
//! reservation held by a finished order (so reserved = 0 once every saga is finished); sold =
//! the quantities of the confirmed, not cancelled orders, order by order; releases and commits
//! move what was reserved, returns what was committed. Orders still under way are left to
//! check 1.

use crate::facts::{Facts, ProductFacts, ReservationFacts, snapshot_disagreement};
use crate::model::{Loaded, Store};
use crate::report::{Check, Offender};
use std::collections::BTreeSet;

pub const ID: &str = "stock_adds_up";

/// Problems listed per product before "and N more".
const PROBLEMS: usize = 4;

pub fn check(loaded: &Loaded, facts: &Facts) -> Check {
    let mut c = Check::new(ID, "initial + added = available + reserved + sold; sold = confirmed", "products");
    let mut unfinished = BTreeSet::new();
    let by_product = facts.orders_by_product();
    for (product, p) in &facts.products {
        c.checked += 1;
        let lines = by_product.get(product.as_str()).map_or(&[][..], Vec::as_slice);
        let mut problems = product_problems(product, p, lines, facts, &mut unfinished);
        for s in loaded.snapshots.iter().filter(|s| s.store == Store::Product && s.aggregate_id == *product) {
            problems.extend(snapshot_disagreement(facts, s));
        }
        if !problems.is_empty() {
            let more = problems.len().saturating_sub(PROBLEMS);
            problems.truncate(PROBLEMS);
            if more > 0 {
                problems.push(format!("and {more} more"));
            }
            c.fail(Offender::new(format!("product {product}"), &[product], problems.join("; ")));
        }
    }
    // Lines on products no product store holds: the order could never have been served.
    for (order, o) in &facts.orders {
        for (product, _) in o.lines.iter().filter(|(p, _)| !facts.products.contains_key(p)) {
            if o.kept() {
                c.fail(Offender::new(
                    format!("order {order}"),
                    &[order, product],
                    format!("confirmed with a line on product {product}, which no product store has"),
                ));
            }
        }
    }
    if !unfinished.is_empty() {
        c.note(format!("{} orders still under way are not judged here (see orders_finished)", unfinished.len()));
    }
    c.finish()
}

/// What is wrong with one product; `lines`: the orders with a line on it.
fn product_problems(
    product: &str,
    p: &ProductFacts,
    lines: &[&String],
    facts: &Facts,
    unfinished: &mut BTreeSet<String>,
) -> Vec<String> {
    let s = p.stock;
    let mut problems = p.anomalies.clone();
    if p.created == 0 {
        problems.push("no ProductCreated in its stream".to_owned());
    }
    if p.initial + p.added != s.available + s.reserved + s.sold {
        problems.push(format!(
            "initial {} + added {} ≠ available {} + reserved {} + sold {}",
            p.initial, p.added, s.available, s.reserved, s.sold
        ));
    }
    // Every order with a line on the product or an event about it.
    let none = ReservationFacts::default();
    let orders: BTreeSet<&String> = p.by_order.keys().chain(lines.iter().copied()).collect();
    let (mut all_finished, mut expected_sold) = (true, 0);
    for order in orders {
        let r = p.by_order.get(order).unwrap_or(&none);
        for (what, moved) in [("released", &r.released), ("committed", &r.committed)] {
            if let (Some(&q), Some(&reserved)) = (moved.first(), r.reserved.first())
                && q != reserved
            {
                problems.push(format!("order {order}: {what} {q} of a reservation of {reserved}"));
            }
        }
        if let (Some(&q), Some(&committed)) = (r.returned.first(), r.committed.first())
            && q != committed
        {
            problems.push(format!("order {order}: returned {q} of {committed} sold"));
        }
        let Some(o) = facts.orders.get(order) else {
            if r.held() != 0 || r.sold() != 0 {
                problems.push(format!(
                    "order {order}, which no order store has, holds {} reserved and {} sold",
                    r.held(),
                    r.sold()
                ));
            }
            continue;
        };
        if !o.settled() {
            all_finished = false;
            unfinished.insert(order.clone());
            continue;
        }
        let status = o.status.as_str();
        if r.held() != 0 {
            problems.push(format!("order {order} ({status}) still holds {} reserved", r.held()));
        }
        let expected = if o.kept() { o.quantity_of(product) } else { 0 };
        expected_sold += expected;
        if r.sold() != expected {
            problems.push(format!("order {order} ({status}): {} sold, its line says {expected}", r.sold()));
        }
    }
    if all_finished {
        if s.reserved != 0 {
            problems.push(format!("{} reserved with every order finished", s.reserved));
        }
        if s.sold != expected_sold {
            problems.push(format!("sold {}, the confirmed orders hold {expected_sold}", s.sold));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::derive;
    use crate::facts::tests::*;
    use crate::model::{Event, StoredEvent};
    use domain::order::OrderEvent;
    use domain::product::ProductEvent as P;
    use domain::values::{OrderId, ProductId};
    use proptest::prelude::*;

    fn order(o: OrderId, p: ProductId, q: i64, then: &[OrderEvent]) -> Stream {
        let mut s = Stream::new(Store::Order, o).then(placed(o, customer(1), &[(p, q, 10)]));
        for e in then {
            s = s.then(Event::Order(e.clone()));
        }
        s
    }

    fn run(events: Vec<StoredEvent>) -> Check {
        let l = Loaded { events, ..Loaded::default() };
        check(&l, &derive(&l.events))
    }

    fn all(streams: &[&Stream]) -> Vec<StoredEvent> {
        streams.iter().flat_map(|s| s.events.clone()).collect()
    }

    #[test]
    fn sold_returned_released_and_added_stock_adds_up() {
        let p = product_id(1);
        let (kept, returned, released) = (order_id(1), order_id(2), order_id(3));
        let stock = Stream::new(Store::Product, p)
            .then(created(p, 10))
            .then(Event::Product(P::StockAdded { quantity: 5 }))
            .then(Event::Product(P::StockReserved { order_id: kept, quantity: 2 }))
            .then(Event::Product(P::StockCommitted { order_id: kept, quantity: 2 }))
            .then(Event::Product(P::StockReserved { order_id: returned, quantity: 3 }))
            .then(Event::Product(P::StockCommitted { order_id: returned, quantity: 3 }))
            .then(Event::Product(P::StockReturned { order_id: returned, quantity: 3 }))
            .then(Event::Product(P::StockReserved { order_id: released, quantity: 4 }))
            .then(Event::Product(P::StockReleased { order_id: released, quantity: 4 }));
        let cancel = [
            OrderEvent::OrderConfirmed,
            OrderEvent::OrderCancellationRequested { reason: "x".into() },
            OrderEvent::OrderCancelled { reason: "x".into() },
        ];
        let orders = [
            order(kept, p, 2, &[OrderEvent::OrderConfirmed]),
            order(returned, p, 3, &cancel),
            order(released, p, 4, &[OrderEvent::OrderRejected { reason: "x".into() }]),
        ];
        let c = run(all(&[&stock, &orders[0], &orders[1], &orders[2]]));
        assert!(c.ok(), "{:?}", c.offenders);
    }

    #[test]
    fn a_reservation_left_behind_and_a_sale_nobody_confirmed_are_caught() {
        let p = product_id(1);
        let (rejected, phantom) = (order_id(1), order_id(2));
        let stock = Stream::new(Store::Product, p)
            .then(created(p, 10))
            .then(Event::Product(P::StockReserved { order_id: rejected, quantity: 2 }))
            .then(Event::Product(P::StockReserved { order_id: phantom, quantity: 1 }))
            .then(Event::Product(P::StockCommitted { order_id: phantom, quantity: 1 }));
        let orders = [
            order(rejected, p, 2, &[OrderEvent::OrderRejected { reason: "x".into() }]),
            order(phantom, p, 1, &[OrderEvent::OrderRejected { reason: "x".into() }]),
        ];
        let c = run(all(&[&stock, &orders[0], &orders[1]]));
        let problem = &c.offenders[0].problem;
        assert!(problem.contains(&format!("order {rejected} (REJECTED) still holds 2 reserved")), "{problem}");
        assert!(problem.contains(&format!("order {phantom} (REJECTED): 1 sold, its line says 0")), "{problem}");
        assert!(problem.contains("2 reserved with every order finished"), "{problem}");
        assert!(problem.contains("sold 1, the confirmed orders hold 0"), "{problem}");
    }

    #[test]
    fn overselling_and_mismatched_quantities_are_caught() {
        let p = product_id(1);
        let o = order_id(1);
        let stock = Stream::new(Store::Product, p)
            .then(created(p, 1))
            .then(Event::Product(P::StockReserved { order_id: o, quantity: 3 }))
            .then(Event::Product(P::StockCommitted { order_id: o, quantity: 2 }));
        let c = run(all(&[&stock, &order(o, p, 3, &[OrderEvent::OrderConfirmed])]));
        let problem = &c.offenders[0].problem;
        assert!(problem.contains("below zero"), "{problem}");
        assert!(problem.contains("committed 2 of a reservation of 3"), "{problem}");
    }

    #[test]
    fn orders_under_way_are_not_judged() {
        let p = product_id(1);
        let o = order_id(1);
        let stock = Stream::new(Store::Product, p)
            .then(created(p, 5))
            .then(Event::Product(P::StockReserved { order_id: o, quantity: 3 }));
        let c = run(all(&[&stock, &order(o, p, 3, &[])]));
        assert!(c.ok() && c.notes.len() == 1, "{:?}", c.offenders);
    }

    /// What the saga does for an order, as product events: reserve, then commit (confirmed),
    /// release (rejected) or commit and return (cancelled after confirmation).
    fn outcome() -> impl Strategy<Value = (u32, u8)> {
        (1u32..5, 0u8..3)
    }

    proptest! {
        /// Any history the saga can produce adds up; one extra commit anywhere never does.
        #[test]
        fn saga_histories_add_up_and_one_extra_commit_never_does(
            initial in 0u32..40,
            outcomes in proptest::collection::vec(outcome(), 0..12),
            extra in any::<prop::sample::Index>(),
        ) {
            let p = product_id(1);
            let mut stock = Stream::new(Store::Product, p).then(created(p, initial));
            let mut available = i64::from(initial);
            let mut orders = Vec::new();
            let mut kept = Vec::new();
            for (i, (q, what)) in outcomes.iter().enumerate() {
                let o = order_id(i as u128 + 1);
                let q64 = i64::from(*q);
                if q64 > available {
                    stock = stock.then(Event::Product(P::StockReservationFailed {
                        order_id: o, requested: *q, available: u64::try_from(available).unwrap(),
                    }));
                    orders.push(order(o, p, q64, &[OrderEvent::OrderRejected { reason: "stock".into() }]));
                    continue;
                }
                stock = stock.then(Event::Product(P::StockReserved { order_id: o, quantity: *q }));
                match what {
                    0 => {
                        stock = stock.then(Event::Product(P::StockCommitted { order_id: o, quantity: *q }));
                        available -= q64;
                        kept.push(o);
                        orders.push(order(o, p, q64, &[OrderEvent::OrderConfirmed]));
                    }
                    1 => {
                        stock = stock.then(Event::Product(P::StockReleased { order_id: o, quantity: *q }));
                        orders.push(order(o, p, q64, &[OrderEvent::OrderRejected { reason: "credit".into() }]));
                    }
                    _ => {
                        stock = stock
                            .then(Event::Product(P::StockCommitted { order_id: o, quantity: *q }))
                            .then(Event::Product(P::StockReturned { order_id: o, quantity: *q }));
                        orders.push(order(o, p, q64, &[
                            OrderEvent::OrderConfirmed,
                            OrderEvent::OrderCancellationRequested { reason: "x".into() },
                            OrderEvent::OrderCancelled { reason: "x".into() },
                        ]));
                    }
                }
            }
            let mut events: Vec<StoredEvent> = stock.events.clone();
            events.extend(orders.iter().flat_map(|s| s.events.clone()));
            let c = run(events.clone());
            prop_assert!(c.ok(), "{:?}", c.offenders);

            if !kept.is_empty() {
                let o = kept[extra.index(kept.len())];
                let q = u32::try_from(orders.iter().find(|s| s.id == o.to_string()).map_or(1, |s| {
                    derive(&s.events).orders[&o.to_string()].quantity_of(&p.to_string())
                })).unwrap();
                let mut twice = stock.then(Event::Product(P::StockCommitted { order_id: o, quantity: q })).events;
                twice.extend(orders.iter().flat_map(|s| s.events.clone()));
                prop_assert!(!run(twice).ok());
            }
        }
    }
}
