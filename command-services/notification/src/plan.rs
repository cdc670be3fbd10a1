//! What an event asks of this service, decided without IO.

use schemas::Message;

/// The e-mails this service sends. `as_str` is also the `event_type` recorded in `sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    PaymentConfirmed,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::OrderConfirmed => "OrderConfirmed",
            Kind::OrderRejected => "OrderRejected",
            Kind::OrderCancelled => "OrderCancelled",
            Kind::PaymentConfirmed => "PaymentConfirmed",
        }
    }
}

/// One e-mail to send, with the facts its event carries. The rest (recipient, order total)
/// comes from the tables this service keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice<'a> {
    OrderConfirmed { order_id: &'a str },
    OrderRejected { order_id: &'a str, reason: &'a str },
    OrderCancelled { order_id: &'a str, reason: &'a str },
    PaymentConfirmed { order_id: &'a str, customer_id: &'a str, amount_cents: i64, currency: &'a str },
}

impl Notice<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Notice::OrderConfirmed { .. } => Kind::OrderConfirmed,
            Notice::OrderRejected { .. } => Kind::OrderRejected,
            Notice::OrderCancelled { .. } => Kind::OrderCancelled,
            Notice::PaymentConfirmed { .. } => Kind::PaymentConfirmed,
        }
    }

    pub fn order_id(&self) -> &str {
        match self {
            Notice::OrderConfirmed { order_id }
            | Notice::OrderRejected { order_id, .. }
            | Notice::OrderCancelled { order_id, .. }
            | Notice::PaymentConfirmed { order_id, .. } => order_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Remember where to write to a customer.
    RememberContact { customer_id: &'a str, name: &'a str, email: &'a str },
    /// Remember whose an order is and what it costs, for the e-mails about it.
    RememberOrder { order_id: &'a str, customer_id: &'a str, total_cents: i64, currency: &'a str },
    /// Send one e-mail (at most once per event).
    Notify(Notice<'a>),
    /// Not this service's business.
    Ignore,
}

pub fn plan(message: &Message) -> Action<'_> {
    match message {
        Message::CustomerRegistered(e) => {
            Action::RememberContact { customer_id: &e.customer_id, name: &e.name, email: &e.email }
        }
        Message::OrderPlaced(e) => Action::RememberOrder {
            order_id: &e.order_id,
            customer_id: &e.customer_id,
            total_cents: e.total_cents,
            currency: &e.currency,
        },
        Message::OrderConfirmed(e) => Action::Notify(Notice::OrderConfirmed { order_id: &e.order_id }),
        Message::OrderRejected(e) => Action::Notify(Notice::OrderRejected { order_id: &e.order_id, reason: &e.reason }),
        Message::OrderCancelled(e) => {
            Action::Notify(Notice::OrderCancelled { order_id: &e.order_id, reason: &e.reason })
        }
        Message::PaymentConfirmed(e) => Action::Notify(Notice::PaymentConfirmed {
            order_id: &e.order_id,
            customer_id: &e.customer_id,
            amount_cents: e.amount_cents,
            currency: &e.currency,
        }),
        _ => Action::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::records::*;

    #[test]
    fn a_registration_is_remembered_as_a_contact() {
        let m = Message::CustomerRegistered(CustomerRegistered {
            customer_id: "c1".into(),
            name: "Alice".into(),
            email: "alice@example.com".into(),
            owner: None,
        });
        assert_eq!(plan(&m), Action::RememberContact { customer_id: "c1", name: "Alice", email: "alice@example.com" });
    }

    #[test]
    fn a_placed_order_is_remembered_with_its_total() {
        let m = Message::OrderPlaced(OrderPlaced {
            order_id: "o1".into(),
            customer_id: "c1".into(),
            lines: vec![OrderLine { product_id: "p1".into(), quantity: 2, unit_price_cents: 250 }],
            total_cents: 500,
            currency: "EUR".into(),
            owner: None,
        });
        assert_eq!(
            plan(&m),
            Action::RememberOrder { order_id: "o1", customer_id: "c1", total_cents: 500, currency: "EUR" }
        );
    }

    #[test]
    fn confirmations_rejections_and_payments_each_send_their_email() {
        let confirmed = Message::OrderConfirmed(OrderConfirmed { order_id: "o1".into() });
        let rejected =
            Message::OrderRejected(OrderRejected { order_id: "o1".into(), reason: "out of stock".into(), code: None });
        let paid = Message::PaymentConfirmed(PaymentConfirmed {
            customer_id: "c1".into(),
            order_id: "o1".into(),
            amount_cents: 500,
            currency: "EUR".into(),
        });
        assert_eq!(plan(&confirmed), Action::Notify(Notice::OrderConfirmed { order_id: "o1" }));
        assert_eq!(plan(&rejected), Action::Notify(Notice::OrderRejected { order_id: "o1", reason: "out of stock" }));
        assert_eq!(
            plan(&paid),
            Action::Notify(Notice::PaymentConfirmed {
                order_id: "o1",
                customer_id: "c1",
                amount_cents: 500,
                currency: "EUR"
            })
        );
        for (m, kind) in
            [(confirmed, Kind::OrderConfirmed), (rejected, Kind::OrderRejected), (paid, Kind::PaymentConfirmed)]
        {
            let Action::Notify(notice) = plan(&m) else { panic!("{m:?} should notify") };
            assert_eq!(notice.kind(), kind);
            assert_eq!(notice.order_id(), "o1");
        }
    }

    #[test]
    fn everything_else_is_ignored() {
        let others = [
            Message::AccountOpened(AccountOpened { customer_id: "c1".into(), credit_cents: 1, currency: "EUR".into() }),
            Message::PaymentAuthorized(PaymentAuthorized {
                customer_id: "c1".into(),
                order_id: "o1".into(),
                amount_cents: 1,
                currency: "EUR".into(),
            }),
            Message::PaymentDeclined(PaymentDeclined {
                customer_id: "c1".into(),
                order_id: "o1".into(),
                amount_cents: 1,
                currency: "EUR".into(),
                reason: "no credit".into(),
            }),
            Message::PaymentRefunded(PaymentRefunded {
                customer_id: "c1".into(),
                order_id: "o1".into(),
                amount_cents: 1,
                currency: "EUR".into(),
            }),
            Message::ConfirmOrder(ConfirmOrder { order_id: "o1".into() }),
            Message::StockAdded(StockAdded { product_id: "p1".into(), quantity: 1 }),
        ];
        for m in &others {
            assert_eq!(plan(m), Action::Ignore, "{m:?}");
        }
    }
}
