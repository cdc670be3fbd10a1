//! The CreateOrder saga as a pure state machine: replies (events) in, commands out.
//!
//! The steps (command, replies, compensation, timeout) are declared in [`crate::definition`].
//!
//! On success: CommitStock per line and ConfirmPayment. On failure or timeout: the
//! compensations of what was done, then RejectOrder with the reason. A reply that arrives after
//! compensation (e.g. a reservation or payment that lands late) is compensated on its own.

use crate::definition as d;
use schemas::Message;
use schemas::records as r;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Running,
    Compensating,
    Confirmed,
    Rejected,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] =
        [Status::Running, Status::Compensating, Status::Confirmed, Status::Rejected, Status::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Compensating => "COMPENSATING",
            Status::Confirmed => "CONFIRMED",
            Status::Rejected => "REJECTED",
            Status::Cancelled => "CANCELLED",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Confirmed | Status::Rejected | Status::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    ReserveStock,
    AuthorizePayment,
    ConfirmOrder,
    /// Compensations sent, waiting for the order to be rejected.
    RejectOrder,
    /// Cancellation: stock and payment undone, waiting for the order to be cancelled.
    CancelOrder,
    Done,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::ReserveStock => <d::ReserveStock as d::Step>::NAME,
            Step::AuthorizePayment => <d::AuthorizePayment as d::Step>::NAME,
            Step::ConfirmOrder => <d::ConfirmOrder as d::Step>::NAME,
            Step::RejectOrder => "reject_order",
            Step::CancelOrder => "cancel_order",
            Step::Done => "done",
        }
    }
    /// Whether a step gives up after the configured timeout, as its definition says.
    pub fn times_out(self) -> bool {
        d::find(self.as_str()).is_some_and(|s| s.timeout == d::Timeout::Configured)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LineState {
    Pending,
    Reserved,
    Failed,
    ReleaseRequested,
    Released,
    CommitRequested,
    Committed,
    ReturnRequested,
    Returned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentState {
    None,
    Requested,
    Authorized,
    Declined,
    RefundRequested,
    Refunded,
    Confirmed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub quantity: i32,
    pub state: LineState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: i64,
    pub step: String,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    pub order_id: String,
    pub customer_id: String,
    pub total_cents: i64,
    pub currency: String,
    pub lines: Vec<Line>,
    pub status: Status,
    pub step: Step,
    pub payment: PaymentState,
    pub reason: Option<String>,
    pub deadline_ms: Option<i64>,
    pub history: Vec<Entry>,
    /// The customer asked to cancel while the order was being confirmed: undo once confirmed.
    #[serde(default)]
    pub cancel_requested: bool,
    /// How many times the saga's state was stored; orders its `SagaUpdated` events.
    #[serde(default)]
    pub version: i64,
}

/// How a compensated saga ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Reject,
    Cancel,
}

/// Settings of the saga that are not per order.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub step_ms: i64,
}

impl Saga {
    /// Start on `OrderPlaced`: reserve every line.
    pub fn start(placed: &r::OrderPlaced, now_ms: i64, t: Timeouts) -> (Saga, Vec<Message>) {
        let mut saga = Saga {
            order_id: placed.order_id.clone(),
            customer_id: placed.customer_id.clone(),
            total_cents: placed.total_cents,
            currency: placed.currency.clone(),
            lines: placed
                .lines
                .iter()
                .map(|l| Line { product_id: l.product_id.clone(), quantity: l.quantity, state: LineState::Pending })
                .collect(),
            status: Status::Running,
            step: Step::ReserveStock,
            payment: PaymentState::None,
            reason: None,
            deadline_ms: Some(now_ms + t.step_ms),
            history: vec![],
            cancel_requested: false,
            version: 0,
        };
        saga.note(now_ms, "saga started: reserving stock");
        let commands = saga
            .lines
            .iter()
            .map(|l| {
                r::ReserveStock {
                    order_id: saga.order_id.clone(),
                    product_id: l.product_id.clone(),
                    quantity: l.quantity,
                }
                .into()
            })
            .collect();
        (saga, commands)
    }

    /// The saga as the `SagaUpdated` event the dashboard's read model is built from.
    pub fn view(&self) -> r::SagaUpdated {
        fn name<T: Serialize>(v: &T) -> String {
            serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        }
        r::SagaUpdated {
            order_id: self.order_id.clone(),
            customer_id: self.customer_id.clone(),
            version: self.version,
            status: self.status.as_str().to_owned(),
            step: self.step.as_str().to_owned(),
            reason: self.reason.clone(),
            payment: name(&self.payment),
            total_cents: self.total_cents,
            currency: self.currency.clone(),
            lines: self
                .lines
                .iter()
                .map(|l| r::SagaLine { product_id: l.product_id.clone(), quantity: l.quantity, state: name(&l.state) })
                .collect(),
            history: self
                .history
                .iter()
                .map(|e| r::SagaEntry { at_ms: e.at_ms, step: e.step.clone(), what: e.what.clone() })
                .collect(),
        }
    }

