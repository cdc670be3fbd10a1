//! Check 3: Money conserved per customer: folding the account stream, the credit spent (credit −
//! available) equals the totals of the customer's CONFIRMED orders, order by order (an order
//! cancelled after confirmation was refunded, a rejected one holds nothing); no authorization
//! is left open for a finished order, a confirmed order's payment was captured, the credit
//! never went below zero, and the account snapshots the service stored agree with the fold.
//! Orders still under way are left to check 1.

use crate::facts::{AccountFacts, Facts, PaymentFacts, snapshot_disagreement};
use crate::model::{Loaded, Store};
use crate::report::{Check, Offender};
use std::collections::BTreeSet;

pub const ID: &str = "money_conserved";

pub fn check(loaded: &Loaded, facts: &Facts) -> Check {
    let mut c = Check::new(ID, "credit spent = totals of confirmed orders, per customer", "customers");
    let empty = AccountFacts::default();
    let customers: BTreeSet<&String> =
        facts.accounts.keys().chain(facts.orders.values().filter(|o| o.kept()).map(|o| &o.customer_id)).collect();
    let by_customer = facts.orders_by_customer();
    let mut unfinished = 0;
    for customer in customers {
        c.checked += 1;
        let account = facts.accounts.get(customer).unwrap_or(&empty);
        let mut problems = Vec::new();
        if account.opened == 0 {
            problems.push("no account opened".to_owned());
        }
        let theirs = by_customer.get(customer.as_str()).map_or(&[][..], Vec::as_slice);
        let orders: BTreeSet<&String> = account.payments.keys().chain(theirs.iter().copied()).collect();
        let (mut spent_on_finished, mut confirmed_total) = (0, 0);
        let none = PaymentFacts::default();
        for order in orders {
            let p = account.payments.get(order).unwrap_or(&none);
            let Some(o) = facts.orders.get(order) else {
                if p.charged() != 0 {
                    problems.push(format!("holds {} for order {order}, which no order store has", p.charged()));
                }
                continue;
            };
            if !o.settled() {
                unfinished += 1;
                continue;
            }
            let expected = if o.kept() && o.customer_id == *customer { o.total_cents } else { 0 };
            spent_on_finished += p.charged();
            confirmed_total += expected;
            let status = o.status.as_str();
            if p.charged() != expected {
                problems.push(format!("order {order} ({status}, total {}) holds {}", o.total_cents, p.charged()));
            }
            if p.last == Some("PaymentAuthorized") {
                problems.push(format!("authorization of order {order} ({status}) left open"));
            }
            if expected > 0 && p.confirmed == 0 {
                problems.push(format!("payment of confirmed order {order} never captured"));
            }
        }
        if account.lowest.0 < 0 {
            problems.push(format!("credit went to {} after event {}", account.lowest.0, account.lowest.1));
        }
        if !problems.is_empty() {
            problems.insert(0, format!("spent {spent_on_finished}, confirmed orders total {confirmed_total}"));
            c.fail(Offender::new(format!("customer {customer}"), &[customer], problems.join("; ")));
        }
    }
    for s in loaded.snapshots.iter().filter(|s| s.store == Store::Payment) {
        if let Some(problem) = snapshot_disagreement(facts, s) {
            c.fail(Offender::new(format!("customer {}", s.aggregate_id), &[&s.aggregate_id], problem));
        }
    }
    if unfinished > 0 {
        c.note(format!("{unfinished} orders still under way are not judged here (see orders_finished)"));
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::derive;
    use crate::facts::tests::*;
    use crate::model::{Event, StoredState};
    use domain::order::OrderEvent;
    use domain::payment::AccountEvent as A;
    use domain::values::{CustomerId, OrderId};

    fn opened(c: CustomerId) -> Event {
        Event::Account(A::AccountOpened { customer_id: c, credit: eur(1000) })
    }
    fn auth(o: OrderId, cents: i64) -> Event {
        Event::Account(A::PaymentAuthorized { order_id: o, amount: eur(cents) })
    }
    fn confirm(o: OrderId, cents: i64) -> Event {
        Event::Account(A::PaymentConfirmed { order_id: o, amount: eur(cents) })
    }
    fn refund(o: OrderId, cents: i64) -> Event {
        Event::Account(A::PaymentRefunded { order_id: o, amount: eur(cents) })
    }
    fn order(o: OrderId, c: CustomerId, cents: i64, then: &[OrderEvent]) -> Stream {
        let mut s = Stream::new(Store::Order, o).then(placed(o, c, &[(product_id(1), 1, cents)]));
        for e in then {
            s = s.then(Event::Order(e.clone()));
        }
        s
    }

    fn run(streams: &[&Stream], snapshots: Vec<StoredState>) -> Check {
        let events = streams.iter().flat_map(|s| s.events.clone()).collect();
        let l = Loaded { events, snapshots, ..Loaded::default() };
        check(&l, &derive(&l.events))
    }

    #[test]
    fn confirmed_kept_rejected_refunded_and_cancelled_refunded_add_up() {
        let c = customer(1);
        let (kept, rejected, cancelled) = (order_id(1), order_id(2), order_id(3));
        let account = Stream::new(Store::Payment, c)
            .then(opened(c))
            .then(auth(kept, 300))
            .then(confirm(kept, 300))
            .then(auth(rejected, 200))
            .then(refund(rejected, 200))
            .then(auth(cancelled, 100))
            .then(confirm(cancelled, 100))
            .then(refund(cancelled, 100));
        let orders = [
            order(kept, c, 300, &[OrderEvent::OrderConfirmed]),
            order(rejected, c, 200, &[OrderEvent::OrderRejected { reason: "x".into() }]),
            order(
                cancelled,
                c,
                100,
                &[
                    OrderEvent::OrderConfirmed,
                    OrderEvent::OrderCancellationRequested { reason: "x".into() },
                    OrderEvent::OrderCancelled { reason: "x".into() },
                ],
            ),
        ];
        let check = run(&[&account, &orders[0], &orders[1], &orders[2]], vec![]);
        assert!(check.ok(), "{:?}", check.offenders);
        assert_eq!(check.checked, 1);
    }

    #[test]
    fn a_second_authorization_breaks_the_balance_and_stays_open() {
        let c = customer(1);
        let o = order_id(1);
        let account =
            Stream::new(Store::Payment, c).then(opened(c)).then(auth(o, 300)).then(confirm(o, 300)).then(auth(o, 300));
        let check = run(&[&account, &order(o, c, 300, &[OrderEvent::OrderConfirmed])], vec![]);
        assert_eq!(check.offenders.len(), 1);
        let p = &check.offenders[0].problem;
        assert!(p.starts_with("spent 600, confirmed orders total 300"), "{p}");
        assert!(p.contains(&format!("order {o} (CONFIRMED, total 300) holds 600")), "{p}");
        assert!(p.contains("left open"), "{p}");
    }

    #[test]
    fn a_rejected_order_that_kept_its_money_or_an_uncaptured_payment_is_caught() {
        let c = customer(1);
        let (a, b) = (order_id(1), order_id(2));
        let account = Stream::new(Store::Payment, c).then(opened(c)).then(auth(a, 50)).then(auth(b, 70));
        let orders = [
            order(a, c, 50, &[OrderEvent::OrderRejected { reason: "x".into() }]),
            order(b, c, 70, &[OrderEvent::OrderConfirmed]),
        ];
        let check = run(&[&account, &orders[0], &orders[1]], vec![]);
        let p = &check.offenders[0].problem;
        assert!(p.contains(&format!("order {a} (REJECTED, total 50) holds 50")), "{p}");
        assert!(p.contains(&format!("authorization of order {a} (REJECTED) left open")), "{p}");
        assert!(p.contains(&format!("payment of confirmed order {b} never captured")), "{p}");
    }

    #[test]
    fn orders_under_way_are_left_alone_and_an_overdraft_or_a_wrong_snapshot_is_caught() {
        let c = customer(1);
        let o = order_id(1);
        let account = Stream::new(Store::Payment, c).then(opened(c)).then(auth(o, 300));
        let check = run(&[&account, &order(o, c, 300, &[])], vec![]);
        assert!(check.ok() && check.notes.len() == 1, "{:?}", check.offenders);

        let big = Stream::new(Store::Payment, c).then(opened(c)).then(auth(o, 3000)).then(confirm(o, 3000));
        let snapshot = StoredState {
            store: Store::Payment,
            aggregate_id: c.to_string(),
            last_sequence: 2,
            state: serde_json::json!({ "credit_limit": { "cents": 1000 }, "available": { "cents": 0 } }),
        };
        let check = run(&[&big, &order(o, c, 3000, &[OrderEvent::OrderConfirmed])], vec![snapshot]);
        let said: Vec<String> = check.offenders.iter().map(ToString::to_string).collect();
        assert_eq!(said.len(), 2, "{said:#?}");
        assert!(said.iter().any(|s| s.contains("credit went to -2000 after event 2")), "{said:#?}");
        assert!(said.iter().any(|s| s.contains("snapshot at event 2 says available 0 (fold -2000)")), "{said:#?}");
    }

    proptest::proptest! {
        /// Any payment history the saga can make adds up; one extra authorization never does.
        #[test]
        fn saga_payment_histories_add_up_and_an_extra_authorization_never_does(
            orders in proptest::collection::vec((1i64..40_000, 0u8..4), 0..10),
            extra in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let c = customer(1);
            let mut account = Stream::new(Store::Payment, c).then(opened(c));
            let mut streams = Vec::new();
            let mut available = 1000;
            for (i, (cents, outcome)) in orders.iter().enumerate() {
                let (o, cents) = (order_id(i as u128 + 1), *cents / 100);
                let declined = cents > available;
                let then: Vec<OrderEvent> = match (declined, outcome) {
                    (true, _) => {
                        account = account.then(Event::Account(A::PaymentDeclined {
                            order_id: o, amount: eur(cents), reason: "credit".into(),
                        }));
                        vec![OrderEvent::OrderRejected { reason: "credit".into() }]
                    }
                    (false, 0) => {
                        account = account.then(auth(o, cents)).then(confirm(o, cents));
                        available -= cents;
                        vec![OrderEvent::OrderConfirmed]
                    }
                    (false, 1) => {
                        account = account.then(auth(o, cents)).then(refund(o, cents));
                        vec![OrderEvent::OrderRejected { reason: "stock timed out".into() }]
                    }
                    (false, 2) => {
                        account = account.then(auth(o, cents)).then(confirm(o, cents)).then(refund(o, cents));
                        vec![
                            OrderEvent::OrderConfirmed,
                            OrderEvent::OrderCancellationRequested { reason: "x".into() },
                            OrderEvent::OrderCancelled { reason: "x".into() },
                        ]
                    }
                    (false, _) => vec![OrderEvent::OrderRejected { reason: "stock".into() }],
                };
                streams.push(order(o, c, cents, &then));
            }
            let mut all: Vec<&Stream> = streams.iter().collect();
            all.push(&account);
            let check = run(&all, vec![]);
            proptest::prop_assert!(check.ok(), "{:?}", check.offenders);

            if !orders.is_empty() {
                let o = order_id(extra.index(orders.len()) as u128 + 1);
                let twice = account.then(auth(o, 1));
                let mut all: Vec<&Stream> = streams.iter().collect();
                all.push(&twice);
                proptest::prop_assert!(!run(&all, vec![]).ok());
            }
        }
    }
}
