//! Order: placed as PENDING, then CONFIRMED or REJECTED by the saga.
//! Terminal states are final: no transition leaves them; repeating the transition that led
//! there decides nothing (redelivered saga commands).

use crate::values::{Currency, CustomerId, Money, OrderId, ProductId, Quantity};
use crate::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OrderStatus {
    #[default]
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

/// One line of an order, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
    pub unit_price: Money,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: Option<OrderId>,
    pub customer_id: CustomerId,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    pub status: OrderStatus,
    pub reason: Option<String>,
    /// The customer asked to cancel; the saga undoes what was done, then cancels.
    #[serde(default)]
    pub cancellation_requested: bool,
    /// The identity the order's customer profile belongs to (see `Customer::owner`).
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub enum OrderCommand {
    Place {
        order_id: OrderId,
        customer_id: CustomerId,
        lines: Vec<OrderLine>,
        owner: Option<String>,
    },
    Confirm,
    Reject {
        reason: String,
    },
    /// The customer's request: allowed while PENDING or CONFIRMED; the saga does the rest.
    RequestCancellation {
        reason: String,
    },
    /// The saga's last word after undoing stock and payment.
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    OrderPlaced {
        order_id: OrderId,
        customer_id: CustomerId,
        lines: Vec<OrderLine>,
        total: Money,
        /// Absent in events stored before owners were recorded.
        #[serde(default)]
        owner: Option<String>,
    },
    OrderConfirmed,
    OrderRejected {
        reason: String,
    },
    OrderCancellationRequested {
        reason: String,
    },
    OrderCancelled {
        reason: String,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced { .. } => "OrderPlaced",
            OrderEvent::OrderConfirmed => "OrderConfirmed",
            OrderEvent::OrderRejected { .. } => "OrderRejected",
            OrderEvent::OrderCancellationRequested { .. } => "OrderCancellationRequested",
            OrderEvent::OrderCancelled { .. } => "OrderCancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order {0} already exists")]
    AlreadyExists(OrderId),
    #[error("order does not exist")]
    NotFound,
    #[error("an order needs at least one line")]
    NoLines,
    #[error("an order may hold at most {max} lines")]
    TooManyLines { max: usize },
    #[error("product {0} appears on more than one line")]
    DuplicateProduct(ProductId),
    #[error("all lines must share one currency; found {0} and {1}")]
    MixedCurrencies(Currency, Currency),
    #[error("order total is too large")]
    TotalOverflow,
    #[error("order is {from}, it cannot become {to}", from = .from.as_str(), to = .to.as_str())]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
}

pub const MAX_LINES: usize = 100;

/// Total of the lines, checked: one currency, no overflow.
pub fn total_of(lines: &[OrderLine]) -> Result<Money, OrderError> {
    let first = lines.first().ok_or(OrderError::NoLines)?;
    let currency = first.unit_price.currency;
    let mut cents: i64 = 0;
    for line in lines {
        if line.unit_price.currency != currency {
            return Err(OrderError::MixedCurrencies(currency, line.unit_price.currency));
        }
        let line_total =
            line.unit_price.cents.checked_mul(i64::from(line.quantity.get())).ok_or(OrderError::TotalOverflow)?;
        cents = cents.checked_add(line_total).ok_or(OrderError::TotalOverflow)?;
    }
    Ok(Money::new(cents, currency))
}

