//! What each e-mail subject of the notification service says: its kind and order id (the
//! subjects are in `command-services/notification/src/templates.rs`). Mailpit is read with the
//! `mailpit` crate.

use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    PaymentReceived,
}

impl MailKind {
    pub const ALL: [MailKind; 4] =
        [MailKind::OrderConfirmed, MailKind::OrderRejected, MailKind::OrderCancelled, MailKind::PaymentReceived];
}

/// The kind and order of a notification's subject; None for any other mail.
pub fn classify(subject: &str) -> Option<(MailKind, Uuid)> {
    let id = subject.split_whitespace().find_map(|w| Uuid::try_parse(w).ok())?;
    let kind = if subject.starts_with("Payment received for order ") {
        MailKind::PaymentReceived
    } else if !subject.starts_with("Your order ") {
        return None;
    } else if subject.ends_with(" is confirmed") {
        MailKind::OrderConfirmed
    } else if subject.ends_with(" is cancelled") {
        MailKind::OrderCancelled
    } else if subject.ends_with(" could not be completed") {
        MailKind::OrderRejected
    } else {
        return None;
    };
    Some((kind, id))
}

pub use mailpit::Mailpit;

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0195f2a4-7c1e-7d40-8000-000000000001";

    #[test]
    fn every_notification_subject_is_classified_with_its_order() {
        let id = Uuid::parse_str(ID).unwrap();
        assert_eq!(classify(&format!("Your order {ID} is confirmed")), Some((MailKind::OrderConfirmed, id)));
        assert_eq!(classify(&format!("Your order {ID} is cancelled")), Some((MailKind::OrderCancelled, id)));
        assert_eq!(classify(&format!("Your order {ID} could not be completed")), Some((MailKind::OrderRejected, id)));
        assert_eq!(classify(&format!("Payment received for order {ID}")), Some((MailKind::PaymentReceived, id)));
    }

    #[test]
    fn other_mail_is_not_classified() {
        assert_eq!(classify("Welcome to the shop"), None);
        assert_eq!(classify(&format!("Your order {ID} has shipped")), None);
        assert_eq!(classify("Your order 12345 is confirmed"), None, "no order id");
    }
}
