//! Check 2: No duplicated effect: per (order, product) at most one reservation decision, one release,
//! one commit, one return; per order at most one placement, one outcome of each kind, one
//! authorization, one decline, one confirmation (capture), one refund; per account one opening,
//! per product one creation; per (order, e-mail kind) at most one e-mail in Mailpit.
//!
//! E-mails are told apart by subject, regenerated from the notification service's own
//! templates for the order id the subject names, so a change of wording cannot hide them.

use crate::facts::Facts;
use crate::model::{Loaded, Mail};
use crate::report::{Check, Offender};
use domain::values::{Currency, Money};
use notification_service::plan::Kind;
use notification_service::templates;
use std::collections::BTreeMap;
use uuid::Uuid;

pub const ID: &str = "no_duplicate_effects";

pub fn check(loaded: &Loaded, facts: &Facts) -> Check {
    let mut c = Check::new(ID, "each effect happened at most once", "effects");
    for (id, o) in &facts.orders {
        let subject = || format!("order {id}");
        let ids = [id.as_str(), o.customer_id.as_str()];
        for (what, n) in
            [("placed", o.placed), ("confirmed", o.confirmed), ("rejected", o.rejected), ("cancelled", o.cancelled)]
        {
            at_most_once(&mut c, subject(), &ids, what, n as usize);
        }
    }
    for (customer, a) in &facts.accounts {
        at_most_once(&mut c, format!("account {customer}"), &[customer], "opened", a.opened as usize);
        for (order, p) in &a.payments {
            let subject = || format!("payment of order {order}");
            let ids = [order.as_str(), customer.as_str()];
            at_most_once(&mut c, subject(), &ids, "authorized", p.authorized.len());
            at_most_once(&mut c, subject(), &ids, "declined", p.declined as usize);
            at_most_once(&mut c, subject(), &ids, "confirmed (charged)", p.confirmed as usize);
            at_most_once(&mut c, subject(), &ids, "refunded", p.refunded.len());
        }
    }
    for (product, p) in &facts.products {
        at_most_once(&mut c, format!("product {product}"), &[product], "created", p.created as usize);
        for (order, r) in &p.by_order {
            let subject = || format!("stock of order {order} on product {product}");
            let ids = [order.as_str(), product.as_str()];
            at_most_once(&mut c, subject(), &ids, "reservation decided", r.reserved.len() + r.failed as usize);
            at_most_once(&mut c, subject(), &ids, "released", r.released.len());
            at_most_once(&mut c, subject(), &ids, "committed", r.committed.len());
            at_most_once(&mut c, subject(), &ids, "returned", r.returned.len());
        }
    }
    let (mails, unknown) = mails_by_order(&loaded.mails, facts);
    for ((order, kind), sent) in &mails {
        let to: Vec<&str> = sent.iter().flat_map(|m| m.to.iter().map(String::as_str)).collect();
        at_most_once(
            &mut c,
            format!("e-mail {kind} for order {order}"),
            &[order.as_str()],
            &format!("sent (to {})", to.join(", ")),
            sent.len(),
        );
    }
    if unknown > 0 {
        c.note(format!("{unknown} notification e-mails name an order no order store holds (not judged)"));
    }
    c.finish()
}

/// One more effect judged: `what` happened `n` times to `subject`.
fn at_most_once(c: &mut Check, subject: String, ids: &[&str], what: &str, n: usize) {
    c.checked += 1;
    if n > 1 {
        c.fail(Offender::new(subject, ids, format!("{what} {n} times")));
    }
}

