//! A saga engine that runs a declaration: state, message and clock in; state and commands out.
//!
//! A saga ([`Saga`]) is a list of steps and an ending. A step sends one command per *part* (one
//! per order line, or a single part), waits until every part has replied, and moves on; the
//! last step's success finishes the saga. A part that fails, a deadline that passes, or a
//! cancellation before the point of no return compensates: the compensations of every part
//! done or still pending, steps in reverse, then the ending's *reject* (or *cancel*) command.
//! A cancellation after success reverses every finished part, steps in reverse, then *cancel*.
//!
//! The engine knows nothing of orders, Kafka or storage: data `D` and messages `M` are the
//! declaration's types, and the caller stores the [`Instance`] and sends what comes out.
//!
//! What a declaration promises the engine:
//! - a step's compensation and reversal go to the participant the step's command went to, on
//!   the same ordered channel (same Kafka key), so a compensation sent for a part still pending
//!   reaches the participant after the command it undoes;
//! - every command is idempotent at the participant, and undoing what never happened is a no-op.
//!
//! What the engine promises in return (checked by the seeded simulation in
//! `tests/simulation.rs`): each part is compensated, finished or reversed at most once, and
//! only after its command was sent; a saga ends exactly once; duplicates and late replies
//! change nothing but the late part's own undo.

use serde::{Deserialize, Serialize};

/// How long a step may wait for its replies before the saga compensates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// The configured step timeout.
    Configured,
    /// Never: the step is ours to finish (a command its participant cannot refuse).
    None,
}

/// A command of the declaration: its name (for the docs and the dashboard) and how to build it
/// from the saga's data and a part (or, for the ending, the reason).
pub struct Command<D: 'static, M: 'static> {
    pub name: &'static str,
    pub make: fn(&D, &str) -> M,
}

/// What a message says about one part of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The step's command succeeded for this part (with a line for the history).
    Done(String),
    /// The step's command was refused for this part (with the reason).
    Failed(String),
    /// The compensation or the reversal landed (with a line for the history).
    Undone(String),
    /// The success command landed (with a line for the history).
    Finished(String),
}

/// What a message says about the saga as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The ending's command landed: the saga is over with this status.
    Ended(Status, String),
    /// Someone asked to cancel, with the reason.
    CancelRequested(String),
}

/// One step of a saga.
pub struct Step<D: 'static, M: 'static> {
    pub name: &'static str,
    /// The parts the step's command goes to (e.g. one per order line); each gets one command.
    pub parts: fn(&D) -> Vec<String>,
    pub command: Command<D, M>,
    /// Names of the replies that end the step, success first (for the docs).
    pub replies: &'static [&'static str],
    /// Reads a message as a reply to this step, for one of its parts.
    pub read: fn(&M) -> Option<(String, Reply)>,
    /// Undoes a part done (or still pending) before the saga succeeded. `None`: nothing to undo,
    /// and the step is the point of no return: a cancellation while it runs waits for it.
    pub compensation: Option<Command<D, M>>,
    /// Sent for every part once the whole saga succeeded (e.g. commit a reservation).
    pub on_success: Option<Command<D, M>>,
    /// Undoes a part after the saga succeeded, when it is cancelled (e.g. return sold stock).
    pub on_cancel: Option<Command<D, M>>,
    pub timeout: Timeout,
}

/// How a saga ends when it does not succeed.
pub struct Ending<D: 'static, M: 'static> {
    /// Step name while waiting for the rejection to land.
    pub reject_step: &'static str,
    pub reject: Command<D, M>,
    /// Step name while waiting for the cancellation to land.
    pub cancel_step: &'static str,
    pub cancel: Command<D, M>,
    /// Reads a message about the whole saga.
    pub read: fn(&M) -> Option<Signal>,
}

/// A saga declaration: what runs.
pub struct Saga<D: 'static, M: 'static> {
    pub name: &'static str,
    pub steps: &'static [Step<D, M>],
    pub ending: Ending<D, M>,
}

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

/// Where one part of a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PartState {
    Pending,
    Done,
    Failed,
    UndoRequested,
    Undone,
    FinishRequested,
    Finished,
    ReverseRequested,
    Reversed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub key: String,
    pub state: PartState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub at_ms: i64,
    pub step: String,
    pub what: String,
}

/// Step name of a saga that is over.
pub const DONE: &str = "done";

/// One running saga: its data and where it stands. What the caller stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance<D> {
    pub data: D,
    pub status: Status,
    /// The current step's name, the ending's step name while compensating, or [`DONE`].
    pub step: String,
    /// The parts of each declared step, in declaration order; empty until the step starts.
    pub parts: Vec<Vec<Part>>,
    pub reason: Option<String>,
    pub deadline_ms: Option<i64>,
    pub history: Vec<Entry>,
    /// A cancellation arrived while the point of no return ran: undo once it succeeds.
    pub cancel_requested: bool,
    /// How many times the caller stored the instance.
    pub version: i64,
    /// When the saga last reached an end (CONFIRMED, REJECTED or CANCELLED).
    #[serde(default)]
    pub ended_ms: Option<i64>,
}

