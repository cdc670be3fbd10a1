//! The text of each e-mail: one function per event type, pure, so wording changes are tested
//! without an SMTP server.

use domain::values::Money;

/// Subject and plain-text body of one e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub subject: String,
    pub body: String,
}

const SIGNATURE: &str = "Kind regards,\nThe Shop team";

pub fn order_confirmed(name: &str, order_id: &str, total: Money) -> Mail {
    Mail {
        subject: format!("Your order {order_id} is confirmed"),
        body: format!(
            "Hello {name},\n\n\
             good news: your order {order_id} is confirmed.\n\
             Order total: {total}\n\n\
             {SIGNATURE}\n"
        ),
    }
}

pub fn order_cancelled(name: &str, order_id: &str, total: Money, reason: &str) -> Mail {
    Mail {
        subject: format!("Your order {order_id} is cancelled"),
        body: format!(
            "Hello {name},\n\n\
             your order {order_id} (total {total}) is cancelled ({reason}).\n\
             Any payment taken for it is refunded.\n\n\
             {SIGNATURE}\n"
        ),
    }
}

pub fn order_rejected(name: &str, order_id: &str, total: Money, reason: &str) -> Mail {
    Mail {
        subject: format!("Your order {order_id} could not be completed"),
        body: format!(
            "Hello {name},\n\n\
             we are sorry: your order {order_id} (total {total}) was rejected.\n\
             Reason: {reason}\n\n\
             Any payment taken for it is refunded and nothing will be shipped.\n\n\
             {SIGNATURE}\n"
        ),
    }
}

pub fn payment_confirmed(name: &str, order_id: &str, amount: Money) -> Mail {
    Mail {
        subject: format!("Payment received for order {order_id}"),
        body: format!(
            "Hello {name},\n\n\
             we received your payment of {amount} for order {order_id}.\n\n\
             {SIGNATURE}\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::values::Currency;

    const ORDER: &str = "0195f2a4-7c1e-7d40-8000-000000000001";

    fn eur(cents: i64) -> Money {
        Money::new(cents, Currency::EUR)
    }

    #[test]
    fn confirmation_names_the_order_and_its_total() {
        let mail = order_confirmed("Alice", ORDER, eur(12_345));
        assert!(mail.subject.contains(ORDER));
        assert!(mail.subject.contains("confirmed"));
        assert!(mail.body.starts_with("Hello Alice,"));
        assert!(mail.body.contains(ORDER));
        assert!(mail.body.contains("123.45 EUR"), "{}", mail.body);
    }

    #[test]
    fn rejection_gives_the_reason_and_the_total() {
        let mail = order_rejected("Bob", ORDER, eur(5), "payment declined: credit exceeded");
        assert!(mail.subject.contains(ORDER));
        assert!(mail.body.contains(ORDER));
        assert!(mail.body.contains("Reason: payment declined: credit exceeded"));
        assert!(mail.body.contains("0.05 EUR"), "{}", mail.body);
        assert!(!mail.subject.contains("payment declined"), "the reason stays out of the subject");
    }

    #[test]
    fn payment_confirmation_names_the_amount_and_the_order() {
        let mail = payment_confirmed("Alice", ORDER, Money::new(100_000, Currency::parse("USD").unwrap()));
        assert!(mail.subject.contains(ORDER));
        assert!(mail.body.contains(ORDER));
        assert!(mail.body.contains("1000.00 USD"), "{}", mail.body);
    }

    #[test]
    fn subjects_are_single_lines() {
        let mails = [
            order_confirmed("A", ORDER, eur(1)),
            order_rejected("A", ORDER, eur(1), "multi\nline\nreason"),
            payment_confirmed("A", ORDER, eur(1)),
        ];
        for mail in mails {
            assert!(!mail.subject.contains('\n'), "{:?}", mail.subject);
        }
    }
}