/// The notification e-mails by (order, kind), for orders the stores hold; and how many others
/// name an order no store holds. Other mail is ignored.
fn mails_by_order<'a>(mails: &'a [Mail], facts: &Facts) -> (BTreeMap<(String, &'static str), Vec<&'a Mail>>, usize) {
    let mut by: BTreeMap<(String, &'static str), Vec<&Mail>> = BTreeMap::new();
    let mut unknown = 0;
    for m in mails {
        let Some((kind, order)) = classify(&m.subject) else { continue };
        if facts.orders.contains_key(&order) {
            by.entry((order, kind.as_str())).or_default().push(m);
        } else {
            unknown += 1;
        }
    }
    (by, unknown)
}

/// The kind and order of a notification e-mail, from its subject: the subject the template of
/// each kind writes for the order id the subject names.
pub fn classify(subject: &str) -> Option<(Kind, String)> {
    let order = subject.split_whitespace().find_map(|w| Uuid::try_parse(w).ok())?.to_string();
    let any = Money::new(0, Currency::EUR);
    let kinds = [
        (Kind::OrderConfirmed, templates::order_confirmed("", &order, any).subject),
        (Kind::OrderRejected, templates::order_rejected("", &order, any, "").subject),
        (Kind::OrderCancelled, templates::order_cancelled("", &order, any, "").subject),
        (Kind::PaymentConfirmed, templates::payment_confirmed("", &order, any).subject),
    ];
    kinds.into_iter().find(|(_, s)| s == subject).map(|(k, _)| (k, order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::derive;
    use crate::facts::tests::*;
    use crate::model::{Event, Store};
    use domain::order::OrderEvent;
    use domain::payment::AccountEvent;
    use domain::product::ProductEvent;

    fn mail(n: usize, subject: String) -> Mail {
        Mail { id: format!("m{n}"), subject, to: vec!["a@example.com".into()] }
    }

    #[test]
    fn every_template_subject_is_classified_whatever_the_name_and_amount() {
        let order = order_id(7).to_string();
        let m = Money::new(123_456, Currency::parse("USD").unwrap());
        for (subject, kind) in [
            (templates::order_confirmed("Ann", &order, m).subject, Kind::OrderConfirmed),
            (templates::order_rejected("Ann", &order, m, "out of stock").subject, Kind::OrderRejected),
            (templates::order_cancelled("Ann", &order, m, "asked").subject, Kind::OrderCancelled),
            (templates::payment_confirmed("Ann", &order, m).subject, Kind::PaymentConfirmed),
        ] {
            assert_eq!(classify(&subject), Some((kind, order.clone())), "{subject}");
        }
        assert_eq!(classify("Your order o-smtp-test is confirmed"), None);
        assert_eq!(classify(&format!("Your order {order} has shipped")), None);
    }

    #[test]
    fn each_effect_once_passes_and_a_second_charge_is_caught() {
        let (o, c, p) = (order_id(1), customer(1), product_id(1));
        let payment = |e| Event::Account(e);
        let account = Stream::new(Store::Payment, c)
            .then(payment(AccountEvent::AccountOpened { customer_id: c, credit: eur(1000) }))
            .then(payment(AccountEvent::PaymentAuthorized { order_id: o, amount: eur(100) }))
            .then(payment(AccountEvent::PaymentConfirmed { order_id: o, amount: eur(100) }));
        let order = Stream::new(Store::Order, o)
            .then(placed(o, c, &[(p, 1, 100)]))
            .then(Event::Order(OrderEvent::OrderConfirmed));
        let stock = Stream::new(Store::Product, p)
            .then(created(p, 5))
            .then(Event::Product(ProductEvent::StockReserved { order_id: o, quantity: 1 }))
            .then(Event::Product(ProductEvent::StockCommitted { order_id: o, quantity: 1 }));
        let mails = vec![
            mail(1, templates::order_confirmed("A", &o.to_string(), eur(100)).subject),
            mail(2, templates::payment_confirmed("A", &o.to_string(), eur(100)).subject),
        ];
        let events: Vec<_> = [&account, &order, &stock].iter().flat_map(|s| s.events.clone()).collect();
        let l = Loaded { events: events.clone(), mails: mails.clone(), ..Loaded::default() };
        let ok = check(&l, &derive(&l.events));
        assert!(ok.ok(), "{:?}", ok.offenders);

        let twice = account.then(payment(AccountEvent::PaymentConfirmed { order_id: o, amount: eur(100) }));
        let events: Vec<_> = [&twice, &order, &stock].iter().flat_map(|s| s.events.clone()).collect();
        let l = Loaded { events, mails, ..Loaded::default() };
        let bad = check(&l, &derive(&l.events));
        assert_eq!(bad.offenders.len(), 1, "{:?}", bad.offenders);
        assert_eq!(bad.offenders[0].to_string(), format!("payment of order {o}: confirmed (charged) 2 times"));
        assert!(bad.offenders[0].involves(&o.to_string()) && bad.offenders[0].involves(&c.to_string()));
    }

    #[test]
    fn a_second_reservation_release_or_email_is_caught() {
        let (o, c, p) = (order_id(1), customer(1), product_id(1));
        let order = Stream::new(Store::Order, o)
            .then(placed(o, c, &[(p, 1, 100)]))
            .then(Event::Order(OrderEvent::OrderRejected { reason: "x".into() }));
        let stock = Stream::new(Store::Product, p)
            .then(created(p, 5))
            .then(Event::Product(ProductEvent::StockReserved { order_id: o, quantity: 1 }))
            .then(Event::Product(ProductEvent::StockReservationFailed { order_id: o, requested: 1, available: 4 }))
            .then(Event::Product(ProductEvent::StockReleased { order_id: o, quantity: 1 }))
            .then(Event::Product(ProductEvent::StockReleased { order_id: o, quantity: 1 }));
        let rejected = templates::order_rejected("A", &o.to_string(), eur(1), "x").subject;
        let stranger = templates::order_rejected("A", &order_id(99).to_string(), eur(1), "x").subject;
        let mails = vec![mail(1, rejected.clone()), mail(2, rejected), mail(3, stranger.clone()), mail(4, stranger)];
        let events: Vec<_> = [&order, &stock].iter().flat_map(|s| s.events.clone()).collect();
        let l = Loaded { events, mails, ..Loaded::default() };
        let c = check(&l, &derive(&l.events));
        let said: Vec<String> = c.offenders.iter().map(ToString::to_string).collect();
        assert_eq!(said.len(), 3, "{said:#?}");
        assert!(said.iter().any(|s| s.ends_with("reservation decided 2 times")), "{said:#?}");
        assert!(said.iter().any(|s| s.ends_with("released 2 times")), "{said:#?}");
        assert!(said.iter().any(|s| s.starts_with("e-mail OrderRejected") && s.ends_with("2 times")), "{said:#?}");
        assert_eq!(c.notes.len(), 1, "the stranger's mails are noted, not judged");
    }
}
