//! The CreateOrder saga, declared once: each step names its command, the replies that advance
//! it, its compensation, what it sends on success and on a later cancellation, and its
//! timeout. The engine ([`crate::engine`]) runs this declaration; the dashboard, the API's
//! `GET /sagas/definition` and the README's diagram are drawn from it.
//!
//! A step must say how it is undone: `compensation` has no default, so a step that leaves it
//! out does not compile; a step with nothing to undo says `None` (and is the point of no
//! return: a cancellation while it runs waits for it to succeed, then reverses the saga).
//!
//! ```compile_fail
//! use saga_orchestrator::engine::{Command, Step, Timeout};
//! use saga_orchestrator::definition::OrderData;
//! use schemas::Message;
//! const FORGETFUL: Step<OrderData, Message> = Step {
//!     name: "forgetful",
//!     parts: |_| vec![],
//!     command: Command { name: "x", make: |_, _| unreachable!() },
//!     replies: &[],
//!     read: |_| None,
//!     on_success: None,
//!     on_cancel: None,
//!     timeout: Timeout::None,
//!     // no `compensation`: error[E0063]: missing field `compensation`
//! };
//! ```

use crate::engine::{Command, Ending, Reply, Saga, Signal, Status, Step, Timeout, short};
use contract::{SagaDefinition, SagaStepSpec};
use schemas::records as r;
use schemas::{Message, Record};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// What the saga knows of its order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderData {
    pub order_id: String,
    pub customer_id: String,
    pub total_cents: i64,
    pub currency: String,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub quantity: i32,
}

/// The single part of a step that sends one command per order.
pub const WHOLE: &str = "order";

fn one(_: &OrderData) -> Vec<String> {
    vec![WHOLE.to_owned()]
}

fn lines(o: &OrderData) -> Vec<String> {
    o.lines.iter().map(|l| l.product_id.clone()).collect()
}

pub const RESERVE_STOCK: Step<OrderData, Message> = Step {
    name: "reserve_stock",
    parts: lines,
    command: Command {
        name: r::ReserveStock::FULL_NAME,
        make: |o, product_id| {
            let quantity = o.lines.iter().find(|l| l.product_id == product_id).map_or(0, |l| l.quantity);
            r::ReserveStock { order_id: o.order_id.clone(), product_id: product_id.to_owned(), quantity }.into()
        },
    },
    replies: &[r::StockReserved::FULL_NAME, r::StockReservationFailed::FULL_NAME],
    read: |m| match m {
        Message::StockReserved(e) => {
            Some((e.product_id.clone(), Reply::Done(format!("stock reserved: {} x {}", e.quantity, e.product_id))))
        }
        Message::StockReservationFailed(e) => Some((
            e.product_id.clone(),
            Reply::Failed(format!(
                "insufficient stock for product {}: requested {}, available {}",
                e.product_id, e.requested, e.available
            )),
        )),
        Message::StockReleased(e) => {
            Some((e.product_id.clone(), Reply::Undone(format!("stock released: {}", e.product_id))))
        }
        Message::StockReturned(e) => {
            Some((e.product_id.clone(), Reply::Undone(format!("stock returned: {}", e.product_id))))
        }
        Message::StockCommitted(e) => {
            Some((e.product_id.clone(), Reply::Finished(format!("stock committed: {}", e.product_id))))
        }
        _ => None,
    },
    compensation: Some(Command {
        name: r::ReleaseStock::FULL_NAME,
        make: |o, product_id| {
            r::ReleaseStock { order_id: o.order_id.clone(), product_id: product_id.to_owned() }.into()
        },
    }),
    on_success: Some(Command {
        name: r::CommitStock::FULL_NAME,
        make: |o, product_id| r::CommitStock { order_id: o.order_id.clone(), product_id: product_id.to_owned() }.into(),
    }),
    on_cancel: Some(Command {
        name: r::ReturnStock::FULL_NAME,
        make: |o, product_id| r::ReturnStock { order_id: o.order_id.clone(), product_id: product_id.to_owned() }.into(),
    }),
    timeout: Timeout::Configured,
};

/// A refund undoes an authorization before confirmation and a payment after it.
const REFUND: Command<OrderData, Message> = Command {
    name: r::RefundPayment::FULL_NAME,
    make: |o, _| r::RefundPayment { order_id: o.order_id.clone(), customer_id: o.customer_id.clone() }.into(),
};

