//! The seven checks, each a pure function of the loaded data (and the folds made of it).

pub mod delivery;
pub mod duplicates;
pub mod money;
pub mod orders;
pub mod promises;
pub mod read_models;
pub mod stock;

use crate::facts;
use crate::model::Loaded;
use crate::report::Check;

/// Every check, in the order the table shows them.
pub fn all(loaded: &Loaded) -> Vec<Check> {
    let facts = facts::derive(&loaded.events);
    vec![
        orders::check(loaded, &facts),
        duplicates::check(loaded, &facts),
        money::check(loaded, &facts),
        stock::check(loaded, &facts),
        delivery::check(loaded),
        read_models::check(loaded),
        promises::check(loaded, &facts),
    ]
}
