//! The CreateOrder saga of one order: the engine ([`crate::engine`]) running the declaration
//! ([`crate::definition::CREATE_ORDER`]) over the order's data, and the saga as the
//! `SagaUpdated` event the dashboard's read model is built from.
//!
//! On success: CommitStock per line and ConfirmPayment. On failure or timeout: the
//! compensations of what was done or may be under way, then RejectOrder with the reason. A
//! reply that arrives after compensation (a reservation or payment that lands late) finds its
//! compensation already queued behind it on the same partition.

use crate::definition::{AUTHORIZE_PAYMENT, CREATE_ORDER, RESERVE_STOCK};
pub use crate::definition::{Line, OrderData};
use crate::engine::{self, ActionError, Instance, PartState};
use schemas::Message;
use schemas::records as r;

pub use crate::engine::Status;

/// One order's saga, as stored.
pub type Saga = Instance<OrderData>;

/// Settings of the saga that are not per order.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub step_ms: i64,
}

impl Saga {
    /// Start on `OrderPlaced`: reserve every line.
    pub fn start(placed: &r::OrderPlaced, now_ms: i64, t: Timeouts) -> (Saga, Vec<Message>) {
        let data = OrderData {
            order_id: placed.order_id.clone(),
            customer_id: placed.customer_id.clone(),
            total_cents: placed.total_cents,
            currency: placed.currency.clone(),
            lines: placed
                .lines
                .iter()
                .map(|l| Line { product_id: l.product_id.clone(), quantity: l.quantity })
                .collect(),
        };
        CREATE_ORDER.start(data, now_ms, t.step_ms)
    }

    /// Handle a reply. Returns the commands to send (possibly none).
    pub fn on_reply(&mut self, reply: &Message, now_ms: i64, t: Timeouts) -> Vec<Message> {
        CREATE_ORDER.on_message(self, reply, now_ms, t.step_ms)
    }

    /// The deadline passed: give up on the current step.
    pub fn on_timeout(&mut self, now_ms: i64) -> Vec<Message> {
        CREATE_ORDER.on_timeout(self, now_ms)
    }

    /// An operator's retry (see [`engine::Saga::retry`]).
    pub fn retry(&mut self, by: &str, why: &str, now_ms: i64, t: Timeouts) -> Result<Vec<Message>, ActionError> {
        CREATE_ORDER.retry(self, by, why, now_ms, t.step_ms)
    }

    /// An operator's "compensate now" (see [`engine::Saga::compensate_now`]).
    pub fn compensate_now(&mut self, by: &str, why: &str, now_ms: i64) -> Result<Vec<Message>, ActionError> {
        CREATE_ORDER.compensate_now(self, by, why, now_ms)
    }

    pub fn order_id(&self) -> &str {
        &self.data.order_id
    }

    /// A stored saga: this shape, or the one before the engine ran the declaration.
    pub fn from_stored(state: serde_json::Value) -> Result<Saga, serde_json::Error> {
        match serde_json::from_value::<Saga>(state.clone()) {
            Ok(saga) => Ok(saga),
            Err(e) => serde_json::from_value::<legacy::Saga>(state).map(legacy::Saga::upgrade).map_err(|_| e),
        }
    }

    /// The saga as the `SagaUpdated` event the dashboard's read model is built from.
    pub fn view(&self) -> r::SagaUpdated {
        let part = |step: &engine::Step<OrderData, Message>, key: &str| {
            let i = CREATE_ORDER.steps.iter().position(|s| s.name == step.name)?;
            self.parts[i].iter().find(|p| p.key == key).map(|p| p.state)
        };
        let payment = CREATE_ORDER.steps.iter().position(|s| s.name == AUTHORIZE_PAYMENT.name);
        let payment = payment.and_then(|i| self.parts[i].first()).map_or("NONE", |p| payment_word(p.state));
        r::SagaUpdated {
            order_id: self.data.order_id.clone(),
            customer_id: self.data.customer_id.clone(),
            version: self.version,
            status: self.status.as_str().to_owned(),
            step: self.step.clone(),
            reason: self.reason.clone(),
            payment: payment.to_owned(),
            total_cents: self.data.total_cents,
            currency: self.data.currency.clone(),
            lines: self
                .data
                .lines
                .iter()
                .map(|l| r::SagaLine {
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                    state: line_word(part(&RESERVE_STOCK, &l.product_id).unwrap_or(PartState::Pending)).to_owned(),
                })
                .collect(),
            history: self
                .history
                .iter()
                .map(|e| r::SagaEntry { at_ms: e.at_ms, step: e.step.clone(), what: e.what.clone() })
                .collect(),
        }
    }
}