impl<D> Instance<D> {
    /// Over, and waiting for no reply: ended, and none of its parts still asked to finish, be
    /// undone or be reversed (the replies after an end, such as stock committed per line).
    pub fn settled(&self) -> bool {
        self.status.is_terminal()
            && self.parts.iter().flatten().all(|p| {
                !matches!(
                    p.state,
                    PartState::Pending
                        | PartState::UndoRequested
                        | PartState::FinishRequested
                        | PartState::ReverseRequested
                )
            })
    }
}

/// Why an operator's action does not apply to a saga.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    #[error("the saga is {}: nothing to compensate", .0.as_str())]
    NotRunning(Status),
    #[error("{0} cannot be undone: the saga waits for it to finish (retry it instead)")]
    PointOfNoReturn(&'static str),
    #[error("the saga is {} and waits for nothing: nothing to retry", .0.as_str())]
    NothingToRetry(Status),
}

/// Which command ends a compensated saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Reject,
    Cancel,
}

impl<D: Clone, M> Saga<D, M> {
    /// Start the saga: the first step's commands.
    pub fn start(&self, data: D, now_ms: i64, step_timeout_ms: i64) -> (Instance<D>, Vec<M>) {
        let mut saga = Instance {
            data,
            status: Status::Running,
            step: String::new(),
            parts: vec![Vec::new(); self.steps.len()],
            reason: None,
            deadline_ms: None,
            history: Vec::new(),
            cancel_requested: false,
            version: 0,
            ended_ms: None,
        };
        let mut out = Vec::new();
        self.begin(&mut saga, 0, now_ms, step_timeout_ms, "saga started", &mut out);
        (saga, out)
    }

    /// Apply one message. Returns the commands to send (possibly none).
    pub fn on_message(&self, saga: &mut Instance<D>, message: &M, now_ms: i64, step_timeout_ms: i64) -> Vec<M> {
        let mut out = Vec::new();
        // The step that reads the message and has the part it names (two steps may read the
        // same kind of message, for different parts).
        let reply = self.steps.iter().enumerate().find_map(|(i, s)| {
            (s.read)(message).filter(|(key, _)| saga.parts[i].iter().any(|p| &p.key == key)).map(|r| (i, r))
        });
        if let Some((i, (key, reply))) = reply {
            self.on_reply(saga, i, &key, reply, now_ms, step_timeout_ms, &mut out);
        } else if let Some(signal) = (self.ending.read)(message) {
            self.on_signal(saga, signal, now_ms, &mut out);
        }
        out
    }

    /// The deadline passed: give up on the current step if it may time out.
    pub fn on_timeout(&self, saga: &mut Instance<D>, now_ms: i64) -> Vec<M> {
        let mut out = Vec::new();
        match self.current(saga) {
            Some(i) if saga.status == Status::Running && self.steps[i].timeout == Timeout::Configured => {
                let reason = format!("timed out waiting for {}", self.steps[i].name);
                self.compensate(saga, reason, now_ms, End::Reject, &mut out);
            }
            _ => saga.deadline_ms = None,
        }
        out
    }

    /// An operator's retry: send again every command the saga still waits on (the running
    /// step's pending parts with a fresh deadline, requested compensations, finishes and
    /// reversals, and the ending's command while it has not landed). Participants are
    /// idempotent, so what already happened happens once. Recorded in the history with who
    /// asked and why.
    pub fn retry(
        &self,
        saga: &mut Instance<D>,
        by: &str,
        why: &str,
        now_ms: i64,
        step_timeout_ms: i64,
    ) -> Result<Vec<M>, ActionError> {
        let mut out = Vec::new();
        let current = self.current(saga).filter(|_| saga.status == Status::Running);
        for (i, step) in self.steps.iter().enumerate() {
            for part in &saga.parts[i] {
                let command = match part.state {
                    PartState::Pending if current == Some(i) => Some(&step.command),
                    PartState::UndoRequested => step.compensation.as_ref(),
                    PartState::FinishRequested => step.on_success.as_ref(),
                    PartState::ReverseRequested => step.on_cancel.as_ref(),
                    _ => None,
                };
                out.extend(command.map(|c| (c.make)(&saga.data, &part.key)));
            }
        }
        if saga.status == Status::Compensating {
            let ending = if saga.step == self.ending.cancel_step { &self.ending.cancel } else { &self.ending.reject };
            out.push((ending.make)(&saga.data, saga.reason.as_deref().unwrap_or_default()));
        }
        if out.is_empty() {
            return Err(ActionError::NothingToRetry(saga.status));
        }
        if let Some(i) = current {
            saga.deadline_ms = (self.steps[i].timeout == Timeout::Configured).then_some(now_ms + step_timeout_ms);
        }
        note(saga, now_ms, format!("retried by {by} ({} commands sent again): {why}", out.len()));
        Ok(out)
    }