pub const AUTHORIZE_PAYMENT: Step<OrderData, Message> = Step {
    name: "authorize_payment",
    parts: one,
    command: Command {
        name: r::AuthorizePayment::FULL_NAME,
        make: |o, _| {
            r::AuthorizePayment {
                order_id: o.order_id.clone(),
                customer_id: o.customer_id.clone(),
                amount_cents: o.total_cents,
                currency: o.currency.clone(),
            }
            .into()
        },
    },
    replies: &[r::PaymentAuthorized::FULL_NAME, r::PaymentDeclined::FULL_NAME],
    read: |m| match m {
        Message::PaymentAuthorized(e) => {
            Some((WHOLE.to_owned(), Reply::Done(format!("payment authorized: {} cents", e.amount_cents))))
        }
        Message::PaymentDeclined(e) => {
            Some((WHOLE.to_owned(), Reply::Failed(format!("payment declined: {}", e.reason))))
        }
        Message::PaymentRefunded(e) => {
            Some((WHOLE.to_owned(), Reply::Undone(format!("payment refunded: {} cents", e.amount_cents))))
        }
        Message::PaymentConfirmed(e) => {
            Some((WHOLE.to_owned(), Reply::Finished(format!("payment confirmed: {} cents", e.amount_cents))))
        }
        _ => None,
    },
    compensation: Some(REFUND),
    on_success: Some(Command {
        name: r::ConfirmPayment::FULL_NAME,
        make: |o, _| r::ConfirmPayment { order_id: o.order_id.clone(), customer_id: o.customer_id.clone() }.into(),
    }),
    on_cancel: Some(REFUND),
    timeout: Timeout::Configured,
};

/// The order service cannot refuse a pending order: no timeout, nothing to undo.
pub const CONFIRM_ORDER: Step<OrderData, Message> = Step {
    name: "confirm_order",
    parts: one,
    command: Command {
        name: r::ConfirmOrder::FULL_NAME,
        make: |o, _| r::ConfirmOrder { order_id: o.order_id.clone() }.into(),
    },
    replies: &[r::OrderConfirmed::FULL_NAME],
    read: |m| match m {
        Message::OrderConfirmed(_) => Some((WHOLE.to_owned(), Reply::Done("order confirmed".to_owned()))),
        _ => None,
    },
    compensation: None,
    on_success: None,
    on_cancel: None,
    timeout: Timeout::None,
};

pub const STEPS: [Step<OrderData, Message>; 3] = [RESERVE_STOCK, AUTHORIZE_PAYMENT, CONFIRM_ORDER];

/// The CreateOrder saga: reserve, authorize, confirm; then commit the stock and the payment.
/// Failed: release, refund, reject. Cancelled before confirmation: the same, ending in
/// CancelOrder; after it: refund, return the stock, cancel.
pub const CREATE_ORDER: Saga<OrderData, Message> = Saga {
    name: "CreateOrder",
    steps: &STEPS,
    ending: Ending {
        reject_step: "reject_order",
        reject: Command {
            name: r::RejectOrder::FULL_NAME,
            make: |o, reason| r::RejectOrder { order_id: o.order_id.clone(), reason: reason.to_owned() }.into(),
        },
        cancel_step: "cancel_order",
        cancel: Command {
            name: r::CancelOrder::FULL_NAME,
            make: |o, reason| r::CancelOrder { order_id: o.order_id.clone(), reason: reason.to_owned() }.into(),
        },
        read: |m| match m {
            Message::OrderRejected(e) => Some(Signal::Ended(Status::Rejected, format!("order rejected: {}", e.reason))),
            Message::OrderCancelled(e) => {
                Some(Signal::Ended(Status::Cancelled, format!("order cancelled: {}", e.reason)))
            }
            Message::OrderCancellationRequested(e) => Some(Signal::CancelRequested(e.reason.clone())),
            _ => None,
        },
    },
};

/// A declaration as data: what the dashboard draws and `GET /sagas/definition` answers.
pub fn describe<D, M>(saga: &Saga<D, M>) -> SagaDefinition {
    let names = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    SagaDefinition {
        name: saga.name.to_owned(),
        steps: saga
            .steps
            .iter()
            .map(|s| SagaStepSpec {
                name: s.name.to_owned(),
                command: s.command.name.to_owned(),
                replies: names(s.replies),
                compensation: s.compensation.as_ref().map(|c| c.name.to_owned()),
                timeout: match s.timeout {
                    Timeout::Configured => "configured",
                    Timeout::None => "none",
                }
                .to_owned(),
            })
            .collect(),
        on_success: saga.steps.iter().filter_map(|s| s.on_success.as_ref().map(|c| c.name.to_owned())).collect(),
        on_failure: saga.ending.reject.name.to_owned(),
        cancel_after_confirmation: saga
            .steps
            .iter()
            .rev()
            .filter_map(|s| s.on_cancel.as_ref().map(|c| c.name))
            .chain([saga.ending.cancel.name])
            .map(str::to_owned)
            .collect(),
        mermaid: mermaid(saga),
    }
}

