//! Rust types of the Avro records. Field names and types mirror `avro/**/*.avsc` exactly;
//! `tests::types_match_avsc_files` fails when they drift.

use crate::topics::Topic;
use apache_avro::AvroSchema;
use apache_avro::types::Value;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One Avro record type of the wire.
pub trait Record: Serialize + DeserializeOwned + AvroSchema + Clone {
    /// Avro full name (`namespace.Name`), also the second half of the registry subject.
    const FULL_NAME: &'static str;
    /// The committed `.avsc` text.
    const AVSC: &'static str;
    /// Where records of this type travel.
    const TOPIC: Topic;
    /// The Kafka key: id of the aggregate the record belongs to or is addressed to.
    fn key(&self) -> &str;
}

macro_rules! wire {
    ($( $ns:literal $dir:ident $name:ident { $($field:ident : $ty:ident $(<$gen:ident>)?),* $(,)? } key $key:ident => $topic:ident ;)*) => {
        $(
            #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
            #[avro(namespace = $ns)]
            pub struct $name { $(pub $field: $ty $(<$gen>)?),* }

            impl Record for $name {
                const FULL_NAME: &'static str = concat!($ns, ".", stringify!($name));
                const AVSC: &'static str = include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"), "/avro/", stringify!($dir), "/", stringify!($name), ".avsc"));
                const TOPIC: Topic = Topic::$topic;
                fn key(&self) -> &str { &self.$key }
            }

            impl From<$name> for Message {
                fn from(r: $name) -> Message { Message::$name(r) }
            }
        )*

        /// Any message of the wire.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message { $($name($name)),* }

        /// Every record: (full name, schema text, topic).
        pub const ALL_RECORDS: &[(&str, &str, Topic)] = &[
            $((<$name as Record>::FULL_NAME, <$name as Record>::AVSC, Topic::$topic)),*
        ];

        impl Message {
            pub fn full_name(&self) -> &'static str {
                match self { $(Message::$name(_) => <$name as Record>::FULL_NAME),* }
            }
            pub fn avsc(&self) -> &'static str {
                match self { $(Message::$name(_) => <$name as Record>::AVSC),* }
            }
            pub fn topic(&self) -> Topic {
                match self { $(Message::$name(_) => Topic::$topic),* }
            }
            pub fn key(&self) -> &str {
                match self { $(Message::$name(r) => r.key()),* }
            }
            /// The record as an Avro value, for encoding.
            pub fn to_value(&self) -> Result<Value, apache_avro::Error> {
                match self { $(Message::$name(r) => apache_avro::to_value(r)),* }
            }
            /// The record as JSON (for the saga's outbox rows).
            pub fn to_json(&self) -> serde_json::Value {
                match self { $(Message::$name(r) => serde_json::to_value(r).unwrap_or_default()),* }
            }
            /// Rebuild a message from its full name and JSON (outbox rows).
            pub fn from_json(full_name: &str, json: serde_json::Value) -> Result<Message, crate::DecodeError> {
                match full_name {
                    $(<$name as Record>::FULL_NAME => serde_json::from_value::<$name>(json)
                        .map(Message::$name)
                        .map_err(|e| crate::DecodeError::Malformed(format!("{full_name}: {e}"))),)*
                    other => Err(crate::DecodeError::UnknownRecord(other.to_owned())),
                }
            }
            /// Rebuild a message from a decoded record and its full name.
            pub fn from_value(full_name: &str, value: Value) -> Result<Message, crate::DecodeError> {
                match full_name {
                    $(<$name as Record>::FULL_NAME => apache_avro::from_value::<$name>(&value)
                        .map(Message::$name)
                        .map_err(|e| crate::DecodeError::Malformed(format!("{full_name}: {e}"))),)*
                    other => Err(crate::DecodeError::UnknownRecord(other.to_owned())),
                }
            }
        }

        #[cfg(test)]
        pub(crate) fn derived_schemas() -> Vec<(&'static str, apache_avro::Schema)> {
            vec![$((<$name as Record>::AVSC, <$name as AvroSchema>::get_schema())),*]
        }
    };
}

