//! The engine runs any declaration, not just CreateOrder: a test-only trip saga with its own
//! data and messages, and one step more than CreateOrder (a hotel, two flights, a car, then the
//! payment as the point of no return), runs, compensates in reverse, times out and cancels
//! with no change to the engine.

use saga_orchestrator::engine::{Command, Ending, Instance, PartState, Reply, Saga, Signal, Status, Step, Timeout};

#[derive(Debug, Clone, PartialEq)]
struct Trip {
    id: &'static str,
    legs: Vec<String>,
}

/// The trip's messages: commands out, replies in.
#[derive(Debug, Clone, PartialEq)]
enum Msg {
    Book(&'static str, String),
    Booked(&'static str, String),
    Refused(&'static str, String),
    Cancel(&'static str, String),
    Cancelled(&'static str, String),
    Keep(&'static str, String),
    Kept(&'static str, String),
    Charge,
    Charged,
    Close(String),
    Closed(Status),
    Abort(String),
}

fn whole(_: &Trip) -> Vec<String> {
    vec!["trip".to_owned()]
}

/// Replies of the kind of booking `what`.
fn read(what: &'static str, m: &Msg) -> Option<(String, Reply)> {
    match m {
        Msg::Booked(w, k) if *w == what => Some((k.clone(), Reply::Done(format!("{what} booked: {k}")))),
        Msg::Refused(w, k) if *w == what => Some((k.clone(), Reply::Failed(format!("no {what} for {k}")))),
        Msg::Cancelled(w, k) if *w == what => Some((k.clone(), Reply::Undone(format!("{what} cancelled: {k}")))),
        Msg::Kept(w, k) if *w == what => Some((k.clone(), Reply::Finished(format!("{what} kept: {k}")))),
        _ => None,
    }
}

/// A booking step: one command per part, cancelled to compensate or reverse, kept on success.
macro_rules! booking {
    ($what:literal, $parts:expr, $timeout:expr) => {
        Step {
            name: concat!("book_", $what),
            parts: $parts,
            command: Command { name: "Book", make: |_, k| Msg::Book($what, k.to_owned()) },
            replies: &["Booked", "Refused"],
            read: |m| read($what, m),
            compensation: Some(Command { name: "Cancel", make: |_, k| Msg::Cancel($what, k.to_owned()) }),
            on_success: Some(Command { name: "Keep", make: |_, k| Msg::Keep($what, k.to_owned()) }),
            on_cancel: Some(Command { name: "Cancel", make: |_, k| Msg::Cancel($what, k.to_owned()) }),
            timeout: $timeout,
        }
    };
}

const STEPS: [Step<Trip, Msg>; 4] = [
    booking!("hotel", whole, Timeout::Configured),
    booking!("flight", |t| t.legs.clone(), Timeout::Configured),
    // The step CreateOrder does not have.
    booking!("car", whole, Timeout::Configured),
    Step {
        name: "charge",
        parts: whole,
        command: Command { name: "Charge", make: |_, _| Msg::Charge },
        replies: &["Charged"],
        read: |m| (*m == Msg::Charged).then(|| ("trip".to_owned(), Reply::Done("charged".to_owned()))),
        compensation: None,
        on_success: None,
        on_cancel: None,
        timeout: Timeout::None,
    },
];

const TRIP: Saga<Trip, Msg> = Saga {
    name: "BookTrip",
    steps: &STEPS,
    ending: Ending {
        reject_step: "reject",
        reject: Command { name: "Close", make: |_, why| Msg::Close(format!("rejected: {why}")) },
        cancel_step: "cancel",
        cancel: Command { name: "Close", make: |_, why| Msg::Close(format!("cancelled: {why}")) },
        read: |m| match m {
            Msg::Closed(status) => Some(Signal::Ended(*status, "closed".to_owned())),
            Msg::Abort(why) => Some(Signal::CancelRequested(why.clone())),
            _ => None,
        },
    },
};

const TIMEOUT_MS: i64 = 1000;

fn trip() -> Trip {
    Trip { id: "t1", legs: vec!["out".into(), "back".into()] }
}

/// Start, then feed `replies` one by one; every command sent, in order.
fn run(replies: &[Msg]) -> (Instance<Trip>, Vec<Msg>) {
    let (mut saga, mut sent) = TRIP.start(trip(), 0, TIMEOUT_MS);
    for (t, m) in (1..).zip(replies) {
        sent.extend(TRIP.on_message(&mut saga, m, t, TIMEOUT_MS));
    }
    (saga, sent)
}

fn booked(what: &'static str, k: &str) -> Msg {
    Msg::Booked(what, k.to_owned())
}

fn book(what: &'static str, k: &str) -> Msg {
    Msg::Book(what, k.to_owned())
}

fn cancel(what: &'static str, k: &str) -> Msg {
    Msg::Cancel(what, k.to_owned())
}

const ALL_BOOKED: [(&str, &str); 4] = [("hotel", "trip"), ("flight", "out"), ("flight", "back"), ("car", "trip")];

fn all_booked() -> Vec<Msg> {
    ALL_BOOKED.iter().map(|(w, k)| booked(w, k)).collect()
}

#[test]
fn every_declared_step_runs_then_success_keeps_every_booking() {
    let (saga, sent) = run(&[all_booked(), vec![Msg::Charged]].concat());
    assert_eq!(saga.status, Status::Confirmed);
    assert_eq!(saga.step, "done");
    let keeps = [("hotel", "trip"), ("flight", "out"), ("flight", "back"), ("car", "trip")]
        .map(|(w, k)| Msg::Keep(w, k.to_owned()));
    let expected = [
        vec![book("hotel", "trip"), book("flight", "out"), book("flight", "back"), book("car", "trip"), Msg::Charge]
            .as_slice(),
        &keeps,
    ]
    .concat();
    assert_eq!(sent, expected);
    assert!(saga.parts.iter().flatten().take(4).all(|p| p.state == PartState::FinishRequested));
}

#[test]
fn a_refusal_at_the_extra_step_compensates_the_others_in_reverse() {
    let refused = Msg::Refused("car", "trip".into());
    let (saga, sent) = run(&[&all_booked()[..3], &[refused]].concat());
    assert_eq!(saga.status, Status::Compensating);
    assert_eq!(saga.reason.as_deref(), Some("no car for trip"));
    let tail = &sent[sent.len() - 4..];
    assert_eq!(
        tail,
        [
            cancel("flight", "back"),
            cancel("flight", "out"),
            cancel("hotel", "trip"),
            Msg::Close("rejected: no car for trip".into())
        ]
    );
    assert!(!sent.contains(&cancel("car", "trip")), "a refused booking needs no undo: {sent:?}");
}

#[test]
fn a_timeout_at_the_extra_step_undoes_it_too_and_a_late_reply_changes_nothing() {
    let (mut saga, _) = run(&all_booked()[..3]);
    assert_eq!(saga.step, "book_car");
    let sent = TRIP.on_timeout(&mut saga, 5000);
    assert_eq!(
        sent,
        [
            cancel("car", "trip"),
            cancel("flight", "back"),
            cancel("flight", "out"),
            cancel("hotel", "trip"),
            Msg::Close("rejected: timed out waiting for book_car".into())
        ]
    );
    assert!(TRIP.on_message(&mut saga, &booked("car", "trip"), 5001, TIMEOUT_MS).is_empty());
    TRIP.on_message(&mut saga, &Msg::Closed(Status::Rejected), 5002, TIMEOUT_MS);
    assert_eq!(saga.status, Status::Rejected);
}

#[test]
fn cancelling_at_the_point_of_no_return_waits_then_reverses_every_booking() {
    let (mut saga, _) = run(&all_booked());
    assert_eq!(saga.step, "charge");
    assert!(TRIP.on_message(&mut saga, &Msg::Abort("changed plans".into()), 10, TIMEOUT_MS).is_empty());
    let sent = TRIP.on_message(&mut saga, &Msg::Charged, 11, TIMEOUT_MS);
    let reversed = &sent[4..];
    assert_eq!(
        reversed,
        [
            cancel("car", "trip"),
            cancel("flight", "back"),
            cancel("flight", "out"),
            cancel("hotel", "trip"),
            Msg::Close("cancelled: changed plans".into())
        ]
    );
    assert!(TRIP.on_message(&mut saga, &Msg::Abort("again".into()), 12, TIMEOUT_MS).is_empty());
}

#[test]
fn duplicates_and_stray_replies_change_nothing() {
    let (once, sent_once) = run(&all_booked());
    let twice: Vec<Msg> = all_booked().into_iter().flat_map(|m| [m.clone(), m]).collect();
    let strays = [booked("car", "nope"), Msg::Kept("hotel", "trip".into()), Msg::Cancelled("flight", "out".into())];
    let (again, sent_again) = run(&[&strays[..], &twice].concat());
    assert_eq!(sent_once, sent_again);
    assert_eq!((once.status, once.step, once.parts), (again.status, again.step, again.parts));
}

#[test]
fn an_operators_retry_sends_again_what_the_saga_waits_on_and_is_recorded() {
    let (mut saga, _) = run(&all_booked()[..1]);
    assert_eq!(saga.step, "book_flight");
    let sent = TRIP.retry(&mut saga, "ops", "flights were slow", 500, TIMEOUT_MS).expect("something to retry");
    assert_eq!(sent, [book("flight", "out"), book("flight", "back")]);
    assert_eq!(saga.deadline_ms, Some(500 + TIMEOUT_MS), "a fresh deadline");
    assert!(
        saga.history.last().is_some_and(|e| e.what.contains("retried by ops") && e.what.contains("flights were slow"))
    );
    // While compensating, a retry sends the undos still unacknowledged and the ending again.
    TRIP.on_timeout(&mut saga, 5000);
    TRIP.on_message(&mut saga, &Msg::Cancelled("hotel", "trip".into()), 5001, TIMEOUT_MS);
    let sent = TRIP.retry(&mut saga, "ops", "again", 5002, TIMEOUT_MS).expect("undos outstanding");
    assert_eq!(
        sent,
        [
            cancel("flight", "out"),
            cancel("flight", "back"),
            Msg::Close("rejected: timed out waiting for book_flight".into())
        ]
    );
    TRIP.on_message(&mut saga, &Msg::Closed(Status::Rejected), 5003, TIMEOUT_MS);
    TRIP.on_message(&mut saga, &Msg::Cancelled("flight", "out".into()), 5004, TIMEOUT_MS);
    TRIP.on_message(&mut saga, &Msg::Cancelled("flight", "back".into()), 5005, TIMEOUT_MS);
    assert!(TRIP.retry(&mut saga, "ops", "once more", 5006, TIMEOUT_MS).is_err(), "nothing left to wait on");
}

#[test]
fn compensating_now_is_refused_past_the_point_of_no_return_and_when_over() {
    let (mut saga, _) = run(&all_booked()[..2]);
    let sent = TRIP.compensate_now(&mut saga, "ops", "supplier outage", 10).expect("running and undoable");
    assert_eq!(
        sent,
        [
            cancel("flight", "back"),
            cancel("flight", "out"),
            cancel("hotel", "trip"),
            Msg::Close("rejected: compensated by ops: supplier outage".into())
        ]
    );
    assert!(TRIP.compensate_now(&mut saga, "ops", "twice", 11).is_err(), "no compensation twice");
    let (mut at_charge, _) = run(&all_booked());
    let refused = TRIP.compensate_now(&mut at_charge, "ops", "too late", 12).expect_err("the point of no return");
    assert!(refused.to_string().contains("charge cannot be undone"), "{refused}");
    assert_eq!(at_charge.status, Status::Running);
}
