//! One file per public resource, plus `/health` and the JSON fallbacks.

pub mod customers;
pub mod fallback;
pub mod health;
pub mod orders;
pub mod products;
pub mod sagas;