    fn note(&mut self, at_ms: i64, what: impl Into<String>) {
        self.history.push(Entry { at_ms, step: self.step.as_str().to_owned(), what: what.into() });
    }

    fn line_mut(&mut self, product_id: &str) -> Option<&mut Line> {
        self.lines.iter_mut().find(|l| l.product_id == product_id)
    }

    /// Handle a reply. Returns the commands to send (possibly none).
    pub fn on_reply(&mut self, reply: &Message, now_ms: i64, t: Timeouts) -> Vec<Message> {
        let mut out = Vec::new();
        match reply {
            Message::StockReserved(e) => {
                let running = self.step == Step::ReserveStock && self.status == Status::Running;
                let Some(line) = self.line_mut(&e.product_id) else {
                    return out;
                };
                if line.state != LineState::Pending {
                    return out;
                }
                if running {
                    line.state = LineState::Reserved;
                    self.note(now_ms, format!("stock reserved: {} x {}", e.quantity, e.product_id));
                    self.after_reservation_reply(now_ms, t, &mut out);
                } else {
                    // Late: the saga already gave up on this step. Give the stock back.
                    line.state = LineState::ReleaseRequested;
                    self.note(now_ms, format!("late reservation of {} released", e.product_id));
                    out.push(self.release(&e.product_id));
                }
            }
            Message::StockReservationFailed(e) => {
                let Some(line) = self.line_mut(&e.product_id) else {
                    return out;
                };
                if line.state != LineState::Pending {
                    return out;
                }
                line.state = LineState::Failed;
                let why = format!(
                    "insufficient stock for product {}: requested {}, available {}",
                    e.product_id, e.requested, e.available
                );
                self.note(now_ms, why.clone());
                if self.reason.is_none() {
                    self.reason = Some(why);
                }
                if self.step == Step::ReserveStock && self.status == Status::Running {
                    self.after_reservation_reply(now_ms, t, &mut out);
                }
            }
            Message::StockReleased(e) => {
                if let Some(line) = self.line_mut(&e.product_id) {
                    line.state = LineState::Released;
                    self.note(now_ms, format!("stock released: {}", e.product_id));
                }
            }
            Message::StockCommitted(e) => {
                if let Some(line) = self.line_mut(&e.product_id) {
                    line.state = LineState::Committed;
                    self.note(now_ms, format!("stock committed: {}", e.product_id));
                }
            }
            Message::PaymentAuthorized(e) => {
                if self.payment != PaymentState::Requested {
                    return out;
                }
                if self.step == Step::AuthorizePayment && self.status == Status::Running {
                    self.payment = PaymentState::Authorized;
                    self.note(now_ms, format!("payment authorized: {} cents", e.amount_cents));
                    self.step = Step::ConfirmOrder;
                    self.deadline_ms = None;
                    self.note(now_ms, "confirming order");
                    out.push(r::ConfirmOrder { order_id: self.order_id.clone() }.into());
                } else {
                    self.payment = PaymentState::RefundRequested;
                    self.note(now_ms, "late payment authorization refunded");
                    out.push(self.refund());
                }
            }
            Message::PaymentDeclined(e) => {
                if self.payment != PaymentState::Requested {
                    return out;
                }
                self.payment = PaymentState::Declined;
                self.note(now_ms, format!("payment declined: {}", e.reason));
                if self.step == Step::AuthorizePayment && self.status == Status::Running {
                    self.compensate(format!("payment declined: {}", e.reason), now_ms, &mut out, End::Reject);
                }
            }
            Message::PaymentRefunded(_) => {
                self.payment = PaymentState::Refunded;
                self.note(now_ms, "payment refunded");
            }
            Message::PaymentConfirmed(_) => {
                self.payment = PaymentState::Confirmed;
                self.note(now_ms, "payment confirmed");
            }
            Message::OrderConfirmed(_) if self.status == Status::Running && self.step == Step::ConfirmOrder => {
                self.status = Status::Confirmed;
                self.step = Step::Done;
                self.note(now_ms, "order confirmed: committing stock and payment");
                for i in 0..self.lines.len() {
                    self.lines[i].state = LineState::CommitRequested;
                    let product_id = self.lines[i].product_id.clone();
                    out.push(r::CommitStock { order_id: self.order_id.clone(), product_id }.into());
                }
                out.push(
                    r::ConfirmPayment { order_id: self.order_id.clone(), customer_id: self.customer_id.clone() }.into(),
                );
                if self.cancel_requested {
                    self.undo_confirmed("cancelled by the customer".into(), now_ms, &mut out);
                }
            }
            Message::OrderCancellationRequested(e) => self.on_cancellation(e.reason.clone(), now_ms, &mut out),
            Message::OrderCancelled(e) if !self.status.is_terminal() => {
                self.status = Status::Cancelled;
                self.step = Step::Done;
                self.deadline_ms = None;
                self.note(now_ms, format!("order cancelled: {}", e.reason));
            }
            Message::StockReturned(e) => {
                if let Some(line) = self.line_mut(&e.product_id) {
                    line.state = LineState::Returned;
                    self.note(now_ms, format!("stock returned: {}", e.product_id));
                }
            }
            Message::OrderRejected(e) if !self.status.is_terminal() => {
                self.status = Status::Rejected;
                self.step = Step::Done;
                self.deadline_ms = None;
                self.note(now_ms, format!("order rejected: {}", e.reason));
            }
            _ => {}
        }
        out
    }

