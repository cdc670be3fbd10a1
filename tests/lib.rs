//! End-to-end tests against the running stack live in `e2e/`; run them with `./stack test`.
//! `architecture.rs` checks the workspace's shape (module loops, the README's crate graph) and
//! needs no stack.
