//! End-to-end tests against the running stack live in `e2e/`; run them with `./stack test`.
//! `architecture.rs` checks the workspace's shape (module loops, the README's crate graph) and
//! needs no stack.

use std::path::PathBuf;

/// The repository root (the `stack` launcher lives there).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

/// The launcher's data folder (`./stack --data`): its pid records, logs and the local CA.
pub fn data_dir() -> PathBuf {
    std::env::var_os("SHOP_STACK_DATA").map_or_else(|| repo().join(".stack-data"), PathBuf::from)
}
