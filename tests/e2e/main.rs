//! End-to-end tests against the real stack (`./stack test` starts it, then runs these with
//! `--include-ignored`). Each test makes its own customers and products, so tests do not
//! interfere and can run against a stack that already holds data.

mod cancel;
mod discovery;
mod dlq;
mod harness;
mod idempotency;
mod kafka;
mod metrics;
mod operations;
mod orders;
mod readmodels;
mod redelivery;
mod security;
mod tls;
mod tracing;
mod validation;
mod wire;