    fn on_cancellation(&mut self, reason: String, now_ms: i64, out: &mut Vec<Message>) {
        match (self.status, self.step) {
            (Status::Running, Step::ReserveStock | Step::AuthorizePayment) => {
                self.compensate(reason, now_ms, out, End::Cancel);
            }
            (Status::Running, Step::ConfirmOrder) => {
                // ConfirmOrder is on its way: undo once the confirmation lands.
                self.cancel_requested = true;
                self.note(now_ms, "cancellation requested while confirming");
            }
            (Status::Confirmed, _) => self.undo_confirmed(reason, now_ms, out),
            // Already being rejected or cancelled, or finished that way: nothing more to do.
            _ => {}
        }
    }

    fn after_reservation_reply(&mut self, now_ms: i64, t: Timeouts, out: &mut Vec<Message>) {
        if self.lines.iter().any(|l| l.state == LineState::Pending) {
            return;
        }
        if self.lines.iter().any(|l| l.state == LineState::Failed) {
            let reason = self.reason.clone().unwrap_or_else(|| "insufficient stock".into());
            self.compensate(reason, now_ms, out, End::Reject);
            return;
        }
        self.step = Step::AuthorizePayment;
        self.payment = PaymentState::Requested;
        self.deadline_ms = Some(now_ms + t.step_ms);
        self.note(now_ms, "all stock reserved: authorizing payment");
        out.push(
            r::AuthorizePayment {
                order_id: self.order_id.clone(),
                customer_id: self.customer_id.clone(),
                amount_cents: self.total_cents,
                currency: self.currency.clone(),
            }
            .into(),
        );
    }

    fn release(&self, product_id: &str) -> Message {
        r::ReleaseStock { order_id: self.order_id.clone(), product_id: product_id.to_owned() }.into()
    }

    fn refund(&self) -> Message {
        r::RefundPayment { order_id: self.order_id.clone(), customer_id: self.customer_id.clone() }.into()
    }

    /// Undo what was done, in reverse order, then reject (or cancel) the order.
    fn compensate(&mut self, reason: String, now_ms: i64, out: &mut Vec<Message>, end: End) {
        self.status = Status::Compensating;
        self.reason = Some(reason.clone());
        self.note(now_ms, format!("compensating: {reason}"));
        if matches!(self.payment, PaymentState::Requested | PaymentState::Authorized) {
            // A requested payment may still be authorized: the refund is queued behind it.
            self.payment = PaymentState::RefundRequested;
            out.push(self.refund());
        }
        for i in (0..self.lines.len()).rev() {
            if matches!(self.lines[i].state, LineState::Reserved | LineState::Pending) {
                self.lines[i].state = LineState::ReleaseRequested;
                out.push(self.release(&self.lines[i].product_id));
            }
        }
        self.deadline_ms = None;
        match end {
            End::Reject => {
                self.step = Step::RejectOrder;
                out.push(r::RejectOrder { order_id: self.order_id.clone(), reason }.into());
            }
            End::Cancel => {
                self.step = Step::CancelOrder;
                out.push(r::CancelOrder { order_id: self.order_id.clone(), reason }.into());
            }
        }
    }

    /// Cancellation after confirmation, the second saga: return the sold stock, refund the
    /// payment, then cancel the order. Queued behind the commits on the same partitions.
    fn undo_confirmed(&mut self, reason: String, now_ms: i64, out: &mut Vec<Message>) {
        self.status = Status::Compensating;
        self.reason = Some(reason.clone());
        self.note(now_ms, format!("cancelling a confirmed order: {reason}"));
        self.payment = PaymentState::RefundRequested;
        out.push(self.refund());
        for i in (0..self.lines.len()).rev() {
            self.lines[i].state = LineState::ReturnRequested;
            let product_id = self.lines[i].product_id.clone();
            out.push(r::ReturnStock { order_id: self.order_id.clone(), product_id }.into());
        }
        self.step = Step::CancelOrder;
        self.deadline_ms = None;
        out.push(r::CancelOrder { order_id: self.order_id.clone(), reason }.into());
    }

    /// The deadline passed: give up on the current step.
    pub fn on_timeout(&mut self, now_ms: i64) -> Vec<Message> {
        let mut out = Vec::new();
        if self.status != Status::Running || !self.step.times_out() {
            self.deadline_ms = None;
            return out;
        }
        let reason = format!("timed out waiting for {}", self.step.as_str());
        self.compensate(reason, now_ms, &mut out, End::Reject);
        out
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
        // Duplicates change nothing.
        assert!(s.on_reply(&auth.into(), 5, T).is_empty());
        assert!(s.on_reply(&reserved("p1"), 5, T).is_empty());
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
}
