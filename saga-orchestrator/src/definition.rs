//! The CreateOrder saga, declared once: each step names its command, the replies that advance
//! it, its compensation and its timeout. The state machine ([`crate::saga`]), the dashboard and
//! the docs all read this declaration.
//!
//! A step must say how it is undone: [`Step::Compensation`] has no default, so a step that
//! leaves it out does not compile. Steps that need none say so with [`NoCompensationNeeded`].
//!
//! ```compile_fail
//! use saga_orchestrator::definition::{Step, Timeout};
//! struct Forgetful;
//! impl Step for Forgetful {
//!     const NAME: &'static str = "forgetful";
//!     const COMMAND: &'static str = "shop.order.ConfirmOrder";
//!     const REPLIES: &'static [&'static str] = &["shop.order.OrderConfirmed"];
//!     const TIMEOUT: Timeout = Timeout::None;
//!     // no `type Compensation`: error[E0046]: not all trait items implemented
//! }
//! ```

use schemas::Record;
use schemas::records as r;
use std::fmt::Write as _;
use std::marker::PhantomData;

/// How long a step may wait for its replies before the saga compensates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The configured step timeout (`SHOP_SAGA_STEP_TIMEOUT_MS`).
    Configured,
    /// Never: the step is ours to finish (e.g. a command to the order service, which cannot
    /// refuse a pending order).
    None,
}

/// What undoes a step.
pub trait Compensation {
    /// The compensating command's Avro full name, or `None` when nothing needs undoing.
    const COMMAND: Option<&'static str>;
}

/// Undo the step by sending this command.
pub struct Compensate<R>(PhantomData<R>);

impl<R: Record> Compensation for Compensate<R> {
    const COMMAND: Option<&'static str> = Some(R::FULL_NAME);
}

/// The explicit marker for a step with nothing to undo.
pub struct NoCompensationNeeded;

impl Compensation for NoCompensationNeeded {
    const COMMAND: Option<&'static str> = None;
}

/// One step of a saga.
pub trait Step {
    const NAME: &'static str;
    /// Avro full name of the command that runs the step.
    const COMMAND: &'static str;
    /// Avro full names of the replies that end the step (success first).
    const REPLIES: &'static [&'static str];
    /// How the step is undone; no default on purpose.
    type Compensation: Compensation;
    const TIMEOUT: Timeout;
}

/// A step as data, for the state machine, the dashboard and the docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StepSpec {
    pub name: &'static str,
    pub command: &'static str,
    pub replies: &'static [&'static str],
    pub compensation: Option<&'static str>,
    #[serde(serialize_with = "ser_timeout")]
    pub timeout: Timeout,
}

fn ser_timeout<S: serde::Serializer>(t: &Timeout, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match t {
        Timeout::Configured => "configured",
        Timeout::None => "none",
    })
}

pub const fn spec<S: Step>() -> StepSpec {
    StepSpec {
        name: S::NAME,
        command: S::COMMAND,
        replies: S::REPLIES,
        compensation: <S::Compensation as Compensation>::COMMAND,
        timeout: S::TIMEOUT,
    }
}

pub struct ReserveStock;
impl Step for ReserveStock {
    const NAME: &'static str = "reserve_stock";
    const COMMAND: &'static str = r::ReserveStock::FULL_NAME;
    const REPLIES: &'static [&'static str] = &[r::StockReserved::FULL_NAME, r::StockReservationFailed::FULL_NAME];
    type Compensation = Compensate<r::ReleaseStock>;
    const TIMEOUT: Timeout = Timeout::Configured;
}

pub struct AuthorizePayment;
impl Step for AuthorizePayment {
    const NAME: &'static str = "authorize_payment";
    const COMMAND: &'static str = r::AuthorizePayment::FULL_NAME;
    const REPLIES: &'static [&'static str] = &[r::PaymentAuthorized::FULL_NAME, r::PaymentDeclined::FULL_NAME];
    type Compensation = Compensate<r::RefundPayment>;
    const TIMEOUT: Timeout = Timeout::Configured;
}

