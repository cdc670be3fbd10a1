//! One file per public resource, plus `/health`, the JSON fallbacks, `/internal/sd` and the UI.

pub mod customers;
pub mod dead_letters;
pub mod fallback;
pub mod health;
pub mod orders;
pub mod products;
pub mod projections;
pub mod sagas;
pub mod sd;
pub mod ui;