/// One priced line of an order (nested in `OrderPlaced`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.order")]
pub struct OrderLine {
    pub product_id: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

/// One line of a saga's state (nested in `SagaUpdated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga")]
pub struct SagaLine {
    pub product_id: String,
    pub quantity: i32,
    pub state: String,
}

/// One entry of a saga's history (nested in `SagaUpdated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "shop.saga")]
pub struct SagaEntry {
    pub at_ms: i64,
    pub step: String,
    pub what: String,
}

wire! {
    "shop.customer" customer CustomerRegistered { customer_id: String, name: String, email: String, owner: Option<String> } key customer_id => CustomerEvents;

    "shop.product" product ProductCreated { product_id: String, sku: String, name: String, price_cents: i64, currency: String, stock: i32 } key product_id => ProductEvents;
    "shop.product" product StockAdded { product_id: String, quantity: i32 } key product_id => ProductEvents;
    "shop.product" product StockReserved { product_id: String, order_id: String, quantity: i32 } key product_id => ProductEvents;
    "shop.product" product StockReservationFailed { product_id: String, order_id: String, requested: i32, available: i64 } key product_id => ProductEvents;
    "shop.product" product StockReleased { product_id: String, order_id: String, quantity: i32 } key product_id => ProductEvents;
    "shop.product" product StockCommitted { product_id: String, order_id: String, quantity: i32 } key product_id => ProductEvents;
    "shop.product" product ReserveStock { order_id: String, product_id: String, quantity: i32 } key product_id => ProductCommands;
    "shop.product" product ReleaseStock { order_id: String, product_id: String } key product_id => ProductCommands;
    "shop.product" product CommitStock { order_id: String, product_id: String } key product_id => ProductCommands;
    "shop.product" product StockReturned { product_id: String, order_id: String, quantity: i32 } key product_id => ProductEvents;
    "shop.product" product ReturnStock { order_id: String, product_id: String } key product_id => ProductCommands;

    "shop.order" order OrderPlaced { order_id: String, customer_id: String, lines: Vec<OrderLine>, total_cents: i64, currency: String, owner: Option<String> } key order_id => OrderEvents;
    "shop.order" order OrderConfirmed { order_id: String } key order_id => OrderEvents;
    "shop.order" order OrderRejected { order_id: String, reason: String, code: Option<String> } key order_id => OrderEvents;
    "shop.order" order ConfirmOrder { order_id: String } key order_id => OrderCommands;
    "shop.order" order RejectOrder { order_id: String, reason: String } key order_id => OrderCommands;
    "shop.order" order OrderCancellationRequested { order_id: String, reason: String } key order_id => OrderEvents;
    "shop.order" order OrderCancelled { order_id: String, reason: String } key order_id => OrderEvents;
    "shop.order" order CancelOrder { order_id: String, reason: String } key order_id => OrderCommands;

    "shop.payment" payment AccountOpened { customer_id: String, credit_cents: i64, currency: String } key customer_id => PaymentEvents;
    "shop.payment" payment PaymentAuthorized { customer_id: String, order_id: String, amount_cents: i64, currency: String } key customer_id => PaymentEvents;
    "shop.payment" payment PaymentDeclined { customer_id: String, order_id: String, amount_cents: i64, currency: String, reason: String } key customer_id => PaymentEvents;
    "shop.payment" payment PaymentConfirmed { customer_id: String, order_id: String, amount_cents: i64, currency: String } key customer_id => PaymentEvents;
    "shop.payment" payment PaymentRefunded { customer_id: String, order_id: String, amount_cents: i64, currency: String } key customer_id => PaymentEvents;
    "shop.payment" payment AuthorizePayment { order_id: String, customer_id: String, amount_cents: i64, currency: String } key customer_id => PaymentCommands;
    "shop.payment" payment RefundPayment { order_id: String, customer_id: String } key customer_id => PaymentCommands;
    "shop.payment" payment ConfirmPayment { order_id: String, customer_id: String } key customer_id => PaymentCommands;

    "shop.saga" saga SagaUpdated { order_id: String, customer_id: String, version: i64, status: String, step: String, reason: Option<String>, payment: String, total_cents: i64, currency: String, lines: Vec<SagaLine>, history: Vec<SagaEntry> } key order_id => SagaEvents;
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Schema;

    #[test]
    fn types_match_avsc_files() {
        for (avsc, derived) in derived_schemas() {
            let committed = Schema::parse_str(avsc).expect("committed .avsc parses");
            assert_eq!(derived.canonical_form(), committed.canonical_form(), "Rust type drifted from its .avsc");
        }
    }

    #[test]
    fn every_avsc_file_has_a_type() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/avro");
        let mut files = 0;
        for ctx in std::fs::read_dir(dir).unwrap() {
            for f in std::fs::read_dir(ctx.unwrap().path()).unwrap() {
                let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
                assert!(ALL_RECORDS.iter().any(|(_, avsc, _)| *avsc == text), "no Rust type for {text}");
                files += 1;
            }
        }
        assert_eq!(files, ALL_RECORDS.len());
    }

    #[test]
    #[allow(deprecated)]
    fn values_round_trip_through_avro_binary() {
        let msg = Message::OrderPlaced(OrderPlaced {
            order_id: "o1".into(),
            customer_id: "c1".into(),
            lines: vec![OrderLine { product_id: "p1".into(), quantity: 2, unit_price_cents: 250 }],
            total_cents: 500,
            currency: "EUR".into(),
            owner: None,
        });
        let schema = Schema::parse_str(msg.avsc()).unwrap();
        let bytes = apache_avro::to_avro_datum(&schema, msg.to_value().unwrap()).unwrap();
        let value = apache_avro::from_avro_datum(&schema, &mut bytes.as_slice(), None).unwrap();
        assert_eq!(Message::from_value(msg.full_name(), value).unwrap(), msg);
    }
}
