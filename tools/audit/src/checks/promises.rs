//! Check 7: Promises kept: every order a client was told was accepted (202) is in the order
//! store, and ends as the client last saw it final. The stores alone cannot tell an order that
//! never reached them, so this one is judged against the clients' records (`audit --promised`);
//! without them it judges nothing and says so.

use crate::facts::Facts;
use crate::model::{Loaded, Promise, Store};
use crate::report::{Check, Offender};
use domain::order::OrderStatus;
use std::collections::{BTreeMap, BTreeSet};

pub const ID: &str = "promises_kept";
pub const TITLE: &str =
    "every order a client was told was accepted is in the order store, and ends as the client last saw it final";

pub fn check(loaded: &Loaded, facts: &Facts) -> Check {
    let mut c = Check::new(ID, TITLE, "promises");
    if loaded.promised.is_empty() {
        c.note("no promises given (--promised)");
        return c.finish();
    }
    // Streams, not folds: a stream whose events do not read still exists (delivery reports it).
    let streams: BTreeSet<&str> =
        loaded.events.iter().filter(|e| e.store == Store::Order).map(|e| e.aggregate_id.as_str()).collect();
    let mut by_id: BTreeMap<&str, Vec<&Promise>> = BTreeMap::new();
    for p in &loaded.promised {
        by_id.entry(p.order_id.as_str()).or_default().push(p);
    }
    let (mut unseen, mut cancel_unknown) = (0, 0);
    for p in &loaded.promised {
        c.checked += 1;
        let id = p.order_id.as_str();
        let subject = format!("order {id}");
        let twins = &by_id[id];
        if twins.len() > 1 {
            // Two clients told the same id: one stream, so one of their orders is not there.
            let lines: Vec<String> = twins.iter().map(|t| t.line.to_string()).collect();
            c.fail(Offender::new(
                &subject,
                &[id],
                format!("accepted (202) for {} client orders (--promised lines {})", twins.len(), lines.join(", ")),
            ));
        }
        if !streams.contains(id) {
            c.fail(Offender::new(&subject, &[id], "accepted (202) but no order store holds it"));
            continue;
        }
        let Some(order) = facts.orders.get(id) else {
            c.fail(Offender::new(&subject, &[id], "accepted (202) but no event of its stream reads"));
            continue;
        };
        match p.final_seen {
            None => unseen += 1,
            Some(seen) if seen == order.status => {}
            Some(OrderStatus::Confirmed) if p.cancel_unknown && order.status == OrderStatus::Cancelled => {
                cancel_unknown += 1;
            }
            Some(seen) => c.fail(Offender::new(
                &subject,
                &[id, &order.customer_id],
                format!(
                    "the client saw it final {} but the order store ends it {}",
                    seen.as_str(),
                    order.status.as_str()
                ),
            )),
        }
    }
    if unseen > 0 {
        c.note(format!(
            "{unseen} promises had no final status seen by the client: only their orders' existence judged"
        ));
    }
    if cancel_unknown > 0 {
        c.note(format!(
            "{cancel_unknown} orders the client saw CONFIRMED end CANCELLED after a cancel it got no answer to"
        ));
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::derive;
    use crate::facts::tests::*;
    use crate::model::Event;
    use domain::order::OrderEvent;
    use domain::values::OrderId;

    fn promise(line: usize, order: OrderId, final_seen: Option<OrderStatus>) -> Promise {
        Promise { line, order_id: order.to_string(), final_seen, cancel_unknown: false }
    }

    fn confirmed(order: OrderId) -> Stream {
        Stream::new(Store::Order, order)
            .then(placed(order, customer(1), &[(product_id(1), 1, 10)]))
            .then(Event::Order(OrderEvent::OrderConfirmed))
    }

    fn run(streams: Vec<Stream>, promised: Vec<Promise>) -> Check {
        let l = Loaded { events: streams.into_iter().flat_map(|s| s.events).collect(), promised, ..Loaded::default() };
        check(&l, &derive(&l.events))
    }

    fn said(c: &Check) -> Vec<String> {
        c.offenders.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_kept_promise_passes() {
        let (a, b) = (order_id(1), order_id(2));
        let c = run(
            vec![confirmed(a), confirmed(b)],
            vec![promise(1, a, Some(OrderStatus::Confirmed)), promise(2, b, None)],
        );
        assert!(c.ok(), "{:?}", c.offenders);
        assert_eq!(c.checked, 2);
        assert_eq!(c.notes, ["1 promises had no final status seen by the client: only their orders' existence judged"]);
    }

    #[test]
    fn an_accepted_order_no_store_holds_is_reported_with_its_id() {
        let (a, lost) = (order_id(1), order_id(2));
        let c = run(vec![confirmed(a)], vec![promise(1, a, None), promise(2, lost, Some(OrderStatus::Confirmed))]);
        assert_eq!(said(&c), [format!("order {lost}: accepted (202) but no order store holds it")]);
        assert!(c.offenders[0].involves(&lost.to_string()));
        assert_eq!(c.checked, 2);
    }

    #[test]
    fn a_final_status_other_than_the_client_saw_is_reported() {
        let a = order_id(1);
        let rejected = Stream::new(Store::Order, a)
            .then(placed(a, customer(1), &[(product_id(1), 1, 10)]))
            .then(Event::Order(OrderEvent::OrderRejected { reason: "no".into() }));
        let c = run(vec![rejected], vec![promise(1, a, Some(OrderStatus::Confirmed))]);
        assert_eq!(
            said(&c),
            [format!("order {a}: the client saw it final CONFIRMED but the order store ends it REJECTED")]
        );
        assert!(c.offenders[0].involves(&customer(1).to_string()));
    }

    #[test]
    fn confirmed_then_cancelled_is_no_broken_promise_when_the_cancel_went_unanswered() {
        let a = order_id(1);
        let cancelled =
            confirmed(a).then(Event::Order(OrderEvent::OrderCancelled { reason: "by the customer".into() }));
        let unknown = Promise { cancel_unknown: true, ..promise(1, a, Some(OrderStatus::Confirmed)) };
        let c = run(vec![cancelled], vec![unknown.clone()]);
        assert!(c.ok(), "{:?}", c.offenders);
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        let c = run(
            vec![confirmed(a).then(Event::Order(OrderEvent::OrderCancelled { reason: "x".into() }))],
            vec![Promise { cancel_unknown: false, ..unknown }],
        );
        assert_eq!(c.offenders.len(), 1, "a cancel the client knew the outcome of: {:?}", c.notes);
    }

    #[test]
    fn one_id_promised_to_two_client_orders_is_reported() {
        let a = order_id(1);
        let c = run(vec![confirmed(a)], vec![promise(3, a, None), promise(9, a, None)]);
        assert_eq!(said(&c), [format!("order {a}: accepted (202) for 2 client orders (--promised lines 3, 9)")]);
    }

    #[test]
    fn without_promises_nothing_is_checked_and_it_says_so() {
        let c = run(vec![confirmed(order_id(1))], vec![]);
        assert!(c.ok());
        assert_eq!((c.id, c.checked), (ID, 0));
        assert_eq!(c.notes, ["no promises given (--promised)"]);
    }
}