    /// An operator's "compensate now": give up on the running step as a failure would, undo
    /// what was done, and reject. Refused past the point of no return (a step that cannot be
    /// undone runs to its end; retry it instead) and for a saga no longer running.
    pub fn compensate_now(
        &self,
        saga: &mut Instance<D>,
        by: &str,
        why: &str,
        now_ms: i64,
    ) -> Result<Vec<M>, ActionError> {
        let i = match self.current(saga) {
            Some(i) if saga.status == Status::Running => i,
            _ => return Err(ActionError::NotRunning(saga.status)),
        };
        if self.steps[i].compensation.is_none() {
            return Err(ActionError::PointOfNoReturn(self.steps[i].name));
        }
        let mut out = Vec::new();
        self.compensate(saga, format!("compensated by {by}: {why}"), now_ms, End::Reject, &mut out);
        Ok(out)
    }

    /// The index of the step the saga is on, if it is on a declared one.
    pub fn current(&self, saga: &Instance<D>) -> Option<usize> {
        self.steps.iter().position(|s| s.name == saga.step)
    }

    pub fn step(&self, name: &str) -> Option<&Step<D, M>> {
        self.steps.iter().find(|s| s.name == name)
    }

    fn begin(&self, saga: &mut Instance<D>, i: usize, now_ms: i64, timeout_ms: i64, why: &str, out: &mut Vec<M>) {
        let step = &self.steps[i];
        saga.step = step.name.to_owned();
        saga.parts[i] =
            (step.parts)(&saga.data).into_iter().map(|key| Part { key, state: PartState::Pending }).collect();
        saga.deadline_ms = (step.timeout == Timeout::Configured).then_some(now_ms + timeout_ms);
        note(saga, now_ms, format!("{why}: {} sent", step.command.name.rsplit('.').next().unwrap_or_default()));
        out.extend(saga.parts[i].iter().map(|p| (step.command.make)(&saga.data, &p.key)));
    }

    #[allow(clippy::too_many_arguments)]
    fn on_reply(
        &self,
        saga: &mut Instance<D>,
        i: usize,
        key: &str,
        reply: Reply,
        now_ms: i64,
        timeout_ms: i64,
        out: &mut Vec<M>,
    ) {
        let step = &self.steps[i];
        let on_it = saga.status == Status::Running && self.current(saga) == Some(i);
        let Some(j) = saga.parts[i].iter().position(|p| p.key == key) else { return };
        let state = saga.parts[i][j].state;
        match reply {
            Reply::Done(what) if state == PartState::Pending => {
                if on_it {
                    saga.parts[i][j].state = PartState::Done;
                    note(saga, now_ms, what);
                    self.after_reply(saga, i, now_ms, timeout_ms, out);
                } else if let Some(undo) = &step.compensation {
                    // Late: the saga gave up on this step without undoing this part. Undo it now.
                    saga.parts[i][j].state = PartState::UndoRequested;
                    note(saga, now_ms, format!("late {what}: undone"));
                    out.push((undo.make)(&saga.data, key));
                }
            }
            Reply::Failed(why) if state == PartState::Pending => {
                saga.parts[i][j].state = PartState::Failed;
                note(saga, now_ms, why.clone());
                saga.reason.get_or_insert(why);
                if on_it {
                    self.after_reply(saga, i, now_ms, timeout_ms, out);
                }
            }
            Reply::Undone(what) if matches!(state, PartState::UndoRequested | PartState::ReverseRequested) => {
                saga.parts[i][j].state =
                    if state == PartState::UndoRequested { PartState::Undone } else { PartState::Reversed };
                note(saga, now_ms, what);
            }
            Reply::Finished(what) if state == PartState::FinishRequested => {
                saga.parts[i][j].state = PartState::Finished;
                note(saga, now_ms, what);
            }
            // Duplicates, and acknowledgements of what the saga did not ask for.
            _ => {}
        }
    }

    /// A part of the running step replied: move on once none is pending.
    fn after_reply(&self, saga: &mut Instance<D>, i: usize, now_ms: i64, timeout_ms: i64, out: &mut Vec<M>) {
        let parts = &saga.parts[i];
        if parts.iter().any(|p| p.state == PartState::Pending) {
            return;
        }
        if parts.iter().any(|p| p.state == PartState::Failed) {
            let reason = saga.reason.clone().unwrap_or_else(|| format!("{} failed", self.steps[i].name));
            self.compensate(saga, reason, now_ms, End::Reject, out);
        } else if i + 1 < self.steps.len() {
            self.begin(saga, i + 1, now_ms, timeout_ms, &format!("{} done", self.steps[i].name), out);
        } else {
            self.succeed(saga, now_ms, out);
        }
    }