pub fn create_order() -> SagaDefinition {
    describe(&CREATE_ORDER)
}

/// The saga as a Mermaid flowchart: steps left to right, failures down to the compensations
/// of the steps already done, in reverse.
pub fn mermaid<D, M>(saga: &Saga<D, M>) -> String {
    let steps = saga.steps;
    let mut out = String::from("flowchart LR\n    start([OrderPlaced]) --> s0\n");
    for (i, s) in steps.iter().enumerate() {
        let timeout = if s.timeout == Timeout::Configured { "<br/>timeout" } else { "" };
        let _ = writeln!(out, "    s{i}[\"{}<br/>{}{timeout}\"]", s.name, short(s.command.name));
        let ok = s.replies.first().map_or("ok", |r| short(r));
        if i + 1 < steps.len() {
            let _ = writeln!(out, "    s{i} -->|{ok}| s{}", i + 1);
        } else {
            let done: Vec<&str> = steps.iter().filter_map(|s| s.on_success.as_ref().map(|c| short(c.name))).collect();
            let _ = writeln!(out, "    s{i} -->|{ok}| done([CONFIRMED<br/>{}])", done.join(" + "));
        }
        // A failure at step i compensates steps i-1 .. 0 (and step i itself if it may have
        // happened: a timeout or a late reply).
        let failure = match (s.replies.get(1), s.timeout) {
            (Some(r), Timeout::Configured) => format!("{} / timeout", short(r)),
            (Some(r), Timeout::None) => short(r).to_owned(),
            (None, Timeout::Configured) => "timeout".to_owned(),
            (None, Timeout::None) => continue,
        };
        match (0..=i).rev().find(|&j| steps[j].compensation.is_some()) {
            Some(j) => {
                let _ = writeln!(out, "    s{i} -.->|{failure}| c{j}");
            }
            None => {
                let _ = writeln!(out, "    s{i} -.->|{failure}| rejected");
            }
        }
    }
    let compensated: Vec<usize> = (0..steps.len()).filter(|&j| steps[j].compensation.is_some()).collect();
    for (k, &j) in compensated.iter().enumerate().rev() {
        let c = steps[j].compensation.as_ref().map(|c| short(c.name)).unwrap_or_default();
        let _ = writeln!(out, "    c{j}[/\"{c}\"/]");
        match k.checked_sub(1).map(|p| compensated[p]) {
            Some(prev) => {
                let _ = writeln!(out, "    c{j} -.-> c{prev}");
            }
            None => {
                let _ = writeln!(out, "    c{j} -.-> rejected");
            }
        }
    }
    let _ = writeln!(out, "    rejected([REJECTED<br/>{}])", short(saga.ending.reject.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_declares_its_compensation_or_none() {
        let d = create_order();
        assert_eq!(
            d.steps.iter().map(|s| s.compensation.as_deref()).collect::<Vec<_>>(),
            [Some("shop.product.ReleaseStock"), Some("shop.payment.RefundPayment"), None]
        );
        assert_eq!(d.on_success, ["shop.product.CommitStock", "shop.payment.ConfirmPayment"]);
        assert_eq!(
            d.cancel_after_confirmation,
            ["shop.payment.RefundPayment", "shop.product.ReturnStock", "shop.order.CancelOrder"]
        );
    }

    /// Each declared name is the name of what the declaration builds.
    #[test]
    fn declared_names_match_the_commands_built() {
        let order = OrderData {
            order_id: "o1".into(),
            customer_id: "c1".into(),
            total_cents: 100,
            currency: "EUR".into(),
            lines: vec![Line { product_id: "p1".into(), quantity: 1 }],
        };
        let built = |c: &Command<OrderData, Message>| {
            assert_eq!((c.make)(&order, "p1").full_name(), c.name);
        };
        for step in CREATE_ORDER.steps {
            built(&step.command);
            [&step.compensation, &step.on_success, &step.on_cancel].into_iter().flatten().for_each(built);
        }
        built(&CREATE_ORDER.ending.reject);
        built(&CREATE_ORDER.ending.cancel);
    }

    #[test]
    fn mermaid_names_every_step_and_compensation() {
        let m = mermaid(&CREATE_ORDER);
        for needle in ["reserve_stock", "AuthorizePayment", "ReleaseStock", "RefundPayment", "CONFIRMED", "REJECTED"] {
            assert!(m.contains(needle), "{needle} missing from\n{m}");
        }
        assert!(m.contains("c1 -.-> c0"), "refund runs before release:\n{m}");
    }

    #[test]
    fn the_readme_shows_the_current_diagram() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&mermaid(&CREATE_ORDER)),
            "README.md's saga diagram is stale: paste the output of `saga-orchestrator diagram`"
        );
    }
}
