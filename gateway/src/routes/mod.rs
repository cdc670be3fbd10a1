//! One file per public resource, plus `/health`, the JSON fallbacks and `/internal/sd`.

pub mod customers;
pub mod fallback;
pub mod health;
pub mod orders;
pub mod products;
pub mod sagas;
pub mod sd;
