//! End-to-end tests against the running stack live in `e2e/`; run them with `./stack test`.
