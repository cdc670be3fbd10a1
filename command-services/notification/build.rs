//! `sqlx::migrate!` embeds the files of `migrations/`, but Cargo only tracks the files it has
//! already included: watch the directory so that a new migration rebuilds the crate.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
