//! The topic catalog. Topic names are `<context>.events` / `<context>.commands`; each has a
//! `<topic>.dlq` for parked messages.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    CustomerEvents,
    ProductEvents,
    OrderEvents,
    PaymentEvents,
    SagaEvents,
    ProductCommands,
    PaymentCommands,
    OrderCommands,
}

impl Topic {
    pub const ALL: [Topic; 8] = [
        Topic::CustomerEvents,
        Topic::ProductEvents,
        Topic::OrderEvents,
        Topic::PaymentEvents,
        Topic::SagaEvents,
        Topic::ProductCommands,
        Topic::PaymentCommands,
        Topic::OrderCommands,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Topic::CustomerEvents => "customer.events",
            Topic::ProductEvents => "product.events",
            Topic::OrderEvents => "order.events",
            Topic::PaymentEvents => "payment.events",
            Topic::SagaEvents => "saga.events",
            Topic::ProductCommands => "product.commands",
            Topic::PaymentCommands => "payment.commands",
            Topic::OrderCommands => "order.commands",
        }
    }

    pub fn parse(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Event topics are the system's history: kept forever so read models can be rebuilt.
    pub const fn is_event_topic(self) -> bool {
        matches!(
            self,
            Topic::CustomerEvents
                | Topic::ProductEvents
                | Topic::OrderEvents
                | Topic::PaymentEvents
                | Topic::SagaEvents
        )
    }

    /// `retention.ms` for the topic: -1 (forever) for events, 7 days for commands.
    pub const fn retention_ms(self) -> i64 {
        if self.is_event_topic() { -1 } else { 7 * 24 * 3600 * 1000 }
    }

    pub fn dlq(self) -> String {
        format!("{}.dlq", self.name())
    }

    /// Partitions of a topic when the configuration names no other number (`kafka.partitions`).
    pub const PARTITIONS: i32 = 3;
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