    fn on_signal(&self, saga: &mut Instance<D>, signal: Signal, now_ms: i64, out: &mut Vec<M>) {
        match signal {
            Signal::Ended(status, what) if !saga.status.is_terminal() => {
                saga.status = status;
                saga.ended_ms = Some(now_ms);
                saga.step = DONE.to_owned();
                saga.deadline_ms = None;
                note(saga, now_ms, what);
            }
            Signal::CancelRequested(reason) => match saga.status {
                Status::Running => {
                    let undoable = self.current(saga).is_some_and(|i| self.steps[i].compensation.is_some());
                    if undoable {
                        self.compensate(saga, reason, now_ms, End::Cancel, out);
                    } else if !saga.cancel_requested {
                        // Past the point of no return: undo once it has succeeded.
                        saga.cancel_requested = true;
                        saga.reason = Some(reason);
                        note(saga, now_ms, format!("cancellation requested during {}", saga.step));
                    }
                }
                Status::Confirmed => self.reverse(saga, reason, now_ms, out),
                // Already being undone, or over: nothing more to do.
                _ => {}
            },
            Signal::Ended(..) => {}
        }
    }

    /// Every step succeeded: finish every part, in declaration order.
    fn succeed(&self, saga: &mut Instance<D>, now_ms: i64, out: &mut Vec<M>) {
        saga.status = Status::Confirmed;
        saga.ended_ms = Some(now_ms);
        saga.step = DONE.to_owned();
        saga.deadline_ms = None;
        let mut sent = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            let Some(finish) = &step.on_success else { continue };
            sent.push(short(finish.name));
            for part in saga.parts[i].iter_mut().filter(|p| p.state == PartState::Done) {
                part.state = PartState::FinishRequested;
                out.push((finish.make)(&saga.data, &part.key));
            }
        }
        note(saga, now_ms, format!("{} succeeded: {} sent", self.name, sent.join(" + ")));
        if saga.cancel_requested {
            let reason = saga.reason.take().unwrap_or_else(|| "cancelled".to_owned());
            self.reverse(saga, reason, now_ms, out);
        }
    }

    /// Undo what was done or may be under way, steps and parts in reverse, then end the saga.
    fn compensate(&self, saga: &mut Instance<D>, reason: String, now_ms: i64, end: End, out: &mut Vec<M>) {
        saga.status = Status::Compensating;
        saga.reason = Some(reason.clone());
        note(saga, now_ms, format!("compensating: {reason}"));
        let upto = self.current(saga).unwrap_or(self.steps.len() - 1);
        for i in (0..=upto).rev() {
            let Some(undo) = &self.steps[i].compensation else { continue };
            // A pending part may still succeed: its undo queues behind the command.
            for part in saga.parts[i].iter_mut().rev() {
                if matches!(part.state, PartState::Pending | PartState::Done) {
                    part.state = PartState::UndoRequested;
                    out.push((undo.make)(&saga.data, &part.key));
                }
            }
        }
        self.end(saga, reason, end, out);
    }

    /// Cancel a saga that succeeded: reverse every finished part, steps in reverse, then cancel.
    fn reverse(&self, saga: &mut Instance<D>, reason: String, now_ms: i64, out: &mut Vec<M>) {
        saga.status = Status::Compensating;
        saga.reason = Some(reason.clone());
        note(saga, now_ms, format!("cancelling after success: {reason}"));
        for (i, step) in self.steps.iter().enumerate().rev() {
            let Some(undo) = &step.on_cancel else { continue };
            for part in saga.parts[i].iter_mut().rev() {
                if matches!(part.state, PartState::Done | PartState::FinishRequested | PartState::Finished) {
                    part.state = PartState::ReverseRequested;
                    out.push((undo.make)(&saga.data, &part.key));
                }
            }
        }
        self.end(saga, reason, End::Cancel, out);
    }

    fn end(&self, saga: &mut Instance<D>, reason: String, end: End, out: &mut Vec<M>) {
        let (step, command) = match end {
            End::Reject => (self.ending.reject_step, &self.ending.reject),
            End::Cancel => (self.ending.cancel_step, &self.ending.cancel),
        };
        saga.step = step.to_owned();
        saga.deadline_ms = None;
        out.push((command.make)(&saga.data, &reason));
    }
}

fn note<D>(saga: &mut Instance<D>, at_ms: i64, what: impl Into<String>) {
    let step = saga.step.clone();
    saga.history.push(Entry { at_ms, step, what: what.into() });
}

/// The last segment of a dotted name (`shop.product.ReserveStock` → `ReserveStock`).
pub fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}
