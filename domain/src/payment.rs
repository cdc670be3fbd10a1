//! Payment account of a customer: a credit line that orders draw on.
//! Money is conserved: `credit_limit = available + authorized + confirmed` (refunds give back).
//! Payments are keyed by order, so repeated saga commands decide nothing new.

use crate::values::{CustomerId, Money, OrderId};
use crate::{Aggregate, DomainEvent};
use imbl::OrdMap;
use serde::{Deserialize, Serialize};

/// Credit a new account opens with unless configured otherwise.
pub const DEFAULT_INITIAL_CREDIT_CENTS: i64 = 100_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub customer_id: Option<CustomerId>,
    pub credit_limit: Money,
    pub available: Money,
    /// Each order's payment, kept so repeated commands are no-ops (a persistent map, like
    /// `Product::reservations`).
    pub payments: OrdMap<OrderId, Payment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub amount: Money,
    pub state: PaymentState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    Authorized,
    Declined,
    Confirmed,
    Refunded,
}

#[derive(Debug, Clone)]
pub enum AccountCommand {
    /// Opens the account; opening an open account decides nothing (both the customer's
    /// registration and a first payment may open it, whichever comes first).
    Open {
        customer_id: CustomerId,
        credit: Money,
    },
    Authorize {
        order_id: OrderId,
        amount: Money,
    },
    /// Gives an authorized or confirmed payment back. Unknown or already refunded: nothing.
    Refund {
        order_id: OrderId,
    },
    Confirm {
        order_id: OrderId,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountOpened { customer_id: CustomerId, credit: Money },
    PaymentAuthorized { order_id: OrderId, amount: Money },
    PaymentDeclined { order_id: OrderId, amount: Money, reason: String },
    PaymentConfirmed { order_id: OrderId, amount: Money },
    PaymentRefunded { order_id: OrderId, amount: Money },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountOpened { .. } => "AccountOpened",
            AccountEvent::PaymentAuthorized { .. } => "PaymentAuthorized",
            AccountEvent::PaymentDeclined { .. } => "PaymentDeclined",
            AccountEvent::PaymentConfirmed { .. } => "PaymentConfirmed",
            AccountEvent::PaymentRefunded { .. } => "PaymentRefunded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("payment account does not exist")]
    NotOpen,
    #[error("amount must be positive")]
    NonPositiveAmount,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn decide(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand as C;
        use AccountEvent as E;
        if let C::Open { customer_id, credit } = command {
            return Ok(match self.customer_id {
                Some(_) => vec![],
                None => vec![E::AccountOpened { customer_id, credit }],
            });
        }
        if self.customer_id.is_none() {
            return Err(AccountError::NotOpen);
        }
        Ok(match command {
            C::Open { .. } => unreachable!("handled above"),
            C::Authorize { order_id, amount } => {
                if amount.cents <= 0 {
                    return Err(AccountError::NonPositiveAmount);
                }
                if self.payments.contains_key(&order_id) {
                    vec![]
                } else if amount.currency != self.available.currency {
                    vec![E::PaymentDeclined {
                        order_id,
                        amount,
                        reason: format!("account is in {}, not {}", self.available.currency, amount.currency),
                    }]
                } else if amount.cents > self.available.cents {
                    vec![E::PaymentDeclined {
                        order_id,
                        amount,
                        reason: format!("insufficient credit: {} requested, {} available", amount, self.available),
                    }]
                } else {
                    vec![E::PaymentAuthorized { order_id, amount }]
                }
            }
            C::Refund { order_id } => match self.payments.get(&order_id) {
                Some(Payment { amount, state: PaymentState::Authorized | PaymentState::Confirmed }) => {
                    vec![E::PaymentRefunded { order_id, amount: *amount }]
                }
                _ => vec![],
            },
            C::Confirm { order_id } => match self.payments.get(&order_id) {
                Some(Payment { amount, state: PaymentState::Authorized }) => {
                    vec![E::PaymentConfirmed { order_id, amount: *amount }]
                }
                _ => vec![],
            },
        })
    }

    fn apply(&mut self, event: AccountEvent) {
        use AccountEvent as E;
        match event {
            E::AccountOpened { customer_id, credit } => {
                self.customer_id = Some(customer_id);
                self.credit_limit = credit;
                self.available = credit;
            }
            E::PaymentAuthorized { order_id, amount } => {
                self.available.cents -= amount.cents;
                self.payments.insert(order_id, Payment { amount, state: PaymentState::Authorized });
            }
            E::PaymentDeclined { order_id, amount, .. } => {
                self.payments.insert(order_id, Payment { amount, state: PaymentState::Declined });
            }
            E::PaymentConfirmed { order_id, amount } => {
                self.payments.insert(order_id, Payment { amount, state: PaymentState::Confirmed });
            }
            E::PaymentRefunded { order_id, amount } => {
                self.available.cents += amount.cents;
                self.payments.insert(order_id, Payment { amount, state: PaymentState::Refunded });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Currency;
    use proptest::prelude::*;

    fn eur(c: i64) -> Money {
        Money::new(c, Currency::EUR)
    }

    fn open(credit: i64) -> Account {
        Account::default()
            .execute(AccountCommand::Open { customer_id: CustomerId::new(), credit: eur(credit) })
            .unwrap()
            .0
    }

    #[test]
    fn authorizes_within_credit_and_declines_beyond() {
        let a = open(1000);
        let o1 = OrderId::new();
        let (a, ev) = a.execute(AccountCommand::Authorize { order_id: o1, amount: eur(800) }).unwrap();
        assert_eq!(ev, vec![AccountEvent::PaymentAuthorized { order_id: o1, amount: eur(800) }]);
        let o2 = OrderId::new();
        let ev = a.decide(AccountCommand::Authorize { order_id: o2, amount: eur(201) }).unwrap();
        assert!(matches!(ev.as_slice(), [AccountEvent::PaymentDeclined { .. }]));
        assert_eq!(a.available, eur(200));
    }

    #[test]
    fn refund_gives_credit_back_once() {
        let o = OrderId::new();
        let (a, _) = open(1000).execute(AccountCommand::Authorize { order_id: o, amount: eur(300) }).unwrap();
        let (a, ev) = a.execute(AccountCommand::Refund { order_id: o }).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(a.available, eur(1000));
        assert!(a.decide(AccountCommand::Refund { order_id: o }).unwrap().is_empty());
        assert!(a.decide(AccountCommand::Authorize { order_id: o, amount: eur(300) }).unwrap().is_empty());
    }

    #[test]
    fn opening_twice_decides_nothing_and_closed_accounts_reject() {
        let a = open(10);
        assert!(a.decide(AccountCommand::Open { customer_id: CustomerId::new(), credit: eur(5) }).unwrap().is_empty());
        assert_eq!(
            Account::default().decide(AccountCommand::Refund { order_id: OrderId::new() }),
            Err(AccountError::NotOpen)
        );
    }

    fn command() -> impl Strategy<Value = AccountCommand> {
        let order = (0u8..6).prop_map(|n| OrderId(uuid::Uuid::from_u128(u128::from(n) + 1)));
        prop_oneof![
            (order.clone(), 1i64..600).prop_map(|(o, c)| AccountCommand::Authorize { order_id: o, amount: eur(c) }),
            order.clone().prop_map(|o| AccountCommand::Refund { order_id: o }),
            order.prop_map(|o| AccountCommand::Confirm { order_id: o }),
        ]
    }

    proptest! {
        #[test]
        fn money_is_conserved(commands in proptest::collection::vec(command(), 0..60)) {
            let mut a = open(1000);
            for c in commands {
                if let Ok((next, _)) = a.execute(c) { a = next; }
                let held: i64 = a.payments.values()
                    .filter(|p| matches!(p.state, PaymentState::Authorized | PaymentState::Confirmed))
                    .map(|p| p.amount.cents).sum();
                prop_assert!(a.available.cents >= 0);
                prop_assert_eq!(a.credit_limit.cents, a.available.cents + held);
            }
        }
    }
}