/// An order line's state in the business's words.
fn line_word(state: PartState) -> &'static str {
    match state {
        PartState::Pending => "PENDING",
        PartState::Done => "RESERVED",
        PartState::Failed => "FAILED",
        PartState::UndoRequested => "RELEASE_REQUESTED",
        PartState::Undone => "RELEASED",
        PartState::FinishRequested => "COMMIT_REQUESTED",
        PartState::Finished => "COMMITTED",
        PartState::ReverseRequested => "RETURN_REQUESTED",
        PartState::Reversed => "RETURNED",
    }
}

/// The payment's state in the business's words.
fn payment_word(state: PartState) -> &'static str {
    match state {
        PartState::Pending => "REQUESTED",
        PartState::Done | PartState::FinishRequested => "AUTHORIZED",
        PartState::Failed => "DECLINED",
        PartState::UndoRequested | PartState::ReverseRequested => "REFUND_REQUESTED",
        PartState::Undone | PartState::Reversed => "REFUNDED",
        PartState::Finished => "CONFIRMED",
    }
}

/// The stored shape before the engine ran the declaration (sagas running across the upgrade).
mod legacy {
    use super::{Line, OrderData};
    use crate::engine::{Entry, Instance, Part, PartState, Status};
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Saga {
        order_id: String,
        customer_id: String,
        total_cents: i64,
        currency: String,
        lines: Vec<OldLine>,
        status: Status,
        step: String,
        payment: String,
        reason: Option<String>,
        deadline_ms: Option<i64>,
        history: Vec<Entry>,
        #[serde(default)]
        cancel_requested: bool,
        #[serde(default)]
        version: i64,
    }

    #[derive(Deserialize)]
    struct OldLine {
        product_id: String,
        quantity: i32,
        state: String,
    }

