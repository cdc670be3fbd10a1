//! The business rules of the shop, free of IO.
//!
//! - [`values`]: newtypes that parse and reject (ids, money, quantities, names, emails).
//! - [`customer`], [`product`], [`order`], [`payment`]: one aggregate each, with its commands,
//!   events and errors. Every aggregate implements [`Aggregate`]: a pure `decide` turning a command
//!   into events (or a rejection) and an infallible `apply` folding an event into the state.
//!
//! Idempotency lives here too: commands that arrive twice (Kafka redelivers) decide no new events.

pub mod customer;
pub mod order;
pub mod payment;
pub mod product;
pub mod values;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// An event of an aggregate: stored in the event store, published through the outbox.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + PartialEq + Debug + Send + Sync {
    /// Stable name, stored with the event; never rename one.
    fn event_type(&self) -> &'static str;
    /// Schema version of the stored payload, for upcasting.
    fn event_version(&self) -> &'static str {
        "1"
    }
}

/// An event-sourced aggregate: state is the fold of its events.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Clone + Debug + Send + Sync {
    /// Aggregate type name, the stream prefix in the event store.
    const TYPE: &'static str;
    type Command: Debug + Send;
    type Event: DomainEvent;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decide which events a command produces, or reject it. Never mutates.
    fn decide(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Fold one event into the state. Infallible: events are facts.
    fn apply(&mut self, event: Self::Event);

    /// Decide, then apply the events to a copy; handy for tests and property checks.
    fn execute(&self, command: Self::Command) -> Result<(Self, Vec<Self::Event>), Self::Error> {
        let events = self.decide(command)?;
        let mut next = self.clone();
        for event in &events {
            next.apply(event.clone());
        }
        Ok((next, events))
    }
}

/// Given/when/then for aggregates, beside each one's tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Aggregate;

    pub fn given<A: Aggregate>(events: Vec<A::Event>) -> A {
        let mut state = A::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}
