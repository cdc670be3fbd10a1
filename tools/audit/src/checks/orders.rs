//! Check 1: No accepted order lost or left unfinished: every order stream starts with `OrderPlaced`
//! and ends CONFIRMED, REJECTED or CANCELLED with no cancellation under way; every order has a
//! saga, and every saga row is terminal and says what its order says.

use crate::facts::Facts;
use crate::model::Loaded;
use crate::report::{Check, Offender};
use std::collections::BTreeMap;

pub const ID: &str = "orders_finished";

const TERMINAL: [&str; 3] = ["CONFIRMED", "REJECTED", "CANCELLED"];

pub fn check(loaded: &Loaded, facts: &Facts) -> Check {
    let mut c = Check::new(ID, "every accepted order finished, its saga terminal and agreeing", "orders");
    let sagas: BTreeMap<&str, _> = loaded.sagas.iter().map(|s| (s.order_id.as_str(), s)).collect();
    for (id, o) in &facts.orders {
        c.checked += 1;
        let mut problems = Vec::new();
        if o.placed == 0 {
            problems.push("no OrderPlaced in its stream".to_owned());
        } else if !o.starts_placed {
            problems.push("its stream does not start with OrderPlaced".to_owned());
        }
        if !o.settled() {
            problems.push(if o.cancellation_requested {
                format!("{} with a cancellation under way", o.status.as_str())
            } else {
                format!("still {}", o.status.as_str())
            });
        }
        match sagas.get(id.as_str()) {
            None => problems.push("no saga".to_owned()),
            Some(s) if !TERMINAL.contains(&s.status.as_str()) => {
                problems.push(format!("saga {} at step {}", s.status, s.step));
            }
            Some(s) if s.status != o.status.as_str() => {
                problems.push(format!("saga {} but the order {}", s.status, o.status.as_str()));
            }
            Some(_) => {}
        }
        if !problems.is_empty() {
            c.fail(Offender::new(format!("order {id}"), &[id, &o.customer_id], problems.join("; ")));
        }
    }
    for s in loaded.sagas.iter().filter(|s| !facts.orders.contains_key(&s.order_id)) {
        c.checked += 1;
        c.fail(Offender::new(
            format!("saga {}", s.order_id),
            &[&s.order_id],
            format!("{} saga of an order no order store holds", s.status),
        ));
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::derive;
    use crate::facts::tests::*;
    use crate::model::{Event, SagaRow, Store};
    use domain::order::OrderEvent;

    fn saga(order: &str, status: &str) -> SagaRow {
        SagaRow { order_id: order.to_owned(), status: status.into(), step: "done".into(), version: 3 }
    }

    fn loaded(streams: Vec<Stream>, sagas: Vec<SagaRow>) -> Loaded {
        Loaded { events: streams.into_iter().flat_map(|s| s.events).collect(), sagas, ..Loaded::default() }
    }

    fn run(l: &Loaded) -> Check {
        check(l, &derive(&l.events))
    }

    #[test]
    fn settled_orders_with_agreeing_sagas_pass() {
        let (a, b) = (order_id(1), order_id(2));
        let l = loaded(
            vec![
                Stream::new(Store::Order, a)
                    .then(placed(a, customer(1), &[(product_id(1), 1, 10)]))
                    .then(Event::Order(OrderEvent::OrderConfirmed)),
                Stream::new(Store::Order, b)
                    .then(placed(b, customer(1), &[(product_id(1), 1, 10)]))
                    .then(Event::Order(OrderEvent::OrderRejected { reason: "no".into() })),
            ],
            vec![saga(&a.to_string(), "CONFIRMED"), saga(&b.to_string(), "REJECTED")],
        );
        let c = run(&l);
        assert!(c.ok(), "{:?}", c.offenders);
        assert_eq!(c.checked, 2);
    }

    #[test]
    fn pending_orders_running_sagas_and_disagreements_are_offenders() {
        let (a, b, d) = (order_id(1), order_id(2), order_id(3));
        let l = loaded(
            vec![
                Stream::new(Store::Order, a).then(placed(a, customer(1), &[(product_id(1), 1, 10)])),
                Stream::new(Store::Order, b)
                    .then(placed(b, customer(1), &[(product_id(1), 1, 10)]))
                    .then(Event::Order(OrderEvent::OrderConfirmed))
                    .then(Event::Order(OrderEvent::OrderCancellationRequested { reason: "x".into() })),
                Stream::new(Store::Order, d)
                    .then(placed(d, customer(1), &[(product_id(1), 1, 10)]))
                    .then(Event::Order(OrderEvent::OrderConfirmed)),
            ],
            vec![
                SagaRow { step: "reserve_stock".into(), ..saga(&a.to_string(), "RUNNING") },
                saga(&b.to_string(), "COMPENSATING"),
                saga(&d.to_string(), "REJECTED"),
                saga("lonely", "CONFIRMED"),
            ],
        );
        let c = run(&l);
        let said: Vec<String> = c.offenders.iter().map(ToString::to_string).collect();
        assert_eq!(c.offenders.len(), 4, "{said:#?}");
        assert!(said.contains(&format!("order {a}: still PENDING; saga RUNNING at step reserve_stock")), "{said:#?}");
        assert!(
            said.contains(&format!(
                "order {b}: CONFIRMED with a cancellation under way; saga COMPENSATING at step done"
            ))
        );
        assert!(said.contains(&format!("order {d}: saga REJECTED but the order CONFIRMED")));
        assert!(said.contains(&"saga lonely: CONFIRMED saga of an order no order store holds".to_owned()));
    }

    #[test]
    fn an_order_without_a_saga_was_lost_on_the_way() {
        let a = order_id(1);
        let l = loaded(
            vec![
                Stream::new(Store::Order, a)
                    .then(placed(a, customer(1), &[(product_id(1), 1, 10)]))
                    .then(Event::Order(OrderEvent::OrderConfirmed)),
            ],
            vec![],
        );
        assert_eq!(run(&l).offenders[0].problem, "no saga");
    }
}