    impl Saga {
        pub fn upgrade(self) -> super::Saga {
            let cancelled_after_confirmation = self.lines.iter().any(|l| l.state.starts_with("RETURN"));
            let line = |s: &str| match s {
                "RESERVED" => PartState::Done,
                "FAILED" => PartState::Failed,
                "RELEASE_REQUESTED" => PartState::UndoRequested,
                "RELEASED" => PartState::Undone,
                "COMMIT_REQUESTED" => PartState::FinishRequested,
                "COMMITTED" => PartState::Finished,
                "RETURN_REQUESTED" => PartState::ReverseRequested,
                "RETURNED" => PartState::Reversed,
                _ => PartState::Pending,
            };
            let confirmed = self.status == Status::Confirmed || cancelled_after_confirmation;
            let payment = match self.payment.as_str() {
                "NONE" => None,
                "REQUESTED" => Some(PartState::Pending),
                "AUTHORIZED" if confirmed => Some(PartState::FinishRequested),
                "AUTHORIZED" => Some(PartState::Done),
                "DECLINED" => Some(PartState::Failed),
                "REFUND_REQUESTED" if cancelled_after_confirmation => Some(PartState::ReverseRequested),
                "REFUND_REQUESTED" => Some(PartState::UndoRequested),
                "REFUNDED" if cancelled_after_confirmation => Some(PartState::Reversed),
                "REFUNDED" => Some(PartState::Undone),
                _ => Some(PartState::Finished),
            };
            let confirming = match self.step.as_str() {
                "confirm_order" => Some(PartState::Pending),
                _ if confirmed => Some(PartState::Done),
                _ => None,
            };
            let part = |state: Option<PartState>| {
                state
                    .map(|state| Part { key: crate::definition::WHOLE.to_owned(), state })
                    .into_iter()
                    .collect::<Vec<_>>()
            };
            let parts = vec![
                self.lines.iter().map(|l| Part { key: l.product_id.clone(), state: line(&l.state) }).collect(),
                part(payment),
                part(confirming),
            ];
            Instance {
                data: OrderData {
                    order_id: self.order_id,
                    customer_id: self.customer_id,
                    total_cents: self.total_cents,
                    currency: self.currency,
                    lines: self
                        .lines
                        .into_iter()
                        .map(|l| Line { product_id: l.product_id, quantity: l.quantity })
                        .collect(),
                },
                status: self.status,
                step: self.step,
                parts,
                reason: self.reason,
                deadline_ms: self.deadline_ms,
                history: self.history,
                cancel_requested: self.cancel_requested,
                version: self.version,
                ended_ms: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts { step_ms: 1000 };

    fn placed(lines: &[(&str, i32)]) -> r::OrderPlaced {
        r::OrderPlaced {
            order_id: "o1".into(),
            customer_id: "c1".into(),
            lines: lines
                .iter()
                .map(|(p, q)| r::OrderLine { product_id: (*p).into(), quantity: *q, unit_price_cents: 100 })
                .collect(),
            total_cents: 100 * lines.iter().map(|(_, q)| i64::from(*q)).sum::<i64>(),
            currency: "EUR".into(),
            owner: None,
        }
    }

    fn reserved(p: &str) -> Message {
        r::StockReserved { product_id: p.into(), order_id: "o1".into(), quantity: 1 }.into()
    }

    fn names(ms: &[Message]) -> Vec<&'static str> {
        ms.iter().map(|m| m.full_name().rsplit('.').next().unwrap_or_default()).collect()
    }

    #[test]
    fn the_view_names_states_as_the_api_does() {
        let (mut s, _) = Saga::start(&placed(&[("p1", 1)]), 0, T);
        s.on_reply(&reserved("p1"), 1, T);
        let v = s.view();
        assert_eq!(
            (v.status.as_str(), v.step.as_str(), v.payment.as_str()),
            ("RUNNING", "authorize_payment", "REQUESTED")
        );
        assert_eq!(v.lines[0].state, "RESERVED");
        assert_eq!(v.history.len(), s.history.len());
    }

    #[test]
    fn happy_path_confirms_and_commits() {
        let (mut s, out) = Saga::start(&placed(&[("p1", 1), ("p2", 2)]), 0, T);
        assert_eq!(names(&out), ["ReserveStock", "ReserveStock"]);
        assert!(s.on_reply(&reserved("p1"), 1, T).is_empty());
        assert_eq!(names(&s.on_reply(&reserved("p2"), 2, T)), ["AuthorizePayment"]);
        let auth = r::PaymentAuthorized {
            customer_id: "c1".into(),
            order_id: "o1".into(),
            amount_cents: 300,
            currency: "EUR".into(),
        };
        assert_eq!(names(&s.on_reply(&auth.clone().into(), 3, T)), ["ConfirmOrder"]);
        let out = s.on_reply(&r::OrderConfirmed { order_id: "o1".into() }.into(), 4, T);
        assert_eq!(names(&out), ["CommitStock", "CommitStock", "ConfirmPayment"]);
        assert_eq!(s.status, Status::Confirmed);
        assert!(!s.settled(), "the stock commits and the payment confirmation are due");
        // Duplicates change nothing.
        assert!(s.on_reply(&auth.clone().into(), 5, T).is_empty());
        assert!(s.on_reply(&reserved("p1"), 5, T).is_empty());
        for p in ["p1", "p2"] {
            assert!(!s.settled());
            s.on_reply(&r::StockCommitted { product_id: p.into(), order_id: "o1".into(), quantity: 1 }.into(), 6, T);
        }
        assert!(!s.settled());
        let confirmed = r::PaymentConfirmed {
            customer_id: auth.customer_id,
            order_id: auth.order_id,
            amount_cents: auth.amount_cents,
            currency: auth.currency,
        };
        s.on_reply(&confirmed.into(), 7, T);
        assert!(s.settled(), "{:?}", s.parts);
    }

    #[test]
    fn stock_failure_releases_what_was_reserved_and_rejects() {
        let (mut s, _) = Saga::start(&placed(&[("p1", 1), ("p2", 9)]), 0, T);
        s.on_reply(&reserved("p1"), 1, T);
        let failed =
            r::StockReservationFailed { product_id: "p2".into(), order_id: "o1".into(), requested: 9, available: 3 };
        let out = s.on_reply(&failed.into(), 2, T);
        assert_eq!(names(&out), ["ReleaseStock", "RejectOrder"]);
        assert_eq!(s.status, Status::Compensating);
        assert!(s.reason.as_deref().unwrap_or_default().contains("insufficient stock"));
        s.on_reply(&r::OrderRejected { order_id: "o1".into(), reason: "x".into(), code: None }.into(), 3, T);
        assert_eq!(s.status, Status::Rejected);
        assert!(!s.settled(), "the release of p1 is due");
        s.on_reply(&r::StockReleased { product_id: "p1".into(), order_id: "o1".into(), quantity: 1 }.into(), 4, T);
        assert!(s.settled(), "{:?}", s.parts);
    }

    #[test]
    fn declined_payment_releases_all_stock_and_charges_nothing() {
        let (mut s, _) = Saga::start(&placed(&[("p1", 1)]), 0, T);
        s.on_reply(&reserved("p1"), 1, T);
        let declined = r::PaymentDeclined {
            customer_id: "c1".into(),
            order_id: "o1".into(),
            amount_cents: 100,
            currency: "EUR".into(),
            reason: "insufficient credit".into(),
        };
        let out = s.on_reply(&declined.into(), 2, T);
        assert_eq!(names(&out), ["ReleaseStock", "RejectOrder"]);
    }

    #[test]
    fn timeout_compensates_and_late_replies_are_undone() {
        let (mut s, _) = Saga::start(&placed(&[("p1", 1)]), 0, T);
        s.on_reply(&reserved("p1"), 1, T);
        let out = s.on_timeout(2000);
        assert_eq!(names(&out), ["RefundPayment", "ReleaseStock", "RejectOrder"]);
        assert!(s.reason.as_deref().unwrap_or_default().contains("timed out waiting for authorize_payment"));
        // The authorization lands after the timeout: nothing more, the refund is already queued behind it.
        let auth = r::PaymentAuthorized {
            customer_id: "c1".into(),
            order_id: "o1".into(),
            amount_cents: 100,
            currency: "EUR".into(),
        };
        assert!(s.on_reply(&auth.into(), 2001, T).is_empty());
        assert_eq!(s.status, Status::Compensating);
    }

    fn cancel() -> Message {
        r::OrderCancellationRequested { order_id: "o1".into(), reason: "changed my mind".into() }.into()
    }

    #[test]
    fn cancelling_before_confirmation_compensates_and_cancels() {
        let (mut s, _) = Saga::start(&placed(&[("p1", 1)]), 0, T);
        s.on_reply(&reserved("p1"), 1, T);
        let out = s.on_reply(&cancel(), 2, T);
        assert_eq!(names(&out), ["RefundPayment", "ReleaseStock", "CancelOrder"]);
        s.on_reply(&r::OrderCancelled { order_id: "o1".into(), reason: "x".into() }.into(), 3, T);
        assert_eq!(s.status, Status::Cancelled);
        assert!(s.on_reply(&cancel(), 4, T).is_empty(), "a second request does nothing");
    }

    #[test]
    fn cancelling_after_confirmation_returns_stock_and_refunds() {
        let (mut s, _) = Saga::start(&placed(&[("p1", 1)]), 0, T);
        s.on_reply(&reserved("p1"), 1, T);
        let auth = r::PaymentAuthorized {
            customer_id: "c1".into(),
            order_id: "o1".into(),
            amount_cents: 100,
            currency: "EUR".into(),
        };
        s.on_reply(&auth.into(), 2, T);
        s.on_reply(&r::OrderConfirmed { order_id: "o1".into() }.into(), 3, T);
        let out = s.on_reply(&cancel(), 4, T);
        assert_eq!(names(&out), ["RefundPayment", "ReturnStock", "CancelOrder"]);
    }

    #[test]
    fn cancelling_while_confirming_waits_for_the_confirmation() {
        let (mut s, _) = Saga::start(&placed(&[("p1", 1)]), 0, T);
        s.on_reply(&reserved("p1"), 1, T);
        let auth = r::PaymentAuthorized {
            customer_id: "c1".into(),
            order_id: "o1".into(),
            amount_cents: 100,
            currency: "EUR".into(),
        };
        s.on_reply(&auth.into(), 2, T);
        assert!(s.on_reply(&cancel(), 3, T).is_empty());
        let out = s.on_reply(&r::OrderConfirmed { order_id: "o1".into() }.into(), 4, T);
        assert_eq!(names(&out), ["CommitStock", "ConfirmPayment", "RefundPayment", "ReturnStock", "CancelOrder"]);
    }

    #[test]
    fn late_reservation_after_timeout_is_released() {
        let (mut s, _) = Saga::start(&placed(&[("p1", 1), ("p2", 1)]), 0, T);
        s.on_reply(&reserved("p1"), 1, T);
        let out = s.on_timeout(5000);
        assert_eq!(names(&out), ["ReleaseStock", "ReleaseStock", "RejectOrder"]);
        assert!(s.on_reply(&reserved("p2"), 5001, T).is_empty(), "release already queued behind the reservation");
    }
    /// A saga stored before the engine ran the declaration goes on where it stood.
    #[test]
    fn sagas_stored_in_the_previous_shape_go_on() {
        let old = |step: &str, status: &str, payment: &str, line: &str| {
            serde_json::json!({
                "order_id": "o1", "customer_id": "c1", "total_cents": 100, "currency": "EUR",
                "lines": [{ "product_id": "p1", "quantity": 1, "state": line }],
                "status": status, "step": step, "payment": payment, "reason": null,
                "deadline_ms": 1000, "history": [{ "at_ms": 0, "step": "reserve_stock", "what": "saga started" }],
                "cancel_requested": false, "version": 3
            })
        };
        let mut s = Saga::from_stored(old("authorize_payment", "RUNNING", "REQUESTED", "RESERVED")).expect("old shape");
        assert_eq!((s.version, s.history.len()), (3, 1));
        let auth = r::PaymentAuthorized {
            customer_id: "c1".into(),
            order_id: "o1".into(),
            amount_cents: 100,
            currency: "EUR".into(),
        };
        assert_eq!(names(&s.on_reply(&auth.into(), 1, T)), ["ConfirmOrder"]);
        let out = s.on_reply(&r::OrderConfirmed { order_id: "o1".into() }.into(), 2, T);
        assert_eq!(names(&out), ["CommitStock", "ConfirmPayment"]);

        let mut s = Saga::from_stored(old("done", "CONFIRMED", "CONFIRMED", "COMMITTED")).expect("old shape");
        assert_eq!(names(&s.on_reply(&cancel(), 3, T)), ["RefundPayment", "ReturnStock", "CancelOrder"]);

        let mut s = Saga::from_stored(old("reserve_stock", "RUNNING", "NONE", "PENDING")).expect("old shape");
        assert_eq!(names(&s.on_timeout(2000)), ["ReleaseStock", "RejectOrder"]);
        let v = Saga::from_stored(serde_json::to_value(&s).expect("json")).expect("new shape").view();
        assert_eq!((v.status.as_str(), v.lines[0].state.as_str()), ("COMPENSATING", "RELEASE_REQUESTED"));
    }
}