pub struct ConfirmOrder;
impl Step for ConfirmOrder {
    const NAME: &'static str = "confirm_order";
    const COMMAND: &'static str = r::ConfirmOrder::FULL_NAME;
    const REPLIES: &'static [&'static str] = &[r::OrderConfirmed::FULL_NAME];
    type Compensation = NoCompensationNeeded;
    const TIMEOUT: Timeout = Timeout::None;
}

/// The CreateOrder saga, in order.
pub const CREATE_ORDER: [StepSpec; 3] = [spec::<ReserveStock>(), spec::<AuthorizePayment>(), spec::<ConfirmOrder>()];

/// What happens after the last step succeeds, and how a failed saga ends.
pub const ON_SUCCESS: [&str; 2] = [r::CommitStock::FULL_NAME, r::ConfirmPayment::FULL_NAME];
pub const ON_FAILURE: &str = r::RejectOrder::FULL_NAME;

/// Cancellation by the customer. Before confirmation it is the failure path ending in
/// CancelOrder instead of RejectOrder; after confirmation a second saga on the same machinery
/// returns the sold stock and refunds, then cancels.
pub const CANCEL_AFTER_CONFIRMATION: [&str; 3] =
    [r::RefundPayment::FULL_NAME, r::ReturnStock::FULL_NAME, r::CancelOrder::FULL_NAME];

/// The whole saga as data: what the dashboard draws and `GET /sagas/definition` answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Definition {
    pub name: &'static str,
    pub steps: &'static [StepSpec],
    /// Commands sent once the last step has succeeded.
    pub on_success: &'static [&'static str],
    /// The command that ends a failed saga (after the compensations).
    pub on_failure: &'static str,
    /// The commands of a cancellation after confirmation, in order.
    pub cancel_after_confirmation: &'static [&'static str],
    /// The same as a Mermaid flowchart.
    pub mermaid: String,
}

pub fn create_order() -> Definition {
    Definition {
        name: "CreateOrder",
        steps: &CREATE_ORDER,
        on_success: &ON_SUCCESS,
        on_failure: ON_FAILURE,
        cancel_after_confirmation: &CANCEL_AFTER_CONFIRMATION,
        mermaid: mermaid(&CREATE_ORDER),
    }
}

pub fn find(name: &str) -> Option<&'static StepSpec> {
    CREATE_ORDER.iter().find(|s| s.name == name)
}

fn short(full_name: &str) -> &str {
    full_name.rsplit('.').next().unwrap_or(full_name)
}

/// The saga as a Mermaid flowchart: steps left to right, failures down to the compensations
/// of the steps already done, in reverse.
pub fn mermaid(steps: &[StepSpec]) -> String {
    let mut out = String::from("flowchart LR\n    start([OrderPlaced]) --> s0\n");
    for (i, s) in steps.iter().enumerate() {
        let timeout = if s.timeout == Timeout::Configured { "<br/>timeout" } else { "" };
        let _ = writeln!(out, "    s{i}[\"{}<br/>{}{timeout}\"]", s.name, short(s.command));
        let ok = s.replies.first().map_or("ok", |r| short(r));
        if i + 1 < steps.len() {
            let _ = writeln!(out, "    s{i} -->|{ok}| s{}", i + 1);
        } else {
            let done: Vec<&str> = ON_SUCCESS.iter().map(|c| short(c)).collect();
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
        let first_undo = (0..=i).rev().find(|&j| steps[j].compensation.is_some());
        match first_undo {
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
        let c = steps[j].compensation.map(short).unwrap_or_default();
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
    let _ = writeln!(out, "    rejected([REJECTED<br/>{}])", short(ON_FAILURE));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_declares_its_compensation_or_none() {
        assert_eq!(
            CREATE_ORDER.map(|s| s.compensation),
            [Some("shop.product.ReleaseStock"), Some("shop.payment.RefundPayment"), None]
        );
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