impl Order {
    /// The saga has had its say and nothing is under way: CONFIRMED (without a cancellation in
    /// progress), REJECTED or CANCELLED. What a client waiting for the outcome waits for.
    pub fn is_settled(&self) -> bool {
        match self.status {
            OrderStatus::Pending => false,
            OrderStatus::Confirmed => !self.cancellation_requested,
            OrderStatus::Rejected | OrderStatus::Cancelled => true,
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderStatus as S;
        match command {
            OrderCommand::Place { order_id, customer_id, lines, owner } => {
                if let Some(id) = self.id {
                    return Err(OrderError::AlreadyExists(id));
                }
                if lines.len() > MAX_LINES {
                    return Err(OrderError::TooManyLines { max: MAX_LINES });
                }
                let mut seen = std::collections::BTreeSet::new();
                for line in &lines {
                    if !seen.insert(line.product_id) {
                        return Err(OrderError::DuplicateProduct(line.product_id));
                    }
                }
                let total = total_of(&lines)?;
                Ok(vec![OrderEvent::OrderPlaced { order_id, customer_id, lines, total, owner }])
            }
            OrderCommand::Confirm => {
                self.id.ok_or(OrderError::NotFound)?;
                match self.status {
                    S::Pending => Ok(vec![OrderEvent::OrderConfirmed]),
                    S::Confirmed => Ok(vec![]),
                    from => Err(OrderError::InvalidTransition { from, to: S::Confirmed }),
                }
            }
            OrderCommand::Reject { reason } => {
                self.id.ok_or(OrderError::NotFound)?;
                match self.status {
                    S::Pending => Ok(vec![OrderEvent::OrderRejected { reason }]),
                    S::Rejected => Ok(vec![]),
                    from => Err(OrderError::InvalidTransition { from, to: S::Rejected }),
                }
            }
            OrderCommand::RequestCancellation { reason } => {
                self.id.ok_or(OrderError::NotFound)?;
                match self.status {
                    S::Pending | S::Confirmed if self.cancellation_requested => Ok(vec![]),
                    S::Pending | S::Confirmed => Ok(vec![OrderEvent::OrderCancellationRequested { reason }]),
                    S::Cancelled => Ok(vec![]),
                    from => Err(OrderError::InvalidTransition { from, to: S::Cancelled }),
                }
            }
            OrderCommand::Cancel { reason } => {
                self.id.ok_or(OrderError::NotFound)?;
                match self.status {
                    S::Pending | S::Confirmed => Ok(vec![OrderEvent::OrderCancelled { reason }]),
                    S::Cancelled => Ok(vec![]),
                    from => Err(OrderError::InvalidTransition { from, to: S::Cancelled }),
                }
            }
        }
    }

    fn apply(&mut self, event: OrderEvent) {
        match event {
            OrderEvent::OrderPlaced { order_id, customer_id, lines, total, owner } => {
                self.id = Some(order_id);
                self.owner = owner;
                self.customer_id = customer_id;
                self.lines = lines;
                self.total = total;
                self.status = OrderStatus::Pending;
            }
            OrderEvent::OrderConfirmed => self.status = OrderStatus::Confirmed,
            OrderEvent::OrderRejected { reason } => {
                self.status = OrderStatus::Rejected;
                self.reason = Some(reason);
            }
            OrderEvent::OrderCancellationRequested { .. } => self.cancellation_requested = true,
            OrderEvent::OrderCancelled { reason } => {
                self.status = OrderStatus::Cancelled;
                self.reason = Some(reason);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(cents: i64, qty: i64) -> OrderLine {
        OrderLine {
            product_id: ProductId::new(),
            quantity: Quantity::new(qty).unwrap(),
            unit_price: Money::new(cents, Currency::EUR),
        }
    }

    fn placed() -> Order {
        let cmd = OrderCommand::Place {
            order_id: OrderId::new(),
            customer_id: CustomerId::new(),
            lines: vec![line(250, 2), line(1000, 1)],
            owner: Some("alice-subject".into()),
        };
        Order::default().execute(cmd).unwrap().0
    }

    #[test]
    fn placing_computes_the_total() {
        let o = placed();
        assert_eq!(o.total, Money::new(1500, Currency::EUR));
        assert_eq!(o.status, OrderStatus::Pending);
    }

    #[test]
    fn rejects_empty_mixed_and_duplicate_lines() {
        let place = |lines| OrderCommand::Place {
            order_id: OrderId::new(),
            customer_id: CustomerId::new(),
            lines,
            owner: None,
        };
        assert_eq!(Order::default().decide(place(vec![])), Err(OrderError::NoLines));
        let mut usd = line(100, 1);
        usd.unit_price.currency = Currency::parse("USD").unwrap();
        assert!(matches!(
            Order::default().decide(place(vec![line(100, 1), usd])),
            Err(OrderError::MixedCurrencies(..))
        ));
        let l = line(100, 1);
        assert!(matches!(Order::default().decide(place(vec![l.clone(), l])), Err(OrderError::DuplicateProduct(_))));
    }

    #[test]
    fn terminal_states_are_final_and_repeats_are_no_ops() {
        assert!(!placed().is_settled());
        let (confirmed, _) = placed().execute(OrderCommand::Confirm).unwrap();
        assert!(confirmed.is_settled());
        assert_eq!(confirmed.decide(OrderCommand::Confirm), Ok(vec![]));
        assert!(matches!(
            confirmed.decide(OrderCommand::Reject { reason: "late".into() }),
            Err(OrderError::InvalidTransition { .. })
        ));
        let (rejected, _) = placed().execute(OrderCommand::Reject { reason: "no stock".into() }).unwrap();
        assert_eq!(rejected.reason.as_deref(), Some("no stock"));
        assert!(rejected.is_settled());
        assert_eq!(rejected.decide(OrderCommand::Reject { reason: "again".into() }), Ok(vec![]));
        assert!(rejected.decide(OrderCommand::Confirm).is_err());
    }

    #[test]
    fn cancellation_is_requested_once_and_ends_cancelled() {
        let (o, ev) = placed().execute(OrderCommand::RequestCancellation { reason: "changed my mind".into() }).unwrap();
        assert_eq!(ev.len(), 1);
        assert!(!o.is_settled());
        assert!(o.decide(OrderCommand::RequestCancellation { reason: "again".into() }).unwrap().is_empty());
        let (o, _) = o.execute(OrderCommand::Confirm).unwrap();
        assert!(!o.is_settled(), "confirmed, but the cancellation is still under way");
        let (o, _) = o.execute(OrderCommand::Cancel { reason: "changed my mind".into() }).unwrap();
        assert_eq!(o.status, OrderStatus::Cancelled);
        assert!(o.is_settled());
        assert!(o.decide(OrderCommand::Confirm).is_err());
        let (rejected, _) = placed().execute(OrderCommand::Reject { reason: "no stock".into() }).unwrap();
        assert!(rejected.decide(OrderCommand::RequestCancellation { reason: "x".into() }).is_err());
    }

    proptest! {
        #[test]
        fn no_transition_leaves_a_terminal_state(ops in proptest::collection::vec(any::<bool>(), 1..20)) {
            let mut o = placed();
            let mut terminal: Option<OrderStatus> = None;
            for confirm in ops {
                let cmd = if confirm { OrderCommand::Confirm } else { OrderCommand::Reject { reason: "r".into() } };
                if let Ok((next, _)) = o.execute(cmd) { o = next; }
                if let Some(t) = terminal { prop_assert_eq!(o.status, t); }
                if o.status != OrderStatus::Pending { terminal = Some(o.status); }
            }
        }
    }
}
