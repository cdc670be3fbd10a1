//! Fault tests against the running stack: for every step of the CreateOrder saga, the service
//! that runs it is SIGKILLed before its commit, SIGKILLed after its commit but before the reply
//! leaves its outbox, sees its reply delivered twice, and is SIGSTOPped past the step timeout.
//! Each case must end in a terminal saga with the stock and money invariants intact.
//!
//! The faults come from outside the binaries, with no hook in the code: PostgreSQL locks taken
//! from here hold a service at a precise point (a table lock before its commit, its outbox
//! relay's advisory lock after it), then the real process is signalled. `./stack restart`
//! starts a killed service again. Cases run one at a time (see [`cases::SERIAL`]), and a guard
//! releases every lock, resumes every stopped process and restarts every killed service even
//! when an assertion fails.
//!
//! Run against a running stack: `cargo test -p e2e-tests --test faults -- --ignored`.

// Shared with the e2e binary; not every helper is used here.
#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../e2e/kafka.rs"]
mod kafka;

mod api;
mod cases;
mod db;
mod stack;
